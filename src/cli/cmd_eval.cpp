#include <cstdio>
#include <memory>

#include "bnorm/error.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/train/trainer.hpp"
#include "commands.hpp"
#include "data_source.hpp"

namespace bnorm::cli {
namespace {

struct EvalOptions {
  std::string model;
  DataFlags data;
  std::int64_t batch_size = kEvalBatchSize;
  std::int64_t test_size = 0;
  int threads = 0;
  bool json = false;
};

void run_eval(const EvalOptions& o) {
  apply_threads(o.threads);
  if (o.batch_size < 1) throw Error("--batch-size must be at least 1");
  if (o.test_size < 0) throw Error("--test-size must be >= 0 (0 = all)");
  LoadedModel loaded = load_model(o.model);
  Dataset test = load_test_data(o.data, loaded.task);
  if (o.test_size > 0) test.truncate(o.test_size);
  if (test.features != numel(loaded.model.input_shape()))
    throw Error(o.model + ": the model takes " + std::to_string(numel(loaded.model.input_shape())) +
                " inputs but the test examples have " + std::to_string(test.features) + " values");
  if (test.task != loaded.task.kind)
    throw Error(o.model + ": the model was trained to " + task_name(loaded.task.kind) +
                " but the test data's targets "
                "are for " +
                task_name(test.task));
  const EvalResult r = evaluate(loaded.model, test, loaded.preprocessing(), o.batch_size, Mode::eval);
  if (test.task == Task::regress) {
    if (o.json)
      std::printf("%s\n", nlohmann::json{{"test_loss", r.loss},
                                         {"test_rmse", r.rmse},
                                         {"test_mae", r.mae},
                                         {"test_r2", r.r2},
                                         {"examples", r.examples}}
                              .dump()
                              .c_str());
    else
      std::printf(
          "test_loss %.4f  test_rmse %.4g  test_mae %.4g  test_r2 %.4f  examples %lld  (eval mode: running "
          "statistics)\n",
          r.loss, r.rmse, r.mae, r.r2, static_cast<long long>(r.examples));
    return;
  }
  if (o.json)
    std::printf(
        "%s\n",
        nlohmann::json{{"test_loss", r.loss}, {"test_accuracy", r.accuracy}, {"examples", r.examples}}.dump().c_str());
  else
    std::printf("test_loss %.4f  test_accuracy %.4f  examples %lld  (eval mode: running statistics)\n", r.loss,
                r.accuracy, static_cast<long long>(r.examples));
}

}  // namespace

Runner add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* cmd = app.add_subcommand("eval",
                                     "Test loss and accuracy (or RMSE, MAE and R² for regression) of a saved "
                                     "model, with its running statistics");
  cmd->add_option("--model", o->model, "Model file written by 'bnorm train'")->required();
  add_test_data_flags(cmd, o->data);
  cmd->add_option("--batch-size", o->batch_size,
                  "Examples per forward pass; in eval mode the result does not depend on it")
      ->capture_default_str();
  cmd->add_option("--test-size", o->test_size, "Use only the first N test examples (0 = all)")->capture_default_str();
  cmd->add_option("--threads", o->threads, "Threads for the matrix products (0 = one per core)")->capture_default_str();
  cmd->add_flag("--json", o->json,
                "One JSON object on stdout: test_loss, test_accuracy (or test_rmse, test_mae, "
                "test_r2), examples");
  return [o] { run_eval(*o); };
}

}  // namespace bnorm::cli

#include <cstdio>
#include <memory>

#include "bnorm/error.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/train/trainer.hpp"
#include "commands.hpp"

namespace bnorm::cli {
namespace {

struct EvalOptions {
  std::string model;
  std::string data = kDefaultDataDir;
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
  ImageDataset test = load_fashion_mnist(o.data, Split::test);
  if (o.test_size > 0) test.truncate(o.test_size);
  if (test.features != numel(loaded.model.input_shape()))
    throw Error(o.model + ": the model takes " + std::to_string(numel(loaded.model.input_shape())) +
                " inputs but the test images have " + std::to_string(test.features) + " pixels");
  const EvalResult r = evaluate(loaded.model, test, loaded.input_normalization, o.batch_size, Mode::eval);
  if (o.json)
    std::printf("%s\n", nlohmann::json{{"test_loss", r.loss}, {"test_accuracy", r.accuracy}, {"examples", r.examples}}
                            .dump()
                            .c_str());
  else
    std::printf("test_loss %.4f  test_accuracy %.4f  examples %lld  (eval mode: running statistics)\n", r.loss,
                r.accuracy, static_cast<long long>(r.examples));
}

}  // namespace

Runner add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* cmd = app.add_subcommand("eval", "Test loss and accuracy of a saved model, with its running statistics");
  cmd->add_option("--model", o->model, "Model file written by 'bnorm train'")->required();
  cmd->add_option("--data", o->data, "Directory with the t10k IDX files")->capture_default_str();
  cmd->add_option("--batch-size", o->batch_size,
                  "Examples per forward pass; in eval mode the result does not depend on it")
      ->capture_default_str();
  cmd->add_option("--test-size", o->test_size, "Use only the first N test examples (0 = all)")->capture_default_str();
  cmd->add_option("--threads", o->threads, "Threads for the matrix products (0 = one per core)")->capture_default_str();
  cmd->add_flag("--json", o->json, "One JSON object on stdout: test_loss, test_accuracy, examples");
  return [o] { run_eval(*o); };
}

}  // namespace bnorm::cli

#include <cstdio>
#include <memory>

#include "bnorm/error.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/json_number.hpp"
#include "bnorm/train/recalibrate.hpp"
#ifdef BNORM_HAVE_MPI
#include "bnorm/dist/mpi.hpp"
#endif
#include "commands.hpp"
#include "data_source.hpp"

namespace bnorm::cli {
namespace {

struct RecalibrateOptions {
  std::string model;
  DataFlags data;
  std::string batches = "all";
  std::int64_t batch_size = 64;
  std::string mode = "exact";
  std::string out;
  int threads = 0;
  bool distributed = false;
};

std::int64_t parse_batches(const std::string& text) {
  if (text == "all") return 0;
  std::size_t used = 0;
  long long n = 0;
  try {
    n = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || n < 1) throw Error("--batches must be a positive number or 'all', got '" + text + "'");
  return n;
}

// dist: the processes of a --distributed run (nullptr: this one alone); rank 0
// prints and writes the file.
void run_recalibrate(const RecalibrateOptions& o, DataParallel* dist) {
  apply_threads(o.threads);
  const bool root = !dist || dist->rank() == 0;
  RecalibrationOptions ro;
  ro.dist = dist;
  ro.mode = parse_recalibration_mode(o.mode);
  ro.batch_size = o.batch_size;
  ro.max_batches = parse_batches(o.batches);
  if (o.batch_size < 1) throw Error("--batch-size must be at least 1");
  LoadedModel loaded = load_model(o.model);
  // The split training used: a table held out with the model's own seed
  // gives the same training examples back.
  std::uint64_t seed = 0;
  if (loaded.training.is_object() && loaded.training.contains("seed"))
    if (const auto s = json_number<std::uint64_t>(loaded.training.at("seed"))) seed = *s;
  TrainingData data = load_training_data(o.data, seed);
  const Dataset& train = data.train;
  if (train.features != numel(loaded.model.input_shape()))
    throw Error(o.model + ": the model takes " + std::to_string(numel(loaded.model.input_shape())) +
                " inputs but the training examples have " + std::to_string(train.features) + " values");
  const RecalibrationReport r = recalibrate_batchnorm(loaded.model, train, loaded.input_normalization, ro);
  if (!root) return;
  if (dist) std::printf("%d processes, each a share of the examples\n", dist->size());
  std::printf(
      "recalibrated %zu batch-norm layer(s) of %s, %s, over %lld training examples (%lld batches of up to %lld)\n",
      r.layers.size(), o.model.c_str(), recalibration_mode_name(ro.mode), static_cast<long long>(r.examples),
      static_cast<long long>(r.batches), static_cast<long long>(ro.batch_size));
  // A large change means the running averages were far from the statistics
  // the final weights produce: evaluation with them was off too.
  for (const BatchNormDrift& d : r.layers)
    std::printf("layer %zu (%lld channels): running mean changed by up to %.3g, running var by up to %.3g (relative)\n",
                d.layer, static_cast<long long>(d.channels), d.mean, d.var);
  nlohmann::json training = loaded.training.is_object() ? loaded.training : nlohmann::json::object();
  training["recalibration"] = {{"mode", recalibration_mode_name(ro.mode)},
                               {"examples", r.examples},
                               {"batches", r.batches},
                               {"batch_size", ro.batch_size}};
  save_model(o.out, loaded.model, loaded.preprocessing(), training, loaded.task);
  std::printf("saved %s\n", o.out.c_str());
}

}  // namespace

Runner add_recalibrate_command(CLI::App& app) {
  auto o = std::make_shared<RecalibrateOptions>();
  CLI::App* cmd =
      app.add_subcommand("recalibrate",
                         "Replace a model's batch-norm running statistics with ones measured on the training data with "
                         "its final weights (precise BN statistics); prints how far each layer's moved");
  cmd->add_option("--model", o->model, "Model file written by 'bnorm train'")->required();
  add_training_data_flags(cmd, o->data);
  cmd->add_option("--batches", o->batches, "Use the first N batches of the training set, or all")
      ->capture_default_str();
  cmd->add_option("--batch-size", o->batch_size,
                  "Examples per batch (exact: affects only speed; batch-average: the statistics themselves)")
      ->capture_default_str();
  cmd->add_option("--mode", o->mode,
                  "exact: each layer's exact mean and variance over the examples, layers before it already "
                  "recalibrated, eval mode; batch-average: the average of per-batch statistics in training mode "
                  "(torch.optim.swa_utils.update_bn)")
      ->check(CLI::IsMember({"exact", "batch-average"}))
      ->capture_default_str();
  cmd->add_option("--out", o->out, "Model file to write (atomically)")->required();
  cmd->add_option("--threads", o->threads, "Threads for the matrix products (0 = one per core)")->capture_default_str();
  cmd->add_flag("--distributed", o->distributed,
                "Under mpirun (exact mode): each of the K processes takes a share of the examples and the statistics "
                "are merged exactly; rank 0 prints and writes the same file one process would");
  return [o] {
    if (!o->distributed) return run_recalibrate(*o, nullptr);
#ifdef BNORM_HAVE_MPI
    dist::MpiSession mpi(nullptr, nullptr);
    try {
      run_recalibrate(*o, &mpi.world());
    } catch (const std::bad_alloc&) {
      mpi.abort("out of memory", 1);
    } catch (const std::exception& e) {
      mpi.abort(e.what(), 1);
    }
#else
    throw Error(
        "--distributed: this bnorm was built without MPI; install openmpi-bin and libopenmpi-dev (Debian) "
        "and rebuild with scripts/setup.sh");
#endif
  };
}

}  // namespace bnorm::cli

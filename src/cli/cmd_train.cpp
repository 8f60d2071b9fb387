#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <thread>

#include "bnorm/error.hpp"
#include "bnorm/io/checkpoint.hpp"
#include "bnorm/io/dataset.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/json_number.hpp"
#include "bnorm/nn/arch.hpp"
#include "bnorm/nn/layer_factory.hpp"
#include "bnorm/train/data_parallel.hpp"
#include "bnorm/train/trainer.hpp"
#ifdef BNORM_HAVE_MPI
#include "bnorm/dist/mpi.hpp"
#endif
#include "commands.hpp"
#include "data_source.hpp"
#include "progress.hpp"

namespace bnorm::cli {
namespace {

struct TrainOptions {
  DataFlags data;
  std::string layers;     // empty: <features>,256,256,<outputs>
  std::string arch;       // overrides layers when set
  std::string arch_file;  // the same, read from a file
  std::string bn = "before";
  std::string activation = "relu";
  std::int64_t epochs = -1;  // below 0: 5 for IDX, about 1000 steps for tables
  std::int64_t batch_size = 64;
  float lr = 0.01f;
  std::string optimizer = "sgd";
  float momentum = 0.9f;
  float weight_decay = 0.0f;
  float bn_momentum = 0.1f;
  bool bn_cumulative = false;
  std::string bn_running_var = "unbiased";
  float eps = 1e-5f;
  bool no_affine = false;
  std::string bn_scale = "on";   // learned gamma
  std::string bn_center = "on";  // learned beta
  bool no_running_stats = false;
  std::string input_norm = "auto";
  std::string init;  // model file to start from (fine-tuning)
  std::string freeze_bn = "none";
  bool batch_renorm = false;
  float renorm_rmax = 3.0f;
  float renorm_dmax = 5.0f;
  std::int64_t renorm_warmup = 1600;
  std::int64_t virtual_batch_size = 0;
  std::uint64_t seed = 0;
  int threads = 0;
  std::int64_t train_size = 0;
  std::int64_t test_size = 0;
  std::string out = "model.safetensors";
  bool json = false;
  // Run-time policy, not part of the configuration a checkpoint pins down.
  std::string on_nan = "stop";
  std::int64_t checkpoint_every = 0;
  std::string checkpoint;  // default: <out>.ckpt
  std::string resume;
  bool distributed = false;
  std::string bn_sync = "global";
  std::set<std::string> explicit_flags;  // long names given on the command line, e.g. "lr"
};

// Everything that decides a run's result; a checkpoint stores it, and a
// resumed run takes it back from there.
nlohmann::json config_json(const TrainOptions& o) {
  return {{"data", o.data.data},
          {"train", o.data.train},
          {"test", o.data.test},
          {"train-targets", o.data.train_targets},
          {"test-targets", o.data.test_targets},
          {"target", o.data.target},
          {"task", o.data.task},
          {"val-fraction", o.data.val_fraction},
          {"layers", o.layers},
          {"arch", o.arch},
          {"bn", o.bn},
          {"activation", o.activation},
          {"epochs", o.epochs},
          {"batch-size", o.batch_size},
          {"lr", o.lr},
          {"optimizer", o.optimizer},
          {"momentum", o.momentum},
          {"weight-decay", o.weight_decay},
          {"bn-momentum", o.bn_momentum},
          {"bn-cumulative", o.bn_cumulative},
          {"bn-running-var", o.bn_running_var},
          {"eps", o.eps},
          {"no-affine", o.no_affine},
          {"bn-scale", o.bn_scale},
          {"bn-center", o.bn_center},
          {"no-running-stats", o.no_running_stats},
          {"input-norm", o.input_norm},
          {"init", o.init},
          {"freeze-bn", o.freeze_bn},
          {"batch-renorm", o.batch_renorm},
          {"renorm-rmax", o.renorm_rmax},
          {"renorm-dmax", o.renorm_dmax},
          {"renorm-warmup", o.renorm_warmup},
          {"virtual-batch-size", o.virtual_batch_size},
          {"seed", o.seed},
          {"train-size", o.train_size},
          {"test-size", o.test_size}};
}

// Numbers through json_number: get<T>() is undefined for out-of-range values.
template <class T>
T config_number(const nlohmann::json& config, const char* key, const std::string& path) {
  if (const auto v = json_number<T>(config.at(key))) return *v;
  fail_file(path, std::string("checkpoint configuration \"") + key + "\" has the wrong type or is out of range");
}

// The checkpoint's configuration, with the run-time flags kept from the
// command line. A configuration flag given explicitly must agree with the
// checkpoint (a resumed run cannot change what it is continuing), except
// --epochs, which may extend or shorten the run.
TrainOptions options_from_checkpoint(const TrainOptions& cli, const nlohmann::json& config, const std::string& path) {
  const nlohmann::json given = config_json(cli);
  // Checkpoints from before tabular data have no data keys but --data.
  // Checkpoints from before fine-tuning have no init or freeze-bn, from
  // before the separate switches no bn-scale or bn-center (then "on"), and
  // from before the batch-norm variants none of theirs.
  const std::set<std::string> optional_keys = {"train",       "test",        "train-targets", "test-targets",
                                               "target",      "task",        "val-fraction",  "init",
                                               "freeze-bn",   "bn-scale",    "bn-center",     "batch-renorm",
                                               "renorm-rmax", "renorm-dmax", "renorm-warmup", "virtual-batch-size"};
  for (const auto& [key, value] : given.items()) {
    if (!config.contains(key)) {
      if (optional_keys.count(key) && !cli.explicit_flags.count(key)) continue;
      fail_file(path, "checkpoint configuration lacks \"" + key + "\"");
    }
    if (key != "epochs" && cli.explicit_flags.count(key) && config.at(key) != value)
      throw Error("--" + key + " " + value.dump() + " conflicts with the checkpoint " + path + " (" +
                  config.at(key).dump() +
                  "); a resumed run takes its configuration from the checkpoint: drop the flag");
  }
  TrainOptions o = cli;
  try {
    o.data.data = cli.explicit_flags.count("data") ? cli.data.data : config.at("data").get<std::string>();
    const auto text = [&](const char* key, std::string& out) {
      if (config.contains(key)) out = config.at(key).get<std::string>();
    };
    text("train", o.data.train);
    text("test", o.data.test);
    text("train-targets", o.data.train_targets);
    text("test-targets", o.data.test_targets);
    text("target", o.data.target);
    text("task", o.data.task);
    text("init", o.init);
    text("freeze-bn", o.freeze_bn);
    text("bn-scale", o.bn_scale);
    text("bn-center", o.bn_center);
    if (config.contains("val-fraction")) o.data.val_fraction = config_number<double>(config, "val-fraction", path);
    if (config.contains("batch-renorm")) {
      o.batch_renorm = config_number<bool>(config, "batch-renorm", path);
      o.renorm_rmax = config_number<float>(config, "renorm-rmax", path);
      o.renorm_dmax = config_number<float>(config, "renorm-dmax", path);
      o.renorm_warmup = config_number<std::int64_t>(config, "renorm-warmup", path);
      o.virtual_batch_size = config_number<std::int64_t>(config, "virtual-batch-size", path);
    }
    o.layers = config.at("layers").get<std::string>();
    o.arch = config.at("arch").get<std::string>();
    o.bn = config.at("bn").get<std::string>();
    o.activation = config.at("activation").get<std::string>();
    o.epochs = cli.explicit_flags.count("epochs") ? cli.epochs : config_number<std::int64_t>(config, "epochs", path);
    o.batch_size = config_number<std::int64_t>(config, "batch-size", path);
    o.lr = config_number<float>(config, "lr", path);
    o.optimizer = config.at("optimizer").get<std::string>();
    o.momentum = config_number<float>(config, "momentum", path);
    o.weight_decay = config_number<float>(config, "weight-decay", path);
    o.bn_momentum = config_number<float>(config, "bn-momentum", path);
    o.bn_cumulative = config_number<bool>(config, "bn-cumulative", path);
    o.bn_running_var = config.at("bn-running-var").get<std::string>();
    o.eps = config_number<float>(config, "eps", path);
    o.no_affine = config_number<bool>(config, "no-affine", path);
    o.no_running_stats = config_number<bool>(config, "no-running-stats", path);
    o.input_norm = config.at("input-norm").get<std::string>();
    o.seed = config_number<std::uint64_t>(config, "seed", path);
    o.train_size = config_number<std::int64_t>(config, "train-size", path);
    o.test_size = config_number<std::int64_t>(config, "test-size", path);
  } catch (const nlohmann::json::exception& e) {
    fail_file(path, std::string("checkpoint configuration has a mistyped value: ") + e.what());
  }
  return o;
}

std::vector<std::int64_t> parse_widths(const std::string& text) {
  std::vector<std::int64_t> widths = parse_size_list("--layers", text, ',', "784,256,256,10");
  if (widths.size() < 2) throw Error("--layers: needs at least an input and an output width");
  return widths;
}

// Refuses, before anything is allocated, a network or batch whose memory
// would not fit: each width may be up to 2^24, but two such widths make 2^48
// weights, which would otherwise end in an out-of-memory kill mid-allocation.
void check_training_memory(const std::vector<std::int64_t>& widths, std::int64_t batch, const std::string& layers) {
  constexpr double kLimitBytes = 16.0 * (1u << 30);
  double params = 0, units = 0;
  for (std::size_t i = 0; i + 1 < widths.size(); ++i) {
    params += static_cast<double>(widths[i]) * static_cast<double>(widths[i + 1]) + static_cast<double>(widths[i + 1]);
    units += static_cast<double>(widths[i + 1]);
  }
  // Parameters, gradients and up to two optimizer buffers; per example a few
  // tensors per unit (outputs, gradients, batch-norm caches).
  const double bytes =
      params * 4 * 4 + static_cast<double>(batch) * (units * 4 * 6 + static_cast<double>(widths[0]) * 4);
  if (bytes > kLimitBytes)
    throw Error("--layers " + layers + " with batch " + std::to_string(batch) + " needs about " +
                std::to_string(static_cast<long long>(bytes / (1u << 30))) + " GiB to train (" +
                std::to_string(static_cast<long long>(params)) + " parameters); the limit is 16 GiB");
}

// Fails before hours of training rather than at the final save.
void check_output_writable(const std::string& out) {
  const std::filesystem::path p(out);
  if (out.empty() || !p.has_filename()) throw Error("--out '" + out + "' must name a file");
  const std::filesystem::path dir = p.has_parent_path() ? p.parent_path() : std::filesystem::path(".");
  if (!std::filesystem::is_directory(dir)) fail_file(out, "directory " + dir.string() + " does not exist");
  if (::access(dir.c_str(), W_OK) != 0) fail_file(out, "directory " + dir.string() + " is not writable");
  if (std::filesystem::is_directory(p)) fail_file(out, "is a directory");
}

Model mlp_from_widths(const TrainOptions& o, const Dataset& train, BnPlacement placement,
                      const BatchNormOptions& bn_options) {
  MlpSpec spec;
  spec.widths = parse_widths(o.layers);
  check_training_memory(spec.widths, o.batch_size, o.layers);
  spec.bn = placement;
  spec.activation = parse_activation(o.activation);
  spec.bn_options = bn_options;
  if (spec.widths.front() != train.features)
    throw Error("--layers starts with " + std::to_string(spec.widths.front()) + " inputs but the examples have " +
                std::to_string(train.features) + " values");
  return Model(Shape{train.features}, build_mlp_layers(spec));
}

std::string read_arch_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail_file(path, "cannot open the architecture file");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > 100000) fail_file(path, "architecture file is larger than 100 kB");
  return text;
}

// The processes of a distributed run as this one sees them; one process alone otherwise.
struct Cluster {
  DataParallel* dist = nullptr;
  int rank = 0, size = 1, local_size = 1;
  bool root() const { return rank == 0; }
};

// Cores this process may run on (mpirun --bind-to narrows them).
int usable_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  const unsigned cores = std::thread::hardware_concurrency();
  return cores ? static_cast<int>(cores) : 1;
}

// --threads 0 under --distributed: the cores this rank is bound to, at most
// this machine's cores divided among its ranks, so that ranks sharing a
// machine do not oversubscribe it (one OpenMP pool; OpenBLAS runs single-threaded inside it).
int threads_per_rank(int requested, const Cluster& c) {
  if (requested != 0 || !c.dist) return requested;
  const unsigned hw = std::thread::hardware_concurrency();
  const int share = std::max(1, static_cast<int>(hw ? hw : 1) / std::max(1, c.local_size));
  return std::min(usable_cores(), share);
}

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buf[512];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  return buf;
}

std::string data_description(const DataFlags& f) {
  if (!f.tables()) return f.data;
  std::string s = f.train;
  if (!f.train_targets.empty()) s += " + " + f.train_targets;
  if (!f.test.empty()) s += ", test " + f.test + (f.test_targets.empty() ? "" : " + " + f.test_targets);
  return s;
}

// ", 2 classes: 'B', 'M'" for a classifier; nothing for regression.
std::string class_summary(const Dataset& d) {
  if (d.task != Task::classify) return d.target_dims > 1 ? ", " + std::to_string(d.target_dims) + " targets" : "";
  std::string s = ", " + std::to_string(d.num_classes) + " classes:";
  for (std::size_t k = 0; k < d.class_names.size() && k < 10; ++k) s += " " + d.class_names[k];
  if (d.class_names.size() > 10) s += " ...";
  return s;
}

// The defaults that depend on the data: the MLP's input and output widths,
// the input normalization and the number of epochs.
void resolve_data_defaults(TrainOptions& o, const Dataset& train) {
  if (o.layers.empty()) o.layers = std::to_string(train.features) + ",256,256," + std::to_string(train.outputs());
  if (o.input_norm == "auto") o.input_norm = o.data.tables() ? "feature" : "pixel";
  if (o.epochs < 0) {
    // Small tables give few batches per epoch; about 1000 steps trains them
    // without turning a large table's default run into hours.
    const std::int64_t batches = std::max<std::int64_t>(1, (train.count + o.batch_size - 1) / o.batch_size);
    o.epochs = o.data.tables() ? std::clamp<std::int64_t>((1000 + batches - 1) / batches, 5, 200) : 5;
  }
}

// The initial model's architecture with every batch-norm layer frozen as
// --freeze-bn says (none unfreezes a layer the file had frozen).
nlohmann::json frozen_as(nlohmann::json architecture, BnFreeze freeze) {
  for (auto& layer : architecture.at("layers"))
    if (layer.value("type", "") == "batchnorm") {
      if (freeze == BnFreeze::none)
        layer.erase("freeze");
      else
        layer["freeze"] = bn_freeze_name(freeze);
    }
  return architecture;
}

// --init: the initial model's input normalization (the weights were trained
// on inputs scaled that way) unless --input-norm asks for another one.
Preprocessing initial_preprocessing(const LoadedModel& init, const std::string& path, const Dataset& train,
                                    const std::string& input_norm) {
  InputNormalization in;
  if (input_norm == "init") {
    in = init.input_normalization;
    try {
      in.validate(train.features);
    } catch (const Error& e) {
      fail_file(path, std::string("its input normalization does not fit the training data: ") + e.what());
    }
  } else {
    in = InputNormalization::fit(train, input_norm);
  }
  TargetNormalization target = TargetNormalization::fit(train);
  if (train.task == Task::regress && init.task.kind == Task::regress &&
      init.target_normalization.mean.size() == static_cast<std::size_t>(train.target_dims))
    target = init.target_normalization;
  return {in, target};
}

// Copies every tensor of from whose name, dtype and shape match one of
// model's (running statistics included) and says which were loaded and which
// kept their fresh initialization.
void load_matching_tensors(Model& model, Model& from, const std::string& path, std::FILE* say) {
  std::vector<StateEntry> source = from.state_dict();
  std::string loaded, fresh;
  for (const StateEntry& e : model.state_dict()) {
    const auto it = std::find_if(source.begin(), source.end(), [&](const StateEntry& s) {
      return s.name == e.name && s.shape == e.shape && s.dtype == e.dtype;
    });
    std::string& list = it == source.end() ? fresh : loaded;
    list += (list.empty() ? "" : " ") + e.name;
    if (it == source.end()) continue;
    const std::size_t bytes = static_cast<std::size_t>(numel(e.shape)) * (e.dtype == StateEntry::DType::i64 ? 8 : 4);
    std::memcpy(e.data, it->data, bytes);
  }
  if (loaded.empty()) fail_file(path, "no tensor matches the network by name and shape; nothing to fine-tune from");
  std::fprintf(say, "init %s: loaded %s\n", path.c_str(), loaded.c_str());
  if (!fresh.empty()) std::fprintf(say, "init %s: initialized (no match) %s\n", path.c_str(), fresh.c_str());
}

constexpr std::chrono::seconds kMinSaveInterval{5};

// The options the run uses: with --resume everything that decides the result
// comes from the checkpoint (validated like a model file before anything
// else happens), and the architecture's text, not the file's name.
TrainOptions options_for_run(const TrainOptions& cli, const std::optional<Checkpoint>& checkpoint) {
  TrainOptions o = checkpoint ? options_from_checkpoint(cli, checkpoint->config, cli.resume) : cli;
  if (!o.arch_file.empty()) {
    if (checkpoint)
      throw Error("--arch-file conflicts with --resume: a resumed run takes its architecture from the checkpoint");
    o.arch = read_arch_file(o.arch_file);
    o.arch_file.clear();
  }
  return o;
}

void check_option_values(const TrainOptions& o) {
  if (o.epochs < -1 || o.epochs > 100000) throw Error("--epochs must be in 0..100000");
  if (o.batch_size < 2) throw Error("--batch-size must be at least 2 (batch norm needs a spread to normalize)");
  if (o.batch_size > (std::int64_t{1} << 30)) throw Error("--batch-size must be at most 1073741824");
  if (o.train_size < 0 || o.test_size < 0) throw Error("--train-size and --test-size must be >= 0");
  if (!(o.bn_momentum >= 0.0f && o.bn_momentum <= 1.0f)) throw Error("--bn-momentum must be in [0, 1]");
  if (!(o.eps > 0.0f)) throw Error("--eps must be > 0");
  if (o.no_affine && (o.explicit_flags.count("bn-scale") || o.explicit_flags.count("bn-center")))
    throw Error("--no-affine turns off both gamma and beta; give --bn-scale and --bn-center instead of it");
  if (o.batch_renorm && o.no_running_stats)
    throw Error("--batch-renorm corrects towards the running statistics; it cannot go with --no-running-stats");
  for (const char* flag : {"renorm-rmax", "renorm-dmax", "renorm-warmup"})
    if (o.explicit_flags.count(flag) && !o.batch_renorm)
      throw Error(std::string("--") + flag + " needs --batch-renorm");
  // The layer checks the values too, but a flag's name says more.
  if (o.batch_renorm && !(o.renorm_rmax >= 1.0f && o.renorm_dmax >= 0.0f && o.renorm_warmup >= 0))
    throw Error("--renorm-rmax must be >= 1, --renorm-dmax >= 0 and --renorm-warmup >= 0");
  if (o.virtual_batch_size < 0) throw Error("--virtual-batch-size must be >= 0 (0: the whole batch)");
  if (o.checkpoint_every < 0) throw Error("--checkpoint-every must be >= 0 (0 = no checkpoints)");
  const BnFreeze freeze = parse_bn_freeze(o.freeze_bn);
  if (freeze != BnFreeze::none && o.no_running_stats)
    throw Error("--freeze-bn normalizes with the running statistics; it cannot go with --no-running-stats");
  // Weight decay moves a parameter even when its gradient is zero.
  if (freeze == BnFreeze::all && o.weight_decay > 0.0f)
    throw Error(
        "--freeze-bn all fixes gamma and beta, but --weight-decay would still shrink them; drop one of the two");
}

BatchNormOptions batchnorm_options(const TrainOptions& o) {
  BatchNormOptions bn_options;
  bn_options.freeze = parse_bn_freeze(o.freeze_bn);
  bn_options.eps = o.eps;
  bn_options.momentum = o.bn_cumulative ? std::nullopt : std::optional<float>(o.bn_momentum);
  bn_options.unbiased_running_var = o.bn_running_var == "unbiased";
  bn_options.scale = !o.no_affine && o.bn_scale == "on";
  bn_options.center = !o.no_affine && o.bn_center == "on";
  bn_options.track_running_stats = !o.no_running_stats;
  bn_options.renorm = {o.batch_renorm, o.renorm_rmax, o.renorm_dmax, o.renorm_warmup};
  bn_options.virtual_batch_size = o.virtual_batch_size;
  return bn_options;
}

// What the run starts from: a checkpoint, a model to fine-tune (--init), or
// neither (fresh parameters).
struct StartingPoint {
  std::optional<Checkpoint> checkpoint;
  std::optional<LoadedModel> init;
  // Without --arch or --layers a fine-tuning run keeps the initial model's
  // network as it is; decided before the defaults fill in --layers.
  bool init_arch = false;
};

// The network the options describe, checked against the data's outputs.
Model build_network(const TrainOptions& o, const StartingPoint& start, const Dataset& train) {
  const BatchNormOptions bn_options = batchnorm_options(o);
  if (start.init_arch && (o.batch_renorm || o.virtual_batch_size > 0))
    throw Error(
        "--batch-renorm and --virtual-batch-size build new batch-norm layers: with --init give --arch or --layers "
        "(matching tensors are still loaded)");
  const BnPlacement placement = parse_bn_placement(o.bn);
  const std::string& arch = o.arch;
  Model built = start.init_arch
                    ? (start.checkpoint
                           ? Model::from_architecture(start.checkpoint->model.model.architecture())
                           : Model::from_architecture(frozen_as(start.init->model.architecture(), bn_options.freeze)))
                : arch.empty() ? mlp_from_widths(o, train, placement, bn_options)
                               : Model::from_architecture(parse_arch(arch, train.example_shape, placement, bn_options));
  if (built.output_shape() != Shape{train.outputs()})
    throw Error("the network ends with outputs " + shape_str(built.output_shape()) + " but the data has " +
                std::to_string(train.outputs()) + (train.task == Task::classify ? " classes" : " targets") +
                (arch.empty() ? "; end --layers with " : "; end --arch with fc:") + std::to_string(train.outputs()));
  return built;
}

// The model's starting parameters and the input (and target) normalization:
// the checkpoint's, or fresh ones with --init's tensors loaded over them.
Preprocessing initialize(Model& built, const TrainOptions& o, StartingPoint& start, const Dataset& train,
                         const std::string& resume_path) {
  if (start.checkpoint) {
    // The checkpoint's model must be the one its configuration describes.
    if (built.architecture() != start.checkpoint->model.model.architecture())
      fail_file(resume_path, "the checkpoint's architecture does not match its configuration");
    return start.checkpoint->model.preprocessing();
  }
  Rng init_rng(init_rng_seed(o.seed));
  built.init_parameters(init_rng);
  if (!start.init) return Preprocessing(InputNormalization::fit(train, o.input_norm), TargetNormalization::fit(train));
  Preprocessing norm = initial_preprocessing(*start.init, o.init, train, o.input_norm);
  load_matching_tensors(built, start.init->model, o.init, o.json ? stderr : stdout);
  return norm;
}

std::unique_ptr<Optimizer> optimizer_for_run(const TrainOptions& o, const std::optional<Checkpoint>& checkpoint,
                                             Model& model, const std::string& resume_path) {
  auto optimizer = make_optimizer(o.optimizer, o.lr, o.momentum, o.weight_decay);
  if (!checkpoint) return optimizer;
  if (checkpoint->optimizer_name != optimizer->name())
    fail_file(resume_path, "checkpoint holds " + checkpoint->optimizer_name + " state but its configuration says " +
                               optimizer->name());
  try {
    optimizer->import_state(checkpoint->optimizer_state, model.parameters().size());
  } catch (const Error& e) {
    fail_file(resume_path, e.what());
  }
  return optimizer;
}

// How the model was trained, stored in the model file (informational).
nlohmann::json training_metadata(const TrainOptions& o, const TrainingData& data, const Cluster& cluster) {
  nlohmann::json training = {{"epochs", o.epochs},
                             {"arch", o.arch},
                             {"batch_size", o.batch_size},
                             {"lr", o.lr},
                             {"optimizer", o.optimizer},
                             {"momentum", o.momentum},
                             {"weight_decay", o.weight_decay},
                             {"seed", o.seed},
                             {"train_size", data.train.count},
                             {"bn", o.bn},
                             {"data", data_description(o.data)},
                             {"task", task_name(data.train.task)}};
  if (!o.init.empty()) training["init"] = o.init;
  if (parse_bn_freeze(o.freeze_bn) != BnFreeze::none) training["freeze_bn"] = o.freeze_bn;
  if (!data.validation.is_null()) training["validation"] = data.validation;
  if (cluster.dist) {
    training["processes"] = cluster.size;
    training["bn_sync"] = o.bn_sync;
  }
  return training;
}

// Ranks started with different options would disagree at the first step, or
// wait forever for one another: refuse before that.
void check_ranks_agree(const nlohmann::json& config, const TrainOptions& o, const Cluster& cluster) {
  if (!cluster.dist) return;
  const std::string text = config.dump() + " " + o.bn_sync;
  const std::vector<std::uint64_t> all =
      cluster.dist->allgather(fingerprint({reinterpret_cast<const unsigned char*>(text.data()), text.size()}));
  for (std::size_t r = 1; r < all.size(); ++r)
    if (all[r] != all[0])
      throw Error("rank " + std::to_string(r) +
                  " was started with different training options than rank 0; "
                  "every rank must run the same command");
}

// What the run is about to do. Rank 0 speaks for the run; the other ranks
// print only their own errors.
void print_run_summary(const TrainOptions& cli, const TrainOptions& o, const std::optional<Checkpoint>& checkpoint,
                       const TrainingData& data, const Cluster& cluster, int threads) {
  const Dataset& train = data.train;
  const Dataset& test = data.test;
  std::FILE* const say = cluster.root() ? (o.json ? stderr : stdout) : nullptr;
  if (checkpoint && say)
    std::fprintf(say, "resuming %s at epoch %lld, batch %lld (global step %lld), with the configuration stored in it\n",
                 cli.resume.c_str(), static_cast<long long>(checkpoint->position.epoch),
                 static_cast<long long>(checkpoint->position.batch),
                 static_cast<long long>(checkpoint->position.global_step));
  if (say) {
    // The task and the rule that chose it, on stderr under --json so stdout stays JSON.
    if (o.data.tables())
      std::fprintf(say, "data %s: %lld examples of %s, task %s (%s)%s\n", data_description(o.data).c_str(),
                   static_cast<long long>(train.count + test.count), shape_str(train.example_shape).c_str(),
                   task_name(train.task), data.task_rule.c_str(), class_summary(train).c_str());
    if (!data.validation.is_null())
      std::fprintf(say, "held out %lld of %lld examples (--val-fraction %g, seed %llu) as the test set\n",
                   static_cast<long long>(test.count), static_cast<long long>(train.count + test.count),
                   data.validation.at("fraction").get<double>(), static_cast<unsigned long long>(o.seed));
  }
  if (!o.json && cluster.root()) {
    std::printf("training %s on %lld examples (test %lld), bn %s, %s lr %g, batch %lld, %lld epochs\n",
                o.arch.empty() ? o.layers.c_str() : expand_named_arch(o.arch).c_str(),
                static_cast<long long>(train.count), static_cast<long long>(test.count), o.bn.c_str(),
                o.optimizer.c_str(), static_cast<double>(o.lr), static_cast<long long>(o.batch_size),
                static_cast<long long>(o.epochs));
  }
  if (!o.json && cluster.dist && cluster.root())
    std::printf(
        "distributed: %d processes (%d on this machine), %lld examples per batch split into shares of %lld-%lld, "
        "bn-sync %s, %d threads per process\n",
        cluster.size, cluster.local_size, static_cast<long long>(o.batch_size),
        static_cast<long long>(o.batch_size / cluster.size),
        static_cast<long long>((o.batch_size + cluster.size - 1) / cluster.size), o.bn_sync.c_str(), threads);
  std::fflush(stdout);
}

TrainConfig trainer_config(const TrainOptions& o, const Cluster& cluster) {
  TrainConfig tc;
  tc.dist = cluster.dist;
  tc.sync_batch_stats = o.bn_sync == "global";
  tc.epochs = o.epochs;
  tc.batch_size = o.batch_size;
  tc.seed = o.seed;
  tc.on_nan = o.on_nan == "skip-batch" ? OnNan::skip_batch : OnNan::stop;
  return tc;
}

// After each epoch: the model file saved (rank 0, at most every few seconds)
// and the epoch's line printed, as text or JSON.
class EpochOutput {
 public:
  EpochOutput(const TrainOptions& o, const Cluster& cluster, ProgressBar& bar, Model& model, const Preprocessing& norm,
              const nlohmann::json& training, const ModelTask& task)
      : o_(o), cluster_(cluster), bar_(bar), model_(model), norm_(norm), training_(training), task_(task) {}

  void operator()(const EpochReport& r) {
    bar_.clear();
    completed_epoch_ = r.epoch;
    // A non-finite metric would print as null in JSON; with finite parameters
    // it means the evaluation itself overflowed, which is a fault too.
    for (const double v : {r.train_loss, r.train_accuracy, r.test_loss, r.test_accuracy, r.test_rmse, r.test_r2})
      if (!std::isfinite(v))
        throw NumericFault("epoch " + std::to_string(r.epoch) + " ended with a non-finite loss or accuracy");
    if (!cluster_.root()) return;
    // Saved atomically at the end of an epoch, so a run killed later keeps it;
    // but not more often than every few seconds: a small table's 200 short
    // epochs spent most of their time in fsync.
    if (r.epoch == o_.epochs || std::chrono::steady_clock::now() - last_save_ >= kMinSaveInterval) {
      save_model(o_.out, model_, norm_, training_, task_);
      last_save_ = std::chrono::steady_clock::now();
      saved_epoch_ = r.epoch;
    }
    if (o_.json)
      print_json(r);
    else
      print_text(r);
    std::fflush(stdout);
  }

  // What the files on disk hold after a fault: they are from before it
  // (save_model refuses non-finite values, and nothing was written after it).
  std::string files_kept(const std::string& checkpoint_path) const {
    const std::string kept = saved_epoch_ == completed_epoch_
                                 ? " keeps the last completed epoch's model"
                                 : " keeps epoch " + std::to_string(saved_epoch_) + "'s model (saved every " +
                                       std::to_string(kMinSaveInterval.count()) + " s at most)";
    return o_.out + kept + (o_.checkpoint_every > 0 ? " and " + checkpoint_path + " the last checkpoint" : "");
  }

 private:
  void print_json(const EpochReport& r) const {
    nlohmann::json line = {{"epoch", r.epoch},         {"train_loss", r.train_loss},
                           {"test_loss", r.test_loss}, {"samples_per_s", r.samples_per_s},
                           {"seconds", r.seconds},     {"skipped_batches", r.skipped_batches}};
    if (r.task == Task::classify) {
      line["train_accuracy"] = r.train_accuracy;
      line["test_accuracy"] = r.test_accuracy;
    } else {
      line["test_rmse"] = r.test_rmse;
      line["test_mae"] = r.test_mae;
      line["test_r2"] = r.test_r2;
    }
    std::printf("%s\n", line.dump().c_str());
  }

  void print_text(const EpochReport& r) const {
    const std::string metrics =
        r.task == Task::classify
            ? format("train_loss %.4f  train_acc %.4f  test_loss %.4f  test_acc %.4f", r.train_loss, r.train_accuracy,
                     r.test_loss, r.test_accuracy)
            : format("train_loss %.4f  test_loss %.4f  test_rmse %.4g  test_mae %.4g  test_r2 %.4f", r.train_loss,
                     r.test_loss, r.test_rmse, r.test_mae, r.test_r2);
    std::printf("epoch %lld/%lld  %s  %.0f samples/s  %.1fs%s\n", static_cast<long long>(r.epoch),
                static_cast<long long>(o_.epochs), metrics.c_str(), r.samples_per_s, r.seconds,
                r.skipped_batches ? ("  skipped " + std::to_string(r.skipped_batches) + " batches").c_str() : "");
  }

  const TrainOptions& o_;
  const Cluster& cluster_;
  ProgressBar& bar_;
  Model& model_;
  const Preprocessing& norm_;
  const nlohmann::json& training_;
  const ModelTask& task_;
  std::chrono::steady_clock::time_point last_save_ = std::chrono::steady_clock::now();
  std::int64_t saved_epoch_ = 0, completed_epoch_ = 0;
};

// The library names what went wrong; the tool says which of its flags helps.
std::string fault_advice(const NumericFault& e) {
  switch (e.cause()) {
    case NumericFault::Cause::diverged_update:
      return " (try a lower --lr)";
    case NumericFault::Cause::non_finite_step:
      return " (try a lower --lr, or --on-nan skip-batch)";
    case NumericFault::Cause::every_batch_skipped:
      return " (try a lower --lr)";
    case NumericFault::Cause::other:
      break;
  }
  return "";
}

void run_train(const TrainOptions& cli, const Cluster& cluster) {
  const int threads = threads_per_rank(cli.threads, cluster);
  apply_threads(threads);
  StartingPoint start;
  if (!cli.resume.empty()) start.checkpoint = load_checkpoint(cli.resume);
  TrainOptions o = options_for_run(cli, start.checkpoint);
  check_option_values(o);
  // Only rank 0 writes files.
  if (cluster.root()) check_output_writable(o.out);
  const std::string checkpoint_path = o.checkpoint.empty() ? o.out + ".ckpt" : o.checkpoint;
  if (o.checkpoint_every > 0 && cluster.root()) check_output_writable(checkpoint_path);
  start.init_arch = !o.init.empty() && o.arch.empty() && o.layers.empty();
  if (!o.init.empty() && !start.checkpoint) start.init = load_model(o.init);
  if (start.init && !o.explicit_flags.count("input-norm")) o.input_norm = "init";

  TrainingData data = load_training_data(o.data, o.seed);
  Dataset& train = data.train;
  Dataset& test = data.test;
  if (o.train_size > 0) train.truncate(o.train_size);
  if (o.test_size > 0) test.truncate(o.test_size);
  resolve_data_defaults(o, train);
  if (start.init_arch) o.layers.clear();  // the network is the initial model's, whatever the defaults say
  Model built = build_network(o, start, train);
  const Preprocessing norm = initialize(built, o, start, train, cli.resume);
  Model model = start.checkpoint ? std::move(start.checkpoint->model.model) : std::move(built);
  const auto optimizer = optimizer_for_run(o, start.checkpoint, model, cli.resume);
  const nlohmann::json training = training_metadata(o, data, cluster);
  const nlohmann::json config = config_json(o);
  check_ranks_agree(config, o, cluster);
  print_run_summary(cli, o, start.checkpoint, data, cluster, threads);

  // With --json, stdout carries only JSON; the bar then goes to a terminal on stderr.
  ProgressBar bar(o.json || !cluster.root() ? stderr : stdout);
  Trainer trainer(model, *optimizer, norm, trainer_config(o, cluster));
  if (start.checkpoint) {
    trainer.resume_from(start.checkpoint->position);
    try {
      trainer.check_resume(train);
    } catch (const Error& e) {
      fail_file(cli.resume, e.what());
    }
  }
  if (o.checkpoint_every > 0)
    trainer.on_checkpoint(o.checkpoint_every, [&](const TrainPosition& p) {
      if (cluster.root()) save_checkpoint(checkpoint_path, model, norm, training, config, *optimizer, p, data.task);
    });
  trainer.on_skipped_batch([&](const std::string& what) {
    if (!cluster.root()) return;
    bar.clear();
    std::fprintf(stderr, "bnorm: warning: %s\n", what.c_str());
  });
  EpochOutput on_epoch(o, cluster, bar, model, norm, training, data.task);
  try {
    trainer.fit(
        train, test,
        [&](const Progress& p) {
          // Under mpirun a rank's stdout looks like a terminal but lands in a log: no bar there.
          if (!cluster.dist) bar.update(p);
        },
        std::ref(on_epoch));
  } catch (const NumericFault& e) {
    bar.clear();
    throw NumericFault(std::string(e.what()) + fault_advice(e) + "; " + on_epoch.files_kept(checkpoint_path),
                       e.cause());
  }
  if (!cluster.root()) return;
  if (o.epochs == 0) save_model(o.out, model, norm, training, data.task);
  if (!o.json) std::printf("saved %s (test metrics above use running statistics)\n", o.out.c_str());
}

// --distributed: MPI for the length of the run. Any failure on any rank ends
// every rank (MPI_Abort) with the message, rather than leaving the others
// blocked in the next collective.
void run_train_distributed(const TrainOptions& o) {
#ifdef BNORM_HAVE_MPI
  dist::MpiSession mpi(nullptr, nullptr);
  try {
    run_train(o, Cluster{&mpi.world(), mpi.rank(), mpi.size(), mpi.local_size()});
  } catch (const std::bad_alloc&) {
    mpi.abort("out of memory", 1);
  } catch (const std::exception& e) {
    mpi.abort(e.what(), 1);
  }
#else
  (void)o;
  throw Error(
      "--distributed: this bnorm was built without MPI, so distributed training is off; install "
      "openmpi-bin and libopenmpi-dev (Debian) and rebuild with scripts/setup.sh");
#endif
}

}  // namespace

Runner add_train_command(CLI::App& app) {
  auto o = std::make_shared<TrainOptions>();
  CLI::App* cmd = app.add_subcommand("train",
                                     "Train a network with batch norm (Fashion-MNIST by default, or your CSV or "
                                     "NumPy data); evaluates on the test set with running statistics after "
                                     "every epoch");
  add_training_data_flags(cmd, o->data);
  auto* layers = cmd->add_option(
      "--layers", o->layers, "MLP layer widths, input to output (default: <features>,256,256,<classes or targets>)");
  auto* arch =
      cmd->add_option("--arch", o->arch,
                      "Network in one line instead of --layers: 'cnn' (the default CNN), 'mlp', or tokens like "
                      "conv3x3:32,bn,relu,maxpool2,conv3x3:64,bn,relu,maxpool2,flatten,fc:10 (see docs/cli.md)");
  auto* arch_file =
      cmd->add_option("--arch-file", o->arch_file, "Read the --arch tokens from a file (# comments allowed)");
  arch->excludes(layers);
  arch->excludes(arch_file);
  arch_file->excludes(layers);
  cmd->add_option("--bn", o->bn, "Batch norm in each hidden block: before the activation, after it, or none")
      ->check(CLI::IsMember({"before", "after", "none"}))
      ->capture_default_str();
  cmd->add_option("--activation", o->activation, "Hidden activation")
      ->check(CLI::IsMember({"relu", "tanh", "sigmoid"}))
      ->capture_default_str();
  cmd->add_option("--epochs", o->epochs,
                  "Passes over the training set (default: 5 for IDX images; for --train tables enough for about 1000 "
                  "steps, 5 to 200)");
  cmd->add_option("--batch-size", o->batch_size, "Examples per mini-batch (>= 2)")->capture_default_str();
  cmd->add_option("--lr", o->lr, "Learning rate")->capture_default_str();
  cmd->add_option("--optimizer", o->optimizer, "sgd (with --momentum) or adam")
      ->check(CLI::IsMember({"sgd", "adam"}))
      ->capture_default_str();
  cmd->add_option("--momentum", o->momentum, "SGD momentum: v = momentum*v + g; p -= lr*v")->capture_default_str();
  cmd->add_option("--weight-decay", o->weight_decay, "L2 penalty added to every gradient")->capture_default_str();
  cmd->add_option("--bn-momentum", o->bn_momentum,
                  "Weight of each new batch in the running statistics: running = (1-m)*running + m*batch "
                  "(PyTorch's convention; an EWA with beta = 1-m; Keras' 0.99 is 0.01 here)")
      ->capture_default_str();
  cmd->add_flag("--bn-cumulative", o->bn_cumulative,
                "Running statistics as the plain average of all batches (factor 1/num_batches) instead of the EWA");
  cmd->add_option("--bn-running-var", o->bn_running_var,
                  "unbiased: running variance uses var*m/(m-1) (PyTorch); biased: the batch variance as normalized")
      ->check(CLI::IsMember({"unbiased", "biased"}))
      ->capture_default_str();
  cmd->add_option("--eps", o->eps,
                  "Added to the variance inside the square root (batch norm, and the gn and ln layers of --arch)")
      ->capture_default_str();
  cmd->add_flag("--no-affine", o->no_affine,
                "No learned gamma/beta (fixed at 1 and 0): --bn-scale off --bn-center off");
  cmd->add_option("--bn-scale", o->bn_scale, "Batch norm learns gamma (Keras' scale); off fixes it at 1")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  cmd->add_option("--bn-center", o->bn_center, "Batch norm learns beta (Keras' center); off fixes it at 0")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  cmd->add_flag("--no-running-stats", o->no_running_stats,
                "Keep no running statistics; evaluation then normalizes with batch statistics");
  cmd->add_option("--input-norm", o->input_norm,
                  "Input standardization with the training set's statistics: auto (pixel for IDX images, feature for "
                  "tables), pixel or feature (a mean/std per input value), global (one for all), channel (one per "
                  "channel of (C, H, W) examples) or none")
      ->check(CLI::IsMember({"auto", "global", "pixel", "feature", "channel", "none"}))
      ->capture_default_str();
  cmd->add_option("--init", o->init,
                  "Fine-tune: start from this model file's weights and running statistics (and its input "
                  "normalization unless --input-norm is given). Without --arch/--layers its network is kept; with "
                  "them, tensors matching by name and shape are loaded and the rest start fresh");
  cmd->add_option("--freeze-bn", o->freeze_bn,
                  "stats: batch norm normalizes with its running statistics while training and does not update them "
                  "(gamma, beta still learn); all: gamma and beta fixed too; none: ordinary batch norm. Stored in the "
                  "model's architecture")
      ->check(CLI::IsMember({"none", "stats", "all"}))
      ->capture_default_str();
  cmd->add_flag("--batch-renorm", o->batch_renorm,
                "Batch Renormalization (Ioffe 2017): training normalizes with the batch statistics corrected towards "
                "the running ones by r = sigma_B/sigma in [1/rmax, rmax] and d = (mean_B - mean)/sigma in "
                "[-dmax, dmax], constants in the backward pass; evaluation as plain batch norm. Stored in the model");
  cmd->add_option("--renorm-rmax", o->renorm_rmax, "Batch Renormalization: the limit of r once warmed up (>= 1)")
      ->capture_default_str();
  cmd->add_option("--renorm-dmax", o->renorm_dmax, "Batch Renormalization: the limit of d once warmed up (>= 0)")
      ->capture_default_str();
  cmd->add_option("--renorm-warmup", o->renorm_warmup,
                  "Batch Renormalization warm-up W in steps, the paper's schedule scaled: plain batch norm for W/8 "
                  "steps, then rmax rises linearly from 1 (reached at step W) and dmax from 0 (reached at 5W/8)")
      ->capture_default_str();
  cmd->add_option("--virtual-batch-size", o->virtual_batch_size,
                  "Ghost batch norm (Hoffer et al. 2017): normalize each slice of V examples of a mini-batch with its "
                  "own statistics while training (the last slice takes the remainder); 0 = the whole mini-batch. "
                  "Stored in the model")
      ->capture_default_str();
  cmd->add_option("--seed", o->seed,
                  "Seed for initialization and shuffling (same seed, machine and threads: same bits)")
      ->capture_default_str();
  cmd->add_option(
         "--threads", o->threads,
         "Threads for the loops and matrix products (0 = one per core; with --distributed: per rank, 0 = the rank's "
         "bound cores, at most this machine's cores divided among its ranks)")
      ->capture_default_str();
  cmd->add_option("--train-size", o->train_size, "Use only the first N training examples (0 = all; after any hold-out)")
      ->capture_default_str();
  cmd->add_option("--test-size", o->test_size, "Use only the first N test examples (0 = all)")->capture_default_str();
  cmd->add_option("--out", o->out, "Model file to write (safetensors, loadable by PyTorch); saved after every epoch")
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "One JSON object per epoch on stdout, nothing else");
  cmd->add_option("--on-nan", o->on_nan,
                  "On a non-finite loss or gradient: stop (exit 1, naming the step and layer; files on disk keep the "
                  "last good state) or skip-batch (drop that batch's update and its running-statistics update)")
      ->check(CLI::IsMember({"stop", "skip-batch"}))
      ->capture_default_str();
  cmd->add_option("--checkpoint-every", o->checkpoint_every,
                  "Write a checkpoint (model, optimizer state, data order, RNG) every N training steps (0 = never)")
      ->capture_default_str();
  cmd->add_option("--checkpoint", o->checkpoint, "Checkpoint file, written atomically (default: <out>.ckpt)");
  cmd->add_option("--resume", o->resume,
                  "Continue from a checkpoint; the configuration comes from it (conflicting flags are refused, "
                  "--epochs may change) and the result is bit-identical to an uninterrupted run");
  cmd->add_flag("--distributed", o->distributed,
                "Data-parallel training under mpirun: each of the K processes takes a share of every --batch-size "
                "batch, gradients are summed once per step, rank 0 prints and writes files (see docs/distributed.md)");
  cmd->add_option("--bn-sync", o->bn_sync,
                  "With --distributed: global normalizes with the whole batch's statistics (synchronized batch norm); "
                  "local with each process's share alone (PyTorch DDP's default)")
      ->check(CLI::IsMember({"global", "local"}))
      ->capture_default_str();
  return [o, cmd] {
    for (const CLI::Option* opt : cmd->get_options())
      if (opt->count() > 0)
        for (const std::string& name : opt->get_lnames()) o->explicit_flags.insert(name);
    if (o->explicit_flags.count("bn-sync") && !o->distributed) throw Error("--bn-sync applies only with --distributed");
    if (o->distributed)
      run_train_distributed(*o);
    else
      run_train(*o, Cluster{});
  };
}

}  // namespace bnorm::cli

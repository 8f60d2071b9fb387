#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "bnorm/error.hpp"
#include "bnorm/io/dataset.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/nn/arch.hpp"
#include "bnorm/train/trainer.hpp"
#include "commands.hpp"
#include "progress.hpp"

namespace bnorm::cli {
namespace {

struct TrainOptions {
  std::string data = kDefaultDataDir;
  std::string layers = "784,256,256,10";
  std::string arch;       // overrides layers when set
  std::string arch_file;  // the same, read from a file
  std::string bn = "before";
  std::string activation = "relu";
  std::int64_t epochs = 5;
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
  bool no_running_stats = false;
  std::string input_norm = "pixel";
  std::uint64_t seed = 0;
  int threads = 0;
  std::int64_t train_size = 0;
  std::int64_t test_size = 0;
  std::string out = "model.safetensors";
  bool json = false;
};

std::vector<std::int64_t> parse_widths(const std::string& text) {
  std::vector<std::int64_t> widths;
  const char* p = text.data();
  const char* end = p + text.size();
  while (p < end) {
    std::int64_t v = 0;
    auto [next, ec] = std::from_chars(p, end, v);
    if (ec != std::errc() || v <= 0 || v > (1 << 24))
      throw Error("--layers: '" + text + "' must be comma-separated positive widths, e.g. 784,256,256,10");
    widths.push_back(v);
    p = next;
    if (p < end && *p++ != ',') throw Error("--layers: '" + text + "' must be separated by commas");
  }
  if (widths.size() < 2) throw Error("--layers: needs at least an input and an output width");
  return widths;
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

Model mlp_from_widths(const TrainOptions& o, const ImageDataset& train, BnPlacement placement,
                      const BatchNormOptions& bn_options) {
  MlpSpec spec;
  spec.widths = parse_widths(o.layers);
  spec.bn = placement;
  spec.activation = parse_activation(o.activation);
  spec.bn_options = bn_options;
  if (spec.widths.front() != train.features)
    throw Error("--layers starts with " + std::to_string(spec.widths.front()) + " inputs but the images have " +
                std::to_string(train.features) + " pixels");
  return Model(Shape{train.features}, build_mlp_layers(spec));
}

std::string read_arch_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail_file(path, "cannot open the architecture file");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > 100000) fail_file(path, "architecture file is larger than 100 kB");
  return text;
}

void run_train(const TrainOptions& o) {
  apply_threads(o.threads);
  if (o.epochs < 0 || o.epochs > 100000) throw Error("--epochs must be in 0..100000");
  if (o.batch_size < 2) throw Error("--batch-size must be at least 2 (batch norm needs a spread to normalize)");
  if (o.train_size < 0 || o.test_size < 0) throw Error("--train-size and --test-size must be >= 0");
  if (!(o.bn_momentum >= 0.0f && o.bn_momentum <= 1.0f)) throw Error("--bn-momentum must be in [0, 1]");
  if (!(o.eps > 0.0f)) throw Error("--eps must be > 0");
  check_output_writable(o.out);

  BatchNormOptions bn_options;
  bn_options.eps = o.eps;
  bn_options.momentum = o.bn_cumulative ? std::nullopt : std::optional<float>(o.bn_momentum);
  bn_options.unbiased_running_var = o.bn_running_var == "unbiased";
  bn_options.affine = !o.no_affine;
  bn_options.track_running_stats = !o.no_running_stats;
  const BnPlacement placement = parse_bn_placement(o.bn);
  std::string arch = o.arch;
  if (!o.arch_file.empty()) arch = read_arch_file(o.arch_file);

  ImageDataset train = load_fashion_mnist(o.data, Split::train);
  ImageDataset test = load_fashion_mnist(o.data, Split::test);
  if (o.train_size > 0) train.truncate(o.train_size);
  if (o.test_size > 0) test.truncate(o.test_size);
  Model model = arch.empty() ? mlp_from_widths(o, train, placement, bn_options)
                             : Model::from_architecture(parse_arch(arch, {1, train.rows, train.cols}, placement, bn_options));
  if (model.output_shape() != Shape{kNumClasses})
    throw Error("the network ends with outputs " + shape_str(model.output_shape()) + " but there are " +
                std::to_string(kNumClasses) + " classes");

  const InputNormalization norm = InputNormalization::fit(train, o.input_norm);
  Rng init_rng(init_rng_seed(o.seed));
  model.init_parameters(init_rng);
  auto optimizer = make_optimizer(o.optimizer, o.lr, o.momentum, o.weight_decay);

  const nlohmann::json training = {{"epochs", o.epochs},   {"arch", arch},   {"batch_size", o.batch_size}, {"lr", o.lr},
                                   {"optimizer", o.optimizer}, {"momentum", o.momentum},
                                   {"weight_decay", o.weight_decay}, {"seed", o.seed},
                                   {"train_size", train.count},  {"bn", o.bn}, {"data", o.data}};
  if (!o.json)
    std::printf("training %s on %lld examples (test %lld), bn %s, %s lr %g, batch %lld, %lld epochs\n",
                arch.empty() ? o.layers.c_str() : expand_named_arch(arch).c_str(), static_cast<long long>(train.count), static_cast<long long>(test.count),
                o.bn.c_str(), o.optimizer.c_str(), static_cast<double>(o.lr), static_cast<long long>(o.batch_size),
                static_cast<long long>(o.epochs));
  std::fflush(stdout);

  // With --json, stdout carries only JSON; the bar then goes to a terminal on stderr.
  ProgressBar bar(o.json ? stderr : stdout);
  TrainConfig config;
  config.epochs = o.epochs;
  config.batch_size = o.batch_size;
  config.seed = o.seed;
  Trainer trainer(model, *optimizer, norm, config);
  trainer.fit(
      train, test, [&](const Progress& p) { bar.update(p); },
      [&](const EpochReport& r) {
        bar.clear();
        // Saved every epoch, atomically: a run killed later keeps this epoch's model.
        save_model(o.out, model, norm, training);
        if (o.json) {
          std::printf("%s\n", nlohmann::json{{"epoch", r.epoch},
                                             {"train_loss", r.train_loss},
                                             {"train_accuracy", r.train_accuracy},
                                             {"test_loss", r.test_loss},
                                             {"test_accuracy", r.test_accuracy},
                                             {"samples_per_s", r.samples_per_s},
                                             {"seconds", r.seconds}}
                                  .dump()
                                  .c_str());
        } else {
          std::printf("epoch %lld/%lld  train_loss %.4f  train_acc %.4f  test_loss %.4f  test_acc %.4f  %.0f samples/s  %.1fs\n",
                      static_cast<long long>(r.epoch), static_cast<long long>(o.epochs), r.train_loss,
                      r.train_accuracy, r.test_loss, r.test_accuracy, r.samples_per_s, r.seconds);
        }
        std::fflush(stdout);
      });
  if (o.epochs == 0) save_model(o.out, model, norm, training);
  if (!o.json) std::printf("saved %s (test metrics above use running statistics)\n", o.out.c_str());
}

}  // namespace

Runner add_train_command(CLI::App& app) {
  auto o = std::make_shared<TrainOptions>();
  CLI::App* cmd = app.add_subcommand("train", "Train an MLP with batch norm on Fashion-MNIST; evaluates on the test set "
                                              "with running statistics after every epoch");
  cmd->add_option("--data", o->data, "Directory with the IDX files (train-images-idx3-ubyte.gz, ...)")->capture_default_str();
  auto* layers = cmd->add_option("--layers", o->layers, "MLP layer widths, input to output")->capture_default_str();
  auto* arch = cmd->add_option("--arch", o->arch,
                  "Network in one line instead of --layers: 'cnn' (the default CNN), 'mlp', or tokens like "
                  "conv3x3:32,bn,relu,maxpool2,conv3x3:64,bn,relu,maxpool2,flatten,fc:10 (see README)");
  auto* arch_file = cmd->add_option("--arch-file", o->arch_file, "Read the --arch tokens from a file (# comments allowed)");
  arch->excludes(layers);
  arch->excludes(arch_file);
  arch_file->excludes(layers);
  cmd->add_option("--bn", o->bn, "Batch norm in each hidden block: before the activation, after it, or none")
      ->check(CLI::IsMember({"before", "after", "none"}))
      ->capture_default_str();
  cmd->add_option("--activation", o->activation, "Hidden activation")
      ->check(CLI::IsMember({"relu", "tanh", "sigmoid"}))
      ->capture_default_str();
  cmd->add_option("--epochs", o->epochs, "Passes over the training set")->capture_default_str();
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
  cmd->add_option("--eps", o->eps, "Added to the variance inside the square root")->capture_default_str();
  cmd->add_flag("--no-affine", o->no_affine, "No learned gamma/beta (fixed at 1 and 0)");
  cmd->add_flag("--no-running-stats", o->no_running_stats,
                "Keep no running statistics; evaluation then normalizes with batch statistics");
  cmd->add_option("--input-norm", o->input_norm,
                  "Input normalization from the training set: one mean/std for all pixels, or one per pixel")
      ->check(CLI::IsMember({"global", "pixel"}))
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed for initialization and shuffling (same seed, machine and threads: same bits)")
      ->capture_default_str();
  cmd->add_option("--threads", o->threads, "Threads for the matrix products (0 = one per core)")->capture_default_str();
  cmd->add_option("--train-size", o->train_size, "Use only the first N training examples (0 = all)")->capture_default_str();
  cmd->add_option("--test-size", o->test_size, "Use only the first N test examples (0 = all)")->capture_default_str();
  cmd->add_option("--out", o->out, "Model file to write (safetensors, loadable by PyTorch); saved after every epoch")
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "One JSON object per epoch on stdout, nothing else");
  return [o] { run_train(*o); };
}

}  // namespace bnorm::cli

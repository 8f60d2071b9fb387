// bnorm: train, evaluate and use batch-normalized networks from the command line.
#include <charconv>
#include <cstdio>
#include <exception>
#include <thread>

#include "bnorm/error.hpp"
#include "bnorm/kernels/gemm.hpp"
#include "commands.hpp"

namespace bnorm::cli {

void apply_threads(int threads) {
  if (threads < 0) throw Error("--threads must be >= 0 (0 = one per core)");
  const unsigned cores = std::thread::hardware_concurrency();
  kernels::set_threads(threads > 0 ? threads : static_cast<int>(cores ? cores : 1));
}

std::vector<std::int64_t> parse_size_list(const std::string& flag, const std::string& text, char separator,
                                          const std::string& example) {
  const auto refuse = [&](const std::string& why) -> void {
    throw Error(flag + " '" + text + "': " + why + " (e.g. " + example + ")");
  };
  std::vector<std::int64_t> sizes;
  const char* p = text.data();
  const char* end = p + text.size();
  if (p == end) refuse("no sizes given");
  while (p < end) {
    std::int64_t v = 0;
    const auto [next, ec] = std::from_chars(p, end, v);
    if (ec != std::errc() || v <= 0 || v > (1 << 24)) refuse("sizes must be whole numbers from 1 to 16777216");
    sizes.push_back(v);
    p = next;
    if (p < end && *p++ != separator) refuse(std::string("separate the sizes with '") + separator + "'");
    if (p == end && *(p - 1) == separator) refuse("a size is missing after the last separator");
  }
  return sizes;
}

}  // namespace bnorm::cli

int main(int argc, char** argv) {
  CLI::App app{
      "bnorm: batch-normalized neural networks, trained and used on the CPU.\n"
      "Run 'bnorm train' with no flags to train the default network (an MLP with batch norm) on\n"
      "Fashion-MNIST, or give it --arch for a CNN and --train for your own CSV or NumPy data."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "bnorm 0.1.0");
  const auto train = bnorm::cli::add_train_command(app);
  const auto eval = bnorm::cli::add_eval_command(app);
  const auto predict = bnorm::cli::add_predict_command(app);
  const auto bench = bnorm::cli::add_bench_command(app);
  const auto fold = bnorm::cli::add_fold_command(app);
  const auto export_onnx = bnorm::cli::add_export_command(app);
  const auto import_onnx = bnorm::cli::add_import_command(app);
  const auto experiment = bnorm::cli::add_experiment_command(app);
  const auto recalibrate = bnorm::cli::add_recalibrate_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (app.got_subcommand("train")) train();
    if (app.got_subcommand("eval")) eval();
    if (app.got_subcommand("predict")) predict();
    if (app.got_subcommand("bench")) bench();
    if (app.got_subcommand("fold")) fold();
    if (app.got_subcommand("export")) export_onnx();
    if (app.got_subcommand("import")) import_onnx();
    if (app.got_subcommand("experiment")) experiment();
    if (app.got_subcommand("recalibrate")) recalibrate();
  } catch (const bnorm::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "bnorm: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fflush(stdout);
    std::fprintf(stderr, "bnorm: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "bnorm: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}

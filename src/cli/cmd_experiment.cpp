// bnorm experiment NAME|all: tests claims made for batch norm (Ioffe & Szegedy 2015)
// on Fashion-MNIST and writes CSV files, plots and a report per experiment.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "bnorm/error.hpp"
#include "commands.hpp"
#include "experiments.hpp"

namespace bnorm::cli {
namespace {

struct ExperimentOptions {
  std::string name;
  bool quick = false;
  std::string out = "reports";
  std::uint64_t seed = 0;
  int threads = 1;
  std::string data = kDefaultDataDir;
};

std::string command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()), out;
  for (const char c : all) out += c == '\0' ? ' ' : c;
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// reports/README.md: one line per experiment that has a report, with the
// verdict lines ("Claim ...") copied from it.
void write_index(const std::string& out) {
  std::ofstream index(out + "/README.md");
  index << "# Experiments\n\nEach folder holds a report written by `bnorm experiment NAME` (CSV data, PNG plots, "
           "report.md). The verdicts below are copied from the reports, which compute them from the measurements.\n";
  for (const auto& e : exp::experiments()) {
    std::ifstream report(out + "/" + e.name + "/report.md");
    if (!report) continue;
    index << "\n## [" << e.name << "](" << e.name << "/report.md)\n\n" << e.claim << ".\n\n";
    std::string line;
    while (std::getline(report, line))
      if (line.rfind("- Claim", 0) == 0) index << line << "\n";
  }
  if (!index) fail_file(out + "/README.md", "cannot write the index");
}

void run_experiments(const ExperimentOptions& o) {
  apply_threads(o.threads);
  std::vector<const exp::Experiment*> chosen;
  for (const auto& e : exp::experiments())
    if (o.name == "all" || o.name == e.name) chosen.push_back(&e);
  if (chosen.empty()) {
    std::string names;
    for (const auto& e : exp::experiments()) names += std::string(names.empty() ? "" : ", ") + e.name;
    throw Error("unknown experiment '" + o.name + "' (expected all, " + names + ")");
  }
  exp::require_gnuplot();
  exp::Context ctx;
  ctx.quick = o.quick;
  ctx.out_dir = o.out;
  ctx.seed = o.seed;
  ctx.threads = o.threads;
  ctx.command_line = command_line();
  ctx.train = load_fashion_mnist(o.data, IdxSplit::train);
  ctx.test = load_fashion_mnist(o.data, IdxSplit::test);
  for (const exp::Experiment* e : chosen) {
    const std::string dir = o.out + "/" + e->name;
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) fail_file(dir, "cannot create the directory: " + ec.message());
    std::printf("experiment %s%s -> %s/report.md\n", e->name, o.quick ? " (quick)" : "", dir.c_str());
    std::fflush(stdout);
    const auto start = std::chrono::steady_clock::now();
    const exp::Report report = e->run(ctx, dir);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    report.write(dir, ctx, seconds);
    for (const auto& c : report.conclusions()) std::printf("  - %s\n", c.c_str());
    std::printf("  done in %.1f s\n", seconds);
    std::fflush(stdout);
  }
  write_index(o.out);
}

}  // namespace

Runner add_experiment_command(CLI::App& app) {
  auto o = std::make_shared<ExperimentOptions>();
  CLI::App* cmd = app.add_subcommand("experiment",
                                     "Test claims made for batch norm (Ioffe & Szegedy 2015) on Fashion-MNIST: writes "
                                     "CSV data, PNG plots (gnuplot) and a "
                                     "report.md per experiment to OUT/NAME/");
  cmd->add_option("name", o->name,
                  "speed, covariate-shift, regularization, test-time, input-normalization, small-batch, or all")
      ->required();
  cmd->add_flag("--quick", o->quick, "Small variants (each well under two minutes), for tests");
  cmd->add_option("--out", o->out, "Directory for the reports")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed for initialization and shuffling")->capture_default_str();
  cmd->add_option("--threads", o->threads, "Threads for the matrix products (0 = one per core)")->capture_default_str();
  cmd->add_option("--data", o->data, "Directory with the Fashion-MNIST IDX files")->capture_default_str();
  return [o] { run_experiments(*o); };
}

}  // namespace bnorm::cli

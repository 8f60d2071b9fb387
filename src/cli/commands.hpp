#pragma once
// The bnorm tool's subcommands. Each registers its flags on the CLI11 app and
// runs after parsing; errors are thrown as bnorm::Error and reported by main.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace bnorm::cli {

using Runner = std::function<void()>;

Runner add_train_command(CLI::App& app);
Runner add_eval_command(CLI::App& app);
Runner add_predict_command(CLI::App& app);
Runner add_bench_command(CLI::App& app);
Runner add_fold_command(CLI::App& app);
Runner add_export_command(CLI::App& app);
Runner add_import_command(CLI::App& app);
Runner add_experiment_command(CLI::App& app);
Runner add_recalibrate_command(CLI::App& app);

// Threads for OpenBLAS (the only parallel code so far): 0 means one per core.
void apply_threads(int threads);

// A flag's list of sizes: positive whole numbers joined by separator
// ("784,256,10", "64x3x32x32"), each at most 2^24. Throws Error naming the
// flag and the text, with example as the form expected.
std::vector<std::int64_t> parse_size_list(const std::string& flag, const std::string& text, char separator,
                                          const std::string& example);

}  // namespace bnorm::cli

#pragma once
// The experiments behind `bnorm experiment`: each tests a claim made for
// batch norm (Ioffe & Szegedy 2015 and the common accounts of it), writes CSV files, PNG plots and report.md to
// <out>/<name>/, and states its conclusions from what it measured.
#include <string>
#include <vector>

#include "output.hpp"
#include "runs.hpp"

namespace bnorm::exp {

struct Experiment {
  const char* name;
  const char* claim;  // one line, for the index
  // Runs the experiment in dir (created by the caller) and returns its report.
  Report (*run)(const Context& ctx, const std::string& dir);
};
const std::vector<Experiment>& experiments();

Report run_speed(const Context& ctx, const std::string& dir);
Report run_covariate_shift(const Context& ctx, const std::string& dir);
Report run_regularization(const Context& ctx, const std::string& dir);
Report run_test_time(const Context& ctx, const std::string& dir);
Report run_input_normalization(const Context& ctx, const std::string& dir);
Report run_small_batch(const Context& ctx, const std::string& dir);

// Shared by the experiments that compare training curves: curves.csv (run,
// step, train_loss) and evals.csv (run, step, test_loss, test_accuracy).
void write_curves(const std::vector<RunResult>& runs, const std::string& dir);
// A loss and an accuracy figure for the named runs; returns the two PNG names.
std::vector<std::string> curve_figures(const std::vector<RunResult>& runs, const std::string& dir,
                                       const std::string& stem, const std::string& title);
// "diverged (loss NaN at step 40)", "0.861", ...: a run's outcome in words.
std::string outcome(const RunResult& r);

// The speed experiment's grid: one run per placement and optimizer setting.
struct SpeedRun {
  std::string placement;  // "before", "after", "none"
  std::string setting;    // "sgd lr 0.1", "adam lr 0.001"
  double sgd_lr = kNaN;   // the SGD learning rate; NaN for Adam
  RunResult result;
};
// Conclusions from the grid: divergence, steps to reach `threshold` test
// accuracy with and without BN, and the largest SGD rate each placement
// survives. Pure, so a test can feed it synthetic runs.
std::vector<std::string> speed_conclusions(const std::vector<SpeedRun>& runs, double threshold);

// The small-batch experiment: one training run per network, normalization
// and mini-batch size.
struct SmallBatchCell {
  std::string network;        // "MLP", "CNN"
  std::string normalization;  // "BN", "Batch Renorm", "Ghost BN", "GroupNorm", "LayerNorm", "none"
  std::int64_t batch = 0;
  bool bn_family = false;               // keeps running statistics that recalibration can replace
  double test_accuracy = kNaN;          // eval mode with the running averages (EMA); NaN when diverged
  double recalibrated_accuracy = kNaN;  // after exact recalibration; NaN outside the BN family or when diverged
  bool diverged = false;
  double gain() const { return recalibrated_accuracy - test_accuracy; }
};
// A normalization left out of the runs, and why (e.g. its layer is not built yet).
struct SkippedNormalization {
  std::string normalization, why;
};
// The verdicts on "BN degrades at small batches", "the alternatives hold up
// better at small batches than BN" and "recalibration helps most at small
// batches", per network, from the cells alone (a diverged run counts as
// chance accuracy). Pure, so a test can feed it synthetic cells.
std::vector<std::string> small_batch_conclusions(const std::vector<SmallBatchCell>& cells,
                                                 const std::vector<SkippedNormalization>& skipped);
// SGD learning rate at mini-batch size b: 0.05 at 64, scaled linearly with
// the batch (Goyal et al. 2017), capped at 0.05 for larger batches.
float small_batch_lr(std::int64_t batch);

}  // namespace bnorm::exp

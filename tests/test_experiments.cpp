// The computations behind `bnorm experiment` that its reports rest on: the
// CSV writer, the gnuplot script, the exact population statistics, and the
// conclusions drawn from measured numbers (fed synthetic ones here).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

#include "bnorm/error.hpp"
#include "bnorm/io/dataset.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "experiments.hpp"
#include "test_util.hpp"

namespace bnorm::test {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ExperimentCsv, QuotesFieldsAndRefusesRaggedRows) {
  const std::string path = (std::filesystem::temp_directory_path() / "bnorm_test_experiments.csv").string();
  {
    exp::CsvWriter csv(path, {"run", "value"});
    csv.row({"plain", exp::num(0.5)});
    csv.row({"with, comma", exp::num(std::nan(""))});
    csv.row({"say \"hi\"", exp::num(-INFINITY)});
    EXPECT_THROW(csv.row({"one field"}), Error);
    csv.close();
  }
  EXPECT_EQ(slurp(path), "run,value\nplain,0.5\n\"with, comma\",nan\n\"say \"\"hi\"\"\",-inf\n");
  std::filesystem::remove(path);
}

TEST(ExperimentPlot, ScriptSelectsRunsAndRefusesCommasInTheirNames) {
  exp::Figure f("a.png", "title", "step", "loss");
  f.logy = true;
  f.series.push_back({"curves.csv", "BN / lr 0.1", 2, 3, "BN"});
  const std::string gp = exp::gnuplot_script(f);
  EXPECT_NE(gp.find("set terminal pngcairo"), std::string::npos);
  EXPECT_NE(gp.find("strcol(1) eq 'BN / lr 0.1' ? column(3) : 1/0"), std::string::npos) << gp;
  EXPECT_NE(gp.find("set logscale y"), std::string::npos);
  f.series.push_back({"curves.csv", "BN, lr 0.1", 2, 3, "BN"});
  EXPECT_THROW(exp::gnuplot_script(f), Error);
}

// After the recomputation, each BN layer's running mean and variance equal
// the mean and biased variance of its input over the whole set, computed
// here directly from one eval-mode forward of all of it.
void check_population_statistics(const std::string& arch, const Shape& input) {
  const Dataset data = synthetic_images(333, 7);
  const InputNormalization norm = InputNormalization::fit(data, "pixel");
  exp::RunConfig rc;
  rc.arch = arch;
  rc.lr = 0.05f;
  rc.steps = 30;
  rc.batch_size = 16;
  Model model = exp::build_model(rc, input);
  const exp::RunResult r = exp::train_run(model, rc, data, Dataset{}, norm);
  ASSERT_FALSE(r.diverged());
  exp::recompute_population_statistics(model, data, norm, 50);  // batches of 50: 7 of them, the last short

  Tensor x;
  std::vector<std::int64_t> all(static_cast<std::size_t>(data.count));
  std::iota(all.begin(), all.end(), 0);
  norm.apply(x, data, model.input_shape(), all);
  model.forward(x, Mode::eval);
  const auto bns = exp::batchnorm_layers(model);
  ASSERT_EQ(bns.size(), 2u);
  for (const std::size_t i : bns) {
    auto& bn = dynamic_cast<BatchNorm&>(model.layer(i));
    const exp::ChannelStats direct = exp::channel_stats(exp::layer_input(model, i, x));
    ASSERT_EQ(direct.mean.size(), bn.running_mean().size());
    for (std::size_t c = 0; c < direct.mean.size(); ++c) {
      const double var = direct.std[c] * direct.std[c];
      EXPECT_NEAR(bn.running_mean()[c], direct.mean[c], 1e-4 * (1 + std::abs(direct.mean[c])))
          << "layer " << i << " channel " << c;
      EXPECT_NEAR(bn.running_var()[c], var, 1e-4 * (1 + var)) << "layer " << i << " channel " << c;
    }
  }
}

TEST(ExperimentPopulationStatistics, EqualTheInputsStatisticsOverTheWholeSet) {
  check_population_statistics("fc:12,bn,relu,fc:8,bn,relu,fc:10", {16});
}

TEST(ExperimentPopulationStatistics, PerChannelForConvolutions) {
  check_population_statistics("conv3x3:3,bn,relu,conv3x3:4,bn,relu,fc:10", {1, 4, 4});
}

// The running averages after 30 steps are not the population's: the check
// above would catch a recomputation that left them alone.
TEST(ExperimentPopulationStatistics, DifferFromTheRunningAverages) {
  const Dataset data = synthetic_images(333, 7);
  const InputNormalization norm = InputNormalization::fit(data, "pixel");
  exp::RunConfig rc;
  rc.arch = "fc:12,bn,relu,fc:10";
  rc.steps = 30;
  rc.batch_size = 16;
  Model model = exp::build_model(rc, {16});
  exp::train_run(model, rc, data, Dataset{}, norm);
  auto& bn = dynamic_cast<BatchNorm&>(model.layer(exp::batchnorm_layers(model).front()));
  const std::vector<float> before(bn.running_var().begin(), bn.running_var().end());
  exp::recompute_population_statistics(model, data, norm);
  double diff = 0.0;
  for (std::size_t c = 0; c < before.size(); ++c)
    diff = std::max(diff, std::abs(double(before[c]) - bn.running_var()[c]));
  EXPECT_GT(diff, 1e-3);
}

exp::RunResult synthetic_run(std::vector<std::pair<std::int64_t, double>> accuracy, std::int64_t diverged_at = -1) {
  exp::RunResult r;
  for (const auto& [step, acc] : accuracy) r.evals.push_back({step, 0.5, acc});
  r.diverged_at = diverged_at;
  if (diverged_at < 0 && !accuracy.empty()) r.final_test_accuracy = accuracy.back().second;
  return r;
}

bool has(const std::vector<std::string>& lines, const std::string& text) {
  for (const auto& l : lines)
    if (l.find(text) != std::string::npos) return true;
  return false;
}

TEST(ExperimentConclusions, SpeedFollowsTheNumbers) {
  std::vector<exp::SpeedRun> runs = {
      {"before", "sgd lr 0.1", 0.1, synthetic_run({{100, 0.7}, {300, 0.86}, {900, 0.88}})},
      {"none", "sgd lr 0.1", 0.1, synthetic_run({{100, 0.5}, {300, 0.8}, {900, 0.86}})},
      {"before", "sgd lr 1", 1.0, synthetic_run({{100, 0.8}, {300, 0.86}, {900, 0.87}})},
      {"none", "sgd lr 1", 1.0, synthetic_run({{20, 0.3}}, 40)},
  };
  auto c = exp::speed_conclusions(runs, 0.85);
  EXPECT_TRUE(has(c, "BN before ReLU reached 0.870 test accuracy while no BN diverged (loss NaN at step 40)"));
  EXPECT_TRUE(has(c, "at step 300 with BN and at step 900 without (3.0× as many steps without BN)"));
  EXPECT_TRUE(has(c, "BN before ReLU 1; no BN 0.1."));
  EXPECT_TRUE(has(c, "\"BN makes optimization faster\": confirmed"));
  EXPECT_TRUE(has(c, "\"BN tolerates larger learning rates\": confirmed"));

  // Swap the two networks' curves at lr 0.1 and let both survive lr 1: the verdicts turn.
  std::swap(runs[0].result, runs[1].result);
  runs[3].result = synthetic_run({{100, 0.5}, {900, 0.84}});
  c = exp::speed_conclusions(runs, 0.85);
  EXPECT_TRUE(has(c, "at step 900 with BN and at step 300 without"));
  EXPECT_TRUE(has(c, "\"BN makes optimization faster\": not shown either way"));
  EXPECT_TRUE(has(c, "BN before ReLU 1; no BN 0.1."));
  runs[2].result = synthetic_run({{100, 0.5}}, 7);
  c = exp::speed_conclusions(runs, 0.85);
  EXPECT_TRUE(has(c, "\"BN makes optimization faster\": contradicted"));
  EXPECT_TRUE(has(c, "\"BN tolerates larger learning rates\": not shown (same largest rate)"));

  // Surviving at chance level while the other diverges earns no credit.
  runs = {{"before", "sgd lr 1", 1.0, synthetic_run({{100, 0.1}, {200, 0.1}})},
          {"none", "sgd lr 1", 1.0, synthetic_run({{20, 0.3}}, 9)}};
  c = exp::speed_conclusions(runs, 0.85);
  EXPECT_TRUE(has(c,
                  "BN before ReLU did not diverge but ended at 0.100 test accuracy (chance level) while no BN "
                  "diverged (loss NaN at step 9)"));
  EXPECT_FALSE(has(c, "BN makes optimization faster"));
}

}  // namespace
}  // namespace bnorm::test

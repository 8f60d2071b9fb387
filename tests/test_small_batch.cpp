// The small-batch experiment's verdicts, fed synthetic cells: each claim
// follows the numbers both ways, a diverged run counts as chance, and a
// normalization that was not run is named with its reason, never scored.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "experiments.hpp"

namespace bnorm::test {
namespace {

using exp::SmallBatchCell;

SmallBatchCell cell(const std::string& norm, std::int64_t batch, double acc, double recal = exp::kNaN,
                    const std::string& net = "MLP") {
  const bool bn_family = norm == "BN" || norm == "Batch Renorm" || norm == "Ghost BN";
  return {net, norm, batch, bn_family, acc, recal, false};
}

SmallBatchCell diverged(const std::string& norm, std::int64_t batch) {
  SmallBatchCell c = cell(norm, batch, exp::kNaN);
  c.diverged = true;
  return c;
}

std::string line_with(const std::vector<std::string>& lines, const std::string& text) {
  for (const auto& l : lines)
    if (l.find(text) != std::string::npos) return l;
  return "";
}

// BN falls from 0.85 to 0.60; the others stay near 0.84; recalibration gains
// 0.10 at batch 2 and nothing at 64.
std::vector<SmallBatchCell> bn_breaks_down() {
  return {cell("BN", 2, 0.60, 0.70),
          cell("BN", 64, 0.85, 0.851),
          cell("Batch Renorm", 2, 0.70, 0.80),
          cell("Batch Renorm", 64, 0.85, 0.85),
          cell("Ghost BN", 64, 0.86, 0.86),
          cell("GroupNorm", 2, 0.83),
          cell("GroupNorm", 64, 0.84),
          cell("LayerNorm", 2, 0.82),
          cell("LayerNorm", 64, 0.84),
          cell("none", 2, 0.83),
          cell("none", 64, 0.84)};
}

TEST(SmallBatchConclusions, ConfirmedWhenBnFallsAndTheOthersHold) {
  const auto c = exp::small_batch_conclusions(bn_breaks_down(), {});
  EXPECT_NE(line_with(c,
                      "\"BN degrades at small batches\" on the MLP: confirmed (test accuracy 0.850 at batch 64, "
                      "0.600 at batch 2: -0.250; no normalization 0.840 and 0.830: -0.010)"),
            "")
      << ::testing::PrintToString(c);
  const std::string alt = line_with(c, "hold up better at small batches than BN\" on the MLP: ");
  // Ghost BN has no batch-2 run: the three compared are all better.
  EXPECT_NE(alt.find(": confirmed (at batch 2: BN 0.600, Batch Renorm"), std::string::npos) << alt;
  EXPECT_NE(alt.find("Batch Renorm 0.700 (+0.100)"), std::string::npos) << alt;
  EXPECT_NE(alt.find("Ghost BN has no run at batch 2"), std::string::npos) << alt;
  EXPECT_NE(line_with(c,
                      "(small batches)\" on the MLP: confirmed (mean gain +0.100 at batch 2, +0.001 at batch 64, "
                      "over BN, Batch Renorm)"),
            "")
      << ::testing::PrintToString(c);
  EXPECT_NE(line_with(c, "Recalibration's largest gain on the MLP was +0.100"), "");
  EXPECT_NE(line_with(c, "On the MLP at batch 2 the best test accuracy was 0.830, with GroupNorm."), "");
  EXPECT_NE(line_with(c, "On the MLP at batch 64 the best test accuracy was 0.860, with Ghost BN."), "");
}

TEST(SmallBatchConclusions, VerdictsTurnWithTheNumbers) {
  // BN holds at batch 2, the alternatives fall behind it, recalibration
  // helps only at 64.
  std::vector<SmallBatchCell> cells = {cell("BN", 2, 0.85, 0.85),
                                       cell("BN", 64, 0.86, 0.90),
                                       cell("Batch Renorm", 2, 0.80, 0.80),
                                       cell("Batch Renorm", 64, 0.86, 0.90),
                                       cell("GroupNorm", 2, 0.70),
                                       cell("LayerNorm", 2, 0.84),
                                       cell("none", 2, 0.80),
                                       cell("none", 64, 0.85)};
  auto c = exp::small_batch_conclusions(cells, {});
  EXPECT_NE(line_with(c, "\"BN degrades at small batches\" on the MLP: contradicted"), "");
  EXPECT_NE(line_with(c, "than BN\" on the MLP: contradicted"), "") << ::testing::PrintToString(c);
  EXPECT_NE(line_with(c, "(small batches)\" on the MLP: contradicted (mean gain +0.000 at batch 2, +0.040"), "");

  // BN falls, but no more than the unnormalized network: not BN's doing.
  cells[0].test_accuracy = 0.75;
  cells[6].test_accuracy = 0.75;
  c = exp::small_batch_conclusions(cells, {});
  EXPECT_NE(
      line_with(
          c, "\"BN degrades at small batches\" on the MLP: not shown (the network without normalization lost as much"),
      "");

  // Everything within 0.02 of BN: not shown either way.
  cells = {cell("BN", 2, 0.80), cell("BN", 64, 0.86), cell("GroupNorm", 2, 0.81), cell("LayerNorm", 2, 0.79)};
  c = exp::small_batch_conclusions(cells, {});
  EXPECT_NE(line_with(c, "than BN\" on the MLP: not shown (all within 0.02 of BN; at batch 2: BN 0.800"), "");
  EXPECT_NE(line_with(c, "(small batches)\" on the MLP: not tested"), "");

  // One better, one worse.
  cells[2].test_accuracy = 0.9;
  c = exp::small_batch_conclusions(cells, {});
  EXPECT_NE(line_with(c, "than BN\" on the MLP: partly confirmed (1 of 2 better; at batch 2"), "");
}

TEST(SmallBatchConclusions, DivergedRunsCountAsChance) {
  std::vector<SmallBatchCell> cells = {diverged("BN", 2), cell("BN", 64, 0.85, 0.85), cell("GroupNorm", 2, 0.8),
                                       cell("none", 2, 0.83), cell("none", 64, 0.84)};
  const auto c = exp::small_batch_conclusions(cells, {});
  EXPECT_NE(line_with(c,
                      "\"BN degrades at small batches\" on the MLP: confirmed (test accuracy 0.850 at batch 64, "
                      "diverged at batch 2: -0.750"),
            "")
      << ::testing::PrintToString(c);
  EXPECT_NE(line_with(c, "than BN\" on the MLP: confirmed (at batch 2: BN diverged, GroupNorm 0.800 (+0.700)"), "")
      << ::testing::PrintToString(c);
  // No gain can be measured on a diverged run.
  EXPECT_NE(line_with(c, "(small batches)\" on the MLP: not tested"), "");
}

TEST(SmallBatchConclusions, SkippedNormalizationsAreNamedNotScored) {
  std::vector<SmallBatchCell> cells = bn_breaks_down();
  std::erase_if(cells, [](const SmallBatchCell& c) { return c.normalization == "LayerNorm"; });
  const auto c = exp::small_batch_conclusions(cells, {{"LayerNorm", "the ln layer is missing"}});
  const std::string alt = line_with(c, "than BN\" on the MLP: ");
  EXPECT_NE(alt.find(": confirmed (at batch 2"), std::string::npos) << alt;
  EXPECT_EQ(alt.find("LayerNorm 0."), std::string::npos) << alt;
  EXPECT_NE(alt.find("LayerNorm not run: the ln layer is missing"), std::string::npos) << alt;
}

TEST(SmallBatchConclusions, OneSetOfVerdictsPerNetwork) {
  std::vector<SmallBatchCell> cells = bn_breaks_down();
  for (SmallBatchCell c : bn_breaks_down()) {
    c.network = "CNN";
    if (c.normalization == "BN") c.test_accuracy = c.batch == 2 ? 0.84 : 0.85;
    cells.push_back(c);
  }
  const auto c = exp::small_batch_conclusions(cells, {});
  EXPECT_NE(line_with(c, "\"BN degrades at small batches\" on the MLP: confirmed"), "");
  EXPECT_NE(line_with(c, "\"BN degrades at small batches\" on the CNN: contradicted"), "");
}

TEST(SmallBatchLearningRate, LinearInTheBatchUpToTheCap) {
  EXPECT_FLOAT_EQ(exp::small_batch_lr(64), 0.05f);
  EXPECT_FLOAT_EQ(exp::small_batch_lr(2), 0.05f / 32);
  EXPECT_FLOAT_EQ(exp::small_batch_lr(16), 4 * exp::small_batch_lr(4));
  EXPECT_FLOAT_EQ(exp::small_batch_lr(1024), 0.05f);
}

}  // namespace
}  // namespace bnorm::test

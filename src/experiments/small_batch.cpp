// small-batch: batch norm and its alternatives when mini-batches are small.
// Test accuracy against mini-batch size (2 … 64) for BN, Batch Renorm, Ghost
// BN, GroupNorm, LayerNorm and no normalization, on the default MLP and a
// small CNN, and what exact recalibration of the running statistics (precise
// BN) gains over the running averages at each batch size.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>

#include "bnorm/train/recalibrate.hpp"
#include "bnorm/train/trainer.hpp"
#include "experiments.hpp"

namespace bnorm::exp {
namespace {

constexpr double kChance = 0.1;  // ten classes
// One seed per cell: accuracy differences under 0.02 are within what another
// seed would move them (the regularization experiment's threshold).
constexpr double kEffect = 0.02;
// Recalibration changes the statistics of one trained model, not its
// training, so a smaller difference counts (as in the test-time experiment).
constexpr double kGainEffect = 0.01;

const char* const kAlternatives[] = {"Batch Renorm", "Ghost BN", "GroupNorm", "LayerNorm"};

const SmallBatchCell* find_cell(const std::vector<SmallBatchCell>& cells, const std::string& network,
                                const std::string& normalization, std::int64_t batch) {
  for (const auto& c : cells)
    if (c.network == network && c.normalization == normalization && c.batch == batch) return &c;
  return nullptr;
}

// A diverged run is as good as guessing.
double effective(const SmallBatchCell& c) { return c.diverged ? kChance : c.test_accuracy; }
std::string accuracy_words(const SmallBatchCell& c) { return c.diverged ? "diverged" : fixed(c.test_accuracy); }
std::string signed_fixed(double v) { return (v >= 0 ? "+" : "") + fixed(v); }

const SkippedNormalization* find_skipped(const std::vector<SkippedNormalization>& skipped, const std::string& n) {
  for (const auto& s : skipped)
    if (s.normalization == n) return &s;
  return nullptr;
}

// "Claim ...: verdict (why; detail)."
std::string claim_line(const std::string& claim, const std::string& verdict, const std::string& why,
                       const std::string& detail) {
  return claim + verdict + " (" + (why.empty() ? "" : why + "; ") + detail + ").";
}

std::string bn_degrades(const std::vector<SmallBatchCell>& cells, const std::string& net, std::int64_t small,
                        std::int64_t large) {
  const std::string claim = "Claim \"BN degrades at small batches\" on the " + net + ": ";
  const SmallBatchCell *bs = find_cell(cells, net, "BN", small), *bl = find_cell(cells, net, "BN", large);
  if (!bs || !bl || small == large) return claim + "not tested (no BN runs at two batch sizes).";
  const double drop = effective(*bl) - effective(*bs);
  const SmallBatchCell *ns = find_cell(cells, net, "none", small), *nl = find_cell(cells, net, "none", large);
  const double none_drop = ns && nl ? effective(*nl) - effective(*ns) : kNaN;
  std::string verdict, why;
  if (!(drop > kEffect)) {
    verdict = "contradicted";
  } else if (std::isnan(none_drop) || drop - none_drop > kEffect) {
    verdict = "confirmed";
  } else {
    verdict = "not shown";
    why = "the network without normalization lost as much: the small batch itself, not BN, is the cause";
  }
  std::string detail = "test accuracy " + accuracy_words(*bl) + " at batch " + std::to_string(large) + ", " +
                       accuracy_words(*bs) + " at batch " + std::to_string(small) + ": " + signed_fixed(-drop);
  if (ns && nl)
    detail +=
        "; no normalization " + accuracy_words(*nl) + " and " + accuracy_words(*ns) + ": " + signed_fixed(-none_drop);
  return claim_line(claim, verdict, why, detail);
}

std::string alternatives_hold_up(const std::vector<SmallBatchCell>& cells,
                                 const std::vector<SkippedNormalization>& skipped, const std::string& net,
                                 std::int64_t small) {
  const std::string claim =
      "Claim \"Batch Renorm, Ghost BN, GroupNorm and LayerNorm hold up better at small batches than BN\" on the " +
      net + ": ";
  const SmallBatchCell* bn = find_cell(cells, net, "BN", small);
  if (!bn) return claim + "not tested (no BN run at batch " + std::to_string(small) + ").";
  int compared = 0, better = 0, worse = 0;
  std::string detail, missing;
  for (const char* alt : kAlternatives) {
    if (const SkippedNormalization* s = find_skipped(skipped, alt)) {
      missing += std::string(missing.empty() ? "" : "; ") + alt + " not run: " + s->why;
      continue;
    }
    const SmallBatchCell* a = find_cell(cells, net, alt, small);
    if (!a) {
      missing += std::string(missing.empty() ? "" : "; ") + alt + " has no run at batch " + std::to_string(small);
      continue;
    }
    const double diff = effective(*a) - effective(*bn);
    ++compared;
    better += diff > kEffect;
    worse += diff < -kEffect;
    detail += ", " + std::string(alt) + " " + accuracy_words(*a) + " (" + signed_fixed(diff) + ")";
  }
  std::string verdict, why;
  if (compared == 0) {
    verdict = "not tested";
  } else if (better == compared) {
    verdict = "confirmed";
  } else if (better > 0) {
    verdict = "partly confirmed";
    why = std::to_string(better) + " of " + std::to_string(compared) + " better";
  } else if (worse > 0) {
    verdict = "contradicted";
  } else {
    verdict = "not shown";
    why = "all within " + fixed(kEffect, 2) + " of BN";
  }
  return claim_line(claim, verdict, why,
                    "at batch " + std::to_string(small) + ": BN " + accuracy_words(*bn) + detail +
                        (missing.empty() ? "" : "; " + missing));
}

// Mean recalibration gain at one batch size over the BN-family
// normalizations that have a measured gain at both ends.
std::string recalibration_helps(const std::vector<SmallBatchCell>& cells, const std::string& net, std::int64_t small,
                                std::int64_t large) {
  const std::string claim =
      "Claim \"recalibration helps most where the running averages are poor (small batches)\" on the " + net + ": ";
  double sum_small = 0.0, sum_large = 0.0;
  int n = 0;
  std::string names;
  for (const auto& c : cells) {
    if (c.network != net || c.batch != small || !c.bn_family || !std::isfinite(c.gain())) continue;
    const SmallBatchCell* l = find_cell(cells, net, c.normalization, large);
    if (!l || !std::isfinite(l->gain())) continue;
    sum_small += c.gain();
    sum_large += l->gain();
    ++n;
    names += (names.empty() ? "" : ", ") + c.normalization;
  }
  if (n == 0 || small == large)
    return claim + "not tested (no BN-family run with a measured gain at both batch " + std::to_string(small) +
           " and batch " + std::to_string(large) + ").";
  const double gs = sum_small / n, gl = sum_large / n;
  const std::string verdict = gs > kGainEffect && gs > gl + kGainEffect ? "confirmed"
                              : gl > gs + kGainEffect                   ? "contradicted"
                                                                        : "not shown";
  return claim_line(claim, verdict, "",
                    "mean gain " + signed_fixed(gs) + " at batch " + std::to_string(small) + ", " + signed_fixed(gl) +
                        " at batch " + std::to_string(large) + ", over " + names);
}

}  // namespace

float small_batch_lr(std::int64_t batch) {
  constexpr float kBaseLr = 0.05f;
  constexpr std::int64_t kBaseBatch = 64;
  return kBaseLr * static_cast<float>(std::min(batch, kBaseBatch)) / static_cast<float>(kBaseBatch);
}

std::vector<std::string> small_batch_conclusions(const std::vector<SmallBatchCell>& cells,
                                                 const std::vector<SkippedNormalization>& skipped) {
  std::vector<std::string> out;
  std::vector<std::string> networks;
  for (const auto& c : cells)
    if (std::find(networks.begin(), networks.end(), c.network) == networks.end()) networks.push_back(c.network);
  for (const auto& net : networks) {
    std::int64_t small = -1, large = -1;
    for (const auto& c : cells)
      if (c.network == net) {
        if (small < 0 || c.batch < small) small = c.batch;
        if (c.batch > large) large = c.batch;
      }
    // The best normalization at each end, for the reader who wants one name.
    for (const std::int64_t b : {small, large}) {
      const SmallBatchCell* best = nullptr;
      for (const auto& c : cells)
        if (c.network == net && c.batch == b && (!best || effective(c) > effective(*best))) best = &c;
      out.push_back("On the " + net + " at batch " + std::to_string(b) + " the best test accuracy was " +
                    accuracy_words(*best) + ", with " +
                    (best->normalization == "none" ? "no normalization" : best->normalization) + ".");
    }
    const SmallBatchCell* most = nullptr;
    for (const auto& c : cells)
      if (c.network == net && std::isfinite(c.gain()) && (!most || c.gain() > most->gain())) most = &c;
    if (most)
      out.push_back("Recalibration's largest gain on the " + net + " was " + signed_fixed(most->gain()) + " (" +
                    most->normalization + " at batch " + std::to_string(most->batch) + ", " +
                    fixed(most->test_accuracy) + " → " + fixed(most->recalibrated_accuracy) + ").");
    out.push_back(bn_degrades(cells, net, small, large));
    out.push_back(alternatives_hold_up(cells, skipped, net, small));
    out.push_back(recalibration_helps(cells, net, small, large));
  }
  return out;
}

namespace {

struct Network {
  std::string name;
  // The architecture with {N} where each normalization goes.
  std::string pattern;
  Shape input;
};

struct Normalization {
  std::string label;
  std::string token;  // in place of {N}; empty = no normalization layer
  bool bn_family;
  // The BN options for a run of this many steps at this batch size; false =
  // the combination is not run (Ghost BN at batches ≤ V, where it is plain BN).
  std::function<bool(std::int64_t batch, std::int64_t steps, BatchNormOptions& o)> configure;
};

std::string with_normalization(const std::string& pattern, const std::string& token) {
  std::string out = pattern;
  const std::string mark = token.empty() ? "{N}," : "{N}";
  for (auto at = out.find(mark); at != std::string::npos; at = out.find(mark, at)) out.replace(at, mark.size(), token);
  return out;
}

bool plain(std::int64_t, std::int64_t, BatchNormOptions&) { return true; }

// The paper's limits (rmax 3, dmax 5) and its warm-up proportions, fully open
// after the first quarter of the run, the same share of the examples at
// every batch size.
bool batch_renorm(std::int64_t, std::int64_t steps, BatchNormOptions& o) {
  o.renorm.enabled = true;
  o.renorm.warmup_steps = steps / 4;
  return true;
}

constexpr std::int64_t kGhostBatch = 8;  // V

bool ghost(std::int64_t batch, std::int64_t, BatchNormOptions& o) {
  if (batch <= kGhostBatch) return false;
  o.virtual_batch_size = kGhostBatch;
  return true;
}

}  // namespace

Report run_small_batch(const Context& ctx, const std::string& dir) {
  auto [train, test] = datasets(ctx, 256);
  if (ctx.quick)
    test.truncate(500);
  else
    train.truncate(10000);
  const std::int64_t epochs = ctx.quick ? 1 : 3;
  const std::vector<std::int64_t> batches = {2, 4, 8, 16, 64};
  const InputNormalization norm = InputNormalization::fit(train, "pixel");
  const std::vector<Network> networks = {
      {"MLP", "fc:256,{N},relu,fc:256,{N},relu,fc:10", {784}},
      {"CNN", "conv3x3:16,{N},relu,maxpool2,conv3x3:32,{N},relu,maxpool2,flatten,fc:10", {1, 28, 28}}};
  // GroupNorm with 8 groups divides every layer here: 16 and 32 channels, 256 units.
  const std::vector<Normalization> norms = {
      {"BN", "bn", true, plain},           {"Batch Renorm", "bn", true, batch_renorm}, {"Ghost BN", "bn", true, ghost},
      {"GroupNorm", "gn:8", false, plain}, {"LayerNorm", "ln", false, plain},          {"none", "", false, plain},
  };
  const std::vector<SkippedNormalization> skipped;

  std::vector<SmallBatchCell> cells;
  CsvWriter csv(dir + "/results.csv", {"run", "network", "normalization", "batch_size", "lr", "steps", "test_accuracy",
                                       "recalibrated_accuracy", "recalibration_gain", "diverged", "seconds"});
  for (const Network& net : networks)
    for (const Normalization& n : norms)
      for (const std::int64_t b : batches) {
        RunConfig rc;
        rc.name = net.name + " / " + n.label;
        rc.arch = with_normalization(net.pattern, n.token);
        rc.placement = n.token.empty() ? BnPlacement::none : BnPlacement::before;
        rc.lr = small_batch_lr(b);
        rc.batch_size = b;
        rc.steps = epochs * (train.count / b);
        if (!n.configure(b, rc.steps, rc.bn)) continue;
        rc.log_every = rc.steps;
        rc.eval_every = 0;
        rc.seed = ctx.seed;
        Model model = build_model(rc, net.input);
        const RunResult r = train_run(model, rc, train, test, norm);
        SmallBatchCell c{net.name, n.label, b, n.bn_family, r.final_test_accuracy, kNaN, r.diverged()};
        if (n.bn_family && !r.diverged()) {
          RecalibrationOptions o;
          o.mode = RecalibrationMode::exact;
          o.batch_size = 500;
          recalibrate_batchnorm(model, train, norm, o);
          c.recalibrated_accuracy = evaluate(model, test, norm, kEvalBatchSize, Mode::eval).accuracy;
        }
        std::fprintf(stderr, "  small-batch: %-20s batch %3lld  test %s  recalibrated %s (%.1f s)\n", rc.name.c_str(),
                     static_cast<long long>(b), fixed(c.test_accuracy).c_str(), fixed(c.recalibrated_accuracy).c_str(),
                     r.seconds);
        csv.row({rc.name, net.name, n.label, std::to_string(b), num(rc.lr, 4), std::to_string(rc.steps),
                 num(c.test_accuracy, 6), num(c.recalibrated_accuracy, 6), num(c.gain(), 6), c.diverged ? "1" : "0",
                 num(r.seconds, 3)});
        cells.push_back(c);
      }
  csv.close();

  std::vector<Figure> figures;
  for (const Network& net : networks) {
    Figure f{"accuracy_" + net.name + ".png", "Test accuracy (running averages) against batch size, " + net.name,
             "mini-batch size", "test accuracy"};
    for (const Normalization& n : norms) f.series.push_back({"results.csv", net.name + " / " + n.label, 4, 7, n.label});
    figures.push_back(f);
  }
  Figure fgain{"recalibration_gain.png", "Accuracy gained by exact recalibration over the running averages",
               "mini-batch size", "recalibrated - running-average test accuracy"};
  for (const Network& net : networks)
    for (const Normalization& n : norms)
      if (n.bn_family)
        fgain.series.push_back({"results.csv", net.name + " / " + n.label, 4, 9, net.name + ", " + n.label});
  figures.push_back(fgain);
  for (Figure& f : figures) {
    f.logx = true;
    f.logx_base = 2;
    f.points = true;
    render(f, dir);
  }

  Report report(
      "Small mini-batches: batch norm, its variants and the alternatives",
      "Two networks trained on the first " + std::to_string(train.count) +
          " Fashion-MNIST training examples at mini-batch sizes 2, 4, 8, 16 and 64, once per normalization: the "
          "default MLP (784-256-256-10, `" +
          with_normalization(networks[0].pattern, "bn") + "`) and a small CNN (`" +
          with_normalization(networks[1].pattern, "bn") +
          "`), with each `bn` replaced by the normalization named (or removed). Every run sees the same number of "
          "examples, " +
          std::to_string(epochs) + " epoch" + (epochs == 1 ? "" : "s") + ", so a batch of " +
          std::to_string(batches.front()) + " takes " + std::to_string(batches.back() / batches.front()) +
          " times as many steps as a batch of " + std::to_string(batches.back()) +
          ". SGD with momentum 0.9; the learning rate follows the linear scaling rule, 0.05 × B / 64 (" +
          num(small_batch_lr(batches.back())) + " at batch " + std::to_string(batches.back()) + ", " +
          num(small_batch_lr(batches.front())) + " at batch " + std::to_string(batches.front()) +
          "), capped at 0.05 above 64, so that each example moves the weights about as much at every batch size. "
          "Test accuracy on " +
          std::to_string(test.count) +
          " test examples in eval mode with the running averages (momentum 0.1); for the BN family the same model "
          "is then recalibrated (`bnorm recalibrate`'s exact mode over the training subset: each BN layer's exact "
          "mean and unbiased variance of its input, layer by layer) and tested again. One seed per cell; a "
          "diverged run counts as chance (0.1) in the verdicts.");
  for (const auto& c : small_batch_conclusions(cells, skipped)) report.conclusion(c);

  report.section("Accuracy against batch size");
  const BatchRenormOptions renorm_defaults;
  const std::string v = std::to_string(kGhostBatch);
  report.text("Batch Renorm: r clipped to [1/rmax, rmax] with rmax " + num(renorm_defaults.rmax) +
              ", d to [-dmax, dmax] with dmax " + num(renorm_defaults.dmax) +
              " (the paper's values), with a warm-up over the first quarter of each run's steps: plain BN for the "
              "first eighth of the warm-up, then the limits open linearly, rmax reached at its end and dmax at five "
              "eighths of it (the paper's proportions). Ghost BN: virtual batches of V = " +
              v + " inside the batches larger than " + v + "; at batch " + v +
              " or less a single slice is the whole batch, which is plain BN, so those cells are not run (BN's row "
              "stands for them). GroupNorm: 8 groups in every layer; LayerNorm: over all of a layer's values for "
              "each example (C×H×W on the CNN).");
  for (std::size_t i = 0; i < networks.size(); ++i) report.image(figures[i].png, networks[i].name + " test accuracy");
  std::vector<std::string> header = {"network", "normalization"};
  for (const std::int64_t b : batches) header.push_back("batch " + std::to_string(b));
  std::vector<std::vector<std::string>> rows, gain_rows;
  for (const Network& net : networks)
    for (const Normalization& n : norms) {
      std::vector<std::string> row = {net.name, n.label}, gain_row = row;
      for (const std::int64_t b : batches) {
        const SmallBatchCell* c = find_cell(cells, net.name, n.label, b);
        row.push_back(!c ? "not run" : accuracy_words(*c));
        gain_row.push_back(!c || !std::isfinite(c->gain())
                               ? "-"
                               : fixed(c->test_accuracy) + " → " + fixed(c->recalibrated_accuracy) + " (" +
                                     signed_fixed(c->gain()) + ")");
      }
      rows.push_back(row);
      if (n.bn_family) gain_rows.push_back(gain_row);
    }
  report.table(header, rows);
  if (!skipped.empty()) {
    std::string text = "Not run:";
    for (const auto& s : skipped) text += "\n- " + s.normalization + ": " + s.why + ".";
    report.text(text);
  }

  report.section("Recalibration against the running averages");
  report.image(fgain.png, "recalibration gain");
  report.text("Each cell: test accuracy with the running averages → after exact recalibration (gain).");
  report.table(header, gain_rows);
  report.text("Data: `results.csv` (one row per run; `recalibration_gain` is NaN outside the BN family).");
  return report;
}

}  // namespace bnorm::exp

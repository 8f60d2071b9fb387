// speed: does batch norm make optimization easier? Training loss and test
// accuracy against steps for BN before the activation, after it, and none, at
// SGD learning rates 0.01, 0.1 and 1.0 (momentum 0.9) and with Adam.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "experiments.hpp"

namespace bnorm::exp {
namespace {

const SpeedRun* find_run(const std::vector<SpeedRun>& runs, const std::string& placement, const std::string& setting) {
  for (const auto& r : runs)
    if (r.placement == placement && r.setting == setting) return &r;
  return nullptr;
}

// Trained without a NaN but ended no better than guessing among 10 classes.
bool collapsed(const RunResult& r) { return !r.diverged() && !(r.final_test_accuracy >= 0.2); }

std::string placement_words(const std::string& p) { return p == "none" ? "no BN" : "BN " + p + " ReLU"; }

}  // namespace

std::vector<std::string> speed_conclusions(const std::vector<SpeedRun>& runs, double threshold) {
  std::vector<std::string> out;
  std::vector<std::string> settings;
  for (const auto& r : runs)
    if (std::find(settings.begin(), settings.end(), r.setting) == settings.end()) settings.push_back(r.setting);
  int faster = 0, slower = 0;
  for (const auto& s : settings) {
    const SpeedRun* bn = find_run(runs, "before", s);
    const SpeedRun* plain = find_run(runs, "none", s);
    if (!bn || !plain) continue;
    const RunResult &a = bn->result, &b = plain->result;
    std::string line = "With " + s + ": ";
    if (a.diverged() && b.diverged()) {
      line += "both BN before ReLU and no BN diverged (loss NaN at steps " + std::to_string(a.diverged_at) + " and " +
              std::to_string(b.diverged_at) + ").";
      out.push_back(line);
      continue;
    }
    if (b.diverged() != a.diverged()) {
      const RunResult& ok = a.diverged() ? b : a;
      const RunResult& bad = a.diverged() ? a : b;
      line += placement_words(a.diverged() ? "none" : "before") +
              (collapsed(ok) ? " did not diverge but ended at " : " reached ") + fixed(ok.final_test_accuracy) +
              " test accuracy" + (collapsed(ok) ? " (chance level)" : "") + " while " +
              placement_words(a.diverged() ? "before" : "none") + " diverged (loss NaN at step " +
              std::to_string(bad.diverged_at) + ").";
      out.push_back(line);
      // Surviving at chance level is no better than diverging.
      if (!collapsed(ok)) (a.diverged() ? slower : faster) += 1;
      continue;
    }
    if (collapsed(a) && collapsed(b)) {
      out.push_back(line + "both BN before ReLU and no BN ended at chance level (" + fixed(a.final_test_accuracy) +
                    " and " + fixed(b.final_test_accuracy) + " test accuracy) without a NaN.");
      continue;
    }
    const std::int64_t sa = a.steps_to_accuracy(threshold), sb = b.steps_to_accuracy(threshold);
    line += "BN before ReLU ended at " + fixed(a.final_test_accuracy) + " test accuracy" +
            (collapsed(a) ? " (chance level)" : "") + ", no BN at " + fixed(b.final_test_accuracy) +
            (collapsed(b) ? " (chance level)" : "") + "; " + fixed(threshold, 2) + " was reached ";
    auto when = [](std::int64_t steps) {
      return steps < 0 ? std::string("never") : "at step " + std::to_string(steps);
    };
    line += when(sa) + " with BN and " + when(sb) + " without";
    if (sa >= 0 && (sb < 0 || sa < sb)) {
      ++faster;
      if (sb > 0) {
        char ratio[32];
        std::snprintf(ratio, sizeof ratio, "%.1f", static_cast<double>(sb) / static_cast<double>(sa));
        line += std::string(" (") + ratio + "× as many steps without BN)";
      }
    } else if (sb >= 0 && (sa < 0 || sb < sa)) {
      ++slower;
    }
    out.push_back(line + ".");
  }
  // Largest SGD rate at which each placement neither diverged nor stayed below the threshold.
  std::string tolerated = "Largest SGD learning rate that trained to " + fixed(threshold, 2) + " test accuracy:";
  double best_bn = 0.0, best_plain = 0.0;
  for (const std::string p : {"before", "after", "none"}) {
    double best = 0.0;
    for (const auto& r : runs)
      if (r.placement == p && std::isfinite(r.sgd_lr) && !r.result.diverged() &&
          r.result.final_test_accuracy >= threshold)
        best = std::max(best, r.sgd_lr);
    if (p == "before") best_bn = best;
    if (p == "none") best_plain = best;
    bool present = false;
    for (const auto& r : runs) present |= r.placement == p;
    if (!present) continue;
    tolerated.append(" ").append(placement_words(p)).append(" ");
    tolerated.append(best > 0 ? num(best) : std::string("none of them")).append(";");
  }
  tolerated.back() = '.';
  out.push_back(tolerated);
  if (faster + slower > 0)
    out.push_back(std::string("Claim \"BN makes optimization faster\": ") +
                  (faster > slower    ? "confirmed"
                   : faster == slower ? "not shown either way"
                                      : "contradicted") +
                  " (BN before ReLU ahead in " + std::to_string(faster) + " of the settings, behind in " +
                  std::to_string(slower) + ").");
  out.push_back(std::string("Claim \"BN tolerates larger learning rates\": ") +
                (best_bn > best_plain    ? "confirmed"
                 : best_bn == best_plain ? "not shown (same largest rate)"
                                         : "contradicted") +
                ".");
  return out;
}

Report run_speed(const Context& ctx, const std::string& dir) {
  const std::int64_t steps = ctx.quick ? 300 : 5000;
  const std::int64_t eval_every = ctx.quick ? 50 : 100;
  const double threshold = ctx.quick ? 0.8 : 0.85;
  auto [train, test] = datasets(ctx, 10000);
  const InputNormalization norm = InputNormalization::fit(train, "pixel");

  struct Setting {
    std::string label, optimizer;
    float lr;
  };
  const std::vector<Setting> settings = {{"sgd lr 0.01", "sgd", 0.01f},
                                         {"sgd lr 0.1", "sgd", 0.1f},
                                         {"sgd lr 1", "sgd", 1.0f},
                                         {"adam lr 0.001", "adam", 0.001f}};
  std::vector<SpeedRun> grid;
  for (const Setting& s : settings)
    for (const std::string p : {"before", "after", "none"}) {
      RunConfig rc;
      rc.name = placement_words(p) + " / " + s.label;
      rc.placement = parse_bn_placement(p);
      rc.optimizer = s.optimizer;
      rc.lr = s.lr;
      rc.steps = steps;
      rc.eval_every = eval_every;
      rc.seed = ctx.seed;
      Model model = build_model(rc, {train.features});
      SpeedRun run{p, s.label, s.optimizer == "sgd" ? static_cast<double>(s.lr) : kNaN,
                   train_run(model, rc, train, test, norm)};
      std::fprintf(stderr, "  speed: %-32s %s (%.1f s)\n", rc.name.c_str(), outcome(run.result).c_str(),
                   run.result.seconds);
      grid.push_back(std::move(run));
    }

  std::vector<RunResult> all;
  for (const auto& g : grid) all.push_back(g.result);
  write_curves(all, dir);

  Report report("Batch norm and the speed of optimization",
                "An MLP 784-256-256-10 (ReLU) on Fashion-MNIST (" + std::to_string(train.count) +
                    " training examples, batch 64, " + std::to_string(steps) +
                    " steps) with batch norm before each ReLU, after it, or none, trained with SGD (momentum 0.9) at "
                    "learning rates 0.01, 0.1 and 1, and with Adam (lr 0.001). Test accuracy (" +
                    std::to_string(test.count) + " examples, running statistics) every " + std::to_string(eval_every) +
                    " steps. A run whose loss or gradient became NaN or infinite stops "
                    "there and is marked as diverged.");
  for (const auto& c : speed_conclusions(grid, threshold)) report.conclusion(c);

  std::vector<std::vector<std::string>> rows;
  for (const auto& g : grid) {
    const std::int64_t s = g.result.steps_to_accuracy(threshold);
    rows.push_back({g.setting, placement_words(g.placement), outcome(g.result), fixed(g.result.best_test_accuracy()),
                    s < 0 ? "never" : std::to_string(s), fixed(g.result.seconds, 1)});
  }
  report.section("Results");
  report.table({"optimizer", "network", "final test accuracy", "best test accuracy",
                "first step at " + fixed(threshold, 2), "seconds"},
               rows);
  for (const Setting& s : settings) {
    std::vector<RunResult> group;
    for (const auto& g : grid)
      if (g.setting == s.label) group.push_back(g.result);
    std::string stem = s.label;
    std::replace(stem.begin(), stem.end(), ' ', '_');
    const auto pngs = curve_figures(group, dir, stem, s.label);
    report.section(s.label);
    report.image(pngs[0], "training loss, " + s.label);
    report.image(pngs[1], "test accuracy, " + s.label);
  }
  report.text("Data: `curves.csv` (training loss, mean over 20 steps) and `evals.csv` (test loss and accuracy).");
  return report;
}

}  // namespace bnorm::exp

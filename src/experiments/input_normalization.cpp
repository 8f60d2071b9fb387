// input-normalization: training with and without standardized inputs, with
// and without batch norm.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "experiments.hpp"

namespace bnorm::exp {

Report run_input_normalization(const Context& ctx, const std::string& dir) {
  auto [train, test] = datasets(ctx, 5000);
  const std::int64_t steps = ctx.quick ? 300 : 3000;
  struct Input {
    std::string label;
    InputNormalization norm;
  };
  const std::vector<Input> inputs = {{"standardized per pixel", InputNormalization::fit(train, "pixel")},
                                     {"pixel/255 (0 to 1)", unstandardized_inputs(255.0f)},
                                     {"raw bytes 0..255", unstandardized_inputs(1.0f)}};
  const std::vector<float> lrs = {0.01f, 0.1f};
  struct Cell {
    std::string input, network;
    float lr;
    RunResult result;
  };
  std::vector<Cell> cells;
  for (const float lr : lrs)
    for (const BnPlacement p : {BnPlacement::before, BnPlacement::none})
      for (const Input& in : inputs) {
        RunConfig rc;
        rc.placement = p;
        rc.lr = lr;
        rc.steps = steps;
        rc.eval_every = ctx.quick ? 50 : 100;
        rc.seed = ctx.seed;
        const std::string network = p == BnPlacement::none ? "no BN" : "BN before ReLU";
        rc.name = network + " / " + in.label + " / lr " + num(lr);
        Model model = build_model(rc, {train.features});
        Cell c{in.label, network, lr, train_run(model, rc, train, test, in.norm)};
        std::fprintf(stderr, "  input-normalization: %-50s %s\n", rc.name.c_str(), outcome(c.result).c_str());
        cells.push_back(std::move(c));
      }
  std::vector<RunResult> all;
  for (const Cell& c : cells) all.push_back(c.result);
  write_curves(all, dir);

  Report report("Standardized inputs, with and without batch norm",
                "An MLP 784-256-256-10 (ReLU) on Fashion-MNIST (" + std::to_string(train.count) +
                    " training examples, SGD momentum 0.9, batch 64, " + std::to_string(steps) +
                    " steps) fed three ways: each pixel standardized with the training set's per-pixel mean and "
                    "std (bnorm's default input normalization), pixel/255 in [0, 1], and the raw bytes 0..255; with BN "
                    "before each ReLU and without BN, at learning rates 0.01 and 0.1.");
  // Spread of the final accuracy over the three input scalings, per network and lr.
  for (const float lr : lrs)
    for (const std::string network : {"BN before ReLU", "no BN"}) {
      std::string line = network + ", lr " + num(lr) + ":";
      double lo = 1.0, hi = 0.0;
      int diverged = 0;
      for (const Cell& c : cells)
        if (c.network == network && c.lr == lr) {
          line += " " + c.input + " " + outcome(c.result) + ";";
          if (c.result.diverged()) {
            ++diverged;
            lo = 0.0;
          } else {
            lo = std::min(lo, c.result.final_test_accuracy);
            hi = std::max(hi, c.result.final_test_accuracy);
          }
        }
      line.back() = '.';
      line += " Spread over the three inputs: " +
              (diverged ? std::to_string(diverged) + " diverged" : fixed(hi - lo) + " accuracy") + ".";
      report.conclusion(line);
    }
  // The claims, judged at each lr.
  auto find = [&](const std::string& network, const std::string& input, float lr) -> const RunResult* {
    for (const Cell& c : cells)
      if (c.network == network && c.input == input && c.lr == lr) return &c.result;
    return nullptr;
  };
  int helps = 0, hurts = 0, bn_robust = 0, settings = 0;
  for (const float lr : lrs) {
    const RunResult* std_plain = find("no BN", "standardized per pixel", lr);
    for (const std::string other : {"pixel/255 (0 to 1)", "raw bytes 0..255"}) {
      const RunResult* o = find("no BN", other, lr);
      const double a = std_plain->diverged() ? 0.0 : std_plain->final_test_accuracy;
      const double b = o->diverged() ? 0.0 : o->final_test_accuracy;
      if (a > b + 0.005) ++helps;
      if (b > a + 0.005) ++hurts;
      const RunResult* bn_std = find("BN before ReLU", "standardized per pixel", lr);
      const RunResult* bn_o = find("BN before ReLU", other, lr);
      ++settings;
      if (!bn_std->diverged() && !bn_o->diverged() &&
          std::abs(bn_std->final_test_accuracy - bn_o->final_test_accuracy) <= 0.02)
        ++bn_robust;
    }
  }
  report.conclusion(std::string("Claim \"standardizing the inputs helps a network without BN\": ") +
                    (helps > hurts    ? "confirmed"
                     : helps == hurts ? "not shown"
                                      : "contradicted") +
                    " (better in " + std::to_string(helps) + " of " + std::to_string(settings) +
                    " comparisons, worse in " + std::to_string(hurts) + ").");
  report.conclusion(std::string("Claim \"with BN the input scaling matters little\": ") +
                    (bn_robust == settings ? "confirmed"
                     : bn_robust > 0       ? "partly confirmed"
                                           : "contradicted") +
                    " (BN within 0.02 accuracy of its standardized-input run in " + std::to_string(bn_robust) + " of " +
                    std::to_string(settings) + " comparisons).");

  std::vector<std::vector<std::string>> rows;
  for (const Cell& c : cells)
    rows.push_back({num(c.lr), c.network, c.input, outcome(c.result), fixed(c.result.best_test_accuracy())});
  report.section("Results");
  report.table({"lr", "network", "inputs", "final test accuracy", "best test accuracy"}, rows);
  for (const float lr : lrs) {
    std::vector<RunResult> group;
    for (const Cell& c : cells)
      if (c.lr == lr) group.push_back(c.result);
    const std::string stem = lr < 0.05f ? "lr_0.01" : "lr_0.1";
    const auto pngs = curve_figures(group, dir, stem, "SGD lr " + num(lr));
    report.section("SGD lr " + num(lr));
    report.image(pngs[0], "training loss, lr " + num(lr));
    report.image(pngs[1], "test accuracy, lr " + num(lr));
  }
  report.text("Data: `curves.csv`, `evals.csv`.");
  return report;
}

}  // namespace bnorm::exp

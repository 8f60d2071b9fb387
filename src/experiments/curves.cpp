#include <cmath>

#include "experiments.hpp"

namespace bnorm::exp {

void write_curves(const std::vector<RunResult>& runs, const std::string& dir) {
  CsvWriter curves(dir + "/curves.csv", {"run", "step", "train_loss"});
  CsvWriter evals(dir + "/evals.csv", {"run", "step", "test_loss", "test_accuracy"});
  for (const RunResult& r : runs) {
    for (const CurvePoint& p : r.curve) curves.row({r.name, std::to_string(p.step), num(p.train_loss, 6)});
    for (const EvalPoint& e : r.evals)
      evals.row({r.name, std::to_string(e.step), num(e.test_loss, 6), num(e.test_accuracy, 6)});
  }
  curves.close();
  evals.close();
}

std::string outcome(const RunResult& r) {
  if (r.diverged()) return "diverged (loss NaN at step " + std::to_string(r.diverged_at) + ")";
  return fixed(r.final_test_accuracy);
}

std::vector<std::string> curve_figures(const std::vector<RunResult>& runs, const std::string& dir,
                                       const std::string& stem, const std::string& title) {
  Figure loss{stem + "_loss.png", title + ": training loss", "step", "training loss (mean over the logged steps)"};
  loss.yrange = "[0:2.5]";
  Figure acc{stem + "_accuracy.png", title + ": test accuracy (running statistics)", "step", "test accuracy"};
  acc.yrange = "[0:1]";
  acc.points = true;
  for (const RunResult& r : runs) {
    const std::string label = r.name + (r.diverged() ? "  [NaN at step " + std::to_string(r.diverged_at) + "]" : "");
    loss.series.push_back({"curves.csv", r.name, 2, 3, label});
    acc.series.push_back({"evals.csv", r.name, 2, 4, label});
  }
  render(loss, dir);
  render(acc, dir);
  return {loss.png, acc.png};
}

}  // namespace bnorm::exp

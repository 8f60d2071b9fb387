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
  loss.logy = true;  // a loss that blows up stays on the chart until it is NaN
  loss.yrange = "[0.1:100]";
  Figure acc{stem + "_accuracy.png", title + ": test accuracy (running statistics)", "step", "test accuracy"};
  acc.yrange = "[0:1]";
  acc.points = true;
  for (const RunResult& r : runs) {
    const std::string label = r.name + (r.diverged() ? "  [NaN at step " + std::to_string(r.diverged_at) + "]" : "");
    loss.series.push_back({"curves.csv", r.name, 2, 3, label});
    acc.series.push_back({"evals.csv", r.name, 2, 4, label});
  }
  // Where a run diverged: a cross at the top of the loss chart and at the
  // bottom of the accuracy chart, at the step whose loss was NaN.
  std::vector<const RunResult*> diverged;
  for (const RunResult& r : runs)
    if (r.diverged()) diverged.push_back(&r);
  if (!diverged.empty()) {
    const std::string csv = stem + "_diverged.csv";
    CsvWriter marks(dir + "/" + csv, {"run", "step", "loss_marker", "accuracy_marker"});
    for (const RunResult* r : diverged) marks.row({r->name, std::to_string(r->diverged_at), "80", "0.03"});
    marks.close();
    loss.series.push_back({csv, "", 2, 3, "loss NaN at this step", "points pt 2 ps 2.5 lw 2 lc rgb 'red'"});
    acc.series.push_back({csv, "", 2, 4, "loss NaN at this step", "points pt 2 ps 2.5 lw 2 lc rgb 'red'"});
  }
  render(loss, dir);
  render(acc, dir);
  return {loss.png, acc.png};
}

}  // namespace bnorm::exp

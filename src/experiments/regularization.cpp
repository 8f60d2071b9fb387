// regularization: the noise of mini-batch statistics as a regularizer. The
// train/test gap and test accuracy against mini-batch size (16 … 1024) with
// BN, without, and without BN but with dropout.
#include <cmath>
#include <cstdio>

#include "bnorm/train/trainer.hpp"
#include "experiments.hpp"

namespace bnorm::exp {
namespace {

struct Variant {
  std::string label, arch;
  BnPlacement placement;
};

struct Cell {
  std::string variant;
  std::int64_t batch;
  double train_acc, test_acc, train_loss, test_loss;
  bool diverged;
  double gap() const { return train_acc - test_acc; }
};

}  // namespace

Report run_regularization(const Context& ctx, const std::string& dir) {
  Dataset train = ctx.train, test = ctx.test;
  train.truncate(ctx.quick ? 4000 : 10000);
  if (ctx.quick) test.truncate(1000);
  const std::int64_t epochs = ctx.quick ? 5 : 30;
  const std::vector<std::int64_t> batches =
      ctx.quick ? std::vector<std::int64_t>{16, 128, 1024} : std::vector<std::int64_t>{16, 32, 64, 128, 256, 512, 1024};
  const std::vector<Variant> variants = {
      {"BN before ReLU", kMlpArch, BnPlacement::before},
      {"no BN", kMlpArch, BnPlacement::none},
      {"no BN + dropout 0.3", "fc:256,relu,dropout:0.3,fc:256,relu,dropout:0.3,fc:10", BnPlacement::none}};
  const InputNormalization norm = InputNormalization::fit(train, "pixel");

  std::vector<Cell> cells;
  CsvWriter csv(dir + "/batch_size.csv",
                {"variant", "batch_size", "train_accuracy", "test_accuracy", "gap", "train_loss", "test_loss"});
  for (const Variant& v : variants)
    for (const std::int64_t b : batches) {
      RunConfig rc;
      rc.name = v.label;
      rc.arch = v.arch;
      rc.placement = v.placement;
      rc.optimizer = "adam";
      rc.lr = 0.001f;
      rc.batch_size = b;
      rc.steps = epochs * (train.count / b);
      rc.log_every = rc.steps;
      rc.eval_every = 0;
      rc.seed = ctx.seed;
      Model model = build_model(rc, {train.features});
      const RunResult r = train_run(model, rc, train, test, norm);
      Cell c{v.label, b, kNaN, r.final_test_accuracy, kNaN, r.final_test_loss, r.diverged()};
      if (!r.diverged()) {
        const EvalResult e = evaluate(model, train, norm, kEvalBatchSize, Mode::eval);
        c.train_acc = e.accuracy;
        c.train_loss = e.loss;
      }
      std::fprintf(stderr, "  regularization: %-20s batch %5lld  train %s  test %s (%.1f s)\n", v.label.c_str(),
                   static_cast<long long>(b), fixed(c.train_acc).c_str(), fixed(c.test_acc).c_str(), r.seconds);
      csv.row({v.label, std::to_string(b), num(c.train_acc, 6), num(c.test_acc, 6), num(c.gap(), 6),
               num(c.train_loss, 6), num(c.test_loss, 6)});
      cells.push_back(c);
    }
  csv.close();

  Figure fgap{"gap.png", "Train accuracy minus test accuracy", "mini-batch size", "train/test accuracy gap"};
  Figure facc{"test_accuracy.png", "Test accuracy", "mini-batch size", "test accuracy"};
  fgap.logx = facc.logx = true;
  fgap.logx_base = facc.logx_base = 2;
  fgap.points = facc.points = true;
  for (const Variant& v : variants) {
    fgap.series.push_back({"batch_size.csv", v.label, 2, 5, v.label});
    facc.series.push_back({"batch_size.csv", v.label, 2, 4, v.label});
  }
  render(fgap, dir);
  render(facc, dir);

  Report report("The noise of mini-batch statistics as a regularizer",
                "An MLP 784-256-256-10 (ReLU) trained on the first " + std::to_string(train.count) +
                    " Fashion-MNIST training examples for " + std::to_string(epochs) +
                    " epochs with Adam (lr 0.001) at each mini-batch size, with BN before each ReLU, without BN, and "
                    "without BN but with dropout 0.3 after each ReLU. Train accuracy is measured in eval mode (running "
                    "statistics, no dropout) on the training subset; test accuracy on " +
                    std::to_string(test.count) +
                    " test examples. The number of epochs is fixed, so a larger batch "
                    "also means fewer steps.");
  auto at = [&](const std::string& v, std::int64_t b) -> const Cell* {
    for (const Cell& c : cells)
      if (c.variant == v && c.batch == b) return &c;
    return nullptr;
  };
  const std::int64_t small = batches.front(), large = batches.back();
  const Cell *bs = at("BN before ReLU", small), *bl = at("BN before ReLU", large), *ns = at("no BN", small),
             *nl = at("no BN", large), *ds = at("no BN + dropout 0.3", small);
  const double effect_small = ns->gap() - bs->gap(), effect_large = nl->gap() - bl->gap();
  report.conclusion("At batch " + std::to_string(small) + " the train/test gap was " + fixed(bs->gap()) +
                    " with BN and " + fixed(ns->gap()) + " without (test accuracy " + fixed(bs->test_acc) + " vs " +
                    fixed(ns->test_acc) + "); dropout 0.3 without BN: gap " + fixed(ds->gap()) + ", test accuracy " +
                    fixed(ds->test_acc) + ".");
  report.conclusion("At batch " + std::to_string(large) + " the gap was " + fixed(bl->gap()) + " with BN and " +
                    fixed(nl->gap()) + " without (test accuracy " + fixed(bl->test_acc) + " vs " + fixed(nl->test_acc) +
                    ").");
  // One seed per cell: differences under 0.02 accuracy are within what
  // another seed would move them, so they count as no effect.
  constexpr double kEffect = 0.02;
  const bool regularizes = effect_small > kEffect;
  report.conclusion(std::string("Claim \"BN's batch noise regularizes (a smaller gap than without BN)\" at small "
                                "batches: ") +
                    (regularizes               ? "confirmed"
                     : effect_small < -kEffect ? "contradicted"
                                               : "not shown") +
                    " (gap reduced by " + fixed(effect_small) + " at batch " + std::to_string(small) + ").");
  report.conclusion(std::string("Claim \"the effect shrinks as the batch grows\": ") +
                    (regularizes && effect_large < effect_small - kEffect ? "confirmed"
                     : regularizes                                        ? "not shown"
                                   : "not applicable, there is no effect to shrink") +
                    " (gap reduction " + fixed(effect_small) + " at batch " + std::to_string(small) + ", " +
                    fixed(effect_large) + " at batch " + std::to_string(large) + ").");
  const bool dropout_better = ds->gap() < bs->gap() - kEffect;
  report.conclusion(std::string("Against dropout 0.3 at batch ") + std::to_string(small) + ": " +
                    (dropout_better ? "dropout closed the gap more than BN"
                                    : "BN's gap was smaller than dropout's or within 0.02 of it") +
                    " (" + fixed(ds->gap()) + " vs " + fixed(bs->gap()) + ").");

  report.section("Gap and accuracy against batch size");
  report.image(fgap.png, "train/test gap");
  report.image(facc.png, "test accuracy");
  std::vector<std::vector<std::string>> rows;
  for (const Cell& c : cells)
    rows.push_back({c.variant, std::to_string(c.batch), fixed(c.train_acc), fixed(c.test_acc), fixed(c.gap()),
                    c.diverged ? "diverged" : "-"});
  report.table({"network", "batch", "train accuracy", "test accuracy", "gap", "diverged"}, rows);
  report.text("Data: `batch_size.csv`.");
  return report;
}

}  // namespace bnorm::exp

// test-time: classifying one example at a time. With the running averages
// (what eval mode does), with the example's own statistics (a batch of one
// normalized by itself), and with exact population statistics recomputed over
// the training set; and how the running averages' momentum changes the gap.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/train/trainer.hpp"
#include "experiments.hpp"

namespace bnorm::exp {
namespace {

struct Row {
  std::string training;   // "300 steps": the series key in the CSV file
  std::string momentum;   // "0.1", "cumulative"
  double momentum_value;  // the plots' x axis; NaN for cumulative, which is in the table only
  double running, own, population, batch100;
  double mean_error, var_error;  // running vs population, averaged over units of every BN layer
  bool diverged;
};

struct SavedStats {
  std::vector<std::vector<float>> mean, var;
};

SavedStats save_stats(Model& model) {
  SavedStats s;
  for (const std::size_t i : batchnorm_layers(model)) {
    auto& bn = dynamic_cast<BatchNorm&>(model.layer(i));
    s.mean.emplace_back(bn.running_mean().begin(), bn.running_mean().end());
    s.var.emplace_back(bn.running_var().begin(), bn.running_var().end());
  }
  return s;
}

}  // namespace

Report run_test_time(const Context& ctx, const std::string& dir) {
  auto [train, test] = datasets(ctx, 5000);
  const InputNormalization norm = InputNormalization::fit(train, "pixel");
  RunConfig base;
  base.lr = 0.05f;
  base.steps = ctx.quick ? 300 : 3000;
  base.eval_every = 0;
  base.seed = ctx.seed;
  const std::vector<std::optional<float>> momenta = {0.001f, 0.01f, 0.1f, 0.5f, 0.9f, std::nullopt};
  // A short run as well: how long the averages have had to forget their
  // initial values (mean 0, variance 1) depends on momentum × steps.
  const std::int64_t short_steps = ctx.quick ? 60 : 300;
  const std::string long_key = std::to_string(base.steps) + " steps",
                    short_key = std::to_string(short_steps) + " steps";
  std::vector<Row> rows;
  for (const std::int64_t steps : {short_steps, base.steps})
    for (const auto& m : momenta) {
      RunConfig rc = base;
      rc.steps = steps;
      rc.bn.momentum = m;
      rc.name = m ? num(*m) : "cumulative";
      Model model = build_model(rc, {train.features});
      const RunResult r = train_run(model, rc, train, test, norm);
      Row row{std::to_string(steps) + " steps",
              rc.name,
              m ? static_cast<double>(*m) : kNaN,
              kNaN,
              kNaN,
              kNaN,
              kNaN,
              kNaN,
              kNaN,
              r.diverged()};
      if (!r.diverged()) {
        row.running = evaluate(model, test, norm, 1, Mode::eval).accuracy;
        row.own = evaluate(model, test, norm, 1, Mode::eval_batch_stats).accuracy;
        row.batch100 = evaluate(model, test, norm, 100, Mode::eval_batch_stats).accuracy;
        const SavedStats running = save_stats(model);
        recompute_population_statistics(model, train, norm);
        row.population = evaluate(model, test, norm, 1, Mode::eval).accuracy;
        const SavedStats pop = save_stats(model);
        double me = 0.0, ve = 0.0, units = 0.0;
        for (std::size_t l = 0; l < pop.mean.size(); ++l)
          for (std::size_t c = 0; c < pop.mean[l].size(); ++c) {
            me += std::abs(running.mean[l][c] - pop.mean[l][c]) / std::sqrt(pop.var[l][c] + 1e-5);
            ve += std::abs(std::log((running.var[l][c] + 1e-5) / (pop.var[l][c] + 1e-5)));
            units += 1.0;
          }
        row.mean_error = me / units;
        row.var_error = ve / units;
      }
      std::fprintf(stderr, "  test-time: %s, momentum %-10s running %s own %s population %s\n", row.training.c_str(),
                   rc.name.c_str(), fixed(row.running).c_str(), fixed(row.own).c_str(), fixed(row.population).c_str());
      rows.push_back(row);
    }
  {
    CsvWriter csv(dir + "/test_time.csv", {"training", "momentum_value", "running_stats", "own_stats_batch_of_one",
                                           "population_stats", "test_batch_stats_100", "mean_error_in_stds",
                                           "abs_log_var_ratio", "population_minus_running", "momentum"});
    for (const Row& r : rows)
      csv.row({r.training, num(r.momentum_value, 6), num(r.running, 6), num(r.own, 6), num(r.population, 6),
               num(r.batch100, 6), num(r.mean_error, 6), num(r.var_error, 6), num(r.population - r.running, 6),
               r.momentum});
    csv.close();
  }
  Figure facc{"accuracy_vs_momentum.png", "Test accuracy, one example at a time, after " + long_key,
              "BN momentum (weight of each new batch)", "test accuracy"};
  facc.logx = true;
  facc.points = true;
  facc.yrange = "[0:1]";
  facc.series = {{"test_time.csv", long_key, 2, 3, "running averages (eval mode)"},
                 {"test_time.csv", long_key, 2, 5, "population statistics (recomputed)"},
                 {"test_time.csv", long_key, 2, 4, "own statistics (batch of one)"},
                 {"test_time.csv", long_key, 2, 6, "test-batch statistics (batch of 100)"}};
  Figure fgap{"gap_vs_momentum.png", "Accuracy lost by using running averages instead of population statistics",
              "BN momentum (weight of each new batch)", "population accuracy - running accuracy"};
  fgap.logx = true;
  fgap.points = true;
  fgap.series = {{"test_time.csv", short_key, 2, 9, "after " + short_key},
                 {"test_time.csv", long_key, 2, 9, "after " + long_key}};
  Figure ferr{"running_vs_population.png", "How far the running averages are from the population statistics",
              "BN momentum (weight of each new batch)", "mean over units"};
  ferr.logx = ferr.logy = true;
  ferr.points = true;
  for (const std::string& key : {short_key, long_key}) {
    ferr.series.emplace_back("test_time.csv", key, 2, 7, "|running mean - population mean| / population std, " + key);
    ferr.series.emplace_back("test_time.csv", key, 2, 8, "|log(running var / population var)|, " + key);
  }
  render(facc, dir);
  render(fgap, dir);
  render(ferr, dir);

  Report report("Batch norm at test time",
                "An MLP 784-256-256-10 with BN before each ReLU, trained on " + std::to_string(train.count) +
                    " Fashion-MNIST examples (SGD lr 0.05, momentum 0.9, batch 64, " + std::to_string(base.steps) +
                    " steps, and again for only " + std::to_string(short_steps) +
                    ") once for each running-average momentum, then tested on " + std::to_string(test.count) +
                    " test examples one at a time: with the running averages; with each example's own statistics "
                    "(a batch of one normalized by itself: every unit becomes β); and with the exact mean and "
                    "variance of each BN layer's input over the whole training subset, recomputed layer by layer. "
                    "For comparison, batches of 100 test examples normalized with their own statistics. Momentum is "
                    "the weight of the new batch (PyTorch's convention); \"cumulative\" is the plain average of all "
                    "batches (in the table only).");
  const Row* def = nullptr;
  for (const Row& r : rows)
    if (r.momentum == "0.1" && r.training == long_key) def = &r;
  if (def && !def->diverged) {
    const double gap = def->population - def->running;
    report.conclusion("With the default momentum 0.1, running averages gave " + fixed(def->running) +
                      " test accuracy one example at a time and exact population statistics " + fixed(def->population) +
                      ": " +
                      (std::abs(gap) <= 0.005
                           ? "the running averages are as good as the exact statistics"
                           : "the running averages were " + fixed(std::abs(gap)) + (gap > 0 ? " worse" : " better")) +
                      ".");
    report.conclusion("Each example normalized with its own statistics gave " + fixed(def->own) + " test accuracy (" +
                      (def->own < 0.2 ? "chance level: every input gets the same output" : "above chance") + ").");
    report.conclusion(
        "Test batches of 100 normalized with their own statistics gave " + fixed(def->batch100) + " (" +
        (std::abs(def->batch100 - def->running) <= 0.01
             ? "within 0.01 of"
             : fixed(std::abs(def->batch100 - def->running)) + (def->batch100 > def->running ? " above" : " below")) +
        " the running averages: a batch of 100 has statistics close to the population's).");
  }
  for (const std::string& key : {short_key, long_key}) {
    const Row* worst = nullptr;
    for (const Row& r : rows)
      if (r.training == key && !r.diverged && (!worst || r.population - r.running > worst->population - worst->running))
        worst = &r;
    if (worst) {
      const double gap = worst->population - worst->running;
      report.conclusion("After " + key + ", the largest gap between population and running statistics was " +
                        fixed(gap) + " accuracy, at momentum " + worst->momentum + " (mean error " +
                        num(worst->mean_error, 3) + " stds); " +
                        (gap <= 0.01 ? "every momentum tried stayed within 0.01 of the exact statistics"
                         : std::isnan(worst->momentum_value)
                             ? "the cumulative average still weighs the first batches, from a network that has "
                               "since changed, as much as the last"
                         : worst->momentum_value < 0.05
                             ? "the momentum matters: averages this slow still remember their initial 0 and 1"
                             : "the momentum matters: averages this fast follow the last few noisy batches") +
                        ".");
    }
  }
  if (def && !def->diverged) {
    report.conclusion(std::string("Claim \"at test time the running averages stand in for the population "
                                  "statistics\": ") +
                      (std::abs(def->population - def->running) <= 0.01 ? "confirmed" : "contradicted") +
                      " at momentum 0.1 (" + fixed(def->running) + " vs " + fixed(def->population) + ").");
    report.conclusion(std::string("Claim \"normalizing an example with its own statistics is nonsense\": ") +
                      (def->own < 0.2 ? "confirmed" : "contradicted") + " (" + fixed(def->own) +
                      " test accuracy, chance is 0.1).");
  }
  double widest = 0.0;
  for (const Row& r : rows)
    if (!r.diverged) widest = std::max(widest, r.population - r.running);
  report.conclusion(std::string("Claim \"the momentum of the running averages matters\": ") +
                    (widest > 0.01 ? "confirmed" : "not shown") + " (largest gap " + fixed(widest) +
                    " accuracy over the momenta and training lengths tried).");
  report.section("Accuracy against momentum");
  report.image(facc.png, "accuracy vs momentum");
  report.image(fgap.png, "gap vs momentum");
  report.image(ferr.png, "running vs population statistics");
  std::vector<std::vector<std::string>> table;
  for (const Row& r : rows)
    table.push_back({r.training, r.momentum, fixed(r.running), fixed(r.population), fixed(r.own), fixed(r.batch100),
                     num(r.mean_error, 3), num(r.var_error, 3)});
  report.table({"training", "momentum", "running averages", "population statistics", "own statistics (1)",
                "test batch (100)", "mean error (stds)", "|log var ratio|"},
               table);
  report.text("Data: `test_time.csv`.");
  return report;
}

}  // namespace bnorm::exp

// covariate-shift: what each layer sees. (1) The per-unit mean and standard
// deviation of every hidden layer's input on a fixed probe batch across
// training, with and without batch norm; (2) how far the input of the last
// hidden layer moves when the first layer's weights take a small gradient
// step; (3) training on a shifted input distribution (low-contrast, brighter
// images) and testing on the real one.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "bnorm/train/trainer.hpp"
#include "experiments.hpp"

namespace bnorm::exp {
namespace {

struct Probe {
  std::int64_t step;
  std::size_t layer;                          // index of the Linear layer whose input this is
  double mean_of_means, mean_of_stds, drift;  // drift: RMS change of unit means since the last probe, in stds
  std::vector<double> means;
};

double median(std::vector<double> v) {
  if (v.empty()) return kNaN;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double mean(const std::vector<double>& v) {
  return v.empty() ? kNaN : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

std::string words(BnPlacement p) { return p == BnPlacement::none ? "no BN" : "BN " + bn_placement_name(p) + " ReLU"; }

// A copy of data with every pixel p replaced by round(scale*p + offset).
Dataset shifted(const Dataset& data, double scale, double offset) {
  Dataset out = data;
  for (auto& p : out.bytes) p = static_cast<std::uint8_t>(std::clamp(std::lround(scale * p + offset), 0L, 255L));
  return out;
}

struct Traced {
  BnPlacement placement;
  RunResult result;
  std::vector<Probe> probes;
  std::vector<std::pair<std::int64_t, double>> sensitivity;  // step, relative change of the last hidden input
  std::size_t last_hidden = 0;
};

Traced traced_run(BnPlacement placement, const RunConfig& base, const Dataset& train, const Dataset& test,
                  const InputNormalization& norm, const Tensor& probe_x, std::int64_t probe_every) {
  RunConfig rc = base;
  rc.placement = placement;
  rc.name = words(placement);
  Model model = build_model(rc, {train.features});
  std::vector<std::size_t> linears;
  for (std::size_t i = 0; i < model.num_layers(); ++i)
    if (model.layer(i).type() == "linear") linears.push_back(i);
  Traced t{placement, {}, {}, {}, linears.back()};
  // The first layer's weight inside the flat parameter buffer.
  float* w0 = nullptr;
  std::size_t w0_size = 0;
  for (const StateEntry& e : model.layer(linears.front()).state())
    if (e.name == "weight") {
      w0 = static_cast<float*>(e.data);
      w0_size = static_cast<std::size_t>(numel(e.shape));
    }
  const std::size_t w0_offset = static_cast<std::size_t>(w0 - model.parameters().data());
  std::vector<float> saved_w0(w0_size);
  auto hook = [&](std::int64_t step) {
    if (step != 1 && step % probe_every != 0) return;
    model.forward(probe_x, Mode::eval_batch_stats);
    for (std::size_t k = 1; k < linears.size(); ++k) {
      const ChannelStats s = channel_stats(layer_input(model, linears[k], probe_x));
      Probe p{step, linears[k], mean(s.mean), mean(s.std), kNaN, s.mean};
      for (auto it = t.probes.rbegin(); it != t.probes.rend(); ++it)
        if (it->layer == p.layer) {
          double sq = 0.0;
          for (std::size_t u = 0; u < s.mean.size(); ++u) sq += (s.mean[u] - it->means[u]) * (s.mean[u] - it->means[u]);
          p.drift = std::sqrt(sq / static_cast<double>(s.mean.size())) / std::max(it->mean_of_stds, 1e-12);
          break;
        }
      t.probes.push_back(std::move(p));
    }
    // A step of 1% of |W0| along this batch's gradient, on W0 alone.
    const Tensor h0 = layer_input(model, t.last_hidden, probe_x);
    const auto g = model.gradients().subspan(w0_offset, w0_size);
    double gnorm = 0.0, wnorm = 0.0;
    for (std::size_t i = 0; i < w0_size; ++i) {
      gnorm += static_cast<double>(g[i]) * g[i];
      wnorm += static_cast<double>(w0[i]) * w0[i];
    }
    if (gnorm <= 0.0) return;
    const double scale = 0.01 * std::sqrt(wnorm / gnorm);
    std::copy(w0, w0 + w0_size, saved_w0.begin());
    for (std::size_t i = 0; i < w0_size; ++i) w0[i] -= static_cast<float>(scale * g[i]);
    model.forward(probe_x, Mode::eval_batch_stats);
    const Tensor& h1 = layer_input(model, t.last_hidden, probe_x);
    double d2 = 0.0, n2 = 0.0;
    for (std::int64_t i = 0; i < h0.size(); ++i) {
      d2 += (static_cast<double>(h1[i]) - h0[i]) * (static_cast<double>(h1[i]) - h0[i]);
      n2 += static_cast<double>(h0[i]) * h0[i];
    }
    std::copy(saved_w0.begin(), saved_w0.end(), w0);
    t.sensitivity.emplace_back(step, std::sqrt(d2 / std::max(n2, 1e-30)));
  };
  t.result = train_run(model, rc, train, test, norm, hook);
  return t;
}

std::vector<std::size_t> probed_layers(const Traced& t) {
  std::vector<std::size_t> layers;
  for (const Probe& p : t.probes)
    if (std::find(layers.begin(), layers.end(), p.layer) == layers.end()) layers.push_back(p.layer);
  return layers;
}

}  // namespace

Report run_covariate_shift(const Context& ctx, const std::string& dir) {
  auto [train, test] = datasets(ctx, 5000);
  RunConfig base;
  base.lr = 0.05f;
  base.steps = ctx.quick ? 300 : 3000;
  base.eval_every = ctx.quick ? 50 : 200;
  base.seed = ctx.seed;
  const std::int64_t probe_every = ctx.quick ? 20 : 50;
  const std::int64_t probe_n = ctx.quick ? 256 : 512;
  const InputNormalization norm = InputNormalization::fit(train, "pixel");
  Tensor probe_x;
  std::vector<std::int64_t> probe_idx(static_cast<std::size_t>(probe_n));
  std::iota(probe_idx.begin(), probe_idx.end(), 0);
  norm.apply(probe_x, test, {train.features}, probe_idx);

  std::vector<Traced> runs;
  for (const BnPlacement p : {BnPlacement::before, BnPlacement::after, BnPlacement::none}) {
    runs.push_back(traced_run(p, base, train, test, norm, probe_x, probe_every));
    std::fprintf(stderr, "  covariate-shift: %-16s %s\n", words(p).c_str(), outcome(runs.back().result).c_str());
  }

  // Files: probes.csv (series = network and layer), sensitivity.csv.
  {
    CsvWriter probes(dir + "/probes.csv",
                     {"series", "step", "mean_of_unit_means", "mean_of_unit_stds", "drift_in_stds"});
    CsvWriter sens(dir + "/sensitivity.csv", {"run", "step", "relative_change_of_last_hidden_input"});
    // Grouped by series: gnuplot draws no line through the other series' rows.
    for (const Traced& t : runs) {
      for (const std::size_t layer : probed_layers(t))
        for (const Probe& p : t.probes)
          if (p.layer == layer)
            probes.row({words(t.placement) + " / input of layer " + std::to_string(p.layer), std::to_string(p.step),
                        num(p.mean_of_means, 6), num(p.mean_of_stds, 6), num(p.drift, 6)});
      for (const auto& [step, rel] : t.sensitivity) sens.row({words(t.placement), std::to_string(step), num(rel, 6)});
    }
    probes.close();
    sens.close();
  }
  Figure fm{"unit_means.png", "Mean over units of each unit's mean input (probe batch)", "step", "mean of unit means"};
  Figure fs{"unit_stds.png", "Mean over units of each unit's input std (probe batch)", "step", "mean of unit stds"};
  Figure fd{"drift.png", "Change of the unit means between probes, in units of their std", "step", "RMS drift (stds)"};
  fd.logy = true;
  Figure fsens{"step_sensitivity.png", "Relative change of the last hidden layer's input after a 1% step on layer 0",
               "step", "|dh| / |h|"};
  fsens.logy = true;
  for (const Traced& t : runs) {
    for (const std::size_t l : probed_layers(t)) {
      const std::string key = words(t.placement) + " / input of layer " + std::to_string(l);
      fm.series.push_back({"probes.csv", key, 2, 3, key});
      fs.series.push_back({"probes.csv", key, 2, 4, key});
      fd.series.push_back({"probes.csv", key, 2, 5, key});
    }
    fsens.series.push_back({"sensitivity.csv", words(t.placement), 2, 3, words(t.placement)});
  }
  for (const Figure* f : {&fm, &fs, &fd, &fsens}) render(*f, dir);

  // Part 3: train on shifted images, test on the real ones.
  const double shift_scale = 0.4, shift_offset = 100;
  const Dataset train_shifted = shifted(train, shift_scale, shift_offset);
  const Dataset test_shifted = shifted(test, shift_scale, shift_offset);
  const InputNormalization norm_shifted = InputNormalization::fit(train_shifted, "pixel");
  struct ShiftRow {
    BnPlacement placement;
    double in_dist, real_running, real_batch, unshifted_baseline;
  };
  std::vector<ShiftRow> shift_rows;
  for (const Traced& t : runs) {
    if (t.placement == BnPlacement::after) continue;
    RunConfig rc = base;
    rc.placement = t.placement;
    rc.name = words(t.placement) + " / shifted";
    rc.eval_every = 0;
    Model model = build_model(rc, {train.features});
    const RunResult r = train_run(model, rc, train_shifted, test_shifted, norm_shifted);
    ShiftRow row{t.placement, r.final_test_accuracy, kNaN, kNaN, t.result.final_test_accuracy};
    if (!r.diverged()) {
      row.real_running = evaluate(model, test, norm_shifted, kEvalBatchSize, Mode::eval).accuracy;
      if (t.placement != BnPlacement::none)
        row.real_batch = evaluate(model, test, norm_shifted, kEvalBatchSize, Mode::eval_batch_stats).accuracy;
    }
    shift_rows.push_back(row);
  }
  {
    CsvWriter csv(dir + "/shift.csv", {"network", "shifted_test", "real_test_running_stats",
                                       "real_test_batch_stats_100", "trained_and_tested_unshifted"});
    for (const auto& r : shift_rows)
      csv.row({words(r.placement), num(r.in_dist, 6), num(r.real_running, 6), num(r.real_batch, 6),
               num(r.unshifted_baseline, 6)});
    csv.close();
  }

  Report report("What each layer sees: internal covariate shift",
                "An MLP 784-256-256-10 (ReLU) on Fashion-MNIST (" + std::to_string(train.count) +
                    " training examples, SGD lr 0.05, momentum 0.9, batch 64, " + std::to_string(base.steps) +
                    " steps). Every " + std::to_string(probe_every) + " steps a fixed probe batch of " +
                    std::to_string(probe_n) +
                    " test images goes through the network with batch statistics (what "
                    "training sees, nothing updated), and for each hidden Linear layer the mean and standard "
                    "deviation of every unit of its input are taken. At the same moments the first layer's weights "
                    "take a step of 1% of their norm along the current gradient, and the relative change of the last "
                    "hidden layer's input on the probe batch is measured (then the step is undone).");
  // Conclusions.
  auto avg_drift = [&](const Traced& t) {
    std::vector<double> d;
    for (const Probe& p : t.probes)
      if (p.layer == t.last_hidden && std::isfinite(p.drift)) d.push_back(p.drift);
    return mean(d);
  };
  auto total_move = [&](const Traced& t) {
    const Probe *first = nullptr, *last = nullptr;
    for (const Probe& p : t.probes)
      if (p.layer == t.last_hidden) {
        if (!first) first = &p;
        last = &p;
      }
    if (!first || !last || first == last) return kNaN;
    double sq = 0.0;
    for (std::size_t u = 0; u < first->means.size(); ++u)
      sq += (last->means[u] - first->means[u]) * (last->means[u] - first->means[u]);
    return std::sqrt(sq / static_cast<double>(first->means.size())) / std::max(first->mean_of_stds, 1e-12);
  };
  auto sens_median = [&](const Traced& t) {
    std::vector<double> v;
    for (const auto& s : t.sensitivity) v.push_back(s.second);
    return median(v);
  };
  const Traced& bn = runs[0];
  const Traced& plain = runs[2];
  auto compare = [](double with_bn, double without) {
    const double r = with_bn / without;
    if (!std::isfinite(r)) return std::string("could not be compared");
    if (r < 0.67) return "smaller with BN (" + num(r, 2) + "× the no-BN value)";
    if (r > 1.5) return "larger with BN (" + num(r, 2) + "× the no-BN value)";
    return "about the same with and without BN (ratio " + num(r, 2) + ")";
  };
  const double d_bn = avg_drift(bn), d_plain = avg_drift(plain);
  report.conclusion("Between consecutive probes the unit means of the last hidden layer's input moved on average " +
                    num(d_bn, 3) + " stds with BN before ReLU and " + num(d_plain, 3) +
                    " without BN: " + compare(d_bn, d_plain) + ".");
  const double m_bn = total_move(bn), m_plain = total_move(plain);
  report.conclusion("From the first probe to the last they moved " + num(m_bn, 3) + " stds (BN before ReLU) and " +
                    num(m_plain, 3) + " stds (no BN): " + compare(m_bn, m_plain) + ".");
  const double s_bn = sens_median(bn), s_plain = sens_median(plain);
  report.conclusion("A 1% gradient step on the first layer changed the last hidden layer's input by a median " +
                    num(100 * s_bn, 3) + "% with BN before ReLU and " + num(100 * s_plain, 3) +
                    "% without BN: " + compare(s_bn, s_plain) + ".");
  const bool ics_reduced = d_bn / d_plain < 0.67 && m_bn / m_plain < 0.67;
  report.conclusion(std::string("Claim \"BN reduces the shift of the distribution a later layer sees\": ") +
                    (ics_reduced            ? "confirmed"
                     : d_bn / d_plain > 1.5 ? "contradicted"
                                            : "not clearly shown") +
                    " on this network (by the drift of the unit means).");
  report.conclusion(std::string("Claim \"with BN a step on an early layer moves a later layer's inputs less\": ") +
                    (s_bn / s_plain < 0.67  ? "confirmed"
                     : s_bn / s_plain > 1.5 ? "contradicted"
                                            : "not shown") +
                    " (median change " + num(100 * s_bn, 3) + "% with BN, " + num(100 * s_plain, 3) + "% without).");
  for (const auto& r : shift_rows) {
    std::string line = "Trained on shifted images, " + words(r.placement) + " scored " + fixed(r.in_dist) +
                       " on shifted test images and " + fixed(r.real_running) +
                       " on the real ones with running statistics";
    if (std::isfinite(r.real_batch))
      line += " (" + fixed(r.real_batch) + " when each test batch of 100 is normalized with its own statistics)";
    line += "; trained on real images it scored " + fixed(r.unshifted_baseline) + ".";
    report.conclusion(line);
  }
  if (shift_rows.size() == 2 && std::isfinite(shift_rows[0].real_batch)) {
    const double gain = shift_rows[0].real_batch - shift_rows[0].real_running;
    report.conclusion(gain > 0.02 ? "The running statistics did not follow the change of distribution: "
                                    "re-estimating them on each test batch recovered " +
                                        fixed(gain) + " accuracy for the BN network."
                                  : "Re-estimating the statistics on each test batch changed the BN network's "
                                    "accuracy on real images by only " +
                                        fixed(gain) + ".");
    const double bn_real = shift_rows[0].real_running, plain_real = shift_rows[1].real_running;
    report.conclusion(std::string("Claim \"BN protects a network against a shift of the input distribution between "
                                  "training and test\": ") +
                      (bn_real > plain_real + 0.02   ? "confirmed"
                       : bn_real < plain_real - 0.02 ? "contradicted"
                                                     : "not shown") +
                      " (on real images after training on shifted ones: " + fixed(bn_real) +
                      " with BN and running statistics, " + fixed(plain_real) + " without BN).");
  }

  report.section("Hidden layers' inputs during training");
  report.text(
      "Layer indices count every layer: with BN before ReLU the network is Linear(0), BN(1), ReLU(2), "
      "Linear(3), BN(4), ReLU(5), Linear(6); with BN after, Linear, ReLU, BN, …; without BN Linear(0), "
      "ReLU(1), Linear(2), ReLU(3), Linear(4). Drift is the root mean square over units of the change of "
      "each unit's mean since the previous probe, divided by the mean unit std at that probe.");
  report.image(fm.png, "mean of unit means");
  report.image(fs.png, "mean of unit stds");
  report.image(fd.png, "drift");
  std::vector<std::vector<std::string>> rows;
  for (const Traced& t : runs)
    rows.push_back({words(t.placement), outcome(t.result), num(avg_drift(t), 3), num(total_move(t), 3),
                    num(100 * sens_median(t), 3) + "%"});
  report.table({"network", "final test accuracy", "mean drift between probes (stds)", "first→last move (stds)",
                "median change after a 1% step on layer 0"},
               rows);
  report.section("Sensitivity of a later layer to a step on the first");
  report.image(fsens.png, "step sensitivity");
  report.section("Training on a shifted distribution");
  report.text("Training images with each pixel p replaced by round(" + num(shift_scale) + "·p + " + num(shift_offset) +
              ") (low contrast, brighter), input standardization fitted on them; tested on shifted test images and "
              "on the real test set.");
  std::vector<std::vector<std::string>> srows;
  for (const auto& r : shift_rows)
    srows.push_back({words(r.placement), fixed(r.in_dist), fixed(r.real_running), fixed(r.real_batch),
                     fixed(r.unshifted_baseline)});
  report.table({"network", "shifted test", "real test, running statistics", "real test, batch statistics (100)",
                "trained and tested on real images"},
               srows);
  report.text("Data: `probes.csv`, `sensitivity.csv`, `shift.csv`.");
  return report;
}

}  // namespace bnorm::exp

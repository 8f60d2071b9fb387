#include "runs.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "bnorm/error.hpp"
#include "bnorm/nn/arch.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/nn/loss.hpp"
#include "bnorm/train/batches.hpp"
#include "bnorm/train/numeric_check.hpp"
#include "bnorm/train/recalibrate.hpp"
#include "bnorm/train/trainer.hpp"

namespace bnorm::exp {

double RunResult::best_test_accuracy() const {
  double best = kNaN;
  for (const auto& e : evals)
    if (std::isfinite(e.test_accuracy) && !(e.test_accuracy <= best)) best = e.test_accuracy;
  return best;
}

std::int64_t RunResult::steps_to_accuracy(double threshold) const {
  for (const auto& e : evals)
    if (e.test_accuracy >= threshold) return e.step;
  return -1;
}

Model build_model(const RunConfig& config, const Shape& input) {
  Model model = Model::from_architecture(parse_arch(config.arch, input, config.placement, config.bn));
  Rng rng(init_rng_seed(config.seed));
  model.init_parameters(rng);
  return model;
}

RunResult train_run(Model& model, const RunConfig& config, const Dataset& train, const Dataset& test,
                    const InputNormalization& norm, const StepHook& hook) {
  const auto start = std::chrono::steady_clock::now();
  RunResult result;
  result.name = config.name;
  auto optimizer = make_optimizer(config.optimizer, config.lr, config.momentum, 0.0f);
  Rng rng(config.seed);
  BatchOrder order(train.count, config.batch_size, true);
  Tensor x, dlogits;
  std::vector<std::int32_t> labels;
  double loss_sum = 0.0;
  std::int64_t loss_count = 0, batch = order.num_batches();
  auto evaluate_now = [&](std::int64_t step) {
    if (test.count == 0) return;
    const EvalResult e = evaluate(model, test, norm, kEvalBatchSize, Mode::eval);
    result.evals.push_back({step, e.loss, e.accuracy});
  };
  for (std::int64_t step = 1; step <= config.steps; ++step) {
    if (batch == order.num_batches()) {
      order.shuffle(rng);
      batch = 0;
    }
    const auto idx = order.batch(batch++);
    norm.apply(x, train, model.input_shape(), idx);
    labels.resize(idx.size());
    for (std::size_t i = 0; i < idx.size(); ++i) labels[i] = train.labels[static_cast<std::size_t>(idx[i])];
    const LossResult r = softmax_cross_entropy(model.forward(x, Mode::train), labels, &dlogits);
    // Inputs that are already non-finite (after an update that overflowed) need no backward.
    if (!std::isfinite(r.loss)) {
      if (loss_count > 0) result.curve.push_back({step - 1, loss_sum / static_cast<double>(loss_count)});
      result.diverged_at = step;
      break;
    }
    model.backward(dlogits);
    if (!all_finite(model.gradients())) {
      if (loss_count > 0) result.curve.push_back({step - 1, loss_sum / static_cast<double>(loss_count)});
      result.diverged_at = step;
      break;
    }
    if (hook) hook(step);
    optimizer->step(model.parameters(), model.gradients());
    result.steps_done = step;
    loss_sum += r.loss;
    if (++loss_count == config.log_every || step == config.steps) {
      result.curve.push_back({step, loss_sum / static_cast<double>(loss_count)});
      loss_sum = 0.0;
      loss_count = 0;
    }
    if ((config.eval_every > 0 && step % config.eval_every == 0) || step == config.steps) evaluate_now(step);
  }
  // An update can overflow the parameters without a non-finite loss yet.
  if (!result.diverged() && !all_finite(model.parameters())) result.diverged_at = result.steps_done;
  if (!result.diverged() && !result.evals.empty()) {
    if (result.evals.back().step != result.steps_done) evaluate_now(result.steps_done);
    result.final_test_accuracy = result.evals.back().test_accuracy;
    result.final_test_loss = result.evals.back().test_loss;
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

ChannelStats channel_stats(const Tensor& t) {
  const Shape& s = t.shape();
  if (s.size() < 2) throw Error("channel_stats needs (N, C, ...), got " + shape_str(s));
  const std::int64_t N = s[0], C = s[1], S = t.size() / std::max<std::int64_t>(N * C, 1);
  ChannelStats out;
  out.mean.assign(static_cast<std::size_t>(C), 0.0);
  out.std.assign(static_cast<std::size_t>(C), 0.0);
  const double m = static_cast<double>(N * S);
  for (std::int64_t c = 0; c < C; ++c) {
    double sum = 0.0;
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t k = 0; k < S; ++k) sum += t[(n * C + c) * S + k];
    const double mean = sum / m;
    double sq = 0.0;
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t k = 0; k < S; ++k) {
        const double d = t[(n * C + c) * S + k] - mean;
        sq += d * d;
      }
    out.mean[static_cast<std::size_t>(c)] = mean;
    out.std[static_cast<std::size_t>(c)] = std::sqrt(sq / m);
  }
  return out;
}

std::vector<std::size_t> batchnorm_layers(const Model& model) {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < model.num_layers(); ++i)
    if (model.layer(i).type() == "batchnorm") out.push_back(i);
  return out;
}

const Tensor& layer_input(const Model& model, std::size_t i, const Tensor& x) {
  return i == 0 ? x : model.layer_output(i - 1);
}

void recompute_population_statistics(Model& model, const Dataset& data, const InputNormalization& norm,
                                     std::int64_t batch_size) {
  RecalibrationOptions o;
  o.mode = RecalibrationMode::exact;
  o.batch_size = batch_size;
  o.biased_variance = true;  // the experiment compares with the population's own variance
  recalibrate_batchnorm(model, data, norm, o);
}

InputNormalization unstandardized_inputs(float scale) {
  InputNormalization n;
  n.mode = "global";
  n.divisor = 255.0f;
  n.mean = {0.0f};
  n.std = {scale / 255.0f};
  return n;
}

}  // namespace bnorm::exp

#include "bnorm/train/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <numeric>

#include "bnorm/error.hpp"
#include "bnorm/nn/loss.hpp"
#include "bnorm/train/batches.hpp"

namespace bnorm {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void gather_labels(std::vector<std::uint8_t>& out, const ImageDataset& data, std::span<const std::int64_t> idx) {
  out.resize(idx.size());
  for (std::size_t i = 0; i < idx.size(); ++i) out[i] = data.labels[static_cast<std::size_t>(idx[i])];
}

}  // namespace

EvalResult evaluate(Model& model, const ImageDataset& data, const InputNormalization& norm,
                    std::int64_t batch_size, Mode mode) {
  EvalResult r;
  if (data.count == 0) return r;
  if (numel(model.input_shape()) != data.features)
    throw Error("the model takes inputs " + shape_str(model.input_shape()) + " but the images have " +
                std::to_string(data.features) + " pixels");
  Tensor x;
  std::vector<std::int64_t> idx;
  std::vector<std::uint8_t> labels;
  double loss_sum = 0.0;
  std::int64_t correct = 0;
  for (std::int64_t begin = 0; begin < data.count; begin += batch_size) {
    const std::int64_t n = std::min(batch_size, data.count - begin);
    idx.resize(static_cast<std::size_t>(n));
    std::iota(idx.begin(), idx.end(), begin);
    norm.apply(x, data.pixels.data(), model.input_shape(), idx);
    gather_labels(labels, data, idx);
    const LossResult batch = softmax_cross_entropy(model.forward(x, mode), labels, nullptr);
    loss_sum += batch.loss * static_cast<double>(n);
    correct += batch.correct;
  }
  r.examples = data.count;
  r.loss = loss_sum / static_cast<double>(data.count);
  r.accuracy = static_cast<double>(correct) / static_cast<double>(data.count);
  return r;
}

Trainer::Trainer(Model& model, Optimizer& optimizer, const InputNormalization& norm, TrainConfig config)
    : model_(model), optimizer_(optimizer), norm_(norm), config_(config) {
  if (config_.epochs < 0) throw Error("epochs must be >= 0");
  if (config_.batch_size < 2) throw Error("batch size must be at least 2: batch norm needs a spread to normalize");
}

void Trainer::fit(const ImageDataset& train, const ImageDataset& test,
                  const std::function<void(const Progress&)>& on_progress,
                  const std::function<void(const EpochReport&)>& on_epoch) {
  if (train.count < 2) throw Error("the training set needs at least 2 examples");
  norm_.validate(train.features);
  if (numel(model_.input_shape()) != train.features)
    throw Error("the model takes inputs " + shape_str(model_.input_shape()) + " but the images have " +
                std::to_string(train.features) + " pixels");
  Rng rng(config_.seed);

  BatchOrder order(train.count, config_.batch_size, config_.drop_singleton_batch);
  Tensor x, dlogits;
  std::vector<std::uint8_t> labels;
  for (std::int64_t epoch = 1; epoch <= config_.epochs; ++epoch) {
    order.shuffle(rng);
    const auto start = Clock::now();
    double loss_sum = 0.0;
    std::int64_t correct = 0, seen = 0;
    const std::int64_t batches = order.num_batches();
    for (std::int64_t b = 0; b < batches; ++b) {
      const auto idx = order.batch(b);
      norm_.apply(x, train.pixels.data(), model_.input_shape(), idx);
      gather_labels(labels, train, idx);
      const LossResult r = softmax_cross_entropy(model_.forward(x, Mode::train), labels, &dlogits);
      model_.backward(dlogits);
      optimizer_.step(model_.parameters(), model_.gradients());
      const auto n = static_cast<std::int64_t>(idx.size());
      loss_sum += r.loss * static_cast<double>(n);
      correct += r.correct;
      seen += n;
      if (on_progress && (b % 20 == 0 || b + 1 == batches))
        on_progress({epoch, config_.epochs, b + 1, batches, seen, loss_sum / static_cast<double>(seen),
                     seconds_since(start)});
    }
    EpochReport report;
    report.epoch = epoch;
    report.seconds = seconds_since(start);
    report.samples_per_s = static_cast<double>(seen) / std::max(report.seconds, 1e-9);
    report.train_loss = loss_sum / static_cast<double>(std::max<std::int64_t>(seen, 1));
    report.train_accuracy = static_cast<double>(correct) / static_cast<double>(std::max<std::int64_t>(seen, 1));
    if (test.count > 0) {
      const EvalResult e = evaluate(model_, test, norm_, kEvalBatchSize, Mode::eval);
      report.test_loss = e.loss;
      report.test_accuracy = e.accuracy;
    }
    if (on_epoch) on_epoch(report);
  }
}

}  // namespace bnorm

#include "bnorm/train/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>

#include "bnorm/error.hpp"
#include "bnorm/nn/loss.hpp"
#include "bnorm/train/batches.hpp"
#include "bnorm/train/numeric_check.hpp"

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
  if (batch_size < 1) throw Error("evaluation batch size must be at least 1");
  // Steps by n, not batch_size: begin + batch_size could overflow for a huge batch.
  for (std::int64_t begin = 0, n = 0; begin < data.count; begin += n) {
    n = std::min(batch_size, data.count - begin);
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

namespace {

// The model's non-parameter buffers (running statistics, batch counters):
// what a training-mode forward changes besides the caches.
struct BufferSnapshot {
  std::vector<std::pair<void*, std::size_t>> buffers;  // where, how many bytes
  std::vector<unsigned char> saved;

  explicit BufferSnapshot(Model& model) {
    const auto params = model.parameters();
    const auto* begin = reinterpret_cast<const unsigned char*>(params.data());
    const auto* end = begin + params.size_bytes();
    std::size_t total = 0;
    for (const StateEntry& e : model.state_dict()) {
      const auto* p = static_cast<const unsigned char*>(e.data);
      if (p >= begin && p < end) continue;  // a parameter: the optimizer's business
      const std::size_t bytes = static_cast<std::size_t>(numel(e.shape)) * (e.dtype == StateEntry::DType::f32 ? 4 : 8);
      buffers.emplace_back(e.data, bytes);
      total += bytes;
    }
    saved.resize(total);
  }
  void save() {
    unsigned char* to = saved.data();
    for (const auto& [p, n] : buffers) {
      std::memcpy(to, p, n);
      to += n;
    }
  }
  void restore() {
    const unsigned char* from = saved.data();
    for (const auto& [p, n] : buffers) {
      std::memcpy(p, from, n);
      from += n;
    }
  }
};

std::string step_text(std::int64_t epoch, std::int64_t batch, std::int64_t batches, std::int64_t step) {
  return "epoch " + std::to_string(epoch) + ", batch " + std::to_string(batch) + "/" + std::to_string(batches) +
         ", global step " + std::to_string(step);
}

}  // namespace

void Trainer::restore_position(const TrainPosition& pos, BatchOrder& order, Rng& rng) const {
  if (pos.epoch < 1 || pos.epoch > config_.epochs || pos.global_step < 0 || pos.seen < 0 || pos.correct < 0 ||
      pos.correct > pos.seen || pos.skipped < 0 || !std::isfinite(pos.loss_sum))
    throw Error("checkpoint position (epoch " + std::to_string(pos.epoch) + " of " + std::to_string(config_.epochs) +
                ") is inconsistent with the training configuration");
  order.restore(pos.order);
  if (pos.batch < 0 || pos.batch > order.num_batches())
    throw Error("checkpoint position batch " + std::to_string(pos.batch) + " is outside the epoch's " +
                std::to_string(order.num_batches()) + " batches");
  rng.set_state(pos.rng);
}

void Trainer::check_resume(const ImageDataset& train) const {
  if (!resume_) return;
  BatchOrder order(train.count, config_.batch_size, config_.drop_singleton_batch);
  Rng rng(config_.seed);
  restore_position(*resume_, order, rng);
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
  TrainPosition pos;
  bool resuming = resume_.has_value();
  if (resuming) {
    pos = *resume_;
    restore_position(pos, order, rng);
  }
  // Only skip_batch needs the running statistics back after a bad batch;
  // stop ends the run without saving, so it pays for no copies.
  BufferSnapshot snapshot(model_);
  const bool skip_mode = config_.on_nan == OnNan::skip_batch;

  Tensor x, dlogits;
  std::vector<std::uint8_t> labels;
  for (std::int64_t epoch = resuming ? pos.epoch : 1; epoch <= config_.epochs; ++epoch) {
    if (!resuming) {
      order.shuffle(rng);
      pos.epoch = epoch;
      pos.batch = 0;
      pos.loss_sum = 0.0;
      pos.correct = pos.seen = pos.skipped = 0;
    }
    resuming = false;
    const auto start = Clock::now();
    const std::int64_t batches = order.num_batches();
    for (std::int64_t b = pos.batch; b < batches; ++b) {
      const auto idx = order.batch(b);
      norm_.apply(x, train.pixels.data(), model_.input_shape(), idx);
      gather_labels(labels, train, idx);
      if (skip_mode) snapshot.save();
      const LossResult r = softmax_cross_entropy(model_.forward(x, Mode::train), labels, &dlogits);
      model_.backward(dlogits);
      ++pos.global_step;
      pos.batch = b + 1;
      // One pass over the flat gradient buffer per step; the per-layer walk
      // runs only once something is already wrong.
      if (!std::isfinite(r.loss) || !all_finite(model_.gradients())) {
        const std::string what = std::string(std::isfinite(r.loss) ? "non-finite gradient" : "non-finite loss") +
                                 " at " + step_text(epoch, b + 1, batches, pos.global_step) +
                                 "; first non-finite value: " + diagnose_numeric_fault(model_);
        // Finite gradients can still overflow a parameter in the update (a
        // huge lr); that shows up here, one step later. No skip can undo it.
        if (!all_finite(model_.parameters()))
          throw NumericFault("the update before " + step_text(epoch, b + 1, batches, pos.global_step) +
                             " made parameters non-finite (try a lower --lr); " + what);
        if (!skip_mode) throw NumericFault(what + " (try a lower --lr, or --on-nan skip-batch)");
        snapshot.restore();
        ++pos.skipped;
        if (on_skip_) on_skip_(what + "; batch skipped");
      } else {
        optimizer_.step(model_.parameters(), model_.gradients());
        const auto n = static_cast<std::int64_t>(idx.size());
        pos.loss_sum += r.loss * static_cast<double>(n);
        pos.correct += r.correct;
        pos.seen += n;
      }
      if (on_progress && (b % 20 == 0 || b + 1 == batches))
        on_progress({epoch, config_.epochs, b + 1, batches, pos.seen,
                     pos.loss_sum / static_cast<double>(std::max<std::int64_t>(pos.seen, 1)), seconds_since(start)});
      if (on_checkpoint_ && checkpoint_every_ > 0 && pos.global_step % checkpoint_every_ == 0) {
        pos.rng = rng.state();
        pos.order.assign(order.order().begin(), order.order().end());
        on_checkpoint_(pos);
      }
    }
    if (pos.seen == 0)
      throw NumericFault("every batch of epoch " + std::to_string(epoch) + " had a non-finite loss or gradient");
    EpochReport report;
    report.epoch = epoch;
    report.seconds = seconds_since(start);
    report.samples_per_s = static_cast<double>(pos.seen) / std::max(report.seconds, 1e-9);
    report.train_loss = pos.loss_sum / static_cast<double>(pos.seen);
    report.train_accuracy = static_cast<double>(pos.correct) / static_cast<double>(pos.seen);
    report.skipped_batches = pos.skipped;
    if (test.count > 0) {
      const EvalResult e = evaluate(model_, test, norm_, kEvalBatchSize, Mode::eval);
      report.test_loss = e.loss;
      report.test_accuracy = e.accuracy;
    }
    if (on_epoch) on_epoch(report);
  }
}

}  // namespace bnorm

#include "bnorm/train/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>

#include "bnorm/error.hpp"
#include "bnorm/nn/batch_stats_sync.hpp"
#include "bnorm/nn/loss.hpp"
#include "bnorm/nn/pooling.hpp"
#include "bnorm/train/batches.hpp"
#include "bnorm/train/data_parallel.hpp"
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

struct EvalSums {
  double loss_sum = 0.0;
  std::int64_t correct = 0;
};

// Loss sum and correct count over examples [begin, end), in batches of batch_size.
EvalSums eval_sums(Model& model, const ImageDataset& data, const InputNormalization& norm, std::int64_t begin_at,
                   std::int64_t end_at, std::int64_t batch_size, Mode mode) {
  if (numel(model.input_shape()) != data.features)
    throw Error("the model takes inputs " + shape_str(model.input_shape()) + " but the images have " +
                std::to_string(data.features) + " pixels");
  Tensor x;
  std::vector<std::int64_t> idx;
  std::vector<std::uint8_t> labels;
  EvalSums sums;
  if (batch_size < 1) throw Error("evaluation batch size must be at least 1");
  // Steps by n, not batch_size: begin + batch_size could overflow for a huge batch.
  for (std::int64_t begin = begin_at, n = 0; begin < end_at; begin += n) {
    n = std::min(batch_size, end_at - begin);
    idx.resize(static_cast<std::size_t>(n));
    std::iota(idx.begin(), idx.end(), begin);
    norm.apply(x, data.pixels.data(), model.input_shape(), idx);
    gather_labels(labels, data, idx);
    const LossResult batch = softmax_cross_entropy(model.forward(x, mode), labels, nullptr);
    sums.loss_sum += batch.loss * static_cast<double>(n);
    sums.correct += batch.correct;
  }
  return sums;
}

EvalResult eval_result(const EvalSums& sums, std::int64_t count) {
  EvalResult r;
  r.examples = count;
  r.loss = sums.loss_sum / static_cast<double>(count);
  r.accuracy = static_cast<double>(sums.correct) / static_cast<double>(count);
  return r;
}

// Each process evaluates its contiguous share of the set; one small sum combines them.
EvalResult evaluate_shared(Model& model, const ImageDataset& data, const InputNormalization& norm,
                           DataParallel& dist) {
  const Share share = share_of(data.count, dist.rank(), dist.size());
  const EvalSums local = eval_sums(model, data, norm, share.begin, share.begin + share.count, kEvalBatchSize, Mode::eval);
  double totals[2] = {local.loss_sum, static_cast<double>(local.correct)};
  dist.allreduce_sum(std::span<double>(totals));
  return eval_result({totals[0], static_cast<std::int64_t>(totals[1])}, data.count);
}

}  // namespace

EvalResult evaluate(Model& model, const ImageDataset& data, const InputNormalization& norm,
                    std::int64_t batch_size, Mode mode) {
  if (data.count == 0) return {};
  return eval_result(eval_sums(model, data, norm, 0, data.count, batch_size, mode), data.count);
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

// Throws the same Error on every process unless all of them passed the same value.
void check_same_everywhere(DataParallel& dist, std::uint64_t value, const std::string& what) {
  const std::vector<std::uint64_t> all = dist.allgather(value);
  for (std::size_t r = 1; r < all.size(); ++r)
    if (all[r] != all[0])
      throw Error(what + " differ between processes (process " + std::to_string(r) + " differs from process 0)");
}

template <class T>
std::span<const unsigned char> bytes_of(std::span<T> values) {
  return {reinterpret_cast<const unsigned char*>(values.data()), values.size_bytes()};
}

// Parameters and buffers (running statistics) as one fingerprint.
std::uint64_t model_fingerprint(Model& model, BufferSnapshot& snapshot) {
  snapshot.save();
  return fingerprint(snapshot.saved, fingerprint(bytes_of(model.parameters())));
}

// The epoch's running totals of all processes (each holds its shares' part).
TrainPosition with_global_totals(TrainPosition pos, DataParallel* dist) {
  if (!dist) return pos;
  double totals[3] = {pos.loss_sum, static_cast<double>(pos.correct), static_cast<double>(pos.seen)};
  dist->allreduce_sum(std::span<double>(totals));
  pos.loss_sum = totals[0];
  pos.correct = static_cast<std::int64_t>(totals[1]);
  pos.seen = static_cast<std::int64_t>(totals[2]);
  return pos;
}

// Points the model's batch norms at a sync for the length of a fit, and away again.
class SyncAttachment {
 public:
  SyncAttachment(Model& model, BatchStatsSync* sync) : model_(model), layers_(attach_batch_stats_sync(model, sync)) {}
  ~SyncAttachment() { attach_batch_stats_sync(model_, nullptr); }
  SyncAttachment(const SyncAttachment&) = delete;
  SyncAttachment& operator=(const SyncAttachment&) = delete;
  int layers() const { return layers_; }

 private:
  Model& model_;
  int layers_;
};

// The model's dropout layers, told which share of each batch this process
// holds so that their masks match a single process's (and reset afterwards).
class DropoutShares {
 public:
  explicit DropoutShares(Model& model) {
    Shape shape = model.input_shape();
    for (std::size_t i = 0; i < model.num_layers(); ++i) {
      if (auto* d = dynamic_cast<Dropout*>(&model.layer(i))) layers_.push_back({d, numel(shape)});
      shape = model.layer(i).output_shape(shape);
    }
  }
  ~DropoutShares() {
    for (const auto& [layer, per_example] : layers_) layer->set_batch_share(0, -1);
  }
  DropoutShares(const DropoutShares&) = delete;
  DropoutShares& operator=(const DropoutShares&) = delete;

  void set(const Share& share, std::int64_t total) {
    for (const auto& [layer, per_example] : layers_)
      if (share.count > 0)
        layer->set_batch_share(share.begin, total);
      else
        layer->skip_batch(total, per_example);  // its forward does not run
  }

 private:
  std::vector<std::pair<Dropout*, std::int64_t>> layers_;  // layer, values per example
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

  DataParallel* const dist = config_.dist;
  const int rank = dist ? dist->rank() : 0, ranks = dist ? dist->size() : 1;
  const SyncAttachment sync(model_, dist && config_.sync_batch_stats ? dist : nullptr);
  DropoutShares dropout(model_);
  if (dist) {
    const std::int64_t smallest_batch = std::min(config_.batch_size, order.examples_per_epoch() -
                                                                         (order.num_batches() - 1) * config_.batch_size);
    if (!config_.sync_batch_stats && sync.layers() > 0 && smallest_batch < 2 * ranks)
      throw Error("unsynchronized batch norm needs at least 2 examples on every process, but a batch of " +
                  std::to_string(smallest_batch) + " over " + std::to_string(ranks) +
                  " processes leaves some with fewer; use synchronized batch norm or a larger batch");
    // Same command, data and starting point everywhere, or the first
    // collective that one process skips would hang the others.
    const std::int64_t facts[] = {config_.epochs, config_.batch_size, static_cast<std::int64_t>(config_.seed),
                                  static_cast<std::int64_t>(config_.on_nan), config_.sync_batch_stats,
                                  train.count, test.count, pos.global_step};
    check_same_everywhere(*dist, fingerprint(bytes_of(std::span<const std::int64_t>(facts)), model_fingerprint(model_, snapshot)),
                          "the training configuration, data sizes or starting parameters");
    // A checkpoint holds the whole batch's totals: one process carries them on.
    if (resuming && rank != 0) pos.loss_sum = 0.0, pos.correct = pos.seen = 0;
  }

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
      const auto batch = order.batch(b);
      const auto global_n = static_cast<std::int64_t>(batch.size());
      const Share share = dist ? share_of(global_n, rank, ranks) : Share{0, global_n};
      const auto idx = batch.subspan(static_cast<std::size_t>(share.begin), static_cast<std::size_t>(share.count));
      if (dist) dropout.set(share, global_n);
      if (skip_mode) snapshot.save();
      LossResult r;
      if (share.count > 0) {
        norm_.apply(x, train.pixels.data(), model_.input_shape(), idx);
        gather_labels(labels, train, idx);
        r = softmax_cross_entropy(model_.forward(x, Mode::train), labels, &dlogits);
        // dlogits is of this share's mean loss; share / batch makes it the whole batch's.
        if (dist && share.count != global_n) {
          const float scale = static_cast<float>(static_cast<double>(share.count) / static_cast<double>(global_n));
          for (float& g : dlogits.span()) g *= scale;
        }
        model_.backward(dlogits);
      } else {
        std::fill(model_.gradients().begin(), model_.gradients().end(), 0.0f);
        join_step_without_examples(model_);
      }
      if (dist) {
        // A non-finite loss can come with finite gradients (the log of an
        // underflowed probability); a NaN in the gradients carries it to every
        // process, so all of them stop or skip this batch together.
        if (!std::isfinite(r.loss) && !model_.gradients().empty()) model_.gradients()[0] = std::nanf("");
        dist->allreduce_sum(model_.gradients());
      }
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
        const std::int64_t n = share.count;
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
        on_checkpoint_(with_global_totals(pos, dist));
      }
    }
    const TrainPosition totals = with_global_totals(pos, dist);
    if (totals.seen == 0)
      throw NumericFault("every batch of epoch " + std::to_string(epoch) + " had a non-finite loss or gradient");
    EpochReport report;
    report.epoch = epoch;
    report.seconds = seconds_since(start);
    report.samples_per_s = static_cast<double>(totals.seen) / std::max(report.seconds, 1e-9);
    report.train_loss = totals.loss_sum / static_cast<double>(totals.seen);
    report.train_accuracy = static_cast<double>(totals.correct) / static_cast<double>(totals.seen);
    report.skipped_batches = pos.skipped;
    if (dist) {
      // Unsynchronized batch norm leaves each process its own running
      // estimates; rank 0's become everyone's (DDP broadcasts buffers too).
      if (!config_.sync_batch_stats) {
        snapshot.save();
        dist->broadcast(snapshot.saved, 0);
        snapshot.restore();
      }
      check_same_everywhere(*dist, model_fingerprint(model_, snapshot),
                            "after epoch " + std::to_string(epoch) + ", the parameters or running statistics");
    }
    if (test.count > 0) {
      const EvalResult e = dist ? evaluate_shared(model_, test, norm_, *dist)
                                : evaluate(model_, test, norm_, kEvalBatchSize, Mode::eval);
      report.test_loss = e.loss;
      report.test_accuracy = e.accuracy;
    }
    if (on_epoch) on_epoch(report);
  }
}

}  // namespace bnorm

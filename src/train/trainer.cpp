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

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// A batch's targets as the loss wants them: class indices, or regression
// targets standardized with the training set's statistics. The buffers keep
// their capacity, so a training step allocates nothing.
struct BatchTargets {
  std::vector<std::int32_t> labels;
  std::vector<float> targets;

  LossResult loss(const Tensor& out, const Dataset& data, const TargetNormalization& tn,
                  std::span<const std::int64_t> idx, Tensor* grad) {
    if (data.task == Task::classify) {
      labels.resize(idx.size());
      for (std::size_t i = 0; i < idx.size(); ++i) labels[i] = data.labels[static_cast<std::size_t>(idx[i])];
      return softmax_cross_entropy(out, labels, grad);
    }
    const std::int64_t T = data.target_dims;
    targets.resize(idx.size() * static_cast<std::size_t>(T));
    for (std::size_t i = 0; i < idx.size(); ++i)
      for (std::int64_t t = 0; t < T; ++t)
        targets[i * static_cast<std::size_t>(T) + static_cast<std::size_t>(t)] =
            (data.targets[static_cast<std::size_t>(idx[i] * T + t)] - tn.mean[static_cast<std::size_t>(t)]) /
            tn.std[static_cast<std::size_t>(t)];
    return mean_squared_error(out, targets, grad);
  }
};

void check_model_fits(const Model& model, const Dataset& data, const Preprocessing& prep) {
  if (numel(model.input_shape()) != data.features)
    throw Error("the model takes inputs " + shape_str(model.input_shape()) + " but the examples have " +
                std::to_string(data.features) + " values " + shape_str(data.example_shape));
  if (model.output_shape() != Shape{data.outputs()})
    throw Error("the model ends with outputs " + shape_str(model.output_shape()) + " but the data has " +
                std::to_string(data.outputs()) + (data.task == Task::classify ? " classes" : " regression targets"));
  prep.input.validate(data.features);
  if (data.task == Task::regress) prep.target.validate(data.target_dims);
}

// Per-evaluation totals; for regression also the errors in the targets' own units.
struct EvalSums {
  double loss_sum = 0.0;
  std::int64_t correct = 0;
  double abs_error = 0.0;
  std::vector<double> squared_error;  // per target

  // As one list of doubles, for a sum across processes.
  std::vector<double> flat() const {
    std::vector<double> v = {loss_sum, static_cast<double>(correct), abs_error};
    v.insert(v.end(), squared_error.begin(), squared_error.end());
    return v;
  }
  static EvalSums from_flat(const std::vector<double>& v) {
    EvalSums s;
    s.loss_sum = v[0];
    s.correct = static_cast<std::int64_t>(v[1]);
    s.abs_error = v[2];
    s.squared_error.assign(v.begin() + 3, v.end());
    return s;
  }
};

// Loss sum, correct count and errors over examples [begin, end), in batches of batch_size.
EvalSums eval_sums(Model& model, const Dataset& data, const Preprocessing& prep, std::int64_t begin_at,
                   std::int64_t end_at, std::int64_t batch_size, Mode mode) {
  check_model_fits(model, data, prep);
  if (batch_size < 1) throw Error("evaluation batch size must be at least 1");
  Tensor x;
  std::vector<std::int64_t> idx;
  BatchTargets targets;
  EvalSums sums;
  const std::int64_t T = data.task == Task::regress ? data.target_dims : 0;
  sums.squared_error.assign(static_cast<std::size_t>(T), 0.0);
  // Steps by n, not batch_size: begin + batch_size could overflow for a huge batch.
  for (std::int64_t begin = begin_at, n = 0; begin < end_at; begin += n) {
    n = std::min(batch_size, end_at - begin);
    idx.resize(static_cast<std::size_t>(n));
    std::iota(idx.begin(), idx.end(), begin);
    prep.input.apply(x, data, model.input_shape(), idx);
    const Tensor& out = model.forward(x, mode);
    const LossResult batch = targets.loss(out, data, prep.target, idx, nullptr);
    sums.loss_sum += batch.loss * static_cast<double>(n);
    sums.correct += batch.correct;
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t t = 0; t < T; ++t) {
        const auto k = static_cast<std::size_t>(t);
        const double predicted = static_cast<double>(out[i * T + t]) * prep.target.std[k] + prep.target.mean[k];
        const double error = predicted - data.targets[static_cast<std::size_t>((begin + i) * T + t)];
        sums.squared_error[k] += error * error;
        sums.abs_error += std::abs(error);
      }
  }
  return sums;
}

EvalResult eval_result(const EvalSums& sums, const Dataset& data) {
  EvalResult r;
  const std::int64_t count = data.count;
  r.examples = count;
  r.loss = sums.loss_sum / static_cast<double>(count);
  if (data.task == Task::classify) {
    r.accuracy = static_cast<double>(sums.correct) / static_cast<double>(count);
    return r;
  }
  const std::int64_t T = data.target_dims;
  double sse_total = 0.0, r2_sum = 0.0;
  for (std::int64_t t = 0; t < T; ++t) {
    double mean = 0.0, sst = 0.0;
    for (std::int64_t i = 0; i < count; ++i) mean += data.targets[static_cast<std::size_t>(i * T + t)];
    mean /= static_cast<double>(count);
    for (std::int64_t i = 0; i < count; ++i) {
      const double d = data.targets[static_cast<std::size_t>(i * T + t)] - mean;
      sst += d * d;
    }
    const double sse = sums.squared_error[static_cast<std::size_t>(t)];
    sse_total += sse;
    // A constant target: a perfect prediction scores 1, anything else 0 (scikit-learn's rule).
    r2_sum += sst > 0.0 ? 1.0 - sse / sst : (sse == 0.0 ? 1.0 : 0.0);
  }
  const double values = static_cast<double>(count * T);
  r.rmse = std::sqrt(sse_total / values);
  r.mae = sums.abs_error / values;
  r.r2 = r2_sum / static_cast<double>(T);
  return r;
}

// Each process evaluates its contiguous share of the set; one small sum combines them.
EvalResult evaluate_shared(Model& model, const Dataset& data, const Preprocessing& prep, DataParallel& dist) {
  const Share share = share_of(data.count, dist.rank(), dist.size());
  std::vector<double> totals =
      eval_sums(model, data, prep, share.begin, share.begin + share.count, kEvalBatchSize, Mode::eval).flat();
  dist.allreduce_sum(std::span<double>(totals));
  return eval_result(EvalSums::from_flat(totals), data);
}

}  // namespace

EvalResult evaluate(Model& model, const Dataset& data, const Preprocessing& prep, std::int64_t batch_size, Mode mode) {
  if (data.count == 0) return {};
  return eval_result(eval_sums(model, data, prep, 0, data.count, batch_size, mode), data);
}

Trainer::Trainer(Model& model, Optimizer& optimizer, Preprocessing prep, TrainConfig config)
    : model_(model), optimizer_(optimizer), prep_(std::move(prep)), config_(config) {
  if (config_.epochs < 0) throw Error("epochs must be >= 0");
  if (config_.batch_size < 2) throw Error("batch size must be at least 2: batch norm needs a spread to normalize");
  optimizer_.set_tensor_ends(model_.parameter_tensor_ends());
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

void Trainer::check_resume(const Dataset& train) const {
  if (!resume_) return;
  BatchOrder order(train.count, config_.batch_size, config_.drop_singleton_batch);
  Rng rng(config_.seed);
  restore_position(*resume_, order, rng);
}

namespace {

// The callbacks a fit reports through (any may be empty).
struct FitHooks {
  const std::function<void(const Progress&)>& on_progress;
  const std::function<void(const EpochReport&)>& on_epoch;
  std::int64_t checkpoint_every;
  const std::function<void(const TrainPosition&)>& on_checkpoint;
  const std::function<void(const std::string&)>& on_skip;
};

// One call of Trainer::fit: the run's state and its steps, in the order they
// happen. A step is one global batch: this process's share of it forward and
// backward, the gradients summed across processes, the NaN policy, the
// update; an epoch ends with the agreement check and the evaluation.
class FitRun {
 public:
  FitRun(Model& model, Optimizer& optimizer, const Preprocessing& prep, const TrainConfig& config, const Dataset& train,
         const Dataset& test, const FitHooks& hooks)
      : model_(model),
        optimizer_(optimizer),
        prep_(prep),
        config_(config),
        train_(train),
        test_(test),
        hooks_(hooks),
        rng_(config.seed),
        order_(train.count, config.batch_size, config.drop_singleton_batch),
        snapshot_(model),
        dist_(config.dist),
        rank_(dist_ ? dist_->rank() : 0),
        ranks_(dist_ ? dist_->size() : 1),
        sync_(model, dist_ && config.sync_batch_stats ? dist_ : nullptr),
        dropout_(model) {}

  // Runs the epochs from the start, or from the position resume_at set.
  void run(bool resuming) {
    if (dist_) check_processes_agree(resuming);
    for (std::int64_t epoch = resuming ? pos_.epoch : 1; epoch <= config_.epochs; ++epoch) {
      if (!resuming) begin_epoch(epoch);
      resuming = false;
      const auto start = Clock::now();
      for (std::int64_t b = pos_.batch; b < order_.num_batches(); ++b) {
        train_batch(epoch, b);
        report_progress(epoch, b, start);
        checkpoint_if_due();
      }
      EpochReport report = end_epoch(epoch, start);
      if (test_.count > 0) add_test_metrics(report);
      if (hooks_.on_epoch) hooks_.on_epoch(report);
    }
  }

  // Where a resumed run starts: restore(pos, order, rng) sets the epoch's
  // order and the generator from the position.
  template <class Restore>
  void resume_at(const TrainPosition& position, Restore restore) {
    pos_ = position;
    restore(pos_, order_, rng_);
  }

 private:
  bool skip_mode() const { return config_.on_nan == OnNan::skip_batch; }

  // Same command, data and starting point everywhere, or the first collective
  // that one process skips would hang the others.
  void check_processes_agree(bool resuming) {
    const std::int64_t smallest_batch =
        std::min(config_.batch_size, order_.examples_per_epoch() - (order_.num_batches() - 1) * config_.batch_size);
    if (!config_.sync_batch_stats && sync_.layers() > 0 && smallest_batch < 2 * ranks_)
      throw Error("unsynchronized batch norm needs at least 2 examples on every process, but a batch of " +
                  std::to_string(smallest_batch) + " over " + std::to_string(ranks_) +
                  " processes leaves some with fewer; use synchronized batch norm or a larger batch");
    const std::int64_t facts[] = {config_.epochs,
                                  config_.batch_size,
                                  static_cast<std::int64_t>(config_.seed),
                                  static_cast<std::int64_t>(config_.on_nan),
                                  config_.sync_batch_stats,
                                  train_.count,
                                  test_.count,
                                  pos_.global_step};
    check_same_everywhere(
        *dist_, fingerprint(bytes_of(std::span<const std::int64_t>(facts)), model_fingerprint(model_, snapshot_)),
        "the training configuration, data sizes or starting parameters");
    // A checkpoint holds the whole batch's totals: one process carries them on.
    if (resuming && rank_ != 0) pos_.loss_sum = 0.0, pos_.correct = pos_.seen = 0;
  }

  void begin_epoch(std::int64_t epoch) {
    order_.shuffle(rng_);
    pos_.epoch = epoch;
    pos_.batch = 0;
    pos_.loss_sum = 0.0;
    pos_.correct = pos_.seen = pos_.skipped = 0;
  }

  void train_batch(std::int64_t epoch, std::int64_t b) {
    const auto batch = order_.batch(b);
    const auto global_n = static_cast<std::int64_t>(batch.size());
    const Share share = dist_ ? share_of(global_n, rank_, ranks_) : Share{0, global_n};
    if (dist_) dropout_.set(share, global_n);
    if (skip_mode()) snapshot_.save();
    const LossResult r = forward_backward(
        batch.subspan(static_cast<std::size_t>(share.begin), static_cast<std::size_t>(share.count)), global_n);
    if (dist_) sum_gradients_across_processes(r);
    ++pos_.global_step;
    pos_.batch = b + 1;
    // One pass over the flat gradient buffer per step; the per-layer walk
    // runs only once something is already wrong.
    if (!std::isfinite(r.loss) || !all_finite(model_.gradients())) {
      handle_non_finite_step(r, epoch, b + 1);
      return;
    }
    optimizer_.step(model_.parameters(), model_.gradients());
    pos_.loss_sum += r.loss * static_cast<double>(share.count);
    pos_.correct += r.correct;
    pos_.seen += share.count;
  }

  // This process's share of the batch (idx) forward and backward; with no
  // share, zero gradients and only the collectives the others wait for.
  LossResult forward_backward(std::span<const std::int64_t> idx, std::int64_t global_n) {
    if (idx.empty()) {
      std::fill(model_.gradients().begin(), model_.gradients().end(), 0.0f);
      join_step_without_examples(model_);
      return {};
    }
    prep_.input.apply(x_, train_, model_.input_shape(), idx);
    const LossResult r = targets_.loss(model_.forward(x_, Mode::train), train_, prep_.target, idx, &dlogits_);
    // dlogits is of this share's mean loss; share / batch makes it the whole batch's.
    const auto n = static_cast<std::int64_t>(idx.size());
    if (dist_ && n != global_n) {
      const float scale = static_cast<float>(static_cast<double>(n) / static_cast<double>(global_n));
      for (float& g : dlogits_.span()) g *= scale;
    }
    model_.backward(dlogits_);
    return r;
  }

  void sum_gradients_across_processes(const LossResult& r) {
    // A non-finite loss can come with finite gradients (the log of an
    // underflowed probability); a NaN in the gradients carries it to every
    // process, so all of them stop or skip this batch together.
    if (!std::isfinite(r.loss) && !model_.gradients().empty()) model_.gradients()[0] = std::nanf("");
    dist_->allreduce_sum(model_.gradients());
  }

  // The NaN policy: stop (NumericFault) or drop the batch's update and put
  // the running statistics back. Library terms only; the tool that set the
  // learning rate and the policy adds its own advice.
  void handle_non_finite_step(const LossResult& r, std::int64_t epoch, std::int64_t batch) {
    const std::string where = step_text(epoch, batch, order_.num_batches(), pos_.global_step);
    const std::string what = std::string(std::isfinite(r.loss) ? "non-finite gradient" : "non-finite loss") + " at " +
                             where + "; first non-finite value: " + diagnose_numeric_fault(model_);
    // Finite gradients can still overflow a parameter in the update (a huge
    // learning rate); that shows up here, one step later. No skip can undo it.
    if (!all_finite(model_.parameters()))
      throw NumericFault("the update before " + where + " made parameters non-finite; " + what,
                         NumericFault::Cause::diverged_update);
    if (!skip_mode()) throw NumericFault(what, NumericFault::Cause::non_finite_step);
    snapshot_.restore();
    ++pos_.skipped;
    if (hooks_.on_skip) hooks_.on_skip(what + "; batch skipped");
  }

  void report_progress(std::int64_t epoch, std::int64_t b, Clock::time_point start) const {
    const std::int64_t batches = order_.num_batches();
    if (hooks_.on_progress && (b % 20 == 0 || b + 1 == batches))
      hooks_.on_progress({epoch, config_.epochs, b + 1, batches, pos_.seen,
                          pos_.loss_sum / static_cast<double>(std::max<std::int64_t>(pos_.seen, 1)),
                          seconds_since(start)});
  }

  void checkpoint_if_due() {
    if (!hooks_.on_checkpoint || hooks_.checkpoint_every <= 0 || pos_.global_step % hooks_.checkpoint_every != 0)
      return;
    pos_.rng = rng_.state();
    pos_.order.assign(order_.order().begin(), order_.order().end());
    hooks_.on_checkpoint(with_global_totals(pos_, dist_));
  }

  // The epoch's training figures; with several processes, their running
  // estimates made one and their agreement checked.
  EpochReport end_epoch(std::int64_t epoch, Clock::time_point start) {
    const TrainPosition totals = with_global_totals(pos_, dist_);
    if (totals.seen == 0)
      throw NumericFault("every batch of epoch " + std::to_string(epoch) + " had a non-finite loss or gradient",
                         NumericFault::Cause::every_batch_skipped);
    EpochReport report;
    report.epoch = epoch;
    report.task = train_.task;
    report.seconds = seconds_since(start);
    report.samples_per_s = static_cast<double>(totals.seen) / std::max(report.seconds, 1e-9);
    report.train_loss = totals.loss_sum / static_cast<double>(totals.seen);
    report.train_accuracy = static_cast<double>(totals.correct) / static_cast<double>(totals.seen);
    report.skipped_batches = pos_.skipped;
    if (dist_) {
      // Unsynchronized batch norm leaves each process its own running
      // estimates; rank 0's become everyone's (DDP broadcasts buffers too).
      if (!config_.sync_batch_stats) {
        snapshot_.save();
        dist_->broadcast(snapshot_.saved, 0);
        snapshot_.restore();
      }
      check_same_everywhere(*dist_, model_fingerprint(model_, snapshot_),
                            "after epoch " + std::to_string(epoch) + ", the parameters or running statistics");
    }
    return report;
  }

  void add_test_metrics(EpochReport& report) {
    const EvalResult e = dist_ ? evaluate_shared(model_, test_, prep_, *dist_)
                               : evaluate(model_, test_, prep_, kEvalBatchSize, Mode::eval);
    report.test_loss = e.loss;
    report.test_accuracy = e.accuracy;
    report.test_rmse = e.rmse;
    report.test_mae = e.mae;
    report.test_r2 = e.r2;
  }

  Model& model_;
  Optimizer& optimizer_;
  const Preprocessing& prep_;
  const TrainConfig& config_;
  const Dataset& train_;
  const Dataset& test_;
  const FitHooks& hooks_;
  Rng rng_;
  BatchOrder order_;
  TrainPosition pos_;
  // Only skip_batch needs the running statistics back after a bad batch (and
  // several processes their agreement); stop ends the run without saving.
  BufferSnapshot snapshot_;
  DataParallel* const dist_;
  const int rank_, ranks_;
  const SyncAttachment sync_;
  DropoutShares dropout_;
  Tensor x_, dlogits_;  // (batch share, features), (batch share, outputs)
  BatchTargets targets_;
};

void check_datasets(const Dataset& train, const Dataset& test) {
  if (train.count < 2) throw Error("the training set needs at least 2 examples");
  if (test.count > 0 &&
      (test.task != train.task || test.outputs() != train.outputs() || test.features != train.features))
    throw Error("the test set does not match the training set (task, number of outputs or features)");
}

}  // namespace

void Trainer::fit(const Dataset& train, const Dataset& test, const std::function<void(const Progress&)>& on_progress,
                  const std::function<void(const EpochReport&)>& on_epoch) {
  check_datasets(train, test);
  check_model_fits(model_, train, prep_);
  const FitHooks hooks{on_progress, on_epoch, checkpoint_every_, on_checkpoint_, on_skip_};
  FitRun run(model_, optimizer_, prep_, config_, train, test, hooks);
  if (resume_)
    run.resume_at(*resume_, [this](const TrainPosition& p, BatchOrder& o, Rng& r) { restore_position(p, o, r); });
  run.run(resume_.has_value());
}

}  // namespace bnorm

#pragma once
// The training loop: mini-batches in a fresh order every epoch, each
// normalized with its own statistics in Mode::train, and an evaluation on the
// test set with the running estimates (Mode::eval) after every epoch.
// Classification trains with softmax cross-entropy, regression with the mean
// squared error of targets standardized with the training set's statistics.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "bnorm/error.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/train/checkpoint_state.hpp"
#include "bnorm/train/dataset.hpp"
#include "bnorm/train/optimizer.hpp"

namespace bnorm {

class BatchOrder;
class DataParallel;

// What to do when a step's loss or gradients are not finite.
//   stop:       throw NumericFault naming the step and the first bad layer;
//               the parameters on disk are whatever was saved before.
//   skip_batch: drop that batch's update. Its forward pass already moved the
//               batch norms' running statistics, so the trainer snapshots
//               every non-parameter buffer (running mean/var, batch count)
//               before each step in this mode and puts them back.
enum class OnNan { stop, skip_batch };

// The message says what happened in the library's terms (step, layer); the
// cause lets a caller add advice in its own (a command-line flag, say).
class NumericFault : public Error {
 public:
  enum class Cause {
    non_finite_step,      // a step's loss or gradients (under OnNan::stop)
    diverged_update,      // an update made the parameters themselves non-finite
    every_batch_skipped,  // OnNan::skip_batch dropped every batch of an epoch
    other,
  };
  explicit NumericFault(const std::string& what, Cause cause = Cause::other) : Error(what), cause_(cause) {}
  Cause cause() const { return cause_; }

 private:
  Cause cause_;
};

struct TrainConfig {
  std::int64_t epochs = 5;
  std::int64_t batch_size = 64;
  std::uint64_t seed = 0;
  // A last batch of one example cannot be normalized with its own statistics;
  // by default the trainer leaves it out (the layer would refuse it).
  bool drop_singleton_batch = true;
  OnNan on_nan = OnNan::stop;
  // Data-parallel training (nullptr: this process alone). Every process runs
  // fit with the same configuration and data; each global batch of
  // batch_size examples, in the order every process draws from the seed, is
  // cut into contiguous shares (the first batch_size % size() processes take
  // one example more), the loss gradient is scaled by share / batch so that
  // one sum of the flat gradient buffer is the gradient of the whole batch's
  // mean loss, and every process applies the same update. Evaluation is split
  // the same way; the totals and reports are the whole run's, on every process.
  DataParallel* dist = nullptr;
  // With dist: true normalizes with the statistics of the whole global batch
  // (synchronized batch norm); false with each share's own statistics
  // (PyTorch DDP's default), rank 0's running estimates then being given to
  // every process at the end of each epoch.
  bool sync_batch_stats = true;
};

// The parameters draw from their own stream, derived from the run's seed, so
// that changing the data order (another dataset size, say) leaves the
// initialization alone.
inline std::uint64_t init_rng_seed(std::uint64_t seed) { return seed ^ kDefaultInitSeed; }

// Test-set figures. Classification: mean cross-entropy and accuracy.
// Regression: loss is the mean squared error of the standardized targets (what
// training minimizes); rmse, mae and r2 are of the predictions in the targets'
// own units, r2 averaged over the targets (1 - SSE/SST each).
struct EvalResult {
  double loss = 0.0;
  double accuracy = 0.0;
  double rmse = 0.0, mae = 0.0, r2 = 0.0;
  std::int64_t examples = 0;
};

struct EpochReport {
  std::int64_t epoch = 0;  // 1-based
  Task task = Task::classify;
  double train_loss = 0.0;
  double train_accuracy = 0.0;  // classification only
  double test_loss = 0.0;
  double test_accuracy = 0.0;                             // classification only
  double test_rmse = 0.0, test_mae = 0.0, test_r2 = 0.0;  // regression only
  double samples_per_s = 0.0;                             // training loop only
  double seconds = 0.0;                                   // training loop only
  std::int64_t skipped_batches = 0;                       // non-finite batches dropped (OnNan::skip_batch)
};

struct Progress {
  std::int64_t epoch, epochs, batch, batches, samples_done;
  double running_loss, seconds;
};

// Evaluation batch: large enough to amortize per-call overhead, small enough
// that a CNN's im2col buffers stay at tens of MB (1000 took a GiB).
inline constexpr std::int64_t kEvalBatchSize = 100;

// Evaluates in the given mode with batches of batch_size; in Mode::eval the
// result does not depend on batch_size (checked by a test).
EvalResult evaluate(Model& model, const Dataset& data, const Preprocessing& prep,
                    std::int64_t batch_size = kEvalBatchSize, Mode mode = Mode::eval);

class Trainer {
 public:
  // prep: the input normalization (and for regression the targets'), fitted
  // on the training set; the model must end in data.outputs() values.
  Trainer(Model& model, Optimizer& optimizer, Preprocessing prep, TrainConfig config);

  // Trains the model from its current parameters (initialize them first, see
  // init_rng_seed). Runs every epoch; on_progress is called every few batches, on_epoch after
  // each epoch's evaluation. test may be empty (no evaluation then).
  void fit(const Dataset& train, const Dataset& test, const std::function<void(const Progress&)>& on_progress,
           const std::function<void(const EpochReport&)>& on_epoch);

  // Continue from a checkpoint's position instead of the start. The model and
  // optimizer must already hold the checkpoint's state; fit validates the
  // position against the data and config (Error otherwise).
  void resume_from(TrainPosition position) { resume_ = std::move(position); }
  // The checks fit makes on that position, ahead of time (throws Error).
  void check_resume(const Dataset& train) const;
  // Called after every `every` steps (global_step a multiple of it) with the
  // position after that step; the model and optimizer are in step with it.
  void on_checkpoint(std::int64_t every, std::function<void(const TrainPosition&)> callback) {
    checkpoint_every_ = every;
    on_checkpoint_ = std::move(callback);
  }
  // Told about each batch skipped under OnNan::skip_batch (the fault's message).
  void on_skipped_batch(std::function<void(const std::string&)> callback) { on_skip_ = std::move(callback); }

 private:
  void restore_position(const TrainPosition& pos, BatchOrder& order, Rng& rng) const;

  Model& model_;
  Optimizer& optimizer_;
  Preprocessing prep_;
  TrainConfig config_;
  std::optional<TrainPosition> resume_;
  std::int64_t checkpoint_every_ = 0;
  std::function<void(const TrainPosition&)> on_checkpoint_;
  std::function<void(const std::string&)> on_skip_;
};

}  // namespace bnorm

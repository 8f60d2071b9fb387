#pragma once
// The training loop: mini-batches in a fresh order every epoch, each
// normalized with its own statistics in Mode::train, and an evaluation on the
// test set with the running estimates (Mode::eval) after every epoch.
#include <cstdint>
#include <functional>
#include <optional>

#include "bnorm/io/dataset.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/train/optimizer.hpp"

namespace bnorm {

struct TrainConfig {
  std::int64_t epochs = 5;
  std::int64_t batch_size = 64;
  std::uint64_t seed = 0;
  // A last batch of one example cannot be normalized with its own statistics;
  // by default the trainer leaves it out (the layer would refuse it).
  bool drop_singleton_batch = true;
};

// The parameters draw from their own stream, derived from the run's seed, so
// that changing the data order (another dataset size, say) leaves the
// initialization alone.
inline std::uint64_t init_rng_seed(std::uint64_t seed) { return seed ^ 0x9E3779B97F4A7C15ull; }

struct EpochReport {
  std::int64_t epoch = 0;  // 1-based
  double train_loss = 0.0;
  double train_accuracy = 0.0;
  double test_loss = 0.0;
  double test_accuracy = 0.0;
  double samples_per_s = 0.0;  // training loop only
  double seconds = 0.0;        // training loop only
};

struct EvalResult {
  double loss = 0.0;
  double accuracy = 0.0;
  std::int64_t examples = 0;
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
EvalResult evaluate(Model& model, const ImageDataset& data, const InputNormalization& norm,
                    std::int64_t batch_size = kEvalBatchSize, Mode mode = Mode::eval);

class Trainer {
 public:
  Trainer(Model& model, Optimizer& optimizer, const InputNormalization& norm, TrainConfig config);

  // Trains the model from its current parameters (initialize them first, see
  // init_rng_seed). Runs every epoch; on_progress is called every few batches, on_epoch after
  // each epoch's evaluation. test may be empty (no evaluation then).
  void fit(const ImageDataset& train, const ImageDataset& test,
           const std::function<void(const Progress&)>& on_progress,
           const std::function<void(const EpochReport&)>& on_epoch);

 private:
  Model& model_;
  Optimizer& optimizer_;
  const InputNormalization& norm_;
  TrainConfig config_;
};

}  // namespace bnorm

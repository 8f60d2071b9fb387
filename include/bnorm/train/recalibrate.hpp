#pragma once
// Precise batch-norm statistics: running estimates replaced after training
// by statistics measured on the training data with the final weights. The
// running averages mix statistics from many earlier versions of the weights;
// these do not.
#include <cstdint>
#include <string>
#include <vector>

#include "bnorm/nn/model.hpp"
#include "bnorm/train/data_parallel.hpp"
#include "bnorm/train/dataset.hpp"

namespace bnorm {

enum class RecalibrationMode {
  // Layer by layer in network order, the exact mean and variance of each BN
  // layer's input over every example used, with the layers before it already
  // recalibrated and the whole network in eval mode (dropout off).
  exact,
  // torch.optim.swa_utils.update_bn (and fvcore's): running estimates reset,
  // then one training-mode forward per batch with the cumulative average, so
  // the result is the plain average of the per-batch means and of the
  // per-batch unbiased variances, every layer normalizing with batch statistics.
  batch_average,
};
const char* recalibration_mode_name(RecalibrationMode mode);
RecalibrationMode parse_recalibration_mode(const std::string& text);  // "exact", "batch-average"

struct RecalibrationOptions {
  RecalibrationMode mode = RecalibrationMode::exact;
  std::int64_t batch_size = 64;
  std::int64_t max_batches = 0;  // the first this many batches of the data, in order; 0 = all
  // exact only: store the biased (population) variance, M2 / m, whatever the
  // layer's convention; otherwise the layer's own (M2 / (m - 1) when unbiased).
  bool biased_variance = false;
  // exact only: the processes sharing the work (nullptr: this one alone).
  // Every process passes the same data and model; each takes a contiguous
  // share of the examples used, and each layer's per-channel (count, mean, M2)
  // are merged across processes in rank order (Chan's formula, in double), so
  // every process ends with the statistics one process would compute.
  DataParallel* dist = nullptr;
};

// How far one BN layer's estimates moved, the largest over its channels of
//   mean: |old - new| / max(|new|, sqrt(new_var + eps))  (a mean near 0 in standard deviations)
//   var:  |old - new| / max(|new|, eps)
// with the layer's eps.
struct BatchNormDrift {
  std::size_t layer = 0;
  std::int64_t channels = 0;
  double mean = 0.0, var = 0.0;
};

struct RecalibrationReport {
  std::vector<BatchNormDrift> layers;  // every BN layer with running estimates, in order
  std::int64_t examples = 0;           // examples the statistics cover
  std::int64_t batches = 0;
};

// Replaces the running mean and variance of every BatchNorm layer that keeps
// them. num_batches_tracked is left as training left it in exact mode (it
// counts training steps, which recalibration does not add to) and is the
// number of batches in batch-average mode (as update_bn leaves it). Frozen
// layers are recalibrated too. Throws Error when the data is too small for
// the mode.
RecalibrationReport recalibrate_batchnorm(Model& model, const Dataset& data, const InputNormalization& norm,
                                          const RecalibrationOptions& options = {});

}  // namespace bnorm

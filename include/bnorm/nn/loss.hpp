#pragma once
#include <cstdint>
#include <span>

#include "bnorm/tensor.hpp"

namespace bnorm {

struct LossResult {
  double loss = 0.0;         // mean over the batch
  std::int64_t correct = 0;  // classification: rows whose largest logit is the label
};

// Softmax cross-entropy of logits (N, K) against labels (N). Assigns dlogits
// (resized to (N, K)) when it is not nullptr. Throws Error on a label outside [0, K).
LossResult softmax_cross_entropy(const Tensor& logits, std::span<const std::int32_t> labels, Tensor* dlogits);

// Mean squared error of predictions (N, T) against targets (N * T values,
// row-major), the mean taken over all N*T values. Assigns dpred when it is not nullptr.
LossResult mean_squared_error(const Tensor& pred, std::span<const float> targets, Tensor* dpred);

}  // namespace bnorm

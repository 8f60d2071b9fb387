#pragma once
#include <cstdint>
#include <span>

#include "bnorm/tensor.hpp"

namespace bnorm {

struct LossResult {
  double loss = 0.0;          // mean over the batch
  std::int64_t correct = 0;   // rows whose largest logit is the label
};

// Softmax cross-entropy of logits (N, K) against labels (N). Assigns dlogits
// (resized to (N, K)) when it is not nullptr. Throws Error on a label >= K.
LossResult softmax_cross_entropy(const Tensor& logits, std::span<const std::uint8_t> labels,
                                 Tensor* dlogits);

}  // namespace bnorm

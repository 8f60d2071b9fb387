#pragma once
// Softmax cross-entropy over logits (N, K) with integer labels.
#include <cstdint>

namespace bnorm::kernels {

// Returns the mean loss over the N rows (accumulated in double) and assigns
// dlogits = (softmax(logits) - onehot(label)) / N. dlogits may be nullptr when
// only the loss is wanted. Labels must be in [0, K); the caller checks.
double softmax_cross_entropy(float* dlogits, const float* logits, const std::uint8_t* labels,
                             std::int64_t N, std::int64_t K);

// Index of the largest logit of each row, written to predicted (N).
void argmax_rows(std::int64_t* predicted, const float* logits, std::int64_t N, std::int64_t K);

}  // namespace bnorm::kernels

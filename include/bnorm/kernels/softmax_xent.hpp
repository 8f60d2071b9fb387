#pragma once
// The losses: softmax cross-entropy over logits (N, K) with integer labels,
// and mean squared error for regression.
#include <cstdint>

namespace bnorm::kernels {

// Returns the mean loss over the N rows (accumulated in double) and assigns
// dlogits = (softmax(logits) - onehot(label)) / N. dlogits may be nullptr when
// only the loss is wanted. Labels must be in [0, K); the caller checks.
double softmax_cross_entropy(float* dlogits, const float* logits, const std::int32_t* labels, std::int64_t N,
                             std::int64_t K);

// Index of the largest logit of each row, written to predicted (N).
void argmax_rows(std::int64_t* predicted, const float* logits, std::int64_t N, std::int64_t K);

// Mean squared error over all N*T values, accumulated in double, and
// dpred = 2 (pred - target) / (N*T) when dpred is not nullptr (PyTorch's
// MSELoss with reduction "mean").
double mean_squared_error(float* dpred, const float* pred, const float* target, std::int64_t N, std::int64_t T);

}  // namespace bnorm::kernels

#pragma once
// Group-normalization kernels (GroupNorm and LayerNorm): raw pointers and
// sizes, no state. What the layers mean is in nn/group_norm.cpp and
// nn/layer_norm.cpp; this file is only how it is computed.
//
// Legend of dimension letters (every buffer contiguous, row-major):
//   N  examples
//   G  groups per example; each group is one contiguous row of the input
//   m  values per group (GroupNorm: C/G channels × S positions; LayerNorm: all
//      of one example's features, with G = 1)
//   R  values one affine parameter covers, consecutive in memory (GroupNorm:
//      R = S, one gamma per channel; LayerNorm: R = 1, one gamma per value)
//   P  affine parameters, P = G·m / R
// The input is (N, G, m): N·G rows of m values.
//
// Math, per row (one example's group):
//   mean    = (1/m) Σ x
//   var     = (1/m) Σ (x - mean)^2             biased, as PyTorch normalizes
//   inv_std = 1 / sqrt(var + eps)
//   x_hat   = (x - mean) * inv_std
//   y       = gamma[p] * x_hat + beta[p]         p = (position in the example) / R
// gamma == nullptr means 1 and beta == nullptr means 0 (no affine parameters).
// There are no running statistics: train and eval compute the same thing.
//
// Every function *assigns* its outputs; none adds to them.
#include <cstdint>

namespace bnorm::kernels {

// mean and inv_std (rows each) of `rows` rows of m values, accumulated in
// double as sums of (x - shift), shift being the row's first value, so an
// input with a large mean and a small spread keeps its precision.
void group_norm_statistics(float* mean, float* inv_std, const float* x, float eps, std::int64_t rows, std::int64_t m);

// y (N, G, m) and the per-row mean and inv_std (N·G) the backward needs.
void group_norm_forward(float* y, float* mean, float* inv_std, const float* x, const float* gamma, const float* beta,
                        float eps, std::int64_t N, std::int64_t G, std::int64_t m, std::int64_t R);

// Backward of group_norm_forward, per row, with g = dy * gamma[p]:
//   dx     = inv_std / m * (m * g - Σ g - x_hat * Σ g * x_hat)
//   dgamma = Σ over examples and the R values of p of dy * x_hat
//   dbeta  = Σ over the same values of dy
// x_hat is recomputed from x, mean and inv_std; the sums are taken in double.
// dx, dgamma and dbeta may each be nullptr (not wanted). Needs no scratch.
void group_norm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* mean,
                         const float* inv_std, const float* gamma, std::int64_t N, std::int64_t G, std::int64_t m,
                         std::int64_t R);

}  // namespace bnorm::kernels

#pragma once
// Batch-normalization kernels: raw pointers and sizes, no state, no modes.
// What batch norm *means* (train vs eval, running averages, validation) lives
// in nn/batchnorm.cpp; this file is only how it is computed.
//
// Legend of dimension letters (every buffer below is contiguous, row-major):
//   N  examples in the mini-batch
//   C  channels (units of a fully connected layer, channels of a convolution)
//   S  spatial positions per channel (H*W; 1 for an (N, C) input)
//   m  values per channel that the statistics cover, m = N*S
//
// Math, per channel c:
//   mean[c]    = (1/m) Σ x
//   var[c]     = (1/m) Σ (x - mean)^2            biased: this is what normalizes
//   inv_std[c] = 1 / sqrt(var + eps)
//   x_hat      = (x - mean) * inv_std
//   y          = gamma * x_hat + beta
// gamma == nullptr means 1 and beta == nullptr means 0 (affine = false).
//
// Every function *assigns* its outputs; none adds to them.
//
// Every function takes `work`, scratch of batchnorm_work_doubles(C) doubles
// that the caller owns (the layer keeps one), so a training step allocates
// nothing; its contents on entry do not matter.
#include <cstdint>

namespace bnorm::kernels {

// Size of the scratch every function below needs, in doubles.
std::int64_t batchnorm_work_doubles(std::int64_t C);

// Training-mode forward with the batch's own statistics.
// Writes y (N, C, S) and the per-channel mean, biased var and inv_std (C);
// the backward pass needs mean and inv_std, the layer needs var for its running
// estimate. Statistics accumulate in double around a per-channel shift, so an
// input with a large mean (1e6) and unit spread keeps its precision.
void batchnorm_forward_train(float* y, float* mean, float* var, float* inv_std,
                             const float* x, const float* gamma, const float* beta,
                             float eps, std::int64_t N, std::int64_t C, std::int64_t S, double* work);

// Inference forward with given statistics (the running estimates):
//   y = (x - mean) * gamma / sqrt(var + eps) + beta
void batchnorm_forward_inference(float* y, const float* x, const float* mean, const float* var,
                                 const float* gamma, const float* beta, float eps,
                                 std::int64_t N, std::int64_t C, std::int64_t S, double* work);

// Backward of the training-mode forward, in closed form:
//   dbeta  = Σ dy
//   dgamma = Σ dy * x_hat
//   dx     = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)
// x_hat is recomputed from x, mean and inv_std rather than stored.
// dgamma and dbeta may be nullptr (affine = false); the sums are still formed.
void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                        const float* mean, const float* inv_std, const float* gamma,
                        std::int64_t N, std::int64_t C, std::int64_t S, double* work);

// Fused batch norm + ReLU: out = max(0, y) with y as above, in the same passes
// over memory (a separate ReLU reads and writes every value once more in each
// direction). The training forward also writes mask (N, C, S): 1 where y > 0,
// one byte per value, which is all the ReLU's backward needs; the backward
// takes dy of the ReLU's output and the mask and gives dx of the batch norm's
// input. The results are bit-identical to the two layers run one after the other.
void batchnorm_relu_forward_train(float* out, std::uint8_t* mask, float* mean, float* var, float* inv_std,
                                  const float* x, const float* gamma, const float* beta, float eps,
                                  std::int64_t N, std::int64_t C, std::int64_t S, double* work);
void batchnorm_relu_forward_inference(float* out, const float* x, const float* mean, const float* var,
                                      const float* gamma, const float* beta, float eps, std::int64_t N,
                                      std::int64_t C, std::int64_t S, double* work);
void batchnorm_relu_backward(float* dx, float* dgamma, float* dbeta, const float* dout, const std::uint8_t* mask,
                             const float* x, const float* mean, const float* inv_std, const float* gamma,
                             std::int64_t N, std::int64_t C, std::int64_t S, double* work);

}  // namespace bnorm::kernels

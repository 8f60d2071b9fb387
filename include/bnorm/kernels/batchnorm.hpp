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
// gamma == nullptr means 1 (scale = false) and beta == nullptr means 0 (center = false).
//
// Every function *assigns* its outputs; none adds to them.
//
// Every function takes `work`, scratch of batchnorm_work_doubles(C) doubles
// that the caller owns (the layer keeps one), so a training step allocates
// nothing; its contents on entry do not matter.
#include <cstdint>

#include "bnorm/kernels/cpu_caches.hpp"

namespace bnorm::kernels {

// How the kernels size their work to a machine's caches; the rules and their
// reasons are at the definition (src/kernels/batchnorm.cpp).
struct BatchnormTuning {
  std::int64_t group_bytes;             // data a fused training pass takes at a time
  std::int64_t stream_footprint_bytes;  // a pass whose tensors come to this much writes around the caches (x86)
  std::int64_t prefetch_bytes;          // how far ahead the per-channel sums ask for data, at least
};
BatchnormTuning batchnorm_tuning(const CacheSizes& caches);
// For cpu_caches(): what the kernels below use.
const BatchnormTuning& batchnorm_tuning();

// Size of the scratch every function below needs, in doubles.
std::int64_t batchnorm_work_doubles(std::int64_t C);

// Training-mode forward with the batch's own statistics.
// Writes y (N, C, S) and the per-channel mean, biased var and inv_std (C);
// the backward pass needs mean and inv_std, the layer needs var for its running
// estimate. Statistics accumulate in double around a per-channel shift, so an
// input with a large mean (1e6) and unit spread keeps its precision.
void batchnorm_forward_train(float* y, float* mean, float* var, float* inv_std, const float* x, const float* gamma,
                             const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S,
                             double* work);

// Inference forward with given statistics (the running estimates):
//   y = (x - mean) * gamma / sqrt(var + eps) + beta
void batchnorm_forward_inference(float* y, const float* x, const float* mean, const float* var, const float* gamma,
                                 const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S,
                                 double* work);

// Backward of the training-mode forward, in closed form:
//   dbeta  = Σ dy
//   dgamma = Σ dy * x_hat
//   dx     = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)
// x_hat is recomputed from x, mean and inv_std rather than stored.
// dgamma and dbeta may each be nullptr (not learned); the sums are still formed.
void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* mean,
                        const float* inv_std, const float* gamma, std::int64_t N, std::int64_t C, std::int64_t S,
                        double* work);

// Fused batch norm + ReLU: out = max(0, y) with y as above, in the same passes
// over memory (a separate ReLU reads and writes every value once more in each
// direction). The training forward also writes mask (N, C, S): 1 where y > 0,
// one byte per value, which is all the ReLU's backward needs; the backward
// takes dy of the ReLU's output and the mask and gives dx of the batch norm's
// input. The results are bit-identical to the two layers run one after the other.
void batchnorm_relu_forward_train(float* out, std::uint8_t* mask, float* mean, float* var, float* inv_std,
                                  const float* x, const float* gamma, const float* beta, float eps, std::int64_t N,
                                  std::int64_t C, std::int64_t S, double* work);
void batchnorm_relu_forward_inference(float* out, const float* x, const float* mean, const float* var,
                                      const float* gamma, const float* beta, float eps, std::int64_t N, std::int64_t C,
                                      std::int64_t S, double* work);
void batchnorm_relu_backward(float* dx, float* dgamma, float* dbeta, const float* dout, const std::uint8_t* mask,
                             const float* x, const float* mean, const float* inv_std, const float* gamma,
                             std::int64_t N, std::int64_t C, std::int64_t S, double* work);

// Running estimates after a training step, per channel (the layer picks f):
//   running_mean = (1 - f) * running_mean + f * mean
//   running_var  = (1 - f) * running_var  + f * var * var_scale
// in double, rounded once to float.
void batchnorm_update_running(float* running_mean, float* running_var, const float* mean, const float* var, double f,
                              double var_scale, std::int64_t C);

// Stages of the training forward and backward, for a batch whose examples are
// spread over several processes: each process computes its part's statistics,
// the caller combines them (nn/batch_stats_sync), and the stages below finish
// with the combined values. Every stage accepts N == 0 (a process with no
// examples): moments and sums are then 0 and nothing else is touched.

// Per-channel mean and M2 = Σ (x - mean)^2 (C each) of this part's m = N*S
// values, in double, from sums around a per-channel shift as in the forward.
void batchnorm_channel_moments(double* mean, double* m2, const float* x, std::int64_t N, std::int64_t C, std::int64_t S,
                               double* work);

// y (N, C, S) normalized with given statistics, as batchnorm_forward_train does
// with its own (with relu, fused with the ReLU after it, as
// batchnorm_relu_forward_train; relu_mask may then be given). Writes the float
// mean, biased var and inv_std (C) the backward and the running estimates use;
// mean and var (C) are the combined statistics.
void batchnorm_normalize_with(float* y, std::uint8_t* relu_mask, bool relu, float* mean_out, float* var_out,
                              float* inv_std, const float* x, const double* mean, const double* var, const float* gamma,
                              const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S,
                              double* work);

// The backward's first pass alone: Σ dy and Σ dy * (x - mean) (C each, double);
// with a ReLU mask (fused), dy counts only where the mask is 1.
void batchnorm_grad_sums(double* sum_dy, double* sum_dy_xc, const float* dy, const std::uint8_t* relu_mask,
                         const float* x, const float* mean, std::int64_t N, std::int64_t C, std::int64_t S);

// The backward's second pass with given sums over all m values of the batch:
//   dx = gamma * inv_std * (dy - sum_dy / m - x_hat * inv_std * sum_dy_xc / m)
// (dy masked as in batchnorm_grad_sums). Assigns dx (N, C, S) only; the
// parameter gradients are the caller's.
void batchnorm_apply_grad(float* dx, const float* dy, const std::uint8_t* relu_mask, const float* x, const float* mean,
                          const float* inv_std, const float* gamma, const double* sum_dy, const double* sum_dy_xc,
                          double m, std::int64_t N, std::int64_t C, std::int64_t S, double* work);

// Batch Renormalization's correction (Ioffe 2017) of a batch's statistics
// towards the running ones, per channel, in double:
//   r = clip(sqrt(var + eps) / sqrt(running_var + eps), 1/rmax, rmax)
//   d = clip((mean - running_mean) / sqrt(running_var + eps), -dmax, dmax)
// mean and var (C) are the batch's (var biased, as it normalizes); r, d (C) assigned.
void batchnorm_renorm_correction(float* r, float* d, const double* mean, const double* var, const float* running_mean,
                                 const float* running_var, float eps, double rmax, double dmax, std::int64_t C);

}  // namespace bnorm::kernels

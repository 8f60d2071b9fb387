// Batch-normalization kernels. Semantics are documented in
// include/bnorm/kernels/batchnorm.hpp; the comments here explain how the loops
// are made fast without giving up precision.
//
// Memory traffic is the cost: training forward reads x twice (statistics, then
// normalize) and writes y once; backward reads x and dy twice and writes dx once.
// The training passes take a group of channels at a time (an L2's worth of
// data: runs of whole channels, or a block of columns for S == 1) and run the
// second pass while the group is still in the core's cache, so memory sees x
// read once. A pass whose tensors would crowd the L3 writes its output with
// streaming stores, which skip reading the old contents first. Both sizes
// follow the caches of the machine (batchnorm_tuning).
//
// Layouts: the passes over an (N, C) input (S == 1) are in batchnorm_rows.cpp,
// those over an (N, C, S) input with S > 1 in batchnorm_planes.cpp; this file
// holds the entry points and the per-channel arithmetic between the passes.
// Terms and shared pieces: bn_lanes.hpp.
//
// Precision: sums run in float only over short stretches (1024 values of a
// run, or a block of 16 rows), around a per-channel shift, then merge into double.
// Float lanes keep the inner loops vectorizable; the shift and the short
// stretches keep the error near float epsilon even for |mean| >> std.
//
// Each hot function is compiled three times (AVX-512, AVX2, baseline x86-64)
// and the loader picks the best for the CPU it runs on (GCC/Clang
// target_clones), so the portable build is fast on new machines too.
#include "bnorm/kernels/batchnorm.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "bn_lanes.hpp"
#if !BNORM_BN_VECTORIZED
#include "bnorm/kernels/batchnorm_reference.hpp"
#endif

namespace bnorm::kernels {

// The rules, each from the one cache that limits it. Sizes are as the
// machine reports them: the AMD EPYC VMs these were measured on report
// L1d 32 KiB, L2 512 KiB per core and L3 32 MiB (Zen 3) or 16 MiB (Zen 2),
// where the rules give groups of 512 KiB, streaming from 16 MiB or 8 MiB and
// prefetching 4 KiB ahead.
BatchnormTuning batchnorm_tuning(const CacheSizes& caches) {
  BatchnormTuning tuning{};
  // A group the size of the L2: its sums read it once, and the second pass,
  // last example first, starts with what the sums read last, so that what
  // its own output pushes out of the L2 is what it needs last. (The 512 KiB
  // the machine above reports is the budget these kernels were tuned with.)
  tuning.group_bytes = caches.l2_bytes;
  // Stream when the pass's tensors would fill half the L3: then the output
  // is likely to be evicted before anyone reads it, and streaming saves
  // reading each line before it is overwritten. Half, because the L3 also
  // holds the neighbouring layers' tensors and, on a shared host, other
  // tenants' lines. A smaller pass leaves its output in the L3 for the next
  // layer. Measured on 256x4096 (forward: x, y, 8 MiB; backward: x, dy, dx,
  // 12 MiB), 2 threads:
  //   - 16 MiB L3 (EPYC Zen 2 VM, 2026-12-04): the whole L3 as threshold
  //     streamed neither pass, and forward+backward took 1.47-1.80 ms; half
  //     streams both, 0.68-0.81 ms (five alternating rounds).
  //   - 32 MiB L3 (EPYC Zen 3 VM, 2026-11-29): 3/8 of the L3 streamed the
  //     backward, 2.5-3.2 ms against 1.3-1.4 unstreamed; half streams
  //     neither, as the whole L3 did.
  tuning.stream_footprint_bytes = caches.l3_bytes / 2;
  // Ask for data an eighth of the L1d ahead (at least a line): enough lines
  // in flight to cover the memory's latency, while the lines asked for and
  // the two streams of a backward stay a small part of the L1d. One example
  // ahead was too short for 128x256x14x14 (stretches of 1.5-3.9 KB): two,
  // that is at least 4 KiB, made forward+backward 13 % faster there; for
  // 32x64x56x56 (12.5 KB stretches) one is enough.
  tuning.prefetch_bytes = std::max<std::int64_t>(caches.l1d_bytes / 8, 64);
  return tuning;
}

const BatchnormTuning& batchnorm_tuning() {
  static const BatchnormTuning tuning = batchnorm_tuning(cpu_caches());
  return tuning;
}

std::int64_t batchnorm_work_doubles(std::int64_t C) { return 4 * C; }

#if BNORM_BN_VECTORIZED
namespace vectorized {
namespace {

// Per-channel closing arithmetic, in double, in cloned functions of their
// own, built with -fno-math-errno -fno-trapping-math, so the loops run in
// vector lanes (vsqrtpd, vdivpd): as scalar code the square roots and
// divisions took a quarter of a 64x512 training forward.

// Σ(x − shift) and Σ(x − shift)² over m values → mean and biased variance, in place.
BNORM_MULTIVERSION
void mean_var_from_shifted_sums(double* sum_to_mean, double* sumsq_to_var, const float* shift, double m,
                                std::int64_t C) {
  for (std::int64_t c = 0; c < C; ++c) {
    const double mean_shifted = sum_to_mean[c] / m;
    const double raw_var = sumsq_to_var[c] / m - mean_shifted * mean_shifted;
    sum_to_mean[c] = shift[c] + mean_shifted;
    sumsq_to_var[c] = raw_var > 0.0 ? raw_var : 0.0;  // rounding can go below 0
  }
}

// From a double mean and variance: the float statistics the layer keeps, the
// mean's float remainder, and normalize's scale and offset. Restrict
// pointers: eleven arrays are too many for GCC's run-time overlap checks.
BNORM_MULTIVERSION
void normalize_coefficients(float* __restrict mean, float* __restrict mean_lo, float* __restrict var,
                            float* __restrict inv_std, float* __restrict scale, float* __restrict offset,
                            const double* __restrict mean_d, const double* __restrict var_d,
                            const float* __restrict gamma, const float* __restrict beta, float eps, std::int64_t C) {
  for (std::int64_t c = 0; c < C; ++c) {
    mean[c] = static_cast<float>(mean_d[c]);
    mean_lo[c] = static_cast<float>(mean_d[c] - static_cast<double>(mean[c]));
    var[c] = static_cast<float>(var_d[c]);
    inv_std[c] = static_cast<float>(1.0 / std::sqrt(var_d[c] + static_cast<double>(eps)));
  }
  // Separate loops: a test on gamma or beta inside the one above kept it scalar.
  for (std::int64_t c = 0; c < C; ++c) scale[c] = gamma ? gamma[c] * inv_std[c] : inv_std[c];
  for (std::int64_t c = 0; c < C; ++c) offset[c] = beta ? beta[c] : 0.0f;
}

// scale = gamma / sqrt(var + eps) and offset = beta from given statistics.
BNORM_MULTIVERSION
void inference_coefficients(float* __restrict scale, float* __restrict offset, const float* __restrict var,
                            const float* __restrict gamma, const float* __restrict beta, float eps, std::int64_t C) {
  for (std::int64_t c = 0; c < C; ++c)
    scale[c] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var[c]) + eps));
  for (std::int64_t c = 0; c < C; ++c) scale[c] = gamma ? gamma[c] * scale[c] : scale[c];
  for (std::int64_t c = 0; c < C; ++c) offset[c] = beta ? beta[c] : 0.0f;
}

// The backward's per-channel coefficients (see backward), in double.
BNORM_MULTIVERSION
void grad_coefficients(float* __restrict k, float* __restrict u, float* __restrict v, float* __restrict dgamma,
                       float* __restrict dbeta, const double* __restrict sum_dy, const double* __restrict sum_dy_xc,
                       const float* __restrict inv_std, const float* __restrict gamma, double m, std::int64_t C) {
  for (std::int64_t c = 0; c < C; ++c) {
    const double is = inv_std[c];
    const double sum_dy_xhat = sum_dy_xc[c] * is;
    if (dbeta) dbeta[c] = static_cast<float>(sum_dy[c]);
    if (dgamma) dgamma[c] = static_cast<float>(sum_dy_xhat);
    const double kc = (gamma ? gamma[c] : 1.0f) * is;
    k[c] = static_cast<float>(kc);
    u[c] = static_cast<float>(-kc * is * sum_dy_xhat / m);
    v[c] = static_cast<float>(-kc * sum_dy[c] / m);
  }
}

BNORM_MULTIVERSION
void update_running(float* __restrict running_mean, float* __restrict running_var, const float* __restrict mean,
                    const float* __restrict var, double f, double var_scale, std::int64_t C) {
  for (std::int64_t c = 0; c < C; ++c) {
    running_mean[c] = static_cast<float>((1.0 - f) * running_mean[c] + f * mean[c]);
    running_var[c] = static_cast<float>((1.0 - f) * running_var[c] + f * var[c] * var_scale);
  }
}

}  // namespace

void forward_group_coefficients(const ForwardTrain& a, const ForwardScratch& w, std::int64_t c0, std::int64_t count) {
  mean_var_from_shifted_sums(w.sum + c0, w.sumsq + c0, w.shift + c0, static_cast<double>(a.N * a.S), count);
  normalize_coefficients(a.mean + c0, w.mean_lo + c0, a.var + c0, a.inv_std + c0, w.scale + c0, w.offset + c0,
                         w.sum + c0, w.sumsq + c0, a.gamma ? a.gamma + c0 : nullptr, a.beta ? a.beta + c0 : nullptr,
                         a.eps, count);
}

void backward_group_coefficients(const Backward& a, const BackwardScratch& w, std::int64_t c0, std::int64_t count) {
  grad_coefficients(w.k + c0, w.u + c0, w.v + c0, a.dgamma ? a.dgamma + c0 : nullptr, a.dbeta ? a.dbeta + c0 : nullptr,
                    w.sum_dy + c0, w.sum_dy_xc + c0, a.inv_std + c0, a.gamma ? a.gamma + c0 : nullptr,
                    static_cast<double>(a.N * a.S), count);
}

namespace {

// The entry points' bodies, each with an optional ReLU after the batch norm.

void forward_train(float* y, std::uint8_t* mask, bool relu, float* mean, float* var, float* inv_std, const float* x,
                   const float* gamma, const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S,
                   double* work) {
  const ForwardTrain a{y, mask, relu, mean, var, inv_std, x, gamma, beta, eps, N, C, S};
  const ForwardScratch w(work, C);
  // One sample of each channel as its shift: close to the mean in practice.
  for (std::int64_t c = 0; c < C; ++c) w.shift[c] = x[c * S];
  const bool parallel = N * C * S >= kParallelMinFused, stream = streams(N, C, S, 2);
  if (S == 1)
    rows_forward_train(a, w, parallel, stream);
  else
    planes_forward_train(a, w, parallel, stream);
}

// The whole tensor normalized with given coefficients (inference, and the
// synchronized training forward).
void normalize(float* y, std::uint8_t* mask, bool relu, const float* x, const float* mean_hi, const float* mean_lo,
               const float* scale, const float* offset, std::int64_t N, std::int64_t C, std::int64_t S) {
  const bool parallel = N * C * S >= kParallelMin, stream = streams(N, C, S, 2);
  if (S == 1)
    rows_normalize(y, mask, relu, x, mean_hi, mean_lo, scale, offset, N, C, parallel, stream);
  else
    planes_normalize(y, mask, relu, x, mean_hi, mean_lo, scale, offset, N, C, S, parallel, stream);
}

void forward_inference(float* y, bool relu, const float* x, const float* mean, const float* var, const float* gamma,
                       const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S, double* work) {
  const ForwardScratch w(work, C);
  inference_coefficients(w.scale, w.offset, var, gamma, beta, eps, C);
  // No remainder (null): a given float mean is exact as it stands.
  normalize(y, nullptr, relu, x, mean, nullptr, w.scale, w.offset, N, C, S);
}

void backward(float* dx, float* dgamma, float* dbeta, const float* dy, const std::uint8_t* mask, const float* x,
              const float* mean, const float* inv_std, const float* gamma, std::int64_t N, std::int64_t C,
              std::int64_t S, double* work) {
  // Pass 1: Σ dy and Σ dy·(x − mean) together; Σ dy·x̂ = inv_std · Σ dy·(x − mean).
  // Pass 2: dx = gamma·inv_std · (dy − mean(dy) − x̂ · mean(dy·x̂))
  //            = k·dy + (x − mean)·u + v, with k = gamma·inv_std,
  //              u = −k·inv_std·mean(dy·x̂), v = −k·mean(dy).
  // Both over one group of channels at a time, as in forward_train.
  const Backward a{dx, dgamma, dbeta, dy, mask, x, mean, inv_std, gamma, N, C, S};
  const BackwardScratch w(work, C);
  const bool parallel = N * C * S >= kParallelMinFused, stream = streams(N, C, S, 3);
  if (S == 1)
    rows_backward(a, w, parallel, stream);
  else
    planes_backward(a, w, parallel, stream);
}

void apply_grad(float* dx, const float* dy, const float* x, const std::uint8_t* mask, const float* mean, const float* k,
                const float* u, const float* v, std::int64_t N, std::int64_t C, std::int64_t S) {
  const bool parallel = N * C * S >= kParallelMin, stream = streams(N, C, S, 3);
  if (S == 1)
    rows_apply_grad(dx, dy, x, mask, mean, k, u, v, N, C, parallel, stream);
  else
    planes_apply_grad(dx, dy, x, mask, mean, k, u, v, N, C, S, parallel, stream);
}

void channel_moments(double* sum, double* sumsq, const float* shift, const float* x, std::int64_t N, std::int64_t C,
                     std::int64_t S) {
  if (S == 1)
    rows_channel_moments(sum, sumsq, shift, x, N, C);
  else
    planes_channel_moments(sum, sumsq, shift, x, N, C, S);
}

}  // namespace
}  // namespace vectorized

using namespace vectorized;

void batchnorm_forward_train(float* y, float* mean, float* var, float* inv_std, const float* x, const float* gamma,
                             const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S,
                             double* work) {
  forward_train(y, nullptr, false, mean, var, inv_std, x, gamma, beta, eps, N, C, S, work);
}

void batchnorm_forward_inference(float* y, const float* x, const float* mean, const float* var, const float* gamma,
                                 const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S,
                                 double* work) {
  forward_inference(y, false, x, mean, var, gamma, beta, eps, N, C, S, work);
}

void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* mean,
                        const float* inv_std, const float* gamma, std::int64_t N, std::int64_t C, std::int64_t S,
                        double* work) {
  backward(dx, dgamma, dbeta, dy, nullptr, x, mean, inv_std, gamma, N, C, S, work);
}

void batchnorm_relu_forward_train(float* y, std::uint8_t* mask, float* mean, float* var, float* inv_std, const float* x,
                                  const float* gamma, const float* beta, float eps, std::int64_t N, std::int64_t C,
                                  std::int64_t S, double* work) {
  forward_train(y, mask, true, mean, var, inv_std, x, gamma, beta, eps, N, C, S, work);
}

void batchnorm_relu_forward_inference(float* y, const float* x, const float* mean, const float* var, const float* gamma,
                                      const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S,
                                      double* work) {
  forward_inference(y, true, x, mean, var, gamma, beta, eps, N, C, S, work);
}

void batchnorm_relu_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const std::uint8_t* mask,
                             const float* x, const float* mean, const float* inv_std, const float* gamma,
                             std::int64_t N, std::int64_t C, std::int64_t S, double* work) {
  backward(dx, dgamma, dbeta, dy, mask, x, mean, inv_std, gamma, N, C, S, work);
}

void batchnorm_update_running(float* running_mean, float* running_var, const float* mean, const float* var, double f,
                              double var_scale, std::int64_t C) {
  update_running(running_mean, running_var, mean, var, f, var_scale, C);
}

// ---- Stages for a batch spread over several processes -------------------
// The same loops as above, cut where the statistics or gradient sums must be
// combined across processes. Nothing above calls these.

void batchnorm_channel_moments(double* mean, double* m2, const float* x, std::int64_t N, std::int64_t C, std::int64_t S,
                               double* work) {
  if (N * S == 0) {
    std::fill(mean, mean + C, 0.0);
    std::fill(m2, m2 + C, 0.0);
    return;
  }
  const ForwardScratch w(work, C);
  double *sum = w.sum, *sumsq = w.sumsq;
  float* shift = w.shift;
  for (std::int64_t c = 0; c < C; ++c) shift[c] = x[c * S];
  channel_moments(sum, sumsq, shift, x, N, C, S);
  // With d = x - shift: mean = shift + Σd/m and M2 = Σd² - (Σd)²/m.
  const double m = static_cast<double>(N * S);
  for (std::int64_t c = 0; c < C; ++c) {
    mean[c] = shift[c] + sum[c] / m;
    m2[c] = std::max(sumsq[c] - sum[c] * sum[c] / m, 0.0);
  }
}

void batchnorm_normalize_with(float* y, std::uint8_t* relu_mask, bool relu, float* mean_out, float* var_out,
                              float* inv_std, const float* x, const double* mean, const double* var, const float* gamma,
                              const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S,
                              double* work) {
  const ForwardScratch w(work, C);
  float *scale = w.scale, *offset = w.offset, *mean_lo = w.mean_lo;
  normalize_coefficients(mean_out, mean_lo, var_out, inv_std, scale, offset, mean, var, gamma, beta, eps, C);
  if (N * S > 0) normalize(y, relu_mask, relu, x, mean_out, mean_lo, scale, offset, N, C, S);
}

void batchnorm_grad_sums(double* sum_dy, double* sum_dy_xc, const float* dy, const std::uint8_t* relu_mask,
                         const float* x, const float* mean, std::int64_t N, std::int64_t C, std::int64_t S) {
  if (N * S == 0) {
    std::fill(sum_dy, sum_dy + C, 0.0);
    std::fill(sum_dy_xc, sum_dy_xc + C, 0.0);
  } else if (S == 1) {
    rows_grad_sums(sum_dy, sum_dy_xc, dy, x, relu_mask, mean, N, C);
  } else {
    planes_grad_sums(sum_dy, sum_dy_xc, dy, x, relu_mask, mean, N, C, S);
  }
}

void batchnorm_apply_grad(float* dx, const float* dy, const std::uint8_t* relu_mask, const float* x, const float* mean,
                          const float* inv_std, const float* gamma, const double* sum_dy, const double* sum_dy_xc,
                          double m, std::int64_t N, std::int64_t C, std::int64_t S, double* work) {
  if (N * S == 0) return;
  const BackwardScratch w(work, C);
  float *k = w.k, *u = w.u, *v = w.v;
  grad_coefficients(k, u, v, nullptr, nullptr, sum_dy, sum_dy_xc, inv_std, gamma, m, C);  // as in backward
  apply_grad(dx, dy, x, relu_mask, mean, k, u, v, N, C, S);
}

#else  // !BNORM_BN_VECTORIZED: the plain formulas, in float

void batchnorm_forward_train(float* y, float* mean, float* var, float* inv_std, const float* x, const float* gamma,
                             const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S, double*) {
  reference::batchnorm_forward_train(y, nullptr, false, mean, var, inv_std, x, gamma, beta, eps, N, C, S);
}

void batchnorm_forward_inference(float* y, const float* x, const float* mean, const float* var, const float* gamma,
                                 const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S,
                                 double*) {
  reference::batchnorm_forward_inference(y, false, x, mean, var, gamma, beta, eps, N, C, S);
}

void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* mean,
                        const float* inv_std, const float* gamma, std::int64_t N, std::int64_t C, std::int64_t S,
                        double*) {
  reference::batchnorm_backward(dx, dgamma, dbeta, dy, nullptr, x, mean, inv_std, gamma, N, C, S);
}

void batchnorm_relu_forward_train(float* y, std::uint8_t* mask, float* mean, float* var, float* inv_std, const float* x,
                                  const float* gamma, const float* beta, float eps, std::int64_t N, std::int64_t C,
                                  std::int64_t S, double*) {
  reference::batchnorm_forward_train(y, mask, true, mean, var, inv_std, x, gamma, beta, eps, N, C, S);
}

void batchnorm_relu_forward_inference(float* y, const float* x, const float* mean, const float* var, const float* gamma,
                                      const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S,
                                      double*) {
  reference::batchnorm_forward_inference(y, true, x, mean, var, gamma, beta, eps, N, C, S);
}

void batchnorm_relu_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const std::uint8_t* mask,
                             const float* x, const float* mean, const float* inv_std, const float* gamma,
                             std::int64_t N, std::int64_t C, std::int64_t S, double*) {
  reference::batchnorm_backward(dx, dgamma, dbeta, dy, mask, x, mean, inv_std, gamma, N, C, S);
}

void batchnorm_update_running(float* running_mean, float* running_var, const float* mean, const float* var, double f,
                              double var_scale, std::int64_t C) {
  reference::batchnorm_update_running(running_mean, running_var, mean, var, f, var_scale, C);
}

void batchnorm_channel_moments(double* mean, double* m2, const float* x, std::int64_t N, std::int64_t C, std::int64_t S,
                               double*) {
  reference::batchnorm_channel_moments(mean, m2, x, N, C, S);
}

void batchnorm_normalize_with(float* y, std::uint8_t* relu_mask, bool relu, float* mean_out, float* var_out,
                              float* inv_std, const float* x, const double* mean, const double* var, const float* gamma,
                              const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S, double*) {
  reference::batchnorm_normalize_with(y, relu_mask, relu, mean_out, var_out, inv_std, x, mean, var, gamma, beta, eps, N,
                                      C, S);
}

void batchnorm_grad_sums(double* sum_dy, double* sum_dy_xc, const float* dy, const std::uint8_t* relu_mask,
                         const float* x, const float* mean, std::int64_t N, std::int64_t C, std::int64_t S) {
  reference::batchnorm_grad_sums(sum_dy, sum_dy_xc, dy, relu_mask, x, mean, N, C, S);
}

void batchnorm_apply_grad(float* dx, const float* dy, const std::uint8_t* relu_mask, const float* x, const float* mean,
                          const float* inv_std, const float* gamma, const double* sum_dy, const double* sum_dy_xc,
                          double m, std::int64_t N, std::int64_t C, std::int64_t S, double*) {
  reference::batchnorm_apply_grad(dx, dy, relu_mask, x, mean, inv_std, gamma, sum_dy, sum_dy_xc, m, N, C, S);
}

#endif  // BNORM_BN_VECTORIZED

// Per channel and scalar: a few operations on C values, whatever the path.
void batchnorm_renorm_correction(float* r, float* d, const double* mean, const double* var, const float* running_mean,
                                 const float* running_var, float eps, double rmax, double dmax, std::int64_t C) {
  for (std::int64_t c = 0; c < C; ++c) {
    const double sigma = std::sqrt(static_cast<double>(running_var[c]) + eps);
    const double sigma_batch = std::sqrt(var[c] + eps);
    r[c] = static_cast<float>(std::clamp(sigma_batch / sigma, 1.0 / rmax, rmax));
    d[c] = static_cast<float>(std::clamp((mean[c] - running_mean[c]) / sigma, -dmax, dmax));
  }
}

}  // namespace bnorm::kernels

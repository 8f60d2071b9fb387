// Batch-normalization kernels. Semantics are documented in
// include/bnorm/kernels/batchnorm.hpp; the comments here explain how the loops
// are made fast without giving up precision.
//
// Memory traffic is the cost: training forward reads x twice (statistics, then
// normalize) and writes y once; backward reads x and dy twice and writes dx once.
//
// Layouts: for S == 1, an (N, C) input, a channel's values are strided by C, so
// the loops walk rows and keep C accumulators, vectorized across channels; the
// threads split the channels. For S > 1 each (n, c) pair is a contiguous run of
// S values; the threads split the channels and vectorize within runs.
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

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "multiversion.hpp"

namespace bnorm::kernels {
namespace {

constexpr std::int64_t kLanes = 16;             // independent float accumulators: one AVX-512 register
constexpr std::int64_t kRowBlock = 16;          // rows summed in float before merging into double (S == 1)
constexpr std::int64_t kRowWidth = 256;         // columns a thread owns at a time (S == 1)
constexpr int kRowChunk = 4;                    // lane groups summed in registers at a time (S == 1)
constexpr std::int64_t kRunBlock = 1024;        // values of a run summed in float before merging (S > 1)
constexpr std::int64_t kChannelBlockMax = 256;  // channels a thread owns at most (S > 1): 32 KB of lanes
// Below this many values a parallel region costs more than it saves: a hidden
// layer of 64x256 takes microseconds, while waking a second thread, and
// waiting for it at the barrier when another process holds that core, can
// take milliseconds.
constexpr std::int64_t kParallelMin = std::int64_t{1} << 18;

// Sixteen float lanes as one value (GCC/Clang vector extension): one zmm
// register in the AVX-512 copy, two ymm or four xmm in the others. Every copy
// adds the same values in the same lane order, so all give identical bits;
// an auto-vectorized scalar loop gave GCC room to shuffle lanes and ran at a
// third of the speed.
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));
typedef std::int32_t LaneBits __attribute__((vector_size(kLanes * sizeof(std::int32_t))));

// Loads through memcpy (unaligned-safe). A macro rather than a function: a
// function returning Lanes by value has a different ABI in each copy.
#define BNORM_LOAD_LANES(var, ptr) \
  Lanes var;                       \
  std::memcpy(&var, (ptr), sizeof var)

inline double lane_sum(const Lanes& v) {
  double sum = 0.0;
  for (std::int64_t l = 0; l < kLanes; ++l) sum += v[l];
  return sum;
}

// Adds Σ (x - shift[c]) and Σ (x - shift[c])^2 over `runs` consecutive runs of
// S values (channels c0.. of one example): whole lane-widths into the float
// lanes s[r] and q[r], the tails into the doubles. One call covers a block of
// channels, so the dispatch and the lane loads happen per block, not per run.
BNORM_MULTIVERSION
void block_moments(Lanes* s_out, Lanes* q_out, double* tail_sum, double* tail_sumsq, const float* x, std::int64_t runs,
                   std::int64_t S, const float* shift) {
  for (std::int64_t r = 0; r < runs; ++r) {
    // Local copies: through the pointers the compiler must assume x may alias
    // the lanes and would store them back on every step.
    Lanes s = s_out[r], q = q_out[r];
    const float* run = x + r * S;
    const float k = shift[r];
    std::int64_t i = 0;
    for (; i + kLanes <= S; i += kLanes) {
      BNORM_LOAD_LANES(v, run + i);
      const Lanes d = v - k;
      s += d;
      q += d * d;
    }
    double ts = 0.0, tq = 0.0;
    for (; i < S; ++i) {
      const double d = static_cast<double>(run[i] - k);
      ts += d;
      tq += d * d;
    }
    tail_sum[r] += ts;
    tail_sumsq[r] += tq;
    s_out[r] = s;
    q_out[r] = q;
  }
}

// Adds Σ dy and Σ dy * (x - mean[c]) over `runs` consecutive runs, as block_moments does.
// With a ReLU mask (fused BN + ReLU) dy counts only where the mask is 1: the
// gradient that reaches the batch norm's output is dy where ReLU let it pass.
BNORM_MULTIVERSION
void block_grad_sums(Lanes* s_out, Lanes* q_out, double* tail_dy, double* tail_dy_xc, const float* dy, const float* x,
                     const std::uint8_t* mask, std::int64_t runs, std::int64_t S, const float* mean) {
  for (std::int64_t r = 0; r < runs; ++r) {
    Lanes s = s_out[r], q = q_out[r];
    const float* dyr = dy + r * S;
    const float* xr = x + r * S;
    const std::uint8_t* mr = mask ? mask + r * S : nullptr;
    const float mu = mean[r];
    std::int64_t i = 0;
    if (mr) {
      for (; i + kLanes <= S; i += kLanes) {
        BNORM_LOAD_LANES(g, dyr + i);
        BNORM_LOAD_LANES(v, xr + i);
        LaneBits keep;
        for (std::int64_t l = 0; l < kLanes; ++l) keep[l] = -static_cast<std::int32_t>(mr[i + l]);
        g = reinterpret_cast<Lanes>(reinterpret_cast<LaneBits>(g) & keep);
        s += g;
        q += g * (v - mu);
      }
    } else {
      for (; i + kLanes <= S; i += kLanes) {
        BNORM_LOAD_LANES(g, dyr + i);
        BNORM_LOAD_LANES(v, xr + i);
        s += g;
        q += g * (v - mu);
      }
    }
    double ts = 0.0, tq = 0.0;
    for (; i < S; ++i) {
      const float d = dyr[i];
      const float g = mr && !mr[i] ? 0.0f : d;
      ts += g;
      tq += static_cast<double>(g) * static_cast<double>(xr[i] - mu);
    }
    tail_dy[r] += ts;
    tail_dy_xc[r] += tq;
    s_out[r] = s;
    q_out[r] = q;
  }
}

// Two per-channel sums over (N, C, S) data with S > 1: each thread takes one
// block of consecutive channels (up to kChannelBlockMax) and walks it example
// by example, so it reads its block's part of every example as one long
// stretch. With blocks of 16 channels, 128x256x14x14 read 12.5 KB stretches
// 200 KB apart and the hardware prefetchers restarted at each jump: the
// statistics pass took longer than normalizing, which also writes.
// add_block(lanes_a, lanes_b, sums_a, sums_b, n, c0, count) adds one example's
// runs of channels c0..c0+count-1. A channel's sums do not depend on the
// block it falls in, so the thread count does not change the results.
template <class AddBlock>
void block_sums(double* sum_a, double* sum_b, std::int64_t N, std::int64_t C, std::int64_t S, AddBlock add_block) {
  const bool parallel = N * C * S >= kParallelMin;
  const std::int64_t threads = parallel ? omp_get_max_threads() : 1;
  const std::int64_t block = std::clamp<std::int64_t>((C + threads - 1) / threads, 1, kChannelBlockMax);
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t c0 = 0; c0 < C; c0 += block) {
    const std::int64_t count = std::min(C - c0, block);
    Lanes a[kChannelBlockMax], b[kChannelBlockMax];
    for (std::int64_t r = 0; r < count; ++r) {
      sum_a[c0 + r] = sum_b[c0 + r] = 0.0;
      a[r] = b[r] = Lanes{};
    }
    std::int64_t since_merge = 0;
    for (std::int64_t n = 0; n < N; ++n) {
      add_block(a, b, sum_a + c0, sum_b + c0, n, c0, count);
      since_merge += S;
      if (since_merge >= kRunBlock || n + 1 == N) {
        for (std::int64_t r = 0; r < count; ++r) {
          sum_a[c0 + r] += lane_sum(a[r]);
          sum_b[c0 + r] += lane_sum(b[r]);
          a[r] = b[r] = Lanes{};
        }
        since_merge = 0;
      }
    }
  }
}

// channel_moments_rows and grad_sums_rows share their blocking on purpose:
// folded into one template taking a lambda, the lambda was not vectorized for
// the AVX-512 copy and 64x512 forward+backward went from 0.015 to 0.023 ms.
BNORM_MULTIVERSION
void channel_moments_rows(double* sum, double* sumsq, const float* shift, const float* x, std::int64_t N,
                          std::int64_t C) {
  // Threads take channel ranges; each walks all rows of its columns.
#pragma omp parallel if (N * C >= kParallelMin)
  {
    float s[kRowWidth], q[kRowWidth];
#pragma omp for schedule(static)
    for (std::int64_t c0 = 0; c0 < C; c0 += kRowWidth) {
      const std::int64_t c1 = std::min(C, c0 + kRowWidth);
      for (std::int64_t c = c0; c < c1; ++c) sum[c] = sumsq[c] = 0.0;
      // Sixty-four channels at a time with the sums in registers: through
      // the arrays below every value cost two extra loads and two stores.
      // Each channel's sums run over the same rows in the same order either
      // way, so the bits do not depend on the path.
      std::int64_t cv = c0;
      for (; cv + kRowChunk * kLanes <= c1; cv += kRowChunk * kLanes) {
        Lanes k[kRowChunk];
        for (int u = 0; u < kRowChunk; ++u) std::memcpy(&k[u], shift + cv + u * kLanes, sizeof(Lanes));
        for (std::int64_t n0 = 0; n0 < N; n0 += kRowBlock) {
          const std::int64_t n1 = std::min(N, n0 + kRowBlock);
          Lanes sv[kRowChunk] = {}, qv[kRowChunk] = {};
          for (std::int64_t n = n0; n < n1; ++n)
            for (int u = 0; u < kRowChunk; ++u) {
              BNORM_LOAD_LANES(v, x + n * C + cv + u * kLanes);
              const Lanes d = v - k[u];
              sv[u] += d;
              qv[u] += d * d;
            }
          for (int u = 0; u < kRowChunk; ++u)
            for (std::int64_t l = 0; l < kLanes; ++l) {
              sum[cv + u * kLanes + l] += sv[u][l];
              sumsq[cv + u * kLanes + l] += qv[u][l];
            }
        }
      }
      const std::int64_t w = c1 - cv;
      if (w == 0) continue;
      std::fill(s, s + w, 0.0f);
      std::fill(q, q + w, 0.0f);
      for (std::int64_t n0 = 0; n0 < N; n0 += kRowBlock) {
        const std::int64_t n1 = std::min(N, n0 + kRowBlock);
        for (std::int64_t n = n0; n < n1; ++n) {
          const float* row = x + n * C + cv;
          for (std::int64_t j = 0; j < w; ++j) {
            const float d = row[j] - shift[cv + j];
            s[j] += d;
            q[j] += d * d;
          }
        }
        for (std::int64_t j = 0; j < w; ++j) {
          sum[cv + j] += s[j];
          sumsq[cv + j] += q[j];
          s[j] = q[j] = 0.0f;
        }
      }
    }
  }
}

// Per-channel Σ(x-shift), Σ(x-shift)^2 in double.

void channel_moments(double* sum, double* sumsq, const float* shift, const float* x, std::int64_t N, std::int64_t C,
                     std::int64_t S) {
  if (S == 1) {
    channel_moments_rows(sum, sumsq, shift, x, N, C);
    return;
  }
  block_sums(sum, sumsq, N, C, S,
             [&](Lanes* a, Lanes* b, double* sa, double* sb, std::int64_t n, std::int64_t c0, std::int64_t count) {
               block_moments(a, b, sa, sb, x + (n * C + c0) * S, count, S, shift + c0);
             });
}

// y = ((x - mean_hi[c]) - mean_lo[c]) * scale[c] + offset[c].
// The mean is split into a float and the float of its remainder: near 1e6 a
// float mean alone is off by up to 0.03, which is 3 % of a unit spread, while
// x - mean_hi is exact there (both within a factor of two) and mean_lo removes
// the rest. Subtracting before scaling keeps the same precision for y.
//
// With relu, y = max(0, that), as the separate ReLU computes it (r > 0 ? r : 0,
// so fused and unfused give the same bits), and mask, when given, records
// r > 0 per value: one byte where the ReLU's backward would read a float.
// Each variant has its own loop so the inner loops stay branch-free.
BNORM_MULTIVERSION
void normalize(float* y, std::uint8_t* mask, bool relu, const float* x, const float* mean_hi, const float* mean_lo,
               const float* scale, const float* offset, std::int64_t N, std::int64_t C, std::int64_t S) {
  // Rows of C values (S == 1) or runs of S values of one channel (S > 1).
  const bool rows = S == 1;
  const std::int64_t count = rows ? N : N * C, width = rows ? C : S;
#pragma omp parallel for schedule(static) if (N * C * S >= kParallelMin)
  for (std::int64_t r = 0; r < count; ++r) {
    const float* xr = x + r * width;
    float* yr = y + r * width;
    std::uint8_t* mr = mask ? mask + r * width : nullptr;
    if (rows) {
      if (!relu) {
        for (std::int64_t c = 0; c < C; ++c) yr[c] = ((xr[c] - mean_hi[c]) - mean_lo[c]) * scale[c] + offset[c];
      } else if (!mr) {
        for (std::int64_t c = 0; c < C; ++c) {
          const float v = ((xr[c] - mean_hi[c]) - mean_lo[c]) * scale[c] + offset[c];
          yr[c] = v > 0.0f ? v : 0.0f;
        }
      } else {
        for (std::int64_t c = 0; c < C; ++c) {
          const float v = ((xr[c] - mean_hi[c]) - mean_lo[c]) * scale[c] + offset[c];
          yr[c] = v > 0.0f ? v : 0.0f;
          mr[c] = v > 0.0f;
        }
      }
      continue;
    }
    const std::int64_t c = r % C;
    const float hi = mean_hi[c], lo = mean_lo[c], a = scale[c], b = offset[c];
    if (!relu) {
      for (std::int64_t i = 0; i < S; ++i) yr[i] = ((xr[i] - hi) - lo) * a + b;
    } else if (!mr) {
      for (std::int64_t i = 0; i < S; ++i) {
        const float v = ((xr[i] - hi) - lo) * a + b;
        yr[i] = v > 0.0f ? v : 0.0f;
      }
    } else {
      for (std::int64_t i = 0; i < S; ++i) {
        const float v = ((xr[i] - hi) - lo) * a + b;
        yr[i] = v > 0.0f ? v : 0.0f;
        mr[i] = v > 0.0f;
      }
    }
  }
}

BNORM_MULTIVERSION
void grad_sums_rows(double* sum_dy, double* sum_dy_xc, const float* dy, const float* x, const std::uint8_t* mask,
                    const float* mean, std::int64_t N, std::int64_t C) {
#pragma omp parallel if (N * C >= kParallelMin)
  {
    float s[kRowWidth], q[kRowWidth];
#pragma omp for schedule(static)
    for (std::int64_t c0 = 0; c0 < C; c0 += kRowWidth) {
      const std::int64_t c1 = std::min(C, c0 + kRowWidth);
      for (std::int64_t c = c0; c < c1; ++c) sum_dy[c] = sum_dy_xc[c] = 0.0;
      // Sixty-four channels at a time in registers, as in channel_moments_rows.
      std::int64_t cv = c0;
      for (; cv + kRowChunk * kLanes <= c1; cv += kRowChunk * kLanes) {
        Lanes mu[kRowChunk];
        for (int u = 0; u < kRowChunk; ++u) std::memcpy(&mu[u], mean + cv + u * kLanes, sizeof(Lanes));
        for (std::int64_t n0 = 0; n0 < N; n0 += kRowBlock) {
          const std::int64_t n1 = std::min(N, n0 + kRowBlock);
          Lanes sv[kRowChunk] = {}, qv[kRowChunk] = {};
          for (std::int64_t n = n0; n < n1; ++n)
            for (int u = 0; u < kRowChunk; ++u) {
              const std::int64_t at = n * C + cv + u * kLanes;
              BNORM_LOAD_LANES(g, dy + at);
              BNORM_LOAD_LANES(v, x + at);
              if (mask) {
                LaneBits keep;
                for (std::int64_t l = 0; l < kLanes; ++l) keep[l] = -static_cast<std::int32_t>(mask[at + l]);
                g = reinterpret_cast<Lanes>(reinterpret_cast<LaneBits>(g) & keep);
              }
              sv[u] += g;
              qv[u] += g * (v - mu[u]);
            }
          for (int u = 0; u < kRowChunk; ++u)
            for (std::int64_t l = 0; l < kLanes; ++l) {
              sum_dy[cv + u * kLanes + l] += sv[u][l];
              sum_dy_xc[cv + u * kLanes + l] += qv[u][l];
            }
        }
      }
      const std::int64_t w = c1 - cv;
      if (w == 0) continue;
      std::fill(s, s + w, 0.0f);
      std::fill(q, q + w, 0.0f);
      for (std::int64_t n0 = 0; n0 < N; n0 += kRowBlock) {
        const std::int64_t n1 = std::min(N, n0 + kRowBlock);
        for (std::int64_t n = n0; n < n1; ++n) {
          const float* xr = x + n * C + cv;
          const float* dyr = dy + n * C + cv;
          if (mask) {
            const std::uint8_t* mr = mask + n * C + cv;
            for (std::int64_t j = 0; j < w; ++j) {
              const float d = dyr[j];  // loaded unconditionally, so the select needs no branch
              const float g = mr[j] ? d : 0.0f;
              s[j] += g;
              q[j] += g * (xr[j] - mean[cv + j]);
            }
          } else {
            for (std::int64_t j = 0; j < w; ++j) {
              s[j] += dyr[j];
              q[j] += dyr[j] * (xr[j] - mean[cv + j]);
            }
          }
        }
        for (std::int64_t j = 0; j < w; ++j) {
          sum_dy[cv + j] += s[j];
          sum_dy_xc[cv + j] += q[j];
          s[j] = q[j] = 0.0f;
        }
      }
    }
  }
}

// dx = k*dy + (x - mean)*u + v, the backward's closing pass (coefficients per
// channel); with a mask, dy is taken as 0 where the mask is 0.
BNORM_MULTIVERSION
void apply_grad(float* dx, const float* dy, const float* x, const std::uint8_t* mask, const float* mean, const float* k,
                const float* u, const float* v, std::int64_t N, std::int64_t C, std::int64_t S) {
  const bool rows = S == 1;
  const std::int64_t count = rows ? N : N * C, width = rows ? C : S;
#pragma omp parallel for schedule(static) if (N * C * S >= kParallelMin)
  for (std::int64_t r = 0; r < count; ++r) {
    const float* xr = x + r * width;
    const float* dyr = dy + r * width;
    float* dxr = dx + r * width;
    const std::uint8_t* mr = mask ? mask + r * width : nullptr;
    if (rows) {
      if (mr) {
        for (std::int64_t c = 0; c < C; ++c) {
          const float d = dyr[c];  // loaded unconditionally, so the select needs no branch
          dxr[c] = k[c] * (mr[c] ? d : 0.0f) + (xr[c] - mean[c]) * u[c] + v[c];
        }
      } else {
        for (std::int64_t c = 0; c < C; ++c) dxr[c] = k[c] * dyr[c] + (xr[c] - mean[c]) * u[c] + v[c];
      }
      continue;
    }
    const std::int64_t c = r % C;
    const float mu = mean[c], kc = k[c], uc = u[c], vc = v[c];
    if (mr) {
      for (std::int64_t i = 0; i < S; ++i) {
        const float d = dyr[i];
        dxr[i] = kc * (mr[i] ? d : 0.0f) + (xr[i] - mu) * uc + vc;
      }
    } else {
      for (std::int64_t i = 0; i < S; ++i) dxr[i] = kc * dyr[i] + (xr[i] - mu) * uc + vc;
    }
  }
}

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

// The three entry points, each with an optional ReLU after the batch norm.

// The caller's scratch (batchnorm_work_doubles(C)), carved into per-channel arrays.
struct Work {
  double* sum_a;  // (C)
  double* sum_b;  // (C)
  float* f[4];    // four (C) float arrays
  Work(double* work, std::int64_t C) : sum_a(work), sum_b(work + C) {
    float* base = reinterpret_cast<float*>(work + 2 * C);
    for (std::int64_t i = 0; i < 4; ++i) f[i] = base + i * C;
  }
};

void forward_train(float* y, std::uint8_t* mask, bool relu, float* mean, float* var, float* inv_std, const float* x,
                   const float* gamma, const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S,
                   double* work) {
  Work w(work, C);
  double *sum = w.sum_a, *sumsq = w.sum_b;
  float *shift = w.f[0], *scale = w.f[1], *offset = w.f[2], *mean_lo = w.f[3];
  // One sample of each channel as its shift: close to the mean in practice.
  for (std::int64_t c = 0; c < C; ++c) shift[c] = x[c * S];
  channel_moments(sum, sumsq, shift, x, N, C, S);

  mean_var_from_shifted_sums(sum, sumsq, shift, static_cast<double>(N * S), C);
  normalize_coefficients(mean, mean_lo, var, inv_std, scale, offset, sum, sumsq, gamma, beta, eps, C);
  normalize(y, mask, relu, x, mean, mean_lo, scale, offset, N, C, S);
}

void forward_inference(float* y, bool relu, const float* x, const float* mean, const float* var, const float* gamma,
                       const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S, double* work) {
  Work w(work, C);
  float *scale = w.f[0], *offset = w.f[1], *no_remainder = w.f[2];  // a given float mean is exact as it stands
  std::fill(no_remainder, no_remainder + C, 0.0f);
  inference_coefficients(scale, offset, var, gamma, beta, eps, C);
  normalize(y, nullptr, relu, x, mean, no_remainder, scale, offset, N, C, S);
}

void backward(float* dx, float* dgamma, float* dbeta, const float* dy, const std::uint8_t* mask, const float* x,
              const float* mean, const float* inv_std, const float* gamma, std::int64_t N, std::int64_t C,
              std::int64_t S, double* work) {
  Work w(work, C);
  double *sum_dy = w.sum_a, *sum_dy_xc = w.sum_b;
  float *k = w.f[0], *u = w.f[1], *v = w.f[2];
  // Pass 1: Σ dy and Σ dy·(x − mean) together; Σ dy·x̂ = inv_std · Σ dy·(x − mean).
  if (S == 1) {
    grad_sums_rows(sum_dy, sum_dy_xc, dy, x, mask, mean, N, C);
  } else {
    block_sums(sum_dy, sum_dy_xc, N, C, S,
               [&](Lanes* a, Lanes* b, double* sa, double* sb, std::int64_t n, std::int64_t c0, std::int64_t count) {
                 const std::int64_t at = (n * C + c0) * S;
                 block_grad_sums(a, b, sa, sb, dy + at, x + at, mask ? mask + at : nullptr, count, S, mean + c0);
               });
  }

  // Pass 2: dx = gamma·inv_std · (dy − mean(dy) − x̂ · mean(dy·x̂))
  //            = k·dy + (x − mean)·u + v, with k = gamma·inv_std,
  //              u = −k·inv_std·mean(dy·x̂), v = −k·mean(dy).
  grad_coefficients(k, u, v, dgamma, dbeta, sum_dy, sum_dy_xc, inv_std, gamma, static_cast<double>(N * S), C);
  apply_grad(dx, dy, x, mask, mean, k, u, v, N, C, S);
}

}  // namespace

std::int64_t batchnorm_work_doubles(std::int64_t C) { return 4 * C; }

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
  Work w(work, C);
  double *sum = w.sum_a, *sumsq = w.sum_b;
  float* shift = w.f[0];
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
  Work w(work, C);
  float *scale = w.f[0], *offset = w.f[1], *mean_lo = w.f[2];
  normalize_coefficients(mean_out, mean_lo, var_out, inv_std, scale, offset, mean, var, gamma, beta, eps, C);
  if (N * S > 0) normalize(y, relu_mask, relu, x, mean_out, mean_lo, scale, offset, N, C, S);
}

void batchnorm_grad_sums(double* sum_dy, double* sum_dy_xc, const float* dy, const std::uint8_t* relu_mask,
                         const float* x, const float* mean, std::int64_t N, std::int64_t C, std::int64_t S) {
  if (N * S == 0) {
    std::fill(sum_dy, sum_dy + C, 0.0);
    std::fill(sum_dy_xc, sum_dy_xc + C, 0.0);
  } else if (S == 1) {
    grad_sums_rows(sum_dy, sum_dy_xc, dy, x, relu_mask, mean, N, C);
  } else {
    block_sums(sum_dy, sum_dy_xc, N, C, S,
               [&](Lanes* a, Lanes* b, double* sa, double* sb, std::int64_t n, std::int64_t c0, std::int64_t count) {
                 const std::int64_t at = (n * C + c0) * S;
                 block_grad_sums(a, b, sa, sb, dy + at, x + at, relu_mask ? relu_mask + at : nullptr, count, S,
                                 mean + c0);
               });
  }
}

void batchnorm_apply_grad(float* dx, const float* dy, const std::uint8_t* relu_mask, const float* x, const float* mean,
                          const float* inv_std, const float* gamma, const double* sum_dy, const double* sum_dy_xc,
                          double m, std::int64_t N, std::int64_t C, std::int64_t S, double* work) {
  if (N * S == 0) return;
  Work w(work, C);
  float *k = w.f[0], *u = w.f[1], *v = w.f[2];
  grad_coefficients(k, u, v, nullptr, nullptr, sum_dy, sum_dy_xc, inv_std, gamma, m, C);  // as in backward
  apply_grad(dx, dy, x, relu_mask, mean, k, u, v, N, C, S);
}

}  // namespace bnorm::kernels

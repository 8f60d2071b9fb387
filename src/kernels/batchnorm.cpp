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

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(BNORM_NO_MULTIVERSION)
#define BNORM_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BNORM_MULTIVERSION
#endif

namespace bnorm::kernels {
namespace {

constexpr std::int64_t kLanes = 16;     // independent float accumulators: one AVX-512 register
constexpr std::int64_t kRowBlock = 16;   // rows summed in float before merging into double (S == 1)
constexpr std::int64_t kRunBlock = 1024; // values of a run summed in float before merging (S > 1)
constexpr std::int64_t kChannelBlock = 16; // channels a thread owns at a time (S > 1)
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
void block_moments(Lanes* s_out, Lanes* q_out, double* tail_sum, double* tail_sumsq, const float* x,
                   std::int64_t runs, std::int64_t S, const float* shift) {
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
BNORM_MULTIVERSION
void block_grad_sums(Lanes* s_out, Lanes* q_out, double* tail_dy, double* tail_dy_xc, const float* dy,
                     const float* x, std::int64_t runs, std::int64_t S, const float* mean) {
  for (std::int64_t r = 0; r < runs; ++r) {
    Lanes s = s_out[r], q = q_out[r];
    const float* dyr = dy + r * S;
    const float* xr = x + r * S;
    const float mu = mean[r];
    std::int64_t i = 0;
    for (; i + kLanes <= S; i += kLanes) {
      BNORM_LOAD_LANES(g, dyr + i);
      BNORM_LOAD_LANES(v, xr + i);
      s += g;
      q += g * (v - mu);
    }
    double ts = 0.0, tq = 0.0;
    for (; i < S; ++i) {
      ts += dyr[i];
      tq += static_cast<double>(dyr[i]) * static_cast<double>(xr[i] - mu);
    }
    tail_dy[r] += ts;
    tail_dy_xc[r] += tq;
    s_out[r] = s;
    q_out[r] = q;
  }
}

// Two per-channel sums over (N, C, S) data with S > 1: threads take blocks of
// channels; within a block the walk is example by example, so memory is read
// in long sequential stretches (a block's C·S values) rather than one run per
// jump. add_block(lanes_a, lanes_b, sums_a, sums_b, n, c0, count) adds one
// example's runs of channels c0..c0+count-1.
template <class AddBlock>
void block_sums(double* sum_a, double* sum_b, std::int64_t N, std::int64_t C, std::int64_t S, AddBlock add_block) {
#pragma omp parallel for schedule(static) if (N * C * S >= kParallelMin)
  for (std::int64_t c0 = 0; c0 < C; c0 += kChannelBlock) {
    const std::int64_t count = std::min(C - c0, kChannelBlock);
    Lanes a[kChannelBlock], b[kChannelBlock];
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
    std::vector<float> s, q;
#pragma omp for schedule(static)
    for (std::int64_t c0 = 0; c0 < C; c0 += 256) {
      const std::int64_t c1 = std::min(C, c0 + 256), w = c1 - c0;
      s.assign(static_cast<std::size_t>(w), 0.0f);
      q.assign(static_cast<std::size_t>(w), 0.0f);
      for (std::int64_t c = c0; c < c1; ++c) sum[c] = sumsq[c] = 0.0;
      for (std::int64_t n0 = 0; n0 < N; n0 += kRowBlock) {
        const std::int64_t n1 = std::min(N, n0 + kRowBlock);
        for (std::int64_t n = n0; n < n1; ++n) {
          const float* row = x + n * C + c0;
          for (std::int64_t j = 0; j < w; ++j) {
            const float d = row[j] - shift[c0 + j];
            s[j] += d;
            q[j] += d * d;
          }
        }
        for (std::int64_t j = 0; j < w; ++j) {
          sum[c0 + j] += s[j];
          sumsq[c0 + j] += q[j];
          s[j] = q[j] = 0.0f;
        }
      }
    }
  }
}

// Per-channel Σ(x-shift), Σ(x-shift)^2 in double.

void channel_moments(double* sum, double* sumsq, const float* shift, const float* x, std::int64_t N,
                     std::int64_t C, std::int64_t S) {
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
BNORM_MULTIVERSION
void normalize(float* y, const float* x, const float* mean_hi, const float* mean_lo, const float* scale,
               const float* offset, std::int64_t N, std::int64_t C, std::int64_t S) {
  if (S == 1) {
#pragma omp parallel for schedule(static) if (N * C * S >= kParallelMin)
    for (std::int64_t n = 0; n < N; ++n) {
      const float* xr = x + n * C;
      float* yr = y + n * C;
      for (std::int64_t c = 0; c < C; ++c) yr[c] = ((xr[c] - mean_hi[c]) - mean_lo[c]) * scale[c] + offset[c];
    }
    return;
  }
#pragma omp parallel for schedule(static) if (N * C * S >= kParallelMin)
  for (std::int64_t nc = 0; nc < N * C; ++nc) {
    const std::int64_t c = nc % C;
    const float* xr = x + nc * S;
    float* yr = y + nc * S;
    const float hi = mean_hi[c], lo = mean_lo[c], a = scale[c], b = offset[c];
    for (std::int64_t i = 0; i < S; ++i) yr[i] = ((xr[i] - hi) - lo) * a + b;
  }
}

BNORM_MULTIVERSION
void grad_sums_rows(double* sum_dy, double* sum_dy_xc, const float* dy, const float* x, const float* mean,
                    std::int64_t N, std::int64_t C) {
#pragma omp parallel if (N * C >= kParallelMin)
  {
    std::vector<float> s, q;
#pragma omp for schedule(static)
    for (std::int64_t c0 = 0; c0 < C; c0 += 256) {
      const std::int64_t c1 = std::min(C, c0 + 256), w = c1 - c0;
      s.assign(static_cast<std::size_t>(w), 0.0f);
      q.assign(static_cast<std::size_t>(w), 0.0f);
      for (std::int64_t c = c0; c < c1; ++c) sum_dy[c] = sum_dy_xc[c] = 0.0;
      for (std::int64_t n0 = 0; n0 < N; n0 += kRowBlock) {
        const std::int64_t n1 = std::min(N, n0 + kRowBlock);
        for (std::int64_t n = n0; n < n1; ++n) {
          const float* xr = x + n * C + c0;
          const float* dyr = dy + n * C + c0;
          for (std::int64_t j = 0; j < w; ++j) {
            s[j] += dyr[j];
            q[j] += dyr[j] * (xr[j] - mean[c0 + j]);
          }
        }
        for (std::int64_t j = 0; j < w; ++j) {
          sum_dy[c0 + j] += s[j];
          sum_dy_xc[c0 + j] += q[j];
          s[j] = q[j] = 0.0f;
        }
      }
    }
  }
}

// dx = k*dy + (x - mean)*u + v, the backward's closing pass (coefficients per channel).
BNORM_MULTIVERSION
void apply_grad(float* dx, const float* dy, const float* x, const float* mean, const float* k, const float* u,
                const float* v, std::int64_t N, std::int64_t C, std::int64_t S) {
  if (S == 1) {
#pragma omp parallel for schedule(static) if (N * C * S >= kParallelMin)
    for (std::int64_t n = 0; n < N; ++n) {
      const float* xr = x + n * C;
      const float* dyr = dy + n * C;
      float* dxr = dx + n * C;
      for (std::int64_t c = 0; c < C; ++c) dxr[c] = k[c] * dyr[c] + (xr[c] - mean[c]) * u[c] + v[c];
    }
    return;
  }
#pragma omp parallel for schedule(static) if (N * C * S >= kParallelMin)
  for (std::int64_t nc = 0; nc < N * C; ++nc) {
    const std::int64_t c = nc % C;
    const float* xr = x + nc * S;
    const float* dyr = dy + nc * S;
    float* dxr = dx + nc * S;
    const float mu = mean[c], kc = k[c], uc = u[c], vc = v[c];
    for (std::int64_t i = 0; i < S; ++i) dxr[i] = kc * dyr[i] + (xr[i] - mu) * uc + vc;
  }
}

}  // namespace

void batchnorm_forward_train(float* y, float* mean, float* var, float* inv_std, const float* x,
                             const float* gamma, const float* beta, float eps, std::int64_t N, std::int64_t C,
                             std::int64_t S) {
  const auto Cs = static_cast<std::size_t>(C);
  // One sample of each channel as its shift: close to the mean in practice.
  std::vector<float> shift(Cs);
  for (std::int64_t c = 0; c < C; ++c) shift[c] = x[c * S];
  std::vector<double> sum(Cs), sumsq(Cs);
  channel_moments(sum.data(), sumsq.data(), shift.data(), x, N, C, S);

  const double m = static_cast<double>(N * S);
  std::vector<float> scale(Cs), offset(Cs), mean_lo(Cs);
  for (std::int64_t c = 0; c < C; ++c) {
    const double mean_shifted = sum[c] / m;
    const double mean_d = shift[c] + mean_shifted;
    const double var_d = std::max(sumsq[c] / m - mean_shifted * mean_shifted, 0.0);  // rounding can go below 0
    mean[c] = static_cast<float>(mean_d);
    mean_lo[c] = static_cast<float>(mean_d - static_cast<double>(mean[c]));
    var[c] = static_cast<float>(var_d);
    inv_std[c] = static_cast<float>(1.0 / std::sqrt(var_d + static_cast<double>(eps)));
    scale[c] = gamma ? gamma[c] * inv_std[c] : inv_std[c];
    offset[c] = beta ? beta[c] : 0.0f;
  }
  normalize(y, x, mean, mean_lo.data(), scale.data(), offset.data(), N, C, S);
}

void batchnorm_forward_inference(float* y, const float* x, const float* mean, const float* var,
                                 const float* gamma, const float* beta, float eps, std::int64_t N, std::int64_t C,
                                 std::int64_t S) {
  const auto Cs = static_cast<std::size_t>(C);
  std::vector<float> scale(Cs), offset(Cs), no_remainder(Cs, 0.0f);  // a given float mean is exact as it stands
  for (std::int64_t c = 0; c < C; ++c) {
    const float inv_std = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var[c]) + eps));
    scale[c] = gamma ? gamma[c] * inv_std : inv_std;
    offset[c] = beta ? beta[c] : 0.0f;
  }
  normalize(y, x, mean, no_remainder.data(), scale.data(), offset.data(), N, C, S);
}

void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                        const float* mean, const float* inv_std, const float* gamma, std::int64_t N,
                        std::int64_t C, std::int64_t S) {
  const auto Cs = static_cast<std::size_t>(C);
  // Pass 1: Σ dy and Σ dy·(x − mean) together; Σ dy·x̂ = inv_std · Σ dy·(x − mean).
  std::vector<double> sum_dy(Cs), sum_dy_xc(Cs);
  if (S == 1) {
    grad_sums_rows(sum_dy.data(), sum_dy_xc.data(), dy, x, mean, N, C);
  } else {
    block_sums(sum_dy.data(), sum_dy_xc.data(), N, C, S,
               [&](Lanes* a, Lanes* b, double* sa, double* sb, std::int64_t n, std::int64_t c0, std::int64_t count) {
                 block_grad_sums(a, b, sa, sb, dy + (n * C + c0) * S, x + (n * C + c0) * S, count, S, mean + c0);
               });
  }

  // Pass 2: dx = gamma·inv_std · (dy − mean(dy) − x̂ · mean(dy·x̂))
  //            = k·dy + (x − mean)·u + v, with k = gamma·inv_std,
  //              u = −k·inv_std·mean(dy·x̂), v = −k·mean(dy).
  const double m = static_cast<double>(N * S);
  std::vector<float> k(Cs), u(Cs), v(Cs);
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
  apply_grad(dx, dy, x, mean, k.data(), u.data(), v.data(), N, C, S);
}

// ---- Stages for a batch spread over several processes -------------------
// The same loops as above, cut where the statistics or gradient sums must be
// combined across processes. Nothing above calls these.

void batchnorm_channel_moments(double* mean, double* m2, const float* x, std::int64_t N, std::int64_t C,
                               std::int64_t S) {
  const auto Cs = static_cast<std::size_t>(C);
  if (N * S == 0) {
    std::fill(mean, mean + C, 0.0);
    std::fill(m2, m2 + C, 0.0);
    return;
  }
  std::vector<float> shift(Cs);
  for (std::int64_t c = 0; c < C; ++c) shift[c] = x[c * S];
  std::vector<double> sum(Cs), sumsq(Cs);
  channel_moments(sum.data(), sumsq.data(), shift.data(), x, N, C, S);
  // With d = x - shift: mean = shift + Σd/m and M2 = Σd² - (Σd)²/m.
  const double m = static_cast<double>(N * S);
  for (std::int64_t c = 0; c < C; ++c) {
    mean[c] = shift[c] + sum[c] / m;
    m2[c] = std::max(sumsq[c] - sum[c] * sum[c] / m, 0.0);
  }
}

void batchnorm_normalize_with(float* y, float* mean_out, float* var_out, float* inv_std, const float* x,
                              const double* mean, const double* var, const float* gamma, const float* beta,
                              float eps, std::int64_t N, std::int64_t C, std::int64_t S) {
  const auto Cs = static_cast<std::size_t>(C);
  std::vector<float> scale(Cs), offset(Cs), mean_lo(Cs);
  for (std::int64_t c = 0; c < C; ++c) {
    mean_out[c] = static_cast<float>(mean[c]);
    mean_lo[c] = static_cast<float>(mean[c] - static_cast<double>(mean_out[c]));
    var_out[c] = static_cast<float>(var[c]);
    inv_std[c] = static_cast<float>(1.0 / std::sqrt(var[c] + static_cast<double>(eps)));
    scale[c] = gamma ? gamma[c] * inv_std[c] : inv_std[c];
    offset[c] = beta ? beta[c] : 0.0f;
  }
  if (N * S > 0) normalize(y, x, mean_out, mean_lo.data(), scale.data(), offset.data(), N, C, S);
}

void batchnorm_grad_sums(double* sum_dy, double* sum_dy_xc, const float* dy, const float* x, const float* mean,
                         std::int64_t N, std::int64_t C, std::int64_t S) {
  if (N * S == 0) {
    std::fill(sum_dy, sum_dy + C, 0.0);
    std::fill(sum_dy_xc, sum_dy_xc + C, 0.0);
  } else if (S == 1) {
    grad_sums_rows(sum_dy, sum_dy_xc, dy, x, mean, N, C);
  } else {
    block_sums(sum_dy, sum_dy_xc, N, C, S,
               [&](Lanes* a, Lanes* b, double* sa, double* sb, std::int64_t n, std::int64_t c0, std::int64_t count) {
                 block_grad_sums(a, b, sa, sb, dy + (n * C + c0) * S, x + (n * C + c0) * S, count, S, mean + c0);
               });
  }
}

void batchnorm_apply_grad(float* dx, const float* dy, const float* x, const float* mean, const float* inv_std,
                          const float* gamma, const double* sum_dy, const double* sum_dy_xc, double m,
                          std::int64_t N, std::int64_t C, std::int64_t S) {
  if (N * S == 0) return;
  const auto Cs = static_cast<std::size_t>(C);
  // k = gamma·inv_std, u = −k·inv_std²·Σdy(x−mean)/m, v = −k·Σdy/m, as in batchnorm_backward.
  std::vector<float> k(Cs), u(Cs), v(Cs);
  for (std::int64_t c = 0; c < C; ++c) {
    const double is = inv_std[c];
    const double kc = (gamma ? gamma[c] : 1.0f) * is;
    k[c] = static_cast<float>(kc);
    u[c] = static_cast<float>(-kc * is * (sum_dy_xc[c] * is) / m);
    v[c] = static_cast<float>(-kc * sum_dy[c] / m);
  }
  apply_grad(dx, dy, x, mean, k.data(), u.data(), v.data(), N, C, S);
}

}  // namespace bnorm::kernels

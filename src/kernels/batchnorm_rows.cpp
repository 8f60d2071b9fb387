// The batch-norm passes over an (N, C) input (S == 1): a channel's values
// are strided by C, so the loops walk rows and keep one accumulator per
// column, vectorized across columns in tiles; the threads split the columns.
// Terms and shared pieces: bn_lanes.hpp.
#include "bn_lanes.hpp"

#if BNORM_BN_VECTORIZED
namespace bnorm::kernels::vectorized {
namespace {

// Σ(x − shift[c]) and Σ(x − shift[c])² for columns [c0, c1) (at most
// kRowWidth) of an (N, C) input, over all rows.
// moments_row_block and grad_sums_row_block share their blocking on purpose:
// folded into one template taking a lambda, the lambda was not vectorized for
// the AVX-512 copy and 64x512 forward+backward went from 0.015 to 0.023 ms.
BNORM_MULTIVERSION
void moments_row_block(double* sum, double* sumsq, const float* shift, const float* x, std::int64_t N, std::int64_t C,
                       std::int64_t c0, std::int64_t c1) {
  float s[kSumChunk * kLanes], q[kSumChunk * kLanes];  // the tail: fewer than kSumChunk lane groups
  for (std::int64_t c = c0; c < c1; ++c) sum[c] = sumsq[c] = 0.0;
  // kSumChunk lane groups at a time with their sums in registers. Each
  // channel's sums run over the same rows in the same order on every path,
  // so the bits do not depend on the path.
  std::int64_t cv = c0;
  for (; cv + kSumChunk * kLanes <= c1; cv += kSumChunk * kLanes) {
    Lanes k[kSumChunk];
    std::memcpy(k, shift + cv, sizeof k);
    for (std::int64_t n0 = 0; n0 < N; n0 += kRowBlock) {
      const std::int64_t n1 = std::min(N, n0 + kRowBlock);
      // Zeroed one by one: "= {}" compiled to two rep stos on the stack per
      // row block; without them 64x512 forward+backward on one thread went
      // from 0.025-0.027 to 0.023-0.025 ms (Zen 2, 2026-12-05).
      Lanes sv[kSumChunk], qv[kSumChunk];
      for (int u = 0; u < kSumChunk; ++u) sv[u] = qv[u] = Lanes{};
      for (std::int64_t n = n0; n < n1; ++n)
#pragma GCC unroll 8
        for (int u = 0; u < kSumChunk; ++u) {
          BNORM_LOAD_LANES(v, x + n * C + cv + u * kLanes);
          const Lanes d = v - k[u];
          sv[u] += d;
          qv[u] += d * d;
        }
      for (int u = 0; u < kSumChunk; ++u)
        for (std::int64_t l = 0; l < kLanes; ++l) {
          sum[cv + u * kLanes + l] += sv[u][l];
          sumsq[cv + u * kLanes + l] += qv[u][l];
        }
    }
  }
  const std::int64_t w = c1 - cv;
  if (w == 0) return;
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

// normalize_rows for one combination of its flags, fixed at compile time so
// that the inner loop tests none of them: tiles of kRowTile rows by
// kRowChunk lane groups with the columns' coefficients held across the tile
// (loaded per value, they made four of every five loads). Without a remainder
// (inference: the given mean is exact as a float) the subtraction of 0 is
// left out, which changes no bits.
template <bool kRemainder, bool kRelu, bool kMask, bool kStream>
__attribute__((always_inline)) inline void normalize_rows_as(float* y, std::uint8_t* mask, const float* x,
                                                             const float* mean_hi, const float* mean_lo,
                                                             const float* scale, const float* offset, std::int64_t rows,
                                                             std::int64_t C, std::int64_t c0, std::int64_t c1) {
  constexpr std::int64_t kTile = kRowChunk * kLanes;
  for (std::int64_t n0 = 0; n0 < rows; n0 += kRowTile) {
    const std::int64_t n1 = std::min(rows, n0 + kRowTile);
    std::int64_t c = c0;
    for (; c + kTile <= c1; c += kTile) {
      Lanes hi[kRowChunk], lo[kRowChunk], a[kRowChunk], b[kRowChunk];
      std::memcpy(hi, mean_hi + c, sizeof hi);
      if (kRemainder) std::memcpy(lo, mean_lo + c, sizeof lo);
      std::memcpy(a, scale + c, sizeof a);
      std::memcpy(b, offset + c, sizeof b);
      for (std::int64_t n = n0; n < n1; ++n)
#pragma GCC unroll 8
        for (int u = 0; u < kRowChunk; ++u) {
          const std::int64_t at = n * C + c + u * kLanes;
          BNORM_LOAD_LANES(v, x + at);
          const Lanes centered = kRemainder ? (v - hi[u]) - lo[u] : v - hi[u];
          store_normalized(y + at, kMask ? mask + at : nullptr, kRelu, centered * a[u] + b[u], kStream);
        }
    }
    for (std::int64_t n = n0; n < n1 && c < c1; ++n) {  // the last columns, fewer than a tile
      const float* xr = x + n * C;
      float* yr = y + n * C;
      std::uint8_t* mr = kMask ? mask + n * C : nullptr;
      for (std::int64_t j = c; j < c1; ++j) {
        const float v = (kRemainder ? (xr[j] - mean_hi[j]) - mean_lo[j] : xr[j] - mean_hi[j]) * scale[j] + offset[j];
        if (!kRelu) {
          yr[j] = v;
        } else {
          yr[j] = v > 0.0f ? v : 0.0f;
          if (kMask) mr[j] = v > 0.0f;
        }
      }
    }
  }
}

template <bool kRemainder>
__attribute__((always_inline)) inline void normalize_rows_with(bool relu, bool masked, bool stream, float* y,
                                                               std::uint8_t* mask, const float* x, const float* mean_hi,
                                                               const float* mean_lo, const float* scale,
                                                               const float* offset, std::int64_t rows, std::int64_t C,
                                                               std::int64_t c0, std::int64_t c1) {
#define BNORM_NORMALIZE_AS(relu_, mask_, stream_) \
  normalize_rows_as<kRemainder, relu_, mask_, stream_>(y, mask, x, mean_hi, mean_lo, scale, offset, rows, C, c0, c1)
  if (!relu)
    stream ? BNORM_NORMALIZE_AS(false, false, true) : BNORM_NORMALIZE_AS(false, false, false);
  else if (!masked)
    stream ? BNORM_NORMALIZE_AS(true, false, true) : BNORM_NORMALIZE_AS(true, false, false);
  else
    stream ? BNORM_NORMALIZE_AS(true, true, true) : BNORM_NORMALIZE_AS(true, true, false);
#undef BNORM_NORMALIZE_AS
}

// normalize_rows: columns [c0, c1) of rows [0, rows) of an (N, C) input;
// mean_lo may be null (no remainder).
BNORM_MULTIVERSION
void normalize_rows(float* y, std::uint8_t* mask, bool relu, const float* x, const float* mean_hi, const float* mean_lo,
                    const float* scale, const float* offset, std::int64_t rows, std::int64_t C, std::int64_t c0,
                    std::int64_t c1, bool stream) {
  // Whole lines are streamed only when every row starts a cache line.
  stream = stream && until_line(y) == 0 && C % kLanes == 0 && c0 % kLanes == 0;
  const bool masked = relu && mask;
  if (mean_lo)
    normalize_rows_with<true>(relu, masked, stream, y, mask, x, mean_hi, mean_lo, scale, offset, rows, C, c0, c1);
  else
    normalize_rows_with<false>(relu, masked, stream, y, mask, x, mean_hi, mean_lo, scale, offset, rows, C, c0, c1);
}

// Σ dy and Σ dy·(x − mean[c]) for columns [c0, c1) (at most kRowWidth) of an
// (N, C) input, over all rows; with kMask, dy counts only where the mask is 1.
template <bool kMask>
__attribute__((always_inline)) inline void grad_sums_row_block_as(double* sum_dy, double* sum_dy_xc, const float* dy,
                                                                  const float* x, const std::uint8_t* mask,
                                                                  const float* mean, std::int64_t N, std::int64_t C,
                                                                  std::int64_t c0, std::int64_t c1) {
  float s[kSumChunk * kLanes], q[kSumChunk * kLanes];  // the tail: fewer than kSumChunk lane groups
  for (std::int64_t c = c0; c < c1; ++c) sum_dy[c] = sum_dy_xc[c] = 0.0;
  // kSumChunk lane groups at a time in registers, as in moments_row_block.
  std::int64_t cv = c0;
  for (; cv + kSumChunk * kLanes <= c1; cv += kSumChunk * kLanes) {
    Lanes mu[kSumChunk];
    std::memcpy(mu, mean + cv, sizeof mu);
    for (std::int64_t n0 = 0; n0 < N; n0 += kRowBlock) {
      const std::int64_t n1 = std::min(N, n0 + kRowBlock);
      Lanes sv[kSumChunk], qv[kSumChunk];  // zeroed one by one, as in moments_row_block
      for (int u = 0; u < kSumChunk; ++u) sv[u] = qv[u] = Lanes{};
      for (std::int64_t n = n0; n < n1; ++n)
#pragma GCC unroll 8
        for (int u = 0; u < kSumChunk; ++u) {
          const std::int64_t at = n * C + cv + u * kLanes;
          BNORM_LOAD_LANES(g, dy + at);
          BNORM_LOAD_LANES(v, x + at);
          if (kMask) keep_where_mask(g, mask + at);
          sv[u] += g;
          qv[u] += g * (v - mu[u]);
        }
      for (int u = 0; u < kSumChunk; ++u)
        for (std::int64_t l = 0; l < kLanes; ++l) {
          sum_dy[cv + u * kLanes + l] += sv[u][l];
          sum_dy_xc[cv + u * kLanes + l] += qv[u][l];
        }
    }
  }
  const std::int64_t w = c1 - cv;
  if (w == 0) return;
  std::fill(s, s + w, 0.0f);
  std::fill(q, q + w, 0.0f);
  for (std::int64_t n0 = 0; n0 < N; n0 += kRowBlock) {
    const std::int64_t n1 = std::min(N, n0 + kRowBlock);
    for (std::int64_t n = n0; n < n1; ++n) {
      const float* xr = x + n * C + cv;
      const float* dyr = dy + n * C + cv;
      const std::uint8_t* mr = kMask ? mask + n * C + cv : nullptr;
      for (std::int64_t j = 0; j < w; ++j) {
        const float d = dyr[j];  // loaded unconditionally, so the select needs no branch
        const float g = !kMask || mr[j] ? d : 0.0f;
        s[j] += g;
        q[j] += g * (xr[j] - mean[cv + j]);
      }
    }
    for (std::int64_t j = 0; j < w; ++j) {
      sum_dy[cv + j] += s[j];
      sum_dy_xc[cv + j] += q[j];
      s[j] = q[j] = 0.0f;
    }
  }
}

BNORM_MULTIVERSION
void grad_sums_row_block(double* sum_dy, double* sum_dy_xc, const float* dy, const float* x, const std::uint8_t* mask,
                         const float* mean, std::int64_t N, std::int64_t C, std::int64_t c0, std::int64_t c1) {
  if (mask)
    grad_sums_row_block_as<true>(sum_dy, sum_dy_xc, dy, x, mask, mean, N, C, c0, c1);
  else
    grad_sums_row_block_as<false>(sum_dy, sum_dy_xc, dy, x, mask, mean, N, C, c0, c1);
}

// dx = k*dy + (x - mean)*u + v for columns [c0, c1) of rows [0, rows) of an
// (N, C) input, in tiles with the coefficients held across the tile, as in
// normalize_rows_as (kept apart from it for the reason given at
// moments_row_block).
template <bool kMask, bool kStream>
__attribute__((always_inline)) inline void apply_grad_rows_as(float* dx, const float* dy, const float* x,
                                                              const std::uint8_t* mask, const float* mean,
                                                              const float* k, const float* u, const float* v,
                                                              std::int64_t rows, std::int64_t C, std::int64_t c0,
                                                              std::int64_t c1) {
  constexpr std::int64_t kTile = kRowChunk * kLanes;
  for (std::int64_t n0 = 0; n0 < rows; n0 += kRowTile) {
    const std::int64_t n1 = std::min(rows, n0 + kRowTile);
    std::int64_t c = c0;
    for (; c + kTile <= c1; c += kTile) {
      Lanes mu[kRowChunk], kc[kRowChunk], uc[kRowChunk], vc[kRowChunk];
      std::memcpy(mu, mean + c, sizeof mu);
      std::memcpy(kc, k + c, sizeof kc);
      std::memcpy(uc, u + c, sizeof uc);
      std::memcpy(vc, v + c, sizeof vc);
      for (std::int64_t n = n0; n < n1; ++n)
#pragma GCC unroll 8
        for (int w = 0; w < kRowChunk; ++w) {
          const std::int64_t at = n * C + c + w * kLanes;
          BNORM_LOAD_LANES(g, dy + at);
          BNORM_LOAD_LANES(xv, x + at);
          if (kMask) keep_where_mask(g, mask + at);
          store_lanes(dx + at, kc[w] * g + (xv - mu[w]) * uc[w] + vc[w], kStream);
        }
    }
    for (std::int64_t n = n0; n < n1 && c < c1; ++n) {  // the last columns, fewer than a tile
      const float* xr = x + n * C;
      const float* dyr = dy + n * C;
      float* dxr = dx + n * C;
      const std::uint8_t* mr = kMask ? mask + n * C : nullptr;
      for (std::int64_t j = c; j < c1; ++j) {
        const float d = dyr[j];  // loaded unconditionally, so the select needs no branch
        dxr[j] = k[j] * (!kMask || mr[j] ? d : 0.0f) + (xr[j] - mean[j]) * u[j] + v[j];
      }
    }
  }
}

BNORM_MULTIVERSION
void apply_grad_rows(float* dx, const float* dy, const float* x, const std::uint8_t* mask, const float* mean,
                     const float* k, const float* u, const float* v, std::int64_t rows, std::int64_t C, std::int64_t c0,
                     std::int64_t c1, bool stream) {
  stream = stream && until_line(dx) == 0 && C % kLanes == 0 && c0 % kLanes == 0;
  if (mask)
    stream ? apply_grad_rows_as<true, true>(dx, dy, x, mask, mean, k, u, v, rows, C, c0, c1)
           : apply_grad_rows_as<true, false>(dx, dy, x, mask, mean, k, u, v, rows, C, c0, c1);
  else
    stream ? apply_grad_rows_as<false, true>(dx, dy, x, mask, mean, k, u, v, rows, C, c0, c1)
           : apply_grad_rows_as<false, false>(dx, dy, x, mask, mean, k, u, v, rows, C, c0, c1);
}

}  // namespace

void rows_channel_moments(double* sum, double* sumsq, const float* shift, const float* x, std::int64_t N,
                          std::int64_t C) {
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (std::int64_t c0 = 0; c0 < C; c0 += kRowWidth)
    moments_row_block(sum, sumsq, shift, x, N, C, c0, std::min(C, c0 + kRowWidth));
}

void rows_grad_sums(double* sum_dy, double* sum_dy_xc, const float* dy, const float* x, const std::uint8_t* mask,
                    const float* mean, std::int64_t N, std::int64_t C) {
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (std::int64_t c0 = 0; c0 < C; c0 += kRowWidth)
    grad_sums_row_block(sum_dy, sum_dy_xc, dy, x, mask, mean, N, C, c0, std::min(C, c0 + kRowWidth));
}

// Blocks of columns, so that the coefficients of a block stay in L1.
void rows_normalize(float* y, std::uint8_t* mask, bool relu, const float* x, const float* mean_hi, const float* mean_lo,
                    const float* scale, const float* offset, std::int64_t N, std::int64_t C, bool parallel,
                    bool stream) {
  const std::int64_t width = row_block_width(N * std::int64_t{sizeof(float)}, C, parallel);
  parallel_blocks(C, width, parallel, stream, [&](std::int64_t c0) {
    normalize_rows(y, mask, relu, x, mean_hi, mean_lo, scale, offset, N, C, c0, std::min(C, c0 + width), stream);
  });
}

void rows_apply_grad(float* dx, const float* dy, const float* x, const std::uint8_t* mask, const float* mean,
                     const float* k, const float* u, const float* v, std::int64_t N, std::int64_t C, bool parallel,
                     bool stream) {
  const std::int64_t width = row_block_width(N * std::int64_t{2 * sizeof(float)}, C, parallel);
  parallel_blocks(C, width, parallel, stream, [&](std::int64_t c0) {
    apply_grad_rows(dx, dy, x, mask, mean, k, u, v, N, C, c0, std::min(C, c0 + width), stream);
  });
}

// The group is a block of columns: its sums, its coefficients, then its
// second pass while its columns are still in the cache.
void rows_forward_train(const ForwardTrain& a, const ForwardScratch& w, bool parallel, bool stream) {
  const std::int64_t width = row_block_width(a.N * std::int64_t{sizeof(float)}, a.C, parallel);
  parallel_blocks(a.C, width, parallel, stream, [&](std::int64_t c0) {
    const std::int64_t c1 = std::min(a.C, c0 + width);
    moments_row_block(w.sum, w.sumsq, w.shift, a.x, a.N, a.C, c0, c1);
    forward_group_coefficients(a, w, c0, c1 - c0);
    normalize_rows(a.y, a.mask, a.relu, a.x, a.mean, w.mean_lo, w.scale, w.offset, a.N, a.C, c0, c1, stream);
  });
}

void rows_backward(const Backward& a, const BackwardScratch& w, bool parallel, bool stream) {
  const std::int64_t width = row_block_width(backward_bytes_per_channel(a), a.C, parallel);
  parallel_blocks(a.C, width, parallel, stream, [&](std::int64_t c0) {
    const std::int64_t c1 = std::min(a.C, c0 + width);
    grad_sums_row_block(w.sum_dy, w.sum_dy_xc, a.dy, a.x, a.mask, a.mean, a.N, a.C, c0, c1);
    backward_group_coefficients(a, w, c0, c1 - c0);
    apply_grad_rows(a.dx, a.dy, a.x, a.mask, a.mean, w.k, w.u, w.v, a.N, a.C, c0, c1, stream);
  });
}

}  // namespace bnorm::kernels::vectorized
#endif  // BNORM_BN_VECTORIZED

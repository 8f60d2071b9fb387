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
  float s[kRowChunk * kLanes], q[kRowChunk * kLanes];  // the tail: fewer than 64 columns
  for (std::int64_t c = c0; c < c1; ++c) sum[c] = sumsq[c] = 0.0;
  // Sixty-four channels at a time with the sums in registers (or, in the
  // AVX2 copy, partly in the L1d the compiler spills them to): through
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

// One tile of normalize_rows: rows [n0, n1), columns [c, c + kRowChunk·kLanes).
// Without a remainder (inference: the given mean is exact as a float) the
// subtraction of 0 is left out, which changes no bits and holds a quarter
// fewer coefficients (in the AVX2 copy, fewer spilled to the stack).
template <bool kRemainder>
__attribute__((always_inline)) inline void normalize_tile(float* y, std::uint8_t* mask, bool relu, const float* x,
                                                          const float* mean_hi, const float* mean_lo,
                                                          const float* scale, const float* offset, std::int64_t n0,
                                                          std::int64_t n1, std::int64_t C, std::int64_t c,
                                                          bool stream) {
  Lanes hi[kRowChunk], lo[kRowChunk], a[kRowChunk], b[kRowChunk];
  std::memcpy(hi, mean_hi + c, sizeof hi);
  if (kRemainder) std::memcpy(lo, mean_lo + c, sizeof lo);
  std::memcpy(a, scale + c, sizeof a);
  std::memcpy(b, offset + c, sizeof b);
  for (std::int64_t n = n0; n < n1; ++n)
    for (int u = 0; u < kRowChunk; ++u) {
      const std::int64_t at = n * C + c + u * kLanes;
      BNORM_LOAD_LANES(v, x + at);
      const Lanes centered = kRemainder ? (v - hi[u]) - lo[u] : v - hi[u];
      store_normalized(y + at, mask ? mask + at : nullptr, relu, centered * a[u] + b[u], stream);
    }
}

// normalize_rows: columns [c0, c1) of rows [0, rows) of an (N, C) input;
// mean_lo may be null (no remainder).
BNORM_MULTIVERSION
void normalize_rows(float* y, std::uint8_t* mask, bool relu, const float* x, const float* mean_hi, const float* mean_lo,
                    const float* scale, const float* offset, std::int64_t rows, std::int64_t C, std::int64_t c0,
                    std::int64_t c1, bool stream) {
  // Tiles of 16 rows by 64 columns with the columns' coefficients held
  // across the tile: loaded per value, they made four of every five loads. Whole
  // lines are streamed only when every row starts a cache line.
  stream = stream && until_line(y) == 0 && C % kLanes == 0 && c0 % kLanes == 0;
  constexpr std::int64_t kTile = kRowChunk * kLanes;
  for (std::int64_t n0 = 0; n0 < rows; n0 += kRowBlock) {
    const std::int64_t n1 = std::min(rows, n0 + kRowBlock);
    std::int64_t c = c0;
    for (; c + kTile <= c1; c += kTile) {
      if (mean_lo)
        normalize_tile<true>(y, mask, relu, x, mean_hi, mean_lo, scale, offset, n0, n1, C, c, stream);
      else
        normalize_tile<false>(y, mask, relu, x, mean_hi, mean_lo, scale, offset, n0, n1, C, c, stream);
    }
    for (std::int64_t n = n0; n < n1 && c < c1; ++n) {  // the last columns, fewer than a tile
      const float* xr = x + n * C;
      float* yr = y + n * C;
      std::uint8_t* mr = mask ? mask + n * C : nullptr;
      const auto value = [&](std::int64_t j) {
        return (mean_lo ? (xr[j] - mean_hi[j]) - mean_lo[j] : xr[j] - mean_hi[j]) * scale[j] + offset[j];
      };
      if (!relu) {
        for (std::int64_t j = c; j < c1; ++j) yr[j] = value(j);
      } else if (!mr) {
        for (std::int64_t j = c; j < c1; ++j) {
          const float v = value(j);
          yr[j] = v > 0.0f ? v : 0.0f;
        }
      } else {
        for (std::int64_t j = c; j < c1; ++j) {
          const float v = value(j);
          yr[j] = v > 0.0f ? v : 0.0f;
          mr[j] = v > 0.0f;
        }
      }
    }
  }
}

// Σ dy and Σ dy·(x − mean[c]) for columns [c0, c1) (at most kRowWidth) of an
// (N, C) input, over all rows.
BNORM_MULTIVERSION
void grad_sums_row_block(double* sum_dy, double* sum_dy_xc, const float* dy, const float* x, const std::uint8_t* mask,
                         const float* mean, std::int64_t N, std::int64_t C, std::int64_t c0, std::int64_t c1) {
  float s[kRowChunk * kLanes], q[kRowChunk * kLanes];  // the tail: fewer than 64 columns
  for (std::int64_t c = c0; c < c1; ++c) sum_dy[c] = sum_dy_xc[c] = 0.0;
  // Sixty-four channels at a time in registers, as in moments_row_block.
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
          if (mask) keep_where_mask(g, mask + at);
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
  if (w == 0) return;
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

// The same for columns [c0, c1) of rows [0, rows) of an (N, C) input.
BNORM_MULTIVERSION
void apply_grad_rows(float* dx, const float* dy, const float* x, const std::uint8_t* mask, const float* mean,
                     const float* k, const float* u, const float* v, std::int64_t rows, std::int64_t C, std::int64_t c0,
                     std::int64_t c1, bool stream) {
  // Tiles with the coefficients in registers, as in normalize_rows (kept
  // apart from it for the reason given at moments_row_block).
  stream = stream && until_line(dx) == 0 && C % kLanes == 0 && c0 % kLanes == 0;
  constexpr std::int64_t kTile = kRowChunk * kLanes;
  for (std::int64_t n0 = 0; n0 < rows; n0 += kRowBlock) {
    const std::int64_t n1 = std::min(rows, n0 + kRowBlock);
    std::int64_t c = c0;
    for (; c + kTile <= c1; c += kTile) {
      Lanes mu[kRowChunk], kc[kRowChunk], uc[kRowChunk], vc[kRowChunk];
      std::memcpy(mu, mean + c, sizeof mu);
      std::memcpy(kc, k + c, sizeof kc);
      std::memcpy(uc, u + c, sizeof uc);
      std::memcpy(vc, v + c, sizeof vc);
      for (std::int64_t n = n0; n < n1; ++n)
        for (int w = 0; w < kRowChunk; ++w) {
          const std::int64_t at = n * C + c + w * kLanes;
          BNORM_LOAD_LANES(g, dy + at);
          BNORM_LOAD_LANES(xv, x + at);
          if (mask) keep_where_mask(g, mask + at);
          store_lanes(dx + at, kc[w] * g + (xv - mu[w]) * uc[w] + vc[w], stream);
        }
    }
    for (std::int64_t n = n0; n < n1 && c < c1; ++n) {  // the last columns, fewer than a tile
      const float* xr = x + n * C;
      const float* dyr = dy + n * C;
      float* dxr = dx + n * C;
      if (mask) {
        const std::uint8_t* mr = mask + n * C;
        for (std::int64_t j = c; j < c1; ++j) {
          const float d = dyr[j];  // loaded unconditionally, so the select needs no branch
          dxr[j] = k[j] * (mr[j] ? d : 0.0f) + (xr[j] - mean[j]) * u[j] + v[j];
        }
      } else {
        for (std::int64_t j = c; j < c1; ++j) dxr[j] = k[j] * dyr[j] + (xr[j] - mean[j]) * u[j] + v[j];
      }
    }
  }
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

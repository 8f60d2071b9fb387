#include "bnorm/kernels/conv.hpp"

#include <algorithm>
#include <bit>
#include <limits>

namespace bnorm::kernels {

namespace {

// Below this many values a parallel region costs more than it saves.
constexpr std::int64_t kParallelMin = std::int64_t{1} << 16;

// The output columns [lo, hi) whose input column ow·s − p + j lies inside
// 0..W−1; the rest see padding. Computed once per kernel column, so the inner
// loops carry no bounds test.
struct ValidRange {
  std::int64_t lo, hi;
};
ValidRange valid_columns(std::int64_t j, const ConvGeometry& g, std::int64_t OW) {
  const std::int64_t first = j - g.pad;  // input column of ow = 0
  const std::int64_t lo = first >= 0 ? 0 : (-first + g.stride - 1) / g.stride;
  const std::int64_t hi = g.W - first <= 0 ? 0 : std::min(OW, (g.W - first + g.stride - 1) / g.stride);
  return {std::min(lo, hi), hi};
}

}  // namespace

void im2col(float* col, const float* x, std::int64_t N, const ConvGeometry& g) {
  const std::int64_t OH = g.out_h(), OW = g.out_w(), P = OH * OW, NP = N * P, rows = g.patch();
#pragma omp parallel for collapse(2) schedule(static) if (rows * NP >= kParallelMin)
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t n = 0; n < N; ++n) {
      const std::int64_t c = r / (g.KH * g.KW), i = r / g.KW % g.KH, j = r % g.KW;
      const float* plane = x + (n * g.C + c) * g.H * g.W;
      const std::int64_t first = j - g.pad;  // input column that output column 0 sees
      const ValidRange cols = valid_columns(j, g, OW);
      float* out_n = col + r * NP + n * P;
      for (std::int64_t oh = 0; oh < OH; ++oh) {
        const std::int64_t h = oh * g.stride - g.pad + i;
        float* out = out_n + oh * OW;
        if (h < 0 || h >= g.H) {
          std::fill(out, out + OW, 0.0f);
          continue;
        }
        const float* in = plane + h * g.W;
        std::fill(out, out + cols.lo, 0.0f);
        if (g.stride == 1)
          std::copy(in + first + cols.lo, in + first + cols.hi, out + cols.lo);
        else
          for (std::int64_t ow = cols.lo; ow < cols.hi; ++ow) out[ow] = in[first + ow * g.stride];
        std::fill(out + cols.hi, out + OW, 0.0f);
      }
    }
}

void col2im(float* dx, const float* col, std::int64_t N, const ConvGeometry& g) {
  const std::int64_t OH = g.out_h(), OW = g.out_w(), P = OH * OW, NP = N * P, KK = g.KH * g.KW;
  // Threads take whole input planes: a plane (n, c) gathers only from the
  // rows of channel c and the columns of example n, so no two threads write
  // the same value.
#pragma omp parallel for schedule(static) if (KK * g.C * NP >= kParallelMin)
  for (std::int64_t nc = 0; nc < N * g.C; ++nc) {
    const std::int64_t n = nc / g.C, c = nc % g.C;
    float* plane = dx + nc * g.H * g.W;
    std::fill(plane, plane + g.H * g.W, 0.0f);
    for (std::int64_t i = 0; i < g.KH; ++i)
      for (std::int64_t j = 0; j < g.KW; ++j) {
        const float* row = col + ((c * g.KH + i) * g.KW + j) * NP + n * P;
        const std::int64_t first = j - g.pad;
        const ValidRange cols = valid_columns(j, g, OW);
        for (std::int64_t oh = 0; oh < OH; ++oh) {
          const std::int64_t h = oh * g.stride - g.pad + i;
          if (h < 0 || h >= g.H) continue;
          float* out = plane + h * g.W;
          const float* in = row + oh * OW;
          if (g.stride == 1)
            for (std::int64_t ow = cols.lo; ow < cols.hi; ++ow) out[first + ow] += in[ow];
          else
            for (std::int64_t ow = cols.lo; ow < cols.hi; ++ow) out[first + ow * g.stride] += in[ow];
        }
      }
  }
}

namespace {

// Takes v at index at when it beats best: '>' keeps the first maximum, as
// PyTorch does, and a NaN wins so it propagates. Written as selects, not an
// `if`: on activations with random signs the branch mispredicted about half
// the time and max pooling took 12 % of a CNN training step.
inline void keep_max(float& best, std::int32_t& best_at, float v, std::int32_t at) {
  // Integer masks rather than `?:` on floats, which GCC turns back into branches.
  const std::int32_t take = -static_cast<std::int32_t>((v > best) | (v != v));  // all ones or zero
  best = std::bit_cast<float>((std::bit_cast<std::int32_t>(v) & take) | (std::bit_cast<std::int32_t>(best) & ~take));
  best_at = (at & take) | (best_at & ~take);
}

// The common 2x2 window with stride 2, unrolled.
void maxpool_plane_2x2(float* y, std::int32_t* argmax, const float* plane, std::int64_t W, std::int64_t OH,
                       std::int64_t OW) {
  for (std::int64_t oh = 0; oh < OH; ++oh) {
    const float* r0 = plane + 2 * oh * W;
    const float* r1 = r0 + W;
    const auto base = static_cast<std::int32_t>(2 * oh * W);
    const auto w = static_cast<std::int32_t>(W);
    for (std::int64_t ow = 0; ow < OW; ++ow) {
      const auto at = base + static_cast<std::int32_t>(2 * ow);
      float best = r0[2 * ow];
      std::int32_t best_at = at;
      if (best != best) best = std::numeric_limits<float>::infinity();  // a NaN first stays (rare: a branch is fine)
      keep_max(best, best_at, r0[2 * ow + 1], at + 1);
      keep_max(best, best_at, r1[2 * ow], at + w);
      keep_max(best, best_at, r1[2 * ow + 1], at + w + 1);
      y[oh * OW + ow] = plane[best_at];
      argmax[oh * OW + ow] = best_at;
    }
  }
}

void maxpool_plane(float* y, std::int32_t* argmax, const float* plane, std::int64_t W, std::int64_t OH, std::int64_t OW,
                   std::int64_t K, std::int64_t stride) {
  for (std::int64_t oh = 0; oh < OH; ++oh)
    for (std::int64_t ow = 0; ow < OW; ++ow) {
      float best = -std::numeric_limits<float>::infinity();
      auto best_at = static_cast<std::int32_t>((oh * stride) * W + ow * stride);
      for (std::int64_t i = 0; i < K; ++i)
        for (std::int64_t j = 0; j < K; ++j) {
          const auto at = static_cast<std::int32_t>((oh * stride + i) * W + ow * stride + j);
          keep_max(best, best_at, plane[at], at);
        }
      y[oh * OW + ow] = best;
      argmax[oh * OW + ow] = best_at;
    }
}

}  // namespace

void maxpool_forward(float* y, std::int32_t* argmax, const float* x, std::int64_t C, std::int64_t H, std::int64_t W,
                     std::int64_t K, std::int64_t stride) {
  const std::int64_t OH = (H - K) / stride + 1, OW = (W - K) / stride + 1;
#pragma omp parallel for schedule(static) if (C * H * W >= kParallelMin)
  for (std::int64_t c = 0; c < C; ++c) {
    const float* plane = x + c * H * W;
    float* yc = y + c * OH * OW;
    std::int32_t* ac = argmax + c * OH * OW;
    if (K == 2 && stride == 2)
      maxpool_plane_2x2(yc, ac, plane, W, OH, OW);
    else
      maxpool_plane(yc, ac, plane, W, OH, OW, K, stride);
  }
}

void maxpool_backward(float* dx, const float* dy, const std::int32_t* argmax, std::int64_t C, std::int64_t H,
                      std::int64_t W, std::int64_t K, std::int64_t stride) {
  const std::int64_t OH = (H - K) / stride + 1, OW = (W - K) / stride + 1;
#pragma omp parallel for schedule(static) if (C * H * W >= kParallelMin)
  for (std::int64_t c = 0; c < C; ++c) {
    float* plane = dx + c * H * W;
    std::fill(plane, plane + H * W, 0.0f);
    for (std::int64_t o = 0; o < OH * OW; ++o) plane[argmax[c * OH * OW + o]] += dy[c * OH * OW + o];
  }
}

void avgpool_forward(float* y, const float* x, std::int64_t C, std::int64_t H, std::int64_t W, std::int64_t K,
                     std::int64_t stride) {
  const std::int64_t OH = (H - K) / stride + 1, OW = (W - K) / stride + 1;
  const float inv = 1.0f / static_cast<float>(K * K);
#pragma omp parallel for schedule(static) if (C * H * W >= kParallelMin)
  for (std::int64_t c = 0; c < C; ++c) {
    const float* plane = x + c * H * W;
    for (std::int64_t oh = 0; oh < OH; ++oh)
      for (std::int64_t ow = 0; ow < OW; ++ow) {
        float sum = 0.0f;
        for (std::int64_t i = 0; i < K; ++i)
          for (std::int64_t j = 0; j < K; ++j) sum += plane[(oh * stride + i) * W + ow * stride + j];
        y[(c * OH + oh) * OW + ow] = sum * inv;
      }
  }
}

void avgpool_backward(float* dx, const float* dy, std::int64_t C, std::int64_t H, std::int64_t W, std::int64_t K,
                      std::int64_t stride) {
  const std::int64_t OH = (H - K) / stride + 1, OW = (W - K) / stride + 1;
  const float inv = 1.0f / static_cast<float>(K * K);
#pragma omp parallel for schedule(static) if (C * H * W >= kParallelMin)
  for (std::int64_t c = 0; c < C; ++c) {
    float* plane = dx + c * H * W;
    std::fill(plane, plane + H * W, 0.0f);
    for (std::int64_t oh = 0; oh < OH; ++oh)
      for (std::int64_t ow = 0; ow < OW; ++ow) {
        const float g = dy[(c * OH + oh) * OW + ow] * inv;
        for (std::int64_t i = 0; i < K; ++i)
          for (std::int64_t j = 0; j < K; ++j) plane[(oh * stride + i) * W + ow * stride + j] += g;
      }
  }
}

}  // namespace bnorm::kernels

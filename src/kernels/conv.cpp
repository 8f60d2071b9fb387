#include "bnorm/kernels/conv.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#include "multiversion.hpp"

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
  const std::int64_t OH = g.out_h(), OW = g.out_w(), P = OH * OW, rows = g.patch();
#pragma omp parallel for collapse(2) schedule(static) if (N * rows * P >= kParallelMin)
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t c = r / (g.KH * g.KW), i = r / g.KW % g.KH, j = r % g.KW;
      const float* plane = x + (n * g.C + c) * g.H * g.W;
      const std::int64_t first = j - g.pad;  // input column that output column 0 sees
      const ValidRange cols = valid_columns(j, g, OW);
      float* out_r = col + (n * rows + r) * P;
      if (g.stride == 1 && OW == g.W) {
        // Stride 1, "same" width: the row is the plane shifted by i − p rows
        // and j − p columns, so one long copy, then zeros over the columns
        // that wrapped around from the neighbouring input row. Per output
        // row, the copies were too short (7 to 28 values) to run at speed.
        const std::int64_t oh_lo = std::clamp<std::int64_t>(g.pad - i, 0, OH);
        const std::int64_t oh_hi = std::clamp<std::int64_t>(g.H + g.pad - i, oh_lo, OH);
        std::fill(out_r, out_r + oh_lo * OW, 0.0f);
        std::fill(out_r + oh_hi * OW, out_r + P, 0.0f);
        const std::int64_t start = (oh_lo - g.pad + i) * g.W + first, count = (oh_hi - oh_lo) * OW;
        const std::int64_t k0 = std::clamp<std::int64_t>(-start, 0, count);              // reads before the plane
        const std::int64_t k1 = std::clamp<std::int64_t>(g.H * g.W - start, k0, count);  // or after it
        float* out = out_r + oh_lo * OW;
        std::fill(out, out + k0, 0.0f);
        for (std::int64_t k = k0; k < k1; ++k) out[k] = plane[start + k];
        std::fill(out + k1, out + count, 0.0f);
        for (std::int64_t oh = oh_lo; oh < oh_hi; ++oh) {
          std::fill(out_r + oh * OW, out_r + oh * OW + cols.lo, 0.0f);
          std::fill(out_r + oh * OW + cols.hi, out_r + (oh + 1) * OW, 0.0f);
        }
        continue;
      }
      for (std::int64_t oh = 0; oh < OH; ++oh) {
        const std::int64_t h = oh * g.stride - g.pad + i;
        float* out = out_r + oh * OW;
        if (h < 0 || h >= g.H) {
          std::fill(out, out + OW, 0.0f);
          continue;
        }
        const float* in = plane + h * g.W;
        std::fill(out, out + cols.lo, 0.0f);
        if (g.stride == 1)
          for (std::int64_t ow = cols.lo; ow < cols.hi; ++ow) out[ow] = in[first + ow];  // short rows: no memmove call
        else
          for (std::int64_t ow = cols.lo; ow < cols.hi; ++ow) out[ow] = in[first + ow * g.stride];
        std::fill(out + cols.hi, out + OW, 0.0f);
      }
    }
}

void col2im(float* dx, const float* col, std::int64_t N, const ConvGeometry& g) {
  const std::int64_t OH = g.out_h(), OW = g.out_w(), P = OH * OW, rows = g.patch();
  // Threads take whole input planes: a plane (n, c) gathers only from the
  // rows of channel c of example n, so no two threads write the same value.
#pragma omp parallel for schedule(static) if (N * rows * P >= kParallelMin)
  for (std::int64_t nc = 0; nc < N * g.C; ++nc) {
    const std::int64_t n = nc / g.C, c = nc % g.C;
    float* plane = dx + nc * g.H * g.W;
    std::fill(plane, plane + g.H * g.W, 0.0f);
    for (std::int64_t i = 0; i < g.KH; ++i)
      for (std::int64_t j = 0; j < g.KW; ++j) {
        const float* row = col + (n * rows + (c * g.KH + i) * g.KW + j) * P;
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

// The common 2x2 window with stride 2, one value at a time: odd widths, and
// planes too large for maxpool_plane_2x2's buffers.
void maxpool_plane_2x2_scalar(float* y, std::int32_t* argmax, const float* plane, std::int64_t W, std::int64_t OH,
                              std::int64_t OW) {
  for (std::int64_t oh = 0; oh < OH; ++oh) {
    const auto base = static_cast<std::int32_t>(2 * oh * W);
    const auto w = static_cast<std::int32_t>(W);
    for (std::int64_t ow = 0; ow < OW; ++ow) {
      const auto at = base + static_cast<std::int32_t>(2 * ow);
      float best = plane[at];
      std::int32_t best_at = at;
      keep_max(best, best_at, plane[at + 1], at + 1);
      keep_max(best, best_at, plane[at + w], at + w);
      keep_max(best, best_at, plane[at + w + 1], at + w + 1);
      y[oh * OW + ow] = best;
      argmax[oh * OW + ow] = best_at;
    }
  }
}

// Eight lanes, one ymm register: comparisons of wider generic vectors are
// split lane by lane into scalar code by GCC 12, on AVX2 and on AVX-512F.
typedef float Floats8 __attribute__((vector_size(8 * sizeof(float))));
typedef std::int32_t Ints8 __attribute__((vector_size(8 * sizeof(std::int32_t))));
#if defined(__clang__)
#define BNORM_EVEN_LANES(lo, hi) __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14)
#define BNORM_ODD_LANES(lo, hi) __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15)
#else
#define BNORM_EVEN_LANES(lo, hi) __builtin_shuffle(lo, hi, Ints8{0, 2, 4, 6, 8, 10, 12, 14})
#define BNORM_ODD_LANES(lo, hi) __builtin_shuffle(lo, hi, Ints8{1, 3, 5, 7, 9, 11, 13, 15})
#endif

// Values of a plane whose horizontal pairs maxpool_plane_2x2 buffers.
constexpr std::int64_t kPlaneMax = 8192;

// The 2x2 window with stride 2 in two steps, which choose exactly as the
// value-by-value scan does (pick(pick(a, b), pick(c, d)) with pick(p, q) = q
// when q > p or q is NaN: the first maximum, the last NaN):
//   1. every horizontal pair of the plane, eight pairs at a time: the width
//      is even (2·OW), so the pairs run straight through the plane, row
//      after row;
//   2. the pair above against the pair below.
// The scan alone ran at about 8 cycles a value and was 15 % of a CNN step.
BNORM_MULTIVERSION
void maxpool_plane_2x2(float* y, std::int32_t* argmax, const float* plane, std::int64_t OH, std::int64_t OW) {
  float pair_max[kPlaneMax / 2];
  std::int32_t pair_at[kPlaneMax / 2];
  const std::int64_t pairs = 2 * OH * OW;  // the rows the windows cover; an odd last row is left out
  std::int64_t k = 0;
  const Ints8 lane = {0, 2, 4, 6, 8, 10, 12, 14};
  for (; k + 8 <= pairs; k += 8) {
    Floats8 lo, hi;
    std::memcpy(&lo, plane + 2 * k, sizeof lo);
    std::memcpy(&hi, plane + 2 * k + 8, sizeof hi);
    const Floats8 left = BNORM_EVEN_LANES(lo, hi), right = BNORM_ODD_LANES(lo, hi);
    const Ints8 take = (right > left) | (right != right);  // lanes all ones or zero
    const Ints8 best = (reinterpret_cast<Ints8>(right) & take) | (reinterpret_cast<Ints8>(left) & ~take);
    const Ints8 at = static_cast<std::int32_t>(2 * k) + lane - take;  // take is -1 where the right one wins
    std::memcpy(pair_max + k, &best, sizeof best);
    std::memcpy(pair_at + k, &at, sizeof at);
  }
  for (; k < pairs; ++k) {
    float best = plane[2 * k];
    auto at = static_cast<std::int32_t>(2 * k);
    keep_max(best, at, plane[2 * k + 1], at + 1);
    pair_max[k] = best;
    pair_at[k] = at;
  }
  // Step 2 over the whole buffer, each pair row against the one below it:
  // twice the comparisons needed (odd rows are compared too) but eight at a
  // time, where rows of 7 or 14 outputs left the vector units idle. In place:
  // a pair is overwritten only after every comparison that reads it.
  const std::int64_t span = pairs - OW;
  k = 0;
  for (; k + 8 <= span; k += 8) {
    Ints8 top, bottom, top_at, bottom_at;
    std::memcpy(&top, pair_max + k, sizeof top);
    std::memcpy(&bottom, pair_max + k + OW, sizeof bottom);
    std::memcpy(&top_at, pair_at + k, sizeof top_at);
    std::memcpy(&bottom_at, pair_at + k + OW, sizeof bottom_at);
    const Floats8 t = reinterpret_cast<Floats8>(top), b = reinterpret_cast<Floats8>(bottom);
    const Ints8 take = (b > t) | (b != b);
    const Ints8 best = (bottom & take) | (top & ~take), at = (bottom_at & take) | (top_at & ~take);
    std::memcpy(pair_max + k, &best, sizeof best);
    std::memcpy(pair_at + k, &at, sizeof at);
  }
  for (; k < span; ++k) keep_max(pair_max[k], pair_at[k], pair_max[k + OW], pair_at[k + OW]);
  for (std::int64_t oh = 0; oh < OH; ++oh)
    for (std::int64_t ow = 0; ow < OW; ++ow) {  // rows of 7 or 14: a loop, not a memcpy call
      y[oh * OW + ow] = pair_max[2 * oh * OW + ow];
      argmax[oh * OW + ow] = pair_at[2 * oh * OW + ow];
    }
}

// The same choice in one pass, for rows of eight windows or more: eight
// windows of a row at a time, from two vectors of the row above and two of
// the row below, split into even and odd columns; past the first eight, the
// last eight overlap the eight before. The two-step version reads and writes
// its buffer three times and compares every pair row twice; this one was
// twice as fast on the default CNN's first pooling.
BNORM_MULTIVERSION
void maxpool_plane_2x2_rows(float* y, std::int32_t* argmax, const float* plane, std::int64_t OH, std::int64_t OW) {
  const std::int64_t W = 2 * OW;
  const Ints8 lane = {0, 2, 4, 6, 8, 10, 12, 14};
  for (std::int64_t oh = 0; oh < OH; ++oh) {
    const float* top = plane + 2 * oh * W;
    const float* bottom = top + W;
    auto eight = [&](std::int64_t ow) {
      Floats8 top_lo, top_hi, bottom_lo, bottom_hi;
      std::memcpy(&top_lo, top + 2 * ow, sizeof top_lo);
      std::memcpy(&top_hi, top + 2 * ow + 8, sizeof top_hi);
      std::memcpy(&bottom_lo, bottom + 2 * ow, sizeof bottom_lo);
      std::memcpy(&bottom_hi, bottom + 2 * ow + 8, sizeof bottom_hi);
      const Ints8 first = static_cast<std::int32_t>(2 * oh * W + 2 * ow) + lane;
      // Each pair: the right one where it is larger or NaN, as keep_max.
      const Floats8 a = BNORM_EVEN_LANES(top_lo, top_hi), b = BNORM_ODD_LANES(top_lo, top_hi);
      const Floats8 c = BNORM_EVEN_LANES(bottom_lo, bottom_hi), d = BNORM_ODD_LANES(bottom_lo, bottom_hi);
      const Ints8 take_b = (b > a) | (b != b), take_d = (d > c) | (d != d);
      const Ints8 upper = (reinterpret_cast<Ints8>(b) & take_b) | (reinterpret_cast<Ints8>(a) & ~take_b);
      const Ints8 lower = (reinterpret_cast<Ints8>(d) & take_d) | (reinterpret_cast<Ints8>(c) & ~take_d);
      const Ints8 upper_at = first - take_b, lower_at = first + static_cast<std::int32_t>(W) - take_d;
      // Then the pair below against the pair above.
      const Floats8 u = reinterpret_cast<Floats8>(upper), l = reinterpret_cast<Floats8>(lower);
      const Ints8 take = (l > u) | (l != l);
      const Ints8 best = (lower & take) | (upper & ~take), at = (lower_at & take) | (upper_at & ~take);
      std::memcpy(y + oh * OW + ow, &best, sizeof best);
      std::memcpy(argmax + oh * OW + ow, &at, sizeof at);
    };
    std::int64_t ow = 0;
    for (; ow + 8 <= OW; ow += 8) eight(ow);
    if (ow < OW) eight(OW - 8);
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
    if (K == 2 && stride == 2 && W % 2 == 0 && OW >= 8)
      maxpool_plane_2x2_rows(yc, ac, plane, OH, OW);
    else if (K == 2 && stride == 2 && W % 2 == 0 && 2 * OH * W <= kPlaneMax)
      maxpool_plane_2x2(yc, ac, plane, OH, OW);
    else if (K == 2 && stride == 2)
      maxpool_plane_2x2_scalar(yc, ac, plane, W, OH, OW);
    else
      maxpool_plane(yc, ac, plane, W, OH, OW, K, stride);
  }
}

namespace {

// The gradient of one plane under 2x2 windows with stride 2, an even width
// and rows of eight windows or more: each input value lies in one window, so
// it is assigned, not added (dy where the window took it, else zero), eight
// windows of a row at a time. Filling the plane with zeros and then adding
// dy at each argmax wrote every value twice. (Shorter rows one window at a
// time took branches that mispredicted; they keep the scatter.)
BNORM_MULTIVERSION
void maxpool_plane_2x2_backward(float* plane, const float* dy, const std::int32_t* argmax, std::int64_t H,
                                std::int64_t OH, std::int64_t OW) {
  const std::int64_t W = 2 * OW;
  const Ints8 lane = {0, 2, 4, 6, 8, 10, 12, 14};  // a window's first column, from the eight's first
  const auto width = static_cast<std::int32_t>(W);
  for (std::int64_t oh = 0; oh < OH; ++oh) {
    float* top = plane + 2 * oh * W;
    float* bottom = top + W;
    const float* g_row = dy + oh * OW;
    const std::int32_t* at_row = argmax + oh * OW;
    // The windows ow..ow+7; past the first, the last eight overlap the eight
    // before and write the same values again.
    auto eight = [&](std::int64_t ow) {
      Ints8 g, at;
      std::memcpy(&g, g_row + ow, sizeof g);
      std::memcpy(&at, at_row + ow, sizeof at);
      const Ints8 first = static_cast<std::int32_t>(2 * oh * W + 2 * ow) + lane;
      const Ints8 v0 = g & (at == first), v1 = g & (at == first + 1);
      const Ints8 v2 = g & (at == first + width), v3 = g & (at == first + width + 1);
      const Ints8 t0 = __builtin_shufflevector(v0, v1, 0, 8, 1, 9, 2, 10, 3, 11);
      const Ints8 t1 = __builtin_shufflevector(v0, v1, 4, 12, 5, 13, 6, 14, 7, 15);
      const Ints8 b0 = __builtin_shufflevector(v2, v3, 0, 8, 1, 9, 2, 10, 3, 11);
      const Ints8 b1 = __builtin_shufflevector(v2, v3, 4, 12, 5, 13, 6, 14, 7, 15);
      std::memcpy(top + 2 * ow, &t0, sizeof t0);
      std::memcpy(top + 2 * ow + 8, &t1, sizeof t1);
      std::memcpy(bottom + 2 * ow, &b0, sizeof b0);
      std::memcpy(bottom + 2 * ow + 8, &b1, sizeof b1);
    };
    std::int64_t ow = 0;
    for (; ow + 8 <= OW; ow += 8) eight(ow);
    if (ow < OW) eight(OW - 8);
  }
  std::fill(plane + 2 * OH * W, plane + H * W, 0.0f);  // an odd last row, in no window
}

}  // namespace

void maxpool_backward(float* dx, const float* dy, const std::int32_t* argmax, std::int64_t C, std::int64_t H,
                      std::int64_t W, std::int64_t K, std::int64_t stride) {
  const std::int64_t OH = (H - K) / stride + 1, OW = (W - K) / stride + 1;
#pragma omp parallel for schedule(static) if (C * H * W >= kParallelMin)
  for (std::int64_t c = 0; c < C; ++c) {
    float* plane = dx + c * H * W;
    if (K == 2 && stride == 2 && W % 2 == 0 && OW >= 8) {
      maxpool_plane_2x2_backward(plane, dy + c * OH * OW, argmax + c * OH * OW, H, OH, OW);
      continue;
    }
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

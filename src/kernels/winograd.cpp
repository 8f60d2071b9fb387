#include "bnorm/kernels/winograd.hpp"

#include <algorithm>
#include <cstring>

#include "multiversion.hpp"

namespace bnorm::kernels {

namespace {

// Below this many values a parallel region costs more than it saves.
constexpr std::int64_t kParallelMin = std::int64_t{1} << 16;

// The transforms run eight tiles of a tile row at a time, one tile per
// vector lane: scalar, each tile's 16 loads, 32 additions and 16 stores
// took 25-30 cycles, and the transforms most of the path's time.
typedef float Floats8 __attribute__((vector_size(8 * sizeof(float))));
typedef std::int32_t Ints8 __attribute__((vector_size(8 * sizeof(std::int32_t))));
// A vector at any float's address, allowed to alias float arrays (may_alias).
typedef float UnalignedFloats8 __attribute__((vector_size(8 * sizeof(float)), aligned(alignof(float)), may_alias));
#define BNORM_ALWAYS_INLINE __attribute__((always_inline)) inline

// A macro, not a function: one returning a vector by value has a different ABI in each copy.
#define load8(p) static_cast<Floats8>(*reinterpret_cast<const UnalignedFloats8*>(p))
BNORM_ALWAYS_INLINE void store8(float* p, const Floats8& v) { *reinterpret_cast<UnalignedFloats8*>(p) = v; }

// Tiles of one tile row handled together, so that the row buffers below stay
// a few KiB on the stack whatever the plane's width.
constexpr std::int64_t kStrip = 64;
// A strip's buffers: one value per tile and one more (the columns a tile
// shares with the next), rounded up, plus a vector of slack for the lanes
// past the last tile.
constexpr std::int64_t kBuffer = kStrip + 16;

// The 1-D transforms, each applied down the columns and then along the rows
// of a tile, on floats or on eight tiles' floats at once. Bᵀ (4x4), G (4x3),
// Aᵀ (2x4), and their transposes for the adjoints:
//   Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]
//   G  = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]
//   Aᵀ = [1 1 1 0; 0 1 −1 −1]
template <class V>
BNORM_ALWAYS_INLINE void apply_bt(V out[4], const V& a0, const V& a1, const V& a2, const V& a3) {
  out[0] = a0 - a2;
  out[1] = a1 + a2;
  out[2] = a2 - a1;
  out[3] = a1 - a3;
}
template <class V>
BNORM_ALWAYS_INLINE void apply_b(V out[4], const V& b0, const V& b1, const V& b2, const V& b3) {
  out[0] = b0;
  out[1] = b1 - b2 + b3;
  out[2] = b1 + b2 - b0;
  out[3] = -b3;
}
inline void apply_g(float out[4], float g0, float g1, float g2) {
  out[0] = g0;
  out[1] = 0.5f * (g0 + g1 + g2);
  out[2] = 0.5f * (g0 - g1 + g2);
  out[3] = g2;
}
inline void apply_gt(float out[3], float u0, float u1, float u2, float u3) {
  out[0] = u0 + 0.5f * (u1 + u2);
  out[1] = 0.5f * (u1 - u2);
  out[2] = 0.5f * (u1 + u2) + u3;
}
template <class V>
BNORM_ALWAYS_INLINE void apply_at(V out[2], const V& m0, const V& m1, const V& m2, const V& m3) {
  out[0] = m0 + m1 + m2;
  out[1] = m1 - m2 - m3;
}
template <class V>
BNORM_ALWAYS_INLINE void apply_a(V out[4], const V& y0, const V& y1) {
  out[0] = y0;
  out[1] = y0 + y1;
  out[2] = y0 - y1;
  out[3] = -y1;
}

// Zeros at a[from, to), in whole vectors (a store of eight may pass `to`:
// the buffers have a vector of slack). std::fill of a few floats was a
// memset call per row, which cost as much as the transform.
BNORM_ALWAYS_INLINE void zero_from(float* a, std::int64_t from, std::int64_t to) {
  for (std::int64_t k = from; k < to; k += 8) store8(a + k, Floats8{});
}

// The first multiple of 8 at or above n: the end of the vectors that cover n values.
constexpr std::int64_t whole_vectors(std::int64_t n) { return (n + 7) / 8 * 8; }

// A plane copied into zeros, so that the transforms read and write whole
// vectors at every tile, with no bounds test: the even-odd split of a row,
// value by value with a test for the padding on each, was most of the input
// transform's time (a 14x14 plane with padding 1 never took the fast path).
// Planes whose buffer would pass this many floats (32 KiB on the stack) take
// the strip-by-strip code below instead.
constexpr std::int64_t kPaddedMax = 8192;

// Copies n floats in whole vectors, the last one overlapping the one before;
// rows of 7 to 28 values made std::copy a memmove call per row.
BNORM_ALWAYS_INLINE void copy_floats(float* to, const float* from, std::int64_t n) {
  std::int64_t k = 0;
  for (; k + 8 <= n; k += 8) store8(to + k, load8(from + k));
  if (k == n) return;
  if (n >= 8) {
    store8(to + n - 8, load8(from + n - 8));
  } else {
    for (; k < n; ++k) to[k] = from[k];
  }
}

// buf (rows, cols) = zeros with the plane (H, W) at row `top`, column `left`.
BNORM_ALWAYS_INLINE void pad_plane(float* buf, std::int64_t rows, std::int64_t cols, const float* plane, std::int64_t H,
                                   std::int64_t W, std::int64_t top, std::int64_t left) {
  zero_from(buf, 0, rows * cols);
  for (std::int64_t h = 0; h < H; ++h) copy_floats(buf + (h + top) * cols + left, plane + h * W, W);
}

// Lanes 0, 2, .., 14 and 1, 3, .., 15 of the 16 values in lo, hi: eight
// tiles' even and odd columns.
#define even_lanes(lo, hi) __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14)
#define odd_lanes(lo, hi) __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15)
// Lanes 1..7 of v and lane 0 of w: the same column of the next eight tiles.
#define next_tile_lanes(v, w) __builtin_shufflevector(v, w, 1, 2, 3, 4, 5, 6, 7, 8)
// Lane 7 of v and lanes 0..6 of w: the same column of the tile before.
#define previous_tile_lanes(v, w) __builtin_shufflevector(v, w, 7, 8, 9, 10, 11, 12, 13, 14)
// Eight tiles' even and odd columns back in row order: columns 0..7 and 8..15.
#define interleave_first(even, odd) __builtin_shufflevector(even, odd, 0, 8, 1, 9, 2, 10, 3, 11)
#define interleave_second(even, odd) __builtin_shufflevector(even, odd, 4, 12, 5, 13, 6, 14, 7, 15)

// The even and odd columns, w0 + 2k and w0 + 2k + 1 for k < count, of row h
// of a plane: zeros where the row or column lies outside it, and zeros on to
// `reach`.
BNORM_ALWAYS_INLINE void even_odd_columns(float* even, float* odd, const float* plane, std::int64_t h, std::int64_t w0,
                                          std::int64_t count, std::int64_t reach, std::int64_t H, std::int64_t W) {
  std::int64_t k = 0;
  if (h >= 0 && h < H) {
    const float* row = plane + h * W;
    if (w0 >= 0 && w0 + 2 * count <= W) {
      for (; k < count; ++k) {
        even[k] = row[w0 + 2 * k];
        odd[k] = row[w0 + 2 * k + 1];
      }
    } else {
      for (; k < count; ++k) {
        const std::int64_t w = w0 + 2 * k;
        even[k] = w >= 0 && w < W ? row[w] : 0.0f;
        odd[k] = w + 1 >= 0 && w + 1 < W ? row[w + 1] : 0.0f;
      }
    }
  }
  zero_from(even, k, reach);
  zero_from(odd, k, reach);
}

// Stores eight tiles' values at out, or only the first `lanes` of them.
BNORM_ALWAYS_INLINE void store_tiles(float* out, const Floats8& v, std::int64_t lanes) {
  if (lanes >= 8) {
    store8(out, v);
  } else {
    for (std::int64_t l = 0; l < lanes; ++l) out[l] = v[l];
  }
}

// How many lanes of the eight tiles from s a store may write: all eight
// unless that would run past the plane's last tile. Lanes past the strip's
// tiles land on tiles of the same plane that this thread writes later (the
// next strip, the next tile row), so they need no care; past the plane's
// last tile lies another plane's first, which another thread may own.
BNORM_ALWAYS_INLINE std::int64_t lanes_to_store(std::int64_t s, std::int64_t tiles, bool plane_ends_with_strip) {
  return plane_ends_with_strip ? std::min<std::int64_t>(8, tiles - s) : 8;
}

// Zeros in the columns [T, winograd_row_length(T)) of every row of a
// (16, rows, T) array, which the products read as whole vectors.
void zero_past_last_tile(float* a, std::int64_t rows, std::int64_t T) {
  const std::int64_t ld = winograd_row_length(T), stride = winograd_position_stride(rows, ld);
  for (std::int64_t xi = 0; xi < kWinogradPositions; ++xi)
    for (std::int64_t row = 0; row < rows; ++row)
      std::fill(a + xi * stride + row * ld + T, a + xi * stride + (row + 1) * ld, 0.0f);
}

// Aᵀ m A for eight tiles (in: their place in m, the 16 matrices stride
// apart), plus b: the tiles' two output rows, 16 values each in column
// order, at top and bottom.
BNORM_ALWAYS_INLINE void output_eight_tiles(float* top, float* bottom, const float* in, std::int64_t stride,
                                            const Floats8& b) {
  Floats8 along[4][2];  // Aᵀ along each row of the tile
  for (int i = 0; i < 4; ++i)
    apply_at(along[i], load8(in + (i * 4 + 0) * stride), load8(in + (i * 4 + 1) * stride),
             load8(in + (i * 4 + 2) * stride), load8(in + (i * 4 + 3) * stride));
  Floats8 left[2], right[2];  // the tile's output columns 2s and 2s + 1, rows 0 and 1
  apply_at(left, along[0][0], along[1][0], along[2][0], along[3][0]);
  apply_at(right, along[0][1], along[1][1], along[2][1], along[3][1]);
  float* rows[2] = {top, bottom};
  for (int i = 0; i < 2; ++i) {
    const Floats8 a = left[i] + b, c = right[i] + b;
    store8(rows[i], interleave_first(a, c));
    store8(rows[i] + 8, interleave_second(a, c));
  }
}

// A dy Aᵀ for eight tiles (out: their place in dm, the 16 matrices stride
// apart) from the even and odd columns of their two output rows; the first
// `lanes` tiles stored (store_tiles).
BNORM_ALWAYS_INLINE void output_adjoint_eight_tiles(float* out, std::int64_t stride, std::int64_t lanes,
                                                    const Floats8& even_top, const Floats8& even_bottom,
                                                    const Floats8& odd_top, const Floats8& odd_bottom) {
  Floats8 left[4], right[4];  // A dy: the tile's two columns, each spread over four rows
  apply_a(left, even_top, even_bottom);
  apply_a(right, odd_top, odd_bottom);
  for (int i = 0; i < 4; ++i) {
    Floats8 t[4];
    apply_a(t, left[i], right[i]);
    for (int j = 0; j < 4; ++j) store_tiles(out + (i * 4 + j) * stride, t[j], lanes);
  }
}

}  // namespace

void winograd_filter(float* u, const float* w, std::int64_t O, std::int64_t C) {
  const std::int64_t stride = winograd_position_stride(O, C);
#pragma omp parallel for schedule(static) if (O * C * 16 >= kParallelMin)
  for (std::int64_t oc = 0; oc < O * C; ++oc) {
    const float* g = w + oc * 9;
    float cols[4][3];  // G g: the columns of g transformed
    for (int j = 0; j < 3; ++j) {
      float t[4];
      apply_g(t, g[j], g[3 + j], g[6 + j]);
      for (int i = 0; i < 4; ++i) cols[i][j] = t[i];
    }
    for (int i = 0; i < 4; ++i) {
      float t[4];
      apply_g(t, cols[i][0], cols[i][1], cols[i][2]);
      for (int j = 0; j < 4; ++j) u[(i * 4 + j) * stride + oc] = t[j];
    }
  }
}

void winograd_filter_adjoint(float* dw, const float* du, std::int64_t O, std::int64_t C) {
  const std::int64_t stride = winograd_position_stride(O, C);
#pragma omp parallel for schedule(static) if (O * C * 16 >= kParallelMin)
  for (std::int64_t oc = 0; oc < O * C; ++oc) {
    float rows[4][3];  // du Gᵀ... along each row of du
    for (int i = 0; i < 4; ++i)
      apply_gt(rows[i], du[(i * 4 + 0) * stride + oc], du[(i * 4 + 1) * stride + oc], du[(i * 4 + 2) * stride + oc],
               du[(i * 4 + 3) * stride + oc]);
    float* g = dw + oc * 9;
    for (int j = 0; j < 3; ++j) {
      float t[3];
      apply_gt(t, rows[0][j], rows[1][j], rows[2][j], rows[3][j]);
      for (int i = 0; i < 3; ++i) g[i * 3 + j] = t[i];
    }
  }
}

BNORM_MULTIVERSION
void winograd_input(float* v, const float* x, std::int64_t N, const ConvGeometry& g) {
  const std::int64_t TH = winograd_tile_rows(g), TW = winograd_tile_cols(g), T = N * TH * TW;
  const std::int64_t ld = winograd_row_length(T), stride = winograd_position_stride(g.C, ld);
  // The padded plane: tile (r, s) reads its rows 2r..2r+3 and columns
  // 2s..2s+3; eight tiles from s read columns 2s..2s+23 (three vectors).
  const std::int64_t padded_rows = 2 * TH + 2, padded_cols = 2 * whole_vectors(TW) + 8;
  const bool padded = padded_rows * padded_cols <= kPaddedMax;
  zero_past_last_tile(v, g.C, T);
#pragma omp parallel for schedule(static) if (N * g.C * TH * TW * 16 >= kParallelMin)
  for (std::int64_t nc = 0; nc < N * g.C; ++nc) {
    const std::int64_t n = nc / g.C, c = nc % g.C;
    const float* plane = x + nc * g.H * g.W;
    if (padded) {
      alignas(32) float buf[kPaddedMax];
      pad_plane(buf, padded_rows, padded_cols, plane, g.H, g.W, g.pad, g.pad);
      for (std::int64_t r = 0; r < TH; ++r) {
        float* out = v + c * ld + (n * TH + r) * TW;
        for (std::int64_t s = 0; s < TW; s += 8) {
          // The tiles' four columns in each of their four rows, then Bᵀ down
          // the rows and · B along the columns, as below.
          Floats8 d[4][4];
          for (int i = 0; i < 4; ++i) {
            const float* row = buf + (2 * r + i) * padded_cols + 2 * s;
            const Floats8 lo = load8(row), hi = load8(row + 8), next = load8(row + 16);
            d[i][0] = even_lanes(lo, hi);
            d[i][1] = odd_lanes(lo, hi);
            d[i][2] = next_tile_lanes(d[i][0], next);
            d[i][3] = __builtin_shufflevector(d[i][1], next, 1, 2, 3, 4, 5, 6, 7, 9);
          }
          Floats8 down[4][4];
          for (int j = 0; j < 4; ++j) {
            Floats8 t[4];
            apply_bt(t, d[0][j], d[1][j], d[2][j], d[3][j]);
            for (int i = 0; i < 4; ++i) down[i][j] = t[i];
          }
          const std::int64_t lanes = lanes_to_store(s, TW, r + 1 == TH);
          for (int i = 0; i < 4; ++i) {
            Floats8 t[4];
            apply_bt(t, down[i][0], down[i][1], down[i][2], down[i][3]);
            for (int j = 0; j < 4; ++j) store_tiles(out + (i * 4 + j) * stride + s, t[j], lanes);
          }
        }
      }
      continue;
    }
    for (std::int64_t r = 0; r < TH; ++r)
      for (std::int64_t s0 = 0; s0 < TW; s0 += kStrip) {
        const std::int64_t tiles = std::min(kStrip, TW - s0);
        const bool last = r + 1 == TH && s0 + tiles == TW;
        // Tile s reads input columns 2s..2s+3: even k = s, odd k = s, even
        // and odd k = s + 1. First Bᵀ down the four rows, on whole vectors.
        alignas(32) float even[4][kBuffer], odd[4][kBuffer];
        const std::int64_t reach = whole_vectors(tiles) + 8;  // the last vector of tiles reads k + 1
        for (int i = 0; i < 4; ++i)
          even_odd_columns(even[i], odd[i], plane, 2 * r - g.pad + i, 2 * s0 - g.pad, tiles + 1, reach, g.H, g.W);
        for (std::int64_t k = 0; k < tiles + 1; k += 8) {
          Floats8 t[4];
          apply_bt(t, load8(even[0] + k), load8(even[1] + k), load8(even[2] + k), load8(even[3] + k));
          for (int i = 0; i < 4; ++i) store8(even[i] + k, t[i]);
          apply_bt(t, load8(odd[0] + k), load8(odd[1] + k), load8(odd[2] + k), load8(odd[3] + k));
          for (int i = 0; i < 4; ++i) store8(odd[i] + k, t[i]);
        }
        // Then · B along each tile's four columns, eight tiles at a time.
        float* out = v + c * ld + (n * TH + r) * TW + s0;
        for (std::int64_t s = 0; s < tiles; s += 8) {
          const std::int64_t lanes = lanes_to_store(s, tiles, last);
          for (int i = 0; i < 4; ++i) {
            Floats8 t[4];
            apply_bt(t, load8(even[i] + s), load8(odd[i] + s), load8(even[i] + s + 1), load8(odd[i] + s + 1));
            for (int j = 0; j < 4; ++j) store_tiles(out + (i * 4 + j) * stride + s, t[j], lanes);
          }
        }
      }
  }
}

BNORM_MULTIVERSION
void winograd_input_adjoint(float* dx, const float* dv, std::int64_t N, const ConvGeometry& g) {
  const std::int64_t TH = winograd_tile_rows(g), TW = winograd_tile_cols(g), T = N * TH * TW;
  const std::int64_t ld = winograd_row_length(T), stride = winograd_position_stride(g.C, ld);
  // The padded plane the tiles add into: eight tiles from s write columns
  // 2s..2s+15, and one block past the last tile the columns its tiles share
  // with none.
  const std::int64_t padded_rows = 2 * TH + 2, padded_cols = 2 * whole_vectors(TW) + 16;
  const bool padded = padded_rows * padded_cols <= kPaddedMax;
  const Ints8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
#pragma omp parallel for schedule(static) if (N * g.C * TH * TW * 16 >= kParallelMin)
  for (std::int64_t nc = 0; nc < N * g.C; ++nc) {
    const std::int64_t n = nc / g.C, c = nc % g.C;
    float* plane = dx + nc * g.H * g.W;
    if (padded) {
      alignas(32) float buf[kPaddedMax];
      zero_from(buf, 0, padded_rows * padded_cols);
      for (std::int64_t r = 0; r < TH; ++r) {
        const float* in = dv + c * ld + (n * TH + r) * TW;
        // Columns 2 and 3 of the eight tiles before, per row: they meet
        // columns 0 and 1 of the tile after, as below.
        Floats8 carry_even[4] = {}, carry_odd[4] = {};
        for (std::int64_t s = 0; s <= TW; s += 8) {
          // Lanes past the last tile read whatever follows in dv.
          const Ints8 keep = lane < static_cast<std::int32_t>(TW - s);
          Floats8 even[4], odd[4];
          for (int i = 0; i < 4; ++i) {
            Floats8 t[4] = {};
            if (s < TW) {
              apply_b(t, load8(in + (i * 4 + 0) * stride + s), load8(in + (i * 4 + 1) * stride + s),
                      load8(in + (i * 4 + 2) * stride + s), load8(in + (i * 4 + 3) * stride + s));
              for (int j = 0; j < 4; ++j) t[j] = reinterpret_cast<Floats8>(reinterpret_cast<Ints8>(t[j]) & keep);
            }
            even[i] = t[0] + previous_tile_lanes(carry_even[i], t[2]);
            odd[i] = t[1] + previous_tile_lanes(carry_odd[i], t[3]);
            carry_even[i] = t[2];
            carry_odd[i] = t[3];
          }
          Floats8 e[4], o[4];
          apply_b(e, even[0], even[1], even[2], even[3]);
          apply_b(o, odd[0], odd[1], odd[2], odd[3]);
          for (int i = 0; i < 4; ++i) {
            float* row = buf + (2 * r + i) * padded_cols + 2 * s;
            store8(row, load8(row) + interleave_first(e[i], o[i]));
            store8(row + 8, load8(row + 8) + interleave_second(e[i], o[i]));
          }
        }
      }
      for (std::int64_t h = 0; h < g.H; ++h) copy_floats(plane + h * g.W, buf + (h + g.pad) * padded_cols + g.pad, g.W);
      continue;
    }
    std::fill(plane, plane + g.H * g.W, 0.0f);
    for (std::int64_t r = 0; r < TH; ++r)
      for (std::int64_t s0 = 0; s0 < TW; s0 += kStrip) {
        const std::int64_t tiles = std::min(kStrip, TW - s0);
        // Each tile's dv · Bᵀ along its rows gives four columns, 2s..2s+3:
        // the first two into even and odd k = s, the last two into k = s + 1
        // (kept one place on, in `shifted`), where they meet the next tile's.
        alignas(32) float even[4][kBuffer], odd[4][kBuffer], even_next[4][kBuffer], odd_next[4][kBuffer];
        const float* in = dv + c * ld + (n * TH + r) * TW + s0;
        for (std::int64_t s = 0; s < tiles; s += 8)
          for (int i = 0; i < 4; ++i) {
            Floats8 t[4];
            // Lanes past the strip read whatever follows (inside the array:
            // every matrix ends in a line of slack) and are cleared below.
            apply_b(t, load8(in + (i * 4 + 0) * stride + s), load8(in + (i * 4 + 1) * stride + s),
                    load8(in + (i * 4 + 2) * stride + s), load8(in + (i * 4 + 3) * stride + s));
            store8(even[i] + s, t[0]);
            store8(odd[i] + s, t[1]);
            store8(even_next[i] + s + 1, t[2]);
            store8(odd_next[i] + s + 1, t[3]);
          }
        const std::int64_t reach = whole_vectors(tiles + 1);
        for (int i = 0; i < 4; ++i) {
          zero_from(even[i], tiles, reach);
          zero_from(odd[i], tiles, reach);
          even_next[i][0] = odd_next[i][0] = 0.0f;
          zero_from(even_next[i], tiles + 1, reach);
          zero_from(odd_next[i], tiles + 1, reach);
        }
        // Then B · down the columns, on whole vectors: rows 2r − p + i.
        for (std::int64_t k = 0; k < tiles + 1; k += 8) {
          Floats8 t[4];
          apply_b(t, load8(even[0] + k) + load8(even_next[0] + k), load8(even[1] + k) + load8(even_next[1] + k),
                  load8(even[2] + k) + load8(even_next[2] + k), load8(even[3] + k) + load8(even_next[3] + k));
          for (int i = 0; i < 4; ++i) store8(even[i] + k, t[i]);
          apply_b(t, load8(odd[0] + k) + load8(odd_next[0] + k), load8(odd[1] + k) + load8(odd_next[1] + k),
                  load8(odd[2] + k) + load8(odd_next[2] + k), load8(odd[3] + k) + load8(odd_next[3] + k));
          for (int i = 0; i < 4; ++i) store8(odd[i] + k, t[i]);
        }
        const std::int64_t w0 = 2 * s0 - g.pad;
        for (int i = 0; i < 4; ++i) {
          const std::int64_t h = 2 * r - g.pad + i;
          if (h < 0 || h >= g.H) continue;
          float* row = plane + h * g.W;
          if (w0 >= 0 && w0 + 2 * tiles + 2 <= g.W) {
            for (std::int64_t k = 0; k <= tiles; ++k) {
              row[w0 + 2 * k] += even[i][k];
              row[w0 + 2 * k + 1] += odd[i][k];
            }
          } else {
            for (std::int64_t k = 0; k <= tiles; ++k) {
              const std::int64_t w = w0 + 2 * k;
              if (w >= 0 && w < g.W) row[w] += even[i][k];
              if (w + 1 >= 0 && w + 1 < g.W) row[w + 1] += odd[i][k];
            }
          }
        }
      }
  }
}

BNORM_MULTIVERSION
void winograd_output(float* y, const float* m, const float* bias, std::int64_t N, std::int64_t O,
                     const ConvGeometry& g) {
  const std::int64_t TH = winograd_tile_rows(g), TW = winograd_tile_cols(g), T = N * TH * TW;
  const std::int64_t OH = g.out_h(), OW = g.out_w(), ld = winograd_row_length(T);
  const std::int64_t stride = winograd_position_stride(O, ld);
  const std::int64_t padded_cols = 2 * whole_vectors(TW);
  const bool padded = 2 * TH * padded_cols <= kPaddedMax;
#pragma omp parallel for schedule(static) if (N * O * TH * TW * 16 >= kParallelMin)
  for (std::int64_t no = 0; no < N * O; ++no) {
    const std::int64_t n = no / O, o = no % O;
    const Floats8 b = Floats8{} + (bias ? bias[o] : 0.0f);
    float* plane = y + no * OH * OW;
    if (padded) {
      // Eight tiles from s write columns 2s..2s+15 of rows 2r, 2r + 1.
      alignas(32) float buf[kPaddedMax];
      for (std::int64_t r = 0; r < TH; ++r) {
        const float* in = m + o * ld + (n * TH + r) * TW;
        float* top = buf + 2 * r * padded_cols;
        for (std::int64_t s = 0; s < TW; s += 8)
          output_eight_tiles(top + 2 * s, top + padded_cols + 2 * s, in + s, stride, b);
      }
      for (std::int64_t h = 0; h < OH; ++h) copy_floats(plane + h * OW, buf + h * padded_cols, OW);
      continue;
    }
    for (std::int64_t r = 0; r < TH; ++r)
      for (std::int64_t s0 = 0; s0 < TW; s0 += kStrip) {
        const std::int64_t tiles = std::min(kStrip, TW - s0);
        alignas(32) float out[2][2 * kBuffer];
        // Lanes past the strip read whatever follows in m (inside the array:
        // every matrix ends in a line of slack) and are never copied out.
        const float* in = m + o * ld + (n * TH + r) * TW + s0;
        for (std::int64_t s = 0; s < tiles; s += 8)
          output_eight_tiles(out[0] + 2 * s, out[1] + 2 * s, in + s, stride, b);
        const std::int64_t cols = std::min(2 * tiles, OW - 2 * s0);
        for (int i = 0; i < 2 && 2 * r + i < OH; ++i)
          std::copy(out[i], out[i] + cols, plane + (2 * r + i) * OW + 2 * s0);
      }
  }
}

BNORM_MULTIVERSION
void winograd_output_adjoint(float* dm, const float* dy, std::int64_t N, std::int64_t O, const ConvGeometry& g) {
  const std::int64_t TH = winograd_tile_rows(g), TW = winograd_tile_cols(g), T = N * TH * TW;
  const std::int64_t OH = g.out_h(), OW = g.out_w(), ld = winograd_row_length(T);
  const std::int64_t stride = winograd_position_stride(O, ld);
  // The padded plane: eight tiles from s read columns 2s..2s+15 of rows 2r, 2r + 1.
  const std::int64_t padded_rows = 2 * TH, padded_cols = 2 * whole_vectors(TW);
  const bool padded = padded_rows * padded_cols <= kPaddedMax;
  zero_past_last_tile(dm, O, T);
#pragma omp parallel for schedule(static) if (N * O * TH * TW * 16 >= kParallelMin)
  for (std::int64_t no = 0; no < N * O; ++no) {
    const std::int64_t n = no / O, o = no % O;
    const float* plane = dy + no * OH * OW;
    if (padded) {
      alignas(32) float buf[kPaddedMax];
      pad_plane(buf, padded_rows, padded_cols, plane, OH, OW, 0, 0);
      for (std::int64_t r = 0; r < TH; ++r) {
        float* out = dm + o * ld + (n * TH + r) * TW;
        const float* top = buf + 2 * r * padded_cols;
        const float* bottom = top + padded_cols;
        for (std::int64_t s = 0; s < TW; s += 8) {
          const Floats8 top_lo = load8(top + 2 * s), top_hi = load8(top + 2 * s + 8);
          const Floats8 bottom_lo = load8(bottom + 2 * s), bottom_hi = load8(bottom + 2 * s + 8);
          output_adjoint_eight_tiles(out + s, stride, lanes_to_store(s, TW, r + 1 == TH), even_lanes(top_lo, top_hi),
                                     even_lanes(bottom_lo, bottom_hi), odd_lanes(top_lo, top_hi),
                                     odd_lanes(bottom_lo, bottom_hi));
        }
      }
      continue;
    }
    for (std::int64_t r = 0; r < TH; ++r)
      for (std::int64_t s0 = 0; s0 < TW; s0 += kStrip) {
        const std::int64_t tiles = std::min(kStrip, TW - s0);
        const bool last = r + 1 == TH && s0 + tiles == TW;
        // The tiles' two output rows, split into even and odd columns, zeros
        // past the last row and column.
        alignas(32) float even[2][kBuffer], odd[2][kBuffer];
        for (int i = 0; i < 2; ++i)
          even_odd_columns(even[i], odd[i], plane, 2 * r + i, 2 * s0, tiles, whole_vectors(tiles), OH, OW);
        float* out = dm + o * ld + (n * TH + r) * TW + s0;
        for (std::int64_t s = 0; s < tiles; s += 8) {
          output_adjoint_eight_tiles(out + s, stride, lanes_to_store(s, tiles, last), load8(even[0] + s),
                                     load8(even[1] + s), load8(odd[0] + s), load8(odd[1] + s));
        }
      }
  }
}

}  // namespace bnorm::kernels

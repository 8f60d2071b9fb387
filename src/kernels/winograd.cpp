#include "bnorm/kernels/winograd.hpp"

#include <algorithm>

#include "multiversion.hpp"

namespace bnorm::kernels {

namespace {

// Below this many values a parallel region costs more than it saves.
constexpr std::int64_t kParallelMin = std::int64_t{1} << 16;

// Tiles of one tile row handled together: their input rows are first copied
// into zero-padded row buffers (the padding and the plane's edges become
// plain zeros, so the per-tile loops carry no bounds tests), and the buffers
// stay a few KiB on the stack whatever the plane's width.
constexpr std::int64_t kStrip = 128;
constexpr std::int64_t kStripWidth = 2 * kStrip + 2;  // input columns a strip of tiles reads

// The 1-D transforms, each applied down the columns and then along the rows
// of a tile. Bᵀ (4x4), G (4x3), Aᵀ (2x4) and their transposes for the
// adjoints:
//   Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]
//   G  = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]
//   Aᵀ = [1 1 1 0; 0 1 −1 −1]
inline void apply_bt(float out[4], float a0, float a1, float a2, float a3) {
  out[0] = a0 - a2;
  out[1] = a1 + a2;
  out[2] = a2 - a1;
  out[3] = a1 - a3;
}
inline void apply_b(float out[4], float b0, float b1, float b2, float b3) {
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
inline void apply_at(float out[2], float m0, float m1, float m2, float m3) {
  out[0] = m0 + m1 + m2;
  out[1] = m1 - m2 - m3;
}
inline void apply_a(float out[4], float y0, float y1) {
  out[0] = y0;
  out[1] = y0 + y1;
  out[2] = y0 - y1;
  out[3] = -y1;
}

// Copies input columns [w0, w0 + width) of row h into buf, zeros where the
// row or column lies outside the plane.
inline void padded_row(float* buf, const float* plane, std::int64_t h, std::int64_t w0, std::int64_t width,
                       const ConvGeometry& g) {
  if (h < 0 || h >= g.H) {
    std::fill(buf, buf + width, 0.0f);
    return;
  }
  const float* row = plane + h * g.W;
  for (std::int64_t k = 0; k < width; ++k) {
    const std::int64_t w = w0 + k;
    buf[k] = w >= 0 && w < g.W ? row[w] : 0.0f;
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
  for (std::int64_t row = 0; row < kWinogradPositions * g.C; ++row) {
    float* r = v + row / g.C * stride + row % g.C * ld;
    std::fill(r + T, r + ld, 0.0f);
  }
#pragma omp parallel for schedule(static) if (N * g.C * TH * TW * 16 >= kParallelMin)
  for (std::int64_t nc = 0; nc < N * g.C; ++nc) {
    const std::int64_t n = nc / g.C, c = nc % g.C;
    const float* plane = x + nc * g.H * g.W;
    for (std::int64_t r = 0; r < TH; ++r)
      for (std::int64_t s0 = 0; s0 < TW; s0 += kStrip) {
        const std::int64_t tiles = std::min(kStrip, TW - s0), width = 2 * tiles + 2;
        // The strip's four input rows, transformed down the columns (Bᵀ d).
        float in[4][kStripWidth], down[4][kStripWidth];
        for (int i = 0; i < 4; ++i) padded_row(in[i], plane, 2 * r - g.pad + i, 2 * s0 - g.pad, width, g);
        for (std::int64_t k = 0; k < width; ++k) {
          float t[4];
          apply_bt(t, in[0][k], in[1][k], in[2][k], in[3][k]);
          for (int i = 0; i < 4; ++i) down[i][k] = t[i];
        }
        // Then along each tile's four columns (· B).
        float* out = v + c * ld + (n * TH + r) * TW + s0;
        for (std::int64_t s = 0; s < tiles; ++s)
          for (int i = 0; i < 4; ++i) {
            float t[4];
            apply_bt(t, down[i][2 * s], down[i][2 * s + 1], down[i][2 * s + 2], down[i][2 * s + 3]);
            for (int j = 0; j < 4; ++j) out[(i * 4 + j) * stride + s] = t[j];
          }
      }
  }
}

BNORM_MULTIVERSION
void winograd_input_adjoint(float* dx, const float* dv, std::int64_t N, const ConvGeometry& g) {
  const std::int64_t TH = winograd_tile_rows(g), TW = winograd_tile_cols(g), T = N * TH * TW;
  const std::int64_t ld = winograd_row_length(T), stride = winograd_position_stride(g.C, ld);
#pragma omp parallel for schedule(static) if (N * g.C * TH * TW * 16 >= kParallelMin)
  for (std::int64_t nc = 0; nc < N * g.C; ++nc) {
    const std::int64_t n = nc / g.C, c = nc % g.C;
    float* plane = dx + nc * g.H * g.W;
    std::fill(plane, plane + g.H * g.W, 0.0f);
    for (std::int64_t r = 0; r < TH; ++r)
      for (std::int64_t s0 = 0; s0 < TW; s0 += kStrip) {
        const std::int64_t tiles = std::min(kStrip, TW - s0), width = 2 * tiles + 2;
        // Each tile's dv · Bᵀ along its rows, summed where neighbouring tiles
        // share input columns; then B · down the columns, once per strip.
        float along[4][kStripWidth];
        for (int i = 0; i < 4; ++i) std::fill(along[i], along[i] + width, 0.0f);
        const float* in = dv + c * ld + (n * TH + r) * TW + s0;
        for (std::int64_t s = 0; s < tiles; ++s)
          for (int i = 0; i < 4; ++i) {
            float t[4];
            apply_b(t, in[(i * 4 + 0) * stride + s], in[(i * 4 + 1) * stride + s], in[(i * 4 + 2) * stride + s],
                    in[(i * 4 + 3) * stride + s]);
            for (int j = 0; j < 4; ++j) along[i][2 * s + j] += t[j];
          }
        float rows[4][kStripWidth];
        for (std::int64_t k = 0; k < width; ++k) {
          float t[4];
          apply_b(t, along[0][k], along[1][k], along[2][k], along[3][k]);
          for (int i = 0; i < 4; ++i) rows[i][k] = t[i];
        }
        const std::int64_t w0 = 2 * s0 - g.pad;
        const std::int64_t k_lo = std::max<std::int64_t>(0, -w0), k_hi = std::min(width, g.W - w0);
        for (int i = 0; i < 4; ++i) {
          const std::int64_t h = 2 * r - g.pad + i;
          if (h < 0 || h >= g.H) continue;
          float* row = plane + h * g.W + w0;
          for (std::int64_t k = k_lo; k < k_hi; ++k) row[k] += rows[i][k];
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
#pragma omp parallel for schedule(static) if (N * O * TH * TW * 16 >= kParallelMin)
  for (std::int64_t no = 0; no < N * O; ++no) {
    const std::int64_t n = no / O, o = no % O;
    const float b = bias ? bias[o] : 0.0f;
    float* plane = y + no * OH * OW;
    for (std::int64_t r = 0; r < TH; ++r)
      for (std::int64_t s0 = 0; s0 < TW; s0 += kStrip) {
        const std::int64_t tiles = std::min(kStrip, TW - s0);
        float out[2][2 * kStrip];
        const float* in = m + o * ld + (n * TH + r) * TW + s0;
        for (std::int64_t s = 0; s < tiles; ++s) {
          float along[4][2];  // m Aᵀ... along each row of the tile
          for (int i = 0; i < 4; ++i)
            apply_at(along[i], in[(i * 4 + 0) * stride + s], in[(i * 4 + 1) * stride + s], in[(i * 4 + 2) * stride + s],
                     in[(i * 4 + 3) * stride + s]);
          for (int j = 0; j < 2; ++j) {
            float t[2];
            apply_at(t, along[0][j], along[1][j], along[2][j], along[3][j]);
            out[0][2 * s + j] = t[0] + b;
            out[1][2 * s + j] = t[1] + b;
          }
        }
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
  for (std::int64_t row = 0; row < kWinogradPositions * O; ++row) {
    float* r = dm + row / O * stride + row % O * ld;
    std::fill(r + T, r + ld, 0.0f);
  }
#pragma omp parallel for schedule(static) if (N * O * TH * TW * 16 >= kParallelMin)
  for (std::int64_t no = 0; no < N * O; ++no) {
    const std::int64_t n = no / O, o = no % O;
    const float* plane = dy + no * OH * OW;
    for (std::int64_t r = 0; r < TH; ++r)
      for (std::int64_t s0 = 0; s0 < TW; s0 += kStrip) {
        const std::int64_t tiles = std::min(kStrip, TW - s0);
        // The strip's two output rows, zeros past the last row and column.
        float in[2][2 * kStrip];
        const std::int64_t cols = std::min(2 * tiles, OW - 2 * s0);
        for (int i = 0; i < 2; ++i) {
          std::fill(in[i], in[i] + 2 * tiles, 0.0f);
          if (2 * r + i < OH)
            std::copy(plane + (2 * r + i) * OW + 2 * s0, plane + (2 * r + i) * OW + 2 * s0 + cols, in[i]);
        }
        float* out = dm + o * ld + (n * TH + r) * TW + s0;
        for (std::int64_t s = 0; s < tiles; ++s) {
          float down[4][2];  // A dy: the tile's two columns, each spread over four rows
          for (int j = 0; j < 2; ++j) {
            float t[4];
            apply_a(t, in[0][2 * s + j], in[1][2 * s + j]);
            for (int i = 0; i < 4; ++i) down[i][j] = t[i];
          }
          for (int i = 0; i < 4; ++i) {
            float t[4];
            apply_a(t, down[i][0], down[i][1]);
            for (int j = 0; j < 4; ++j) out[(i * 4 + j) * stride + s] = t[j];
          }
        }
      }
  }
}

}  // namespace bnorm::kernels

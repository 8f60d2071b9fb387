#include "bnorm/kernels/conv.hpp"

#include <algorithm>
#include <limits>

namespace bnorm::kernels {

void im2col(float* col, std::int64_t ld, const float* x, const ConvGeometry& g) {
  const std::int64_t OH = g.out_h(), OW = g.out_w();
  for (std::int64_t c = 0; c < g.C; ++c)
    for (std::int64_t i = 0; i < g.KH; ++i)
      for (std::int64_t j = 0; j < g.KW; ++j) {
        float* row = col + ((c * g.KH + i) * g.KW + j) * ld;
        const float* plane = x + c * g.H * g.W;
        for (std::int64_t oh = 0; oh < OH; ++oh) {
          const std::int64_t h = oh * g.stride - g.pad + i;
          float* out = row + oh * OW;
          if (h < 0 || h >= g.H) {
            std::fill(out, out + OW, 0.0f);
            continue;
          }
          const float* in = plane + h * g.W;
          for (std::int64_t ow = 0; ow < OW; ++ow) {
            const std::int64_t w = ow * g.stride - g.pad + j;
            out[ow] = (w >= 0 && w < g.W) ? in[w] : 0.0f;
          }
        }
      }
}

void col2im_add(float* dx, const float* col, std::int64_t ld, const ConvGeometry& g) {
  const std::int64_t OH = g.out_h(), OW = g.out_w();
  for (std::int64_t c = 0; c < g.C; ++c)
    for (std::int64_t i = 0; i < g.KH; ++i)
      for (std::int64_t j = 0; j < g.KW; ++j) {
        const float* row = col + ((c * g.KH + i) * g.KW + j) * ld;
        float* plane = dx + c * g.H * g.W;
        for (std::int64_t oh = 0; oh < OH; ++oh) {
          const std::int64_t h = oh * g.stride - g.pad + i;
          if (h < 0 || h >= g.H) continue;
          float* out = plane + h * g.W;
          const float* in = row + oh * OW;
          for (std::int64_t ow = 0; ow < OW; ++ow) {
            const std::int64_t w = ow * g.stride - g.pad + j;
            if (w >= 0 && w < g.W) out[w] += in[ow];
          }
        }
      }
}

void maxpool_forward(float* y, std::int32_t* argmax, const float* x, std::int64_t C, std::int64_t H,
                     std::int64_t W, std::int64_t K, std::int64_t stride) {
  const std::int64_t OH = (H - K) / stride + 1, OW = (W - K) / stride + 1;
  for (std::int64_t c = 0; c < C; ++c) {
    const float* plane = x + c * H * W;
    for (std::int64_t oh = 0; oh < OH; ++oh)
      for (std::int64_t ow = 0; ow < OW; ++ow) {
        float best = -std::numeric_limits<float>::infinity();
        std::int64_t best_at = (oh * stride) * W + ow * stride;
        for (std::int64_t i = 0; i < K; ++i)
          for (std::int64_t j = 0; j < K; ++j) {
            const std::int64_t at = (oh * stride + i) * W + ow * stride + j;
            // '>' keeps the first maximum, as PyTorch does; a NaN wins so it propagates.
            if (plane[at] > best || plane[at] != plane[at]) {
              best = plane[at];
              best_at = at;
            }
          }
        const std::int64_t o = (c * OH + oh) * OW + ow;
        y[o] = best;
        argmax[o] = static_cast<std::int32_t>(best_at);
      }
  }
}

void maxpool_backward(float* dx, const float* dy, const std::int32_t* argmax, std::int64_t C, std::int64_t H,
                      std::int64_t W, std::int64_t K, std::int64_t stride) {
  const std::int64_t OH = (H - K) / stride + 1, OW = (W - K) / stride + 1;
  std::fill(dx, dx + C * H * W, 0.0f);
  for (std::int64_t c = 0; c < C; ++c)
    for (std::int64_t o = 0; o < OH * OW; ++o) dx[c * H * W + argmax[c * OH * OW + o]] += dy[c * OH * OW + o];
}

void avgpool_forward(float* y, const float* x, std::int64_t C, std::int64_t H, std::int64_t W, std::int64_t K,
                     std::int64_t stride) {
  const std::int64_t OH = (H - K) / stride + 1, OW = (W - K) / stride + 1;
  const float inv = 1.0f / static_cast<float>(K * K);
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
  std::fill(dx, dx + C * H * W, 0.0f);
  for (std::int64_t c = 0; c < C; ++c) {
    float* plane = dx + c * H * W;
    for (std::int64_t oh = 0; oh < OH; ++oh)
      for (std::int64_t ow = 0; ow < OW; ++ow) {
        const float g = dy[(c * OH + oh) * OW + ow] * inv;
        for (std::int64_t i = 0; i < K; ++i)
          for (std::int64_t j = 0; j < K; ++j) plane[(oh * stride + i) * W + ow * stride + j] += g;
      }
  }
}

}  // namespace bnorm::kernels

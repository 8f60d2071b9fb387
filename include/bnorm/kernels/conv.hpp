#pragma once
// Convolution and pooling kernels over NCHW data, a whole batch per call,
// parallel over its planes. Raw pointers and sizes, no state.
//
// Legend: C channels in, H×W input plane, KH×KW kernel, stride s, zero padding p,
//   OH = (H + 2p − KH)/s + 1,  OW = (W + 2p − KW)/s + 1,  P = OH·OW output positions.
#include <cstdint>

namespace bnorm::kernels {

struct ConvGeometry {
  std::int64_t C, H, W, KH, KW, stride, pad;
  std::int64_t out_h() const { return (H + 2 * pad - KH) / stride + 1; }
  std::int64_t out_w() const { return (W + 2 * pad - KW) / stride + 1; }
  std::int64_t patch() const { return C * KH * KW; }  // rows of the column matrix
};

// col (N, C·KH·KW, P) for a batch x (N, C, H, W): column p of example n's
// matrix holds the input patch that output position p sees, zeros where the
// patch overlaps the padding. Then example n's convolution is one GEMM,
// y_n (O, P) = weight (O, C·KH·KW) · col_n, written straight into NCHW.
// Assigns col.
void im2col(float* col, const float* x, std::int64_t N, const ConvGeometry& g);
// The adjoint of im2col: dx (N, C, H, W) = the sum, over every column entry,
// into the input pixel it came from. Assigns dx.
void col2im(float* dx, const float* col, std::int64_t N, const ConvGeometry& g);

// Max pooling over K×K windows with stride s, no padding (PyTorch's floor mode).
// x (C, H, W) → y (C, OH, OW), where C counts planes (a batch's N·C);
// argmax (C, OH, OW) records the winning input index within the plane for the
// backward pass. Assigns y and argmax.
void maxpool_forward(float* y, std::int32_t* argmax, const float* x, std::int64_t C, std::int64_t H, std::int64_t W,
                     std::int64_t K, std::int64_t stride);
// dx (C, H, W) is assigned: zeros, plus each dy routed to its window's argmax.
void maxpool_backward(float* dx, const float* dy, const std::int32_t* argmax, std::int64_t C, std::int64_t H,
                      std::int64_t W, std::int64_t K, std::int64_t stride);

// Average pooling over K×K windows with stride s, no padding. Assigns y / dx.
void avgpool_forward(float* y, const float* x, std::int64_t C, std::int64_t H, std::int64_t W, std::int64_t K,
                     std::int64_t stride);
void avgpool_backward(float* dx, const float* dy, std::int64_t C, std::int64_t H, std::int64_t W, std::int64_t K,
                      std::int64_t stride);

}  // namespace bnorm::kernels

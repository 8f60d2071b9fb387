#pragma once
#include <memory>

#include "bnorm/kernels/conv.hpp"
#include "bnorm/nn/layer.hpp"

namespace bnorm {
namespace kernels {
class OnednnConv;  // src/kernels/conv_onednn.hpp, in builds with BNORM_CONV=onednn
}

// 2-D convolution over NCHW input: y (N, O, OH, OW) = weight ⋆ x + bias, weight
// (O, C, KH, KW) as in PyTorch, square stride and zero padding. Each example
// is one GEMM against its im2col matrix, examples split across threads; 3x3
// kernels with stride 1 over 8 channels or more take Winograd's F(2x2, 3x3)
// instead (kernels/winograd.hpp), 16 products per group of examples; or,
// built with BNORM_CONV=onednn, oneDNN's convolution primitives run the
// three passes (docs/convolutions.md). The
// bias is optional for the same reason as Linear's: a batch norm that follows
// would cancel it.
class Conv2d final : public Layer {
 public:
  // How the three passes run: im2col + GEMM (every build), Winograd's
  // F(2x2, 3x3) (every build, 3x3 kernels with stride 1 only; the default
  // for those with 8 input channels or more), or oneDNN's convolution
  // primitives (builds with BNORM_CONV=onednn, where it is the default for
  // inputs of 8 channels or more). All give the same results up to float
  // rounding: the order of sums, and for Winograd its transforms.
  enum class ConvPath { im2col, winograd, onednn };

  Conv2d(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel_h, std::int64_t kernel_w,
         std::int64_t stride, std::int64_t padding, bool bias);
  ~Conv2d() override;

  std::string type() const override { return "conv2d"; }
  nlohmann::json config() const override;
  Shape output_shape(const Shape& input) const override;  // (C, H, W) → (O, OH, OW)
  std::vector<ParamSlot> param_slots() const override;
  void bind_parameters(std::span<float> params, std::span<float> grads) override;
  // Kaiming/He normal, fan-in = C·KH·KW; bias 0.
  void init_parameters(Rng& rng) override;
  std::vector<StateEntry> state() override;

  void forward(Tensor& y, const Tensor& x, Mode mode) override;
  void backward(Tensor* dx, const Tensor& dy) override;

  // Whether this build has the oneDNN path.
  static bool onednn_built();
  // Throws Error for ConvPath::onednn in a build without it, and for
  // ConvPath::winograd on a kernel other than 3x3 with stride 1. For tests
  // and benchmarks that compare the paths in one process.
  void set_path(ConvPath path);

 private:
  kernels::ConvGeometry geometry(const Shape& x_shape) const;
  void forward_im2col(Tensor& y, const Tensor& x, const kernels::ConvGeometry& g);
  void backward_im2col(Tensor* dx, const Tensor& dy, const kernels::ConvGeometry& g);
  void forward_winograd(Tensor& y, const Tensor& x, const kernels::ConvGeometry& g);
  void backward_winograd(Tensor* dx, const Tensor& dy, const kernels::ConvGeometry& g);
  void forward_onednn(Tensor& y, const Tensor& x, const kernels::ConvGeometry& g);
  void backward_onednn(Tensor* dx, const Tensor& dy);

  std::int64_t C_, O_, KH_, KW_, stride_, pad_;
  bool has_bias_;
  ConvPath path_;
  float* weight_ = nullptr;             // (O, C, KH, KW)
  float* bias_ = nullptr;               // (O) or nullptr
  float* dweight_ = nullptr;            // (O, C, KH, KW)
  float* dbias_ = nullptr;              // (O) or nullptr
  Shape x_shape_;                       // of the last forward
  AlignedVector<float> cols_;           // (N, C·KH·KW, P): the batch's im2col, kept for the weight gradient
  AlignedVector<float> dcol_;           // (threads, C·KH·KW, P): one example's input-gradient columns per thread
  AlignedVector<float> dweight_parts_;  // (threads, O·C·KH·KW): each thread's share of the weight gradient
  // The Winograd path (kernels/winograd.hpp), T tiles in the batch: the
  // transformed filters and input, kept for the backward, the products (the
  // output gradient's transform in the backward), and the gradients of the
  // transformed filters and input.
  AlignedVector<float> wino_u_;   // (16, O, C)
  AlignedVector<float> wino_v_;   // (16, C, T)
  AlignedVector<float> wino_m_;   // (16, O, T)
  AlignedVector<float> wino_du_;  // (16, O, C)
  AlignedVector<float> wino_dv_;  // (16, C, T)
  // The oneDNN path: its primitives for the last batch size, and the input
  // of the last forward (which the caller keeps alive until backward). Only
  // a build with BNORM_CONV_WITH_ONEDNN uses x_; the header stays the same
  // for every build, so clang is told the field may go unused.
  std::unique_ptr<kernels::OnednnConv> onednn_;
  [[maybe_unused]] const float* x_ = nullptr;  // (N, C, H, W)
};

}  // namespace bnorm

#pragma once
#include "bnorm/kernels/conv.hpp"
#include "bnorm/nn/layer.hpp"

namespace bnorm {

// 2-D convolution over NCHW input: y (N, O, OH, OW) = weight ⋆ x + bias, weight
// (O, C, KH, KW) as in PyTorch, square stride and zero padding. Each example
// is one GEMM against its im2col matrix, examples split across threads. The
// bias is optional for the same reason as Linear's: a batch norm that follows
// would cancel it.
class Conv2d final : public Layer {
 public:
  Conv2d(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel_h, std::int64_t kernel_w,
         std::int64_t stride, std::int64_t padding, bool bias);

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

 private:
  kernels::ConvGeometry geometry(const Shape& x_shape) const;

  std::int64_t C_, O_, KH_, KW_, stride_, pad_;
  bool has_bias_;
  float* weight_ = nullptr;             // (O, C, KH, KW)
  float* bias_ = nullptr;               // (O) or nullptr
  float* dweight_ = nullptr;            // (O, C, KH, KW)
  float* dbias_ = nullptr;              // (O) or nullptr
  Shape x_shape_;                       // of the last forward
  AlignedVector<float> cols_;           // (N, C·KH·KW, P): the batch's im2col, kept for the weight gradient
  AlignedVector<float> dcol_;           // (threads, C·KH·KW, P): one example's input-gradient columns per thread
  AlignedVector<float> dweight_parts_;  // (threads, O·C·KH·KW): each thread's share of the weight gradient
};

}  // namespace bnorm

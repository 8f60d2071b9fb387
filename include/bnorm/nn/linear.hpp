#pragma once
#include "bnorm/nn/layer.hpp"

namespace bnorm {

// y (N, out) = x (N, in) · weight^T + bias. weight is (out, in) as in PyTorch.
// The bias is optional: before a batch norm it would be cancelled by the mean
// subtraction, and beta takes its place.
class Linear final : public Layer {
 public:
  Linear(std::int64_t in_features, std::int64_t out_features, bool bias);

  std::string type() const override { return "linear"; }
  nlohmann::json config() const override;
  Shape output_shape(const Shape& input) const override;
  std::vector<ParamSlot> param_slots() const override;
  void bind_parameters(std::span<float> params, std::span<float> grads) override;
  // Kaiming/He normal: std = sqrt(2 / in_features) (gain of ReLU, fan-in mode); bias 0.
  void init_parameters(Rng& rng) override;
  std::vector<StateEntry> state() override;

  void forward(Tensor& y, const Tensor& x, Mode mode) override;
  void backward(Tensor* dx, const Tensor& dy) override;

  std::int64_t in_features() const { return in_; }
  std::int64_t out_features() const { return out_; }
  bool has_bias() const { return has_bias_; }

 private:
  std::int64_t in_, out_;
  bool has_bias_;
  float* weight_ = nullptr;    // (out, in)
  float* bias_ = nullptr;      // (out) or nullptr
  float* dweight_ = nullptr;   // (out, in)
  float* dbias_ = nullptr;     // (out) or nullptr
  const Tensor* x_ = nullptr;  // cached input (N, in)
};

}  // namespace bnorm

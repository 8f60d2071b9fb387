#pragma once
#include "bnorm/nn/layer.hpp"

namespace bnorm {

enum class ActivationKind { relu, tanh, sigmoid };

std::string activation_name(ActivationKind kind);          // "relu"
ActivationKind parse_activation(const std::string& name);  // throws Error

// An element-wise nonlinearity. It caches its output, from which each of the
// three derivatives follows.
class Activation final : public Layer {
 public:
  explicit Activation(ActivationKind kind) : kind_(kind) {}

  std::string type() const override { return activation_name(kind_); }
  nlohmann::json config() const override;
  Shape output_shape(const Shape& input) const override { return input; }

  void forward(Tensor& y, const Tensor& x, Mode mode) override;
  void backward(Tensor* dx, const Tensor& dy) override;

 private:
  ActivationKind kind_;
  const Tensor* y_ = nullptr;  // cached output
};

}  // namespace bnorm

#include "bnorm/nn/activation.hpp"

#include "bnorm/error.hpp"
#include "bnorm/kernels/activation.hpp"

namespace bnorm {

std::string activation_name(ActivationKind kind) {
  switch (kind) {
    case ActivationKind::relu:
      return "relu";
    case ActivationKind::tanh:
      return "tanh";
    case ActivationKind::sigmoid:
      return "sigmoid";
  }
  return "?";
}

ActivationKind parse_activation(const std::string& name) {
  if (name == "relu") return ActivationKind::relu;
  if (name == "tanh") return ActivationKind::tanh;
  if (name == "sigmoid") return ActivationKind::sigmoid;
  throw Error("unknown activation '" + name + "' (expected relu, tanh or sigmoid)");
}

nlohmann::json Activation::config() const { return {{"type", activation_name(kind_)}}; }

void Activation::forward(Tensor& y, const Tensor& x, Mode /*mode*/) {
  y.resize(x.shape());
  switch (kind_) {
    case ActivationKind::relu:
      kernels::relu_forward(y.data(), x.data(), x.size());
      break;
    case ActivationKind::tanh:
      kernels::tanh_forward(y.data(), x.data(), x.size());
      break;
    case ActivationKind::sigmoid:
      kernels::sigmoid_forward(y.data(), x.data(), x.size());
      break;
  }
  y_ = &y;
}

void Activation::backward(Tensor* dx, const Tensor& dy) {
  if (!y_) throw Error(type() + ": backward called before forward");
  if (dy.shape() != y_->shape())
    throw Error(type() + ": gradient " + shape_str(dy.shape()) + " does not match output " + shape_str(y_->shape()));
  if (!dx) return;
  dx->resize(dy.shape());
  switch (kind_) {
    case ActivationKind::relu:
      kernels::relu_backward(dx->data(), dy.data(), y_->data(), dy.size());
      break;
    case ActivationKind::tanh:
      kernels::tanh_backward(dx->data(), dy.data(), y_->data(), dy.size());
      break;
    case ActivationKind::sigmoid:
      kernels::sigmoid_backward(dx->data(), dy.data(), y_->data(), dy.size());
      break;
  }
}

}  // namespace bnorm

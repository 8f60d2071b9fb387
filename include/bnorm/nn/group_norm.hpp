#pragma once
// GroupNorm (Wu & He, 2018) and, in layer_norm.hpp, LayerNorm (Ba, Kiros &
// Hinton, 2016): normalization over parts of one example rather than over the
// batch, so the result does not depend on the batch size and train and eval
// mode compute the same thing (no running statistics).
#include "bnorm/nn/layer.hpp"

namespace bnorm {

// What GroupNorm and LayerNorm share: each example is cut into G groups of m
// contiguous values, each group normalized by its own mean and variance, then
// scaled and shifted by learned parameters (PyTorch's "weight" and "bias",
// init 1 and 0), each covering R consecutive values (kernels/group_norm.hpp).
class GroupwiseNorm : public Layer {
 public:
  std::vector<ParamSlot> param_slots() const override;
  void bind_parameters(std::span<float> params, std::span<float> grads) override;
  void init_parameters(Rng& rng) override;  // weight = 1, bias = 0 (never random)
  std::vector<StateEntry> state() override;

  void forward(Tensor& y, const Tensor& x, Mode mode) override;
  void backward(Tensor* dx, const Tensor& dy) override;

  float eps() const { return eps_; }
  bool affine() const { return affine_; }

 protected:
  GroupwiseNorm(const char* name, Shape param_shape, float eps, bool affine);  // name: for errors
  struct Grouping {
    std::int64_t N, G, m, R;
  };
  // How an input (N, ...) is grouped; throws Error on a shape the layer does not take.
  virtual Grouping grouping(const Shape& input) const = 0;

 private:
  Shape param_shape_;  // the shape of weight and bias
  float eps_;
  bool affine_;
  float* gamma_ = nullptr;   // param_shape_, or nullptr without affine
  float* beta_ = nullptr;    // param_shape_
  float* dgamma_ = nullptr;  // param_shape_
  float* dbeta_ = nullptr;   // param_shape_

  // Saved by the training forward for the backward: x_hat is recomputed from these.
  const Tensor* x_ = nullptr;   // (N, G, m)
  std::vector<float> mean_;     // (N, G), capacity kept between steps
  std::vector<float> inv_std_;  // (N, G)
  bool have_train_cache_ = false;
};

// GroupNorm(num_groups, num_channels, eps, affine) as in PyTorch: an input
// (N, C) or (N, C, H, W) has its C channels split into num_groups groups of
// C/num_groups consecutive channels; each example's group (its channels × H×W
// values) is normalized on its own; weight and bias are per channel (C).
// num_groups = 1 normalizes each example as a whole (with per-channel affine,
// unlike LayerNorm); num_groups = C normalizes each channel of each example
// (instance norm).
class GroupNorm final : public GroupwiseNorm {
 public:
  GroupNorm(std::int64_t num_groups, std::int64_t num_channels, float eps = 1e-5f, bool affine = true);

  std::string type() const override { return "groupnorm"; }
  nlohmann::json config() const override;
  Shape output_shape(const Shape& input) const override;

  std::int64_t num_groups() const { return G_; }
  std::int64_t num_channels() const { return C_; }

 private:
  std::int64_t G_, C_;
  Grouping grouping(const Shape& input) const override;
};

}  // namespace bnorm

// What GroupNorm means (grouping, validation, parameters); the arithmetic is
// in kernels/group_norm.cpp. GroupwiseNorm, shared with LayerNorm, holds the
// forward and backward.
#include "bnorm/nn/group_norm.hpp"

#include <algorithm>
#include <cmath>

#include "bnorm/error.hpp"
#include "bnorm/kernels/group_norm.hpp"

namespace bnorm {

GroupwiseNorm::GroupwiseNorm(const char* name, Shape param_shape, float eps, bool affine)
    : param_shape_(std::move(param_shape)), eps_(eps), affine_(affine) {
  if (!(eps_ > 0.0f) || !std::isfinite(eps_)) throw Error(std::string(name) + ": eps must be a positive finite number");
}

std::vector<ParamSlot> GroupwiseNorm::param_slots() const {
  if (!affine_) return {};
  return {{"weight", param_shape_}, {"bias", param_shape_}};  // PyTorch's names for gamma and beta
}

void GroupwiseNorm::bind_parameters(std::span<float> params, std::span<float> grads) {
  if (!affine_) return;
  const std::int64_t P = numel(param_shape_);
  gamma_ = params.data();
  beta_ = params.data() + P;
  dgamma_ = grads.data();
  dbeta_ = grads.data() + P;
}

void GroupwiseNorm::init_parameters(Rng& /*rng*/) {
  if (!affine_) return;
  const std::int64_t P = numel(param_shape_);
  std::fill(gamma_, gamma_ + P, 1.0f);
  std::fill(beta_, beta_ + P, 0.0f);
}

std::vector<StateEntry> GroupwiseNorm::state() {
  if (!affine_) return {};
  return {{"weight", param_shape_, StateEntry::DType::f32, gamma_},
          {"bias", param_shape_, StateEntry::DType::f32, beta_}};
}

void GroupwiseNorm::forward(Tensor& y, const Tensor& x, Mode mode) {
  const Grouping g = grouping(x.shape());
  y.resize(x.shape());
  const auto rows = static_cast<std::size_t>(g.N * g.G);
  mean_.resize(rows);  // grows once, then reused: a training step allocates nothing
  inv_std_.resize(rows);
  kernels::group_norm_forward(y.data(), mean_.data(), inv_std_.data(), x.data(), gamma_, beta_, eps_, g.N, g.G, g.m,
                              g.R);
  // Every mode normalizes the same way; only training keeps what backward needs.
  have_train_cache_ = mode == Mode::train;
  x_ = have_train_cache_ ? &x : nullptr;
}

void GroupwiseNorm::backward(Tensor* dx, const Tensor& dy) {
  if (!have_train_cache_) throw Error(type() + ": backward needs a preceding forward in training mode");
  if (dy.shape() != x_->shape())
    throw Error(type() + ": gradient " + shape_str(dy.shape()) + " does not match input " + shape_str(x_->shape()));
  const Grouping g = grouping(x_->shape());
  if (dx) dx->resize(x_->shape());
  kernels::group_norm_backward(dx ? dx->data() : nullptr, dgamma_, dbeta_, dy.data(), x_->data(), mean_.data(),
                               inv_std_.data(), gamma_, g.N, g.G, g.m, g.R);
}

GroupNorm::GroupNorm(std::int64_t num_groups, std::int64_t num_channels, float eps, bool affine)
    : GroupwiseNorm("groupnorm", {num_channels}, eps, affine), G_(num_groups), C_(num_channels) {
  if (C_ <= 0 || C_ > (1 << 24)) throw Error("groupnorm: num_channels must be in 1..16777216");
  if (G_ <= 0 || G_ > C_ || C_ % G_ != 0)
    throw Error("groupnorm: num_groups must divide num_channels (" + std::to_string(C_) + "), got " +
                std::to_string(G_));
}

nlohmann::json GroupNorm::config() const {
  return {{"type", "groupnorm"}, {"num_groups", G_}, {"num_channels", C_}, {"eps", eps()}, {"affine", affine()}};
}

Shape GroupNorm::output_shape(const Shape& input) const {
  if (input.empty() || input[0] != C_ || (input.size() != 1 && input.size() != 3))
    throw Error("groupnorm: expects " + std::to_string(C_) + " channels per example, got " + shape_str(input));
  return input;
}

GroupwiseNorm::Grouping GroupNorm::grouping(const Shape& x) const {
  if ((x.size() != 2 && x.size() != 4) || x[1] != C_)
    throw Error("groupnorm: expects input (N, " + std::to_string(C_) + ") or (N, " + std::to_string(C_) +
                ", H, W), got " + shape_str(x));
  const std::int64_t S = x.size() == 4 ? x[2] * x[3] : 1;
  return {x[0], G_, C_ / G_ * S, S};
}

}  // namespace bnorm

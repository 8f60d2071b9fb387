#pragma once
#include "bnorm/nn/group_norm.hpp"

namespace bnorm {

// LayerNorm(normalized_shape, eps, elementwise_affine) as in PyTorch, with
// normalized_shape the whole example shape ((F) or (C, H, W)): each example is
// normalized by the mean and variance of all its values, and weight and bias
// have one entry per value (normalized_shape). These are GroupNorm's
// statistics with one group per example; only the affine part differs.
class LayerNorm final : public GroupwiseNorm {
 public:
  explicit LayerNorm(Shape normalized_shape, float eps = 1e-5f, bool elementwise_affine = true);

  std::string type() const override { return "layernorm"; }
  nlohmann::json config() const override;
  Shape output_shape(const Shape& input) const override;

  const Shape& normalized_shape() const { return shape_; }

 private:
  Shape shape_;
  Grouping grouping(const Shape& input) const override;
};

}  // namespace bnorm

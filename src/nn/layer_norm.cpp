// What LayerNorm means (its shape, validation); the forward and backward are
// GroupwiseNorm's (nn/group_norm.cpp) with one group per example.
#include "bnorm/nn/layer_norm.hpp"

#include <algorithm>

#include "bnorm/error.hpp"

namespace bnorm {

LayerNorm::LayerNorm(Shape normalized_shape, float eps, bool elementwise_affine)
    : GroupwiseNorm("layernorm", normalized_shape, eps, elementwise_affine), shape_(std::move(normalized_shape)) {
  if (shape_.size() != 1 && shape_.size() != 3)
    throw Error("layernorm: normalized_shape must be an example shape (F) or (C, H, W), got " + shape_str(shape_));
  std::int64_t values = 1;
  for (std::int64_t d : shape_) {
    if (d < 1 || d > (1 << 24)) throw Error("layernorm: normalized_shape " + shape_str(shape_) + " has a bad size");
    values *= d;
    if (values > (1 << 24))
      throw Error("layernorm: normalized_shape " + shape_str(shape_) + " exceeds 16777216 values");
  }
}

nlohmann::json LayerNorm::config() const {
  return {{"type", "layernorm"}, {"normalized_shape", shape_}, {"eps", eps()}, {"elementwise_affine", affine()}};
}

Shape LayerNorm::output_shape(const Shape& input) const {
  if (input != shape_)
    throw Error("layernorm: expects examples of shape " + shape_str(shape_) + ", got " + shape_str(input));
  return input;
}

GroupwiseNorm::Grouping LayerNorm::grouping(const Shape& x) const {
  if (x.size() != shape_.size() + 1 || !std::equal(shape_.begin(), shape_.end(), x.begin() + 1))
    throw Error("layernorm: expects input (N, " + shape_str(shape_).substr(1) + ", got " + shape_str(x));
  return {x[0], 1, numel(shape_), 1};
}

}  // namespace bnorm

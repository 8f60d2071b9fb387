#include "bnorm/tensor.hpp"

#include <limits>

#include "bnorm/error.hpp"

namespace bnorm {

std::int64_t numel(const Shape& shape) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) {
    if (d < 0) throw Error("negative dimension in shape " + shape_str(shape));
    if (d != 0 && n > std::numeric_limits<std::int64_t>::max() / d)
      throw Error("shape " + shape_str(shape) + " has too many elements");
    n *= d;
  }
  return n;
}

std::string shape_str(const Shape& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + ")";
}

Tensor::Tensor(Shape shape) : shape_(std::move(shape)), data_(static_cast<std::size_t>(numel(shape_)), 0.0f) {}

void Tensor::resize(const Shape& shape) {
  const auto n = static_cast<std::size_t>(numel(shape));
  shape_ = shape;
  data_.resize(n);
}

}  // namespace bnorm

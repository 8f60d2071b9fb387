#include "bnorm/tensor.hpp"

#include <algorithm>
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
  shape_ = shape;  // copy-assignment reuses shape_'s capacity
  data_.resize(n);
}

void Tensor::resize(std::initializer_list<std::int64_t> dims) {
  shape_.assign(dims);
  data_.resize(static_cast<std::size_t>(numel(shape_)));
}

void Tensor::resize_batch(std::int64_t n, const Shape& example) {
  shape_.resize(example.size() + 1);
  shape_[0] = n;
  std::copy(example.begin(), example.end(), shape_.begin() + 1);
  data_.resize(static_cast<std::size_t>(numel(shape_)));
}

}  // namespace bnorm

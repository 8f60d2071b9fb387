#pragma once
// A minimal tensor: contiguous, row-major float32 with a shape. Storage is
// 64-byte aligned so vector loads never straddle a cache line at the start of
// a row, and resize() keeps its capacity so the training loop does not
// allocate once shapes have settled.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <new>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

namespace bnorm {

using Shape = std::vector<std::int64_t>;

std::int64_t numel(const Shape& shape);
std::string shape_str(const Shape& shape);  // "(64, 256)"

template <class T, std::size_t Alignment = 64>
struct AlignedAllocator {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = AlignedAllocator<U, Alignment>;
  };
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U, Alignment>&) {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(Alignment)));
  }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t(Alignment)); }
  template <class U>
  bool operator==(const AlignedAllocator<U, Alignment>&) const { return true; }
};

template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(Shape shape);  // zero-filled

  // Changes the shape; contents are unspecified afterwards. Never shrinks
  // capacity, and allocates nothing once a tensor has held this many values
  // and dimensions: the training loop resizes every step.
  void resize(const Shape& shape);
  void resize(std::initializer_list<std::int64_t> dims);
  // (n, example...): a batch of n examples of the given shape.
  void resize_batch(std::int64_t n, const Shape& example);

  const Shape& shape() const { return shape_; }
  // shape() == dims, without building a Shape (which would allocate).
  bool has_shape(std::initializer_list<std::int64_t> dims) const {
    return std::equal(shape_.begin(), shape_.end(), dims.begin(), dims.end());
  }
  std::int64_t dim(std::size_t i) const { return shape_.at(i); }
  std::size_t rank() const { return shape_.size(); }
  std::int64_t size() const { return static_cast<std::int64_t>(data_.size()); }

  float* data() { return data_.data(); }
  const float* data() const { return data_.data(); }
  std::span<float> span() { return {data_.data(), data_.size()}; }
  std::span<const float> span() const { return {data_.data(), data_.size()}; }
  float& operator[](std::int64_t i) { return data_[static_cast<std::size_t>(i)]; }
  float operator[](std::int64_t i) const { return data_[static_cast<std::size_t>(i)]; }

 private:
  Shape shape_;
  AlignedVector<float> data_;
};

}  // namespace bnorm

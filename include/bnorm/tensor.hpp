#pragma once
// A minimal tensor: contiguous, row-major float32 with a shape. Storage is
// 64-byte aligned so vector loads never straddle a cache line at the start of
// a row, and resize() keeps its capacity so the training loop does not
// allocate once shapes have settled.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <new>
#include <span>
#include <string>
#include <vector>

namespace bnorm {

using Shape = std::vector<std::int64_t>;

std::int64_t numel(const Shape& shape);
std::string shape_str(const Shape& shape);  // "(64, 256)"

// Raw storage for AlignedAllocator. A buffer of kHugePageMinBytes or more is
// mapped on its own, the mapping on a 2 MiB boundary, with transparent huge
// pages requested (Linux), and the data a few lines into it, on a different
// line below 4 KiB for each buffer (storage.cpp says why): batch norm walks a
// channel group across every example,
// touching more 4 KiB pages than the TLB holds; its forward+backward took
// about 5% less time on huge pages (three NCHW shapes of 25-51 MB). Smaller
// buffers, other systems and sanitizer builds (whose checks need the heap)
// use operator new.
inline constexpr std::size_t kHugePageMinBytes = std::size_t{4} << 20;
void* allocate_storage(std::size_t bytes, std::size_t alignment);
void deallocate_storage(void* p, std::size_t bytes, std::size_t alignment) noexcept;
// How many buffers allocate_storage has mapped on its own so far: these do not
// go through operator new, so a test counting allocations adds them.
std::int64_t mapped_storage_count();
// Whether this build maps buffers of kHugePageMinBytes and more (false on
// non-Linux systems and in sanitizer builds).
bool large_storage_is_mapped();

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
    if (n > std::size_t(-1) / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(allocate_storage(n * sizeof(T), Alignment));
  }
  void deallocate(T* p, std::size_t n) noexcept { deallocate_storage(p, n * sizeof(T), Alignment); }
  template <class U>
  bool operator==(const AlignedAllocator<U, Alignment>&) const {
    return true;
  }
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

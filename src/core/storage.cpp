#include <atomic>
#include <cstdint>
#include <new>

#include "bnorm/tensor.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define BNORM_HEAP_ONLY 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define BNORM_HEAP_ONLY 1
#endif
#endif

namespace bnorm {

namespace {
std::atomic<std::int64_t> g_mapped{0};
}  // namespace

std::int64_t mapped_storage_count() { return g_mapped.load(std::memory_order_relaxed); }

#if defined(__linux__) && defined(MADV_HUGEPAGE) && !defined(BNORM_HEAP_ONLY)
namespace {

constexpr std::uintptr_t kHugePage = std::uintptr_t{2} << 20;

std::uintptr_t round_up(std::uintptr_t v, std::uintptr_t to) { return (v + to - 1) / to * to; }

// Whole base pages: the mapping ends where the data does, so the last,
// partial huge page stays in base pages and costs no extra memory.
std::size_t mapped_length(std::size_t bytes) {
  static const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  return round_up(bytes, page);
}

// The one rule both ends follow: deallocate must free the way allocate took.
bool mapped(std::size_t bytes, std::size_t alignment) { return bytes >= kHugePageMinBytes && alignment <= kHugePage; }

}  // namespace

bool large_storage_is_mapped() { return true; }

void* allocate_storage(std::size_t bytes, std::size_t alignment) {
  if (!mapped(bytes, alignment)) return ::operator new(bytes, std::align_val_t(alignment));
  const std::size_t length = mapped_length(bytes);
  // One huge page more than needed, then the ends trimmed off, so that the
  // data starts on a huge-page boundary.
  void* raw = mmap(nullptr, length + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  g_mapped.fetch_add(1, std::memory_order_relaxed);
  const auto raw_begin = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t begin = round_up(raw_begin, kHugePage), end = begin + length;
  if (begin > raw_begin) munmap(raw, begin - raw_begin);
  if (raw_begin + length + kHugePage > end) munmap(reinterpret_cast<void*>(end), raw_begin + length + kHugePage - end);
  // Advice only: where huge pages are off or unavailable, base pages serve.
  madvise(reinterpret_cast<void*>(begin), length, MADV_HUGEPAGE);
  return reinterpret_cast<void*>(begin);
}

void deallocate_storage(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  if (!mapped(bytes, alignment)) {
    ::operator delete(p, std::align_val_t(alignment));
    return;
  }
  munmap(p, mapped_length(bytes));
}

#else

bool large_storage_is_mapped() { return false; }

void* allocate_storage(std::size_t bytes, std::size_t alignment) {
  return ::operator new(bytes, std::align_val_t(alignment));
}

void deallocate_storage(void* p, std::size_t, std::size_t alignment) noexcept {
  ::operator delete(p, std::align_val_t(alignment));
}

#endif

}  // namespace bnorm

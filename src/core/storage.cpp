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

// Where in its first 4 KiB a mapped buffer's data starts: a different line
// for each buffer, in turn. Started on the huge-page boundary itself, every
// large tensor had the same address bits below 4 KiB as every other at the
// same index, so a loop reading x[i] while writing y[i] (or dx[i] from dy[i]
// and x[i]) could have its loads wait on stores that match them in those
// bits (4 KiB aliasing; rows a multiple of 4 KiB apart make it every row's
// load): 256x4096 batch norm, rows 16 KiB apart, took
// 0.30 ms forward and 0.39 backward with its tensors so placed, 0.27 and
// 0.35 with theirs 1344 bytes apart (Zen 2 EPYC, 2026-12-05, 5 rounds).
// 1344 bytes is 21 lines: odd, so 64 buffers in a row start on 64 different
// lines.
std::size_t next_stagger(std::size_t alignment) {
  static std::atomic<std::size_t> count{0};
  constexpr std::size_t kStep = 1344, kPage = 4096;
  const std::size_t at = count.fetch_add(1, std::memory_order_relaxed) * kStep % kPage;
  return at - at % alignment;
}

}  // namespace

bool large_storage_is_mapped() { return true; }

void* allocate_storage(std::size_t bytes, std::size_t alignment) {
  if (!mapped(bytes, alignment)) return ::operator new(bytes, std::align_val_t(alignment));
  const std::size_t stagger = next_stagger(alignment);
  const std::size_t length = mapped_length(stagger + bytes);
  // One huge page more than needed, then the ends trimmed off, so that the
  // mapping starts on a huge-page boundary; the data, stagger bytes on.
  void* raw = mmap(nullptr, length + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  g_mapped.fetch_add(1, std::memory_order_relaxed);
  const auto raw_begin = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t begin = round_up(raw_begin, kHugePage), end = begin + length;
  if (begin > raw_begin) munmap(raw, begin - raw_begin);
  if (raw_begin + length + kHugePage > end) munmap(reinterpret_cast<void*>(end), raw_begin + length + kHugePage - end);
  // Advice only: where huge pages are off or unavailable, base pages serve.
  madvise(reinterpret_cast<void*>(begin), length, MADV_HUGEPAGE);
  return reinterpret_cast<void*>(begin + stagger);
}

void deallocate_storage(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  if (!mapped(bytes, alignment)) {
    ::operator delete(p, std::align_val_t(alignment));
    return;
  }
  // The mapping starts on the huge-page boundary below p (the stagger is
  // less than a base page).
  const auto data = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t begin = data / kHugePage * kHugePage;
  munmap(reinterpret_cast<void*>(begin), mapped_length(data - begin + bytes));
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

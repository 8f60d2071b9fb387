#pragma once
// Counts the allocations a program makes while g_counting is set, by defining
// malloc and its relatives in the program: they take the place of glibc's for
// every shared library too (OpenBLAS, oneDNN, libstdc++'s operator new).
// Include it in one source file of a benchmark program, never in a library.
#include <atomic>
#include <cstddef>

// glibc's own entry points, which the interposers below forward to.
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}

namespace {
std::atomic<long> g_allocs{0};
std::atomic<std::size_t> g_largest{0};
std::atomic<bool> g_counting{false};
void note(std::size_t bytes) {
  if (!g_counting.load(std::memory_order_relaxed)) return;
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  for (std::size_t seen = g_largest.load(); bytes > seen && !g_largest.compare_exchange_weak(seen, bytes);) {
  }
}
}  // namespace

extern "C" {
void* malloc(std::size_t n) {
  note(n);
  return __libc_malloc(n);
}
void* calloc(std::size_t n, std::size_t size) {
  note(n * size);
  return __libc_calloc(n, size);
}
void* realloc(void* p, std::size_t n) {
  note(n);
  return __libc_realloc(p, n);
}
void free(void* p) { __libc_free(p); }
int posix_memalign(void** out, std::size_t align, std::size_t n) {
  note(n);
  *out = __libc_memalign(align, n);
  return *out ? 0 : 12;  // ENOMEM
}
void* aligned_alloc(std::size_t align, std::size_t n) {
  note(n);
  return __libc_memalign(align, n);
}
void* memalign(std::size_t align, std::size_t n) {
  note(n);
  return __libc_memalign(align, n);
}
}

#pragma once
// OpenBLAS's choice of kernels, and a second choice by the CPU's features where
// its first one is its generic fallback.

namespace bnorm::kernels {

// Whether OpenBLAS should be asked to choose again: it fell back to its
// generic Prescott (SSE3) kernels although the CPU has AVX2, and the user has
// not named a kernel set in OPENBLAS_CORETYPE. A pure function, for the tests.
bool openblas_should_choose_by_features(const char* core, bool cpu_has_avx2, const char* coretype_env);

// Asks OpenBLAS to choose its kernels again by the CPU's feature flags (its
// rule when OPENBLAS_CORETYPE names no kernel set it knows). Returns whether
// it could: false where the library has no run-time kernel choice. Call it
// before any product is running.
bool openblas_choose_by_features();

// Once per process, before the first product: openblas_choose_by_features()
// if openblas_should_choose_by_features says so.
void openblas_pick_kernels_once();

}  // namespace bnorm::kernels

#pragma once
// The matrix products of the Linear and Conv2d layers, row-major, through
// oneDNN or OpenBLAS (BNORM_GEMM, chosen when bnorm is configured), either one
// single-threaded, called from bnorm's OpenMP threads. Each
// assigns C (beta = 0) unless its name ends in _add. Names say which operand
// is transposed.
#include <cstdint>

namespace bnorm::kernels {

// The threads divide C by W's rows in the forward and the weight gradient
// (src/kernels/gemm_slices.hpp says why), along C's longer side in the others.
// c (M, N) = a (M, K) · b (N, K)^T          forward: y = x · W^T
void gemm_abt(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K);
// c (M, N) += a (M, K) · b (N, K)^T         accumulates over examples: dW += dy_n · col_n^T
void gemm_abt_add(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K);
// c (M, N) = a (K, M)^T · b (K, N)          weight gradient: dW = dy^T · x
void gemm_atb(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K);
// c (M, N) = a (M, K) · b (K, N)            input gradient: dx = dy · W
void gemm_ab(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K);

// Adds bias (N) to every row of y (M, N).
void add_row_bias(float* y, const float* bias, std::int64_t M, std::int64_t N);
// db (N) = Σ over rows of dy (M, N). Assigns.
void sum_rows(float* db, const float* dy, std::int64_t M, std::int64_t N);

// Threads for bnorm's OpenMP loops, which also run the matrix products:
// each thread calls the single-threaded library on a slice of the output, so the
// process has one pool of threads, never two competing for the same cores.
void set_threads(int threads);

// The library the products go through in this build: "oneDNN" or "OpenBLAS".
const char* gemm_backend();

// The kernel set OpenBLAS runs on this CPU ("Zen", "Haswell", "Cooperlake",
// ...), after bnorm has had it choose by the CPU's features where it fell back
// to its generic kernels (src/kernels/openblas_kernels.cpp).
const char* openblas_core();

}  // namespace bnorm::kernels

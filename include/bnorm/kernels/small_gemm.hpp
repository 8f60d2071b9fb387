#pragma once
// Matrix products small enough that both operands stay in the L1 and L2
// caches, with no packing: Winograd's 16 products per group of examples
// (kernels/winograd.hpp), where the packing and the zeroing of C that a BLAS
// does before each product took longer than the multiplications (K = C or O,
// 32 or 64 in the default CNN). Row-major, single-threaded, called from
// bnorm's OpenMP threads. Rows of the operand read in vectors (the long one)
// are a multiple of kSmallGemmAlign floats.
#include <cstdint>

namespace bnorm::kernels {

constexpr std::int64_t kSmallGemmAlign = 8;

// c (M, N) = a (M, K) · b (K, N); N a multiple of kSmallGemmAlign. Assigns.
void small_gemm_ab(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K);
// c (M, N) = a (K, M)ᵀ · b (K, N); N a multiple of kSmallGemmAlign. Assigns.
void small_gemm_atb(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K);
// c (M, N) += a (M, K) · b (N, K)ᵀ; K a multiple of kSmallGemmAlign.
void small_gemm_abt_add(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K);

}  // namespace bnorm::kernels

#pragma once
// How one matrix product runs on bnorm's OpenMP threads, apart from the
// library that multiplies each slice. gemm.cpp uses it with the backend chosen
// at configure time; bench/gemm_pair.cpp uses it with both backends in one
// process, so the bench times exactly the calls the layers make.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(BNORM_GEMM_WITH_OPENBLAS)
#include <cblas.h>
#endif
#if defined(BNORM_GEMM_WITH_ONEDNN)
#include <oneapi/dnnl/dnnl.h>
#endif

namespace bnorm::kernels::gemm_detail {

// Below this many multiply-adds one thread is faster than waking the others.
constexpr std::int64_t kParallelMacs = std::int64_t{1} << 18;
// Slices are whole multiples of this many rows or columns, so every slice but
// the last keeps the library's full-width micro-kernels.
constexpr std::int64_t kSliceQuantum = 16;

// Which side of C a product's threads divide. A Linear layer's W (out, in)
// is read in the forward, y = x · Wᵀ, where W's rows are C's columns, and its
// gradient is written in the backward, dW = dyᵀ · x, where W's rows are C's
// rows. Dividing both by W's rows gives a thread the same rows of W in both,
// the rows its share of the optimizer's step updates
// (Optimizer::set_tensor_ends): on a VM whose two cores passed a cache line
// in about 250 ns, the default MLP lost 30-50 % with two threads against one
// while whole weight matrices moved between the cores at every step.
enum class Split { longer_side, rows, columns };

// C (M, N, row-major, ldc = N) = op(A) · op(B) + beta · C.
struct GemmCall {
  bool trans_a, trans_b;
  std::int64_t M, N, K;
  const float* a;
  std::int64_t lda;
  const float* b;
  std::int64_t ldb;
  float beta;
  float* c;

  const float* a_at(std::int64_t i0) const { return trans_a ? a + i0 : a + i0 * lda; }
  const float* b_at(std::int64_t j0) const { return trans_b ? b + j0 * ldb : b + j0; }

  // The side gemm.hpp's products ask for: W's rows in the forward (a · bᵀ,
  // assigning) and in the weight gradient (aᵀ · b); the longer side in the
  // others.
  Split split() const {
    if (!trans_a && trans_b && beta == 0.0f) return Split::columns;
    if (trans_a && !trans_b) return Split::rows;
    return Split::longer_side;
  }
};

// Splits C by rows or by columns (GemmCall::split), so each element is still
// one library sum over all of K: no partial products are merged across
// threads. (Where a slice ends, the library may take a narrower
// micro-kernel, so the last bits of a value can follow the slicing.)
// block(call, i0, i1, j0, j1) computes C[i0:i1, j0:j1] on the calling thread.
template <class Block>
void run_sliced(const GemmCall& g, Block&& block) {
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads <= 1 || g.M * g.N * g.K < kParallelMacs) {
    block(g, 0, g.M, 0, g.N);
    return;
  }
  const auto quanta_of = [](std::int64_t extent) { return (extent + kSliceQuantum - 1) / kSliceQuantum; };
  // The side asked for while it gives every thread a slice, else the longer.
  bool by_rows = g.M >= g.N;
  if (g.split() == Split::rows && quanta_of(g.M) >= threads) by_rows = true;
  if (g.split() == Split::columns && quanta_of(g.N) >= threads) by_rows = false;
  const std::int64_t extent = by_rows ? g.M : g.N;
  const std::int64_t quanta = quanta_of(extent);
  const std::int64_t parts = std::min<std::int64_t>(threads, quanta);
#pragma omp parallel for schedule(static) num_threads(static_cast <int>(parts))
  for (std::int64_t p = 0; p < parts; ++p) {
    const std::int64_t s0 = std::min(extent, quanta * p / parts * kSliceQuantum);
    const std::int64_t s1 = std::min(extent, quanta * (p + 1) / parts * kSliceQuantum);
    if (s0 == s1) continue;
    if (by_rows)
      block(g, s0, s1, 0, g.N);
    else
      block(g, 0, g.M, s0, s1);
  }
}

#if defined(BNORM_GEMM_WITH_OPENBLAS)
// OpenBLAS takes int sizes; layer sizes are far below 2^31, and the layer
// checks shapes before calling. The caller has set OpenBLAS to one thread.
// For beta = 0 the block is zeroed here and OpenBLAS told beta = 1: OpenBLAS
// itself zeroes C and then adds the product to it, the same arithmetic, but
// its zeroing loop (sgemm_beta) took about 70 us for a 256x784 C, a quarter
// of that product's time, where memset takes 13 (Zen 2 EPYC, one thread);
// perf put 9-16 % of the default MLP's training in it.
inline void openblas_block(const GemmCall& g, std::int64_t i0, std::int64_t i1, std::int64_t j0, std::int64_t j1) {
  float* c = g.c + i0 * g.N + j0;
  float beta = g.beta;
  if (beta == 0.0f) {
    const auto row_bytes = static_cast<std::size_t>(j1 - j0) * sizeof(float);
    if (j1 - j0 == g.N)
      std::memset(c, 0, static_cast<std::size_t>(i1 - i0) * row_bytes);
    else
      for (std::int64_t i = 0; i < i1 - i0; ++i) std::memset(c + i * g.N, 0, row_bytes);
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, g.trans_a ? CblasTrans : CblasNoTrans, g.trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(i1 - i0), static_cast<int>(j1 - j0), static_cast<int>(g.K), 1.0f, g.a_at(i0),
              static_cast<int>(g.lda), g.b_at(j0), static_cast<int>(g.ldb), beta, c, static_cast<int>(g.N));
}
#endif

#if defined(BNORM_GEMM_WITH_ONEDNN)
// oneDNN's OpenMP build threads a product over omp_get_max_threads() unless
// it is already inside an active parallel region. A slice is one thread's
// work, and so is a product too small to split (run_sliced's policy, as with
// OpenBLAS), so outside a region the calling thread's team size is set to
// one for the call: no nested team, no second pool. dnnl_sgemm is row-major.
inline void onednn_block(const GemmCall& g, std::int64_t i0, std::int64_t i1, std::int64_t j0, std::int64_t j1) {
  const int saved = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (saved > 1) omp_set_num_threads(1);
  dnnl_sgemm(g.trans_a ? 'T' : 'N', g.trans_b ? 'T' : 'N', i1 - i0, j1 - j0, g.K, 1.0f, g.a_at(i0), g.lda, g.b_at(j0),
             g.ldb, g.beta, g.c + i0 * g.N + j0, g.N);
  if (saved > 1) omp_set_num_threads(saved);
}
#endif

}  // namespace bnorm::kernels::gemm_detail

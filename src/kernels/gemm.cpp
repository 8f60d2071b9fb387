#include "bnorm/kernels/gemm.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>

namespace bnorm::kernels {
namespace {

// One thread pool, bnorm's OpenMP one: OpenBLAS runs single-threaded inside
// it, each thread multiplying its own slice of C. With OpenBLAS's own pthread
// pool as well, the two pools took turns on the cores: OpenMP's threads spin
// for a while after each region and OpenBLAS's call sched_yield while they
// wait, and in a CNN training step on 2 cores 59 % of the CPU time went to
// spinning, yielding and the kernel (perf), not to arithmetic.
void use_one_blas_thread() {
  static const bool done = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}

// Below this many multiply-adds one thread is faster than waking the others.
constexpr std::int64_t kParallelMacs = std::int64_t{1} << 18;
// Slices are whole multiples of this many rows or columns, so every slice but
// the last keeps OpenBLAS's full-width micro-kernels.
constexpr std::int64_t kSliceQuantum = 16;

struct Gemm {
  bool trans_a, trans_b;
  std::int64_t M, N, K;
  const float* a;
  std::int64_t lda;
  const float* b;
  std::int64_t ldb;
  float beta;
  float* c;  // row-major (M, N), ldc = N

  // C[i0:i1, j0:j1] through one OpenBLAS call. OpenBLAS takes int sizes;
  // layer sizes are far below 2^31, and the layer checks shapes before calling.
  void block(std::int64_t i0, std::int64_t i1, std::int64_t j0, std::int64_t j1) const {
    const float* a0 = trans_a ? a + i0 : a + i0 * lda;
    const float* b0 = trans_b ? b + j0 * ldb : b + j0;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                static_cast<int>(i1 - i0), static_cast<int>(j1 - j0), static_cast<int>(K), 1.0f, a0,
                static_cast<int>(lda), b0, static_cast<int>(ldb), beta, c + i0 * N + j0, static_cast<int>(N));
  }

  // Splits C along its longer side, so each element is still one OpenBLAS
  // sum over all of K: no partial products are merged across threads.
  void run() const {
    use_one_blas_thread();
    const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (threads <= 1 || M * N * K < kParallelMacs) {
      block(0, M, 0, N);
      return;
    }
    const bool by_rows = M >= N;
    const std::int64_t extent = by_rows ? M : N;
    const std::int64_t quanta = (extent + kSliceQuantum - 1) / kSliceQuantum;
    const std::int64_t parts = std::min<std::int64_t>(threads, quanta);
#pragma omp parallel for schedule(static) num_threads(static_cast <int>(parts))
    for (std::int64_t p = 0; p < parts; ++p) {
      const std::int64_t s0 = std::min(extent, quanta * p / parts * kSliceQuantum);
      const std::int64_t s1 = std::min(extent, quanta * (p + 1) / parts * kSliceQuantum);
      if (s0 == s1) continue;
      if (by_rows)
        block(s0, s1, 0, N);
      else
        block(0, M, s0, s1);
    }
  }
};

}  // namespace

void gemm_abt(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K) {
  Gemm{false, true, M, N, K, a, K, b, K, 0.0f, c}.run();
}

void gemm_abt_add(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K) {
  Gemm{false, true, M, N, K, a, K, b, K, 1.0f, c}.run();
}

void gemm_atb(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K) {
  Gemm{true, false, M, N, K, a, M, b, N, 0.0f, c}.run();
}

void gemm_ab(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K) {
  Gemm{false, false, M, N, K, a, K, b, N, 0.0f, c}.run();
}

void add_row_bias(float* y, const float* bias, std::int64_t M, std::int64_t N) {
  for (std::int64_t i = 0; i < M; ++i)
    for (std::int64_t j = 0; j < N; ++j) y[i * N + j] += bias[j];
}

void sum_rows(float* db, const float* dy, std::int64_t M, std::int64_t N) {
  for (std::int64_t j = 0; j < N; ++j) db[j] = 0.0f;
  for (std::int64_t i = 0; i < M; ++i)
    for (std::int64_t j = 0; j < N; ++j) db[j] += dy[i * N + j];
}

void set_threads(int threads) {
  use_one_blas_thread();
  omp_set_num_threads(threads);
}

}  // namespace bnorm::kernels

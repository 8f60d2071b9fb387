#include "bnorm/kernels/gemm.hpp"

#include "gemm_slices.hpp"
#include "openblas_kernels.hpp"

namespace bnorm::kernels {
namespace {

using gemm_detail::GemmCall;

#if defined(BNORM_GEMM_WITH_ONEDNN)
void use_one_blas_thread() {}  // oneDNN is told per call (gemm_slices.hpp)
void run(const GemmCall& g) { gemm_detail::run_sliced(g, gemm_detail::onednn_block); }
constexpr const char* kBackend = "oneDNN";
#else
// One thread pool, bnorm's OpenMP one: OpenBLAS runs single-threaded inside
// it, each thread multiplying its own slice of C. With OpenBLAS's own pthread
// pool as well, the two pools took turns on the cores: OpenMP's threads spin
// for a while after each region and OpenBLAS's call sched_yield while they
// wait, and in a CNN training step on 2 cores 59 % of the CPU time went to
// spinning, yielding and the kernel (perf), not to arithmetic.
void use_one_blas_thread() {
  static const bool done = [] {
    openblas_pick_kernels_once();
    openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}
void run(const GemmCall& g) {
  use_one_blas_thread();
  gemm_detail::run_sliced(g, gemm_detail::openblas_block);
}
constexpr const char* kBackend = "OpenBLAS";
#endif

}  // namespace

void gemm_abt(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K) {
  run(GemmCall{false, true, M, N, K, a, K, b, K, 0.0f, c});
}

void gemm_abt_add(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K) {
  run(GemmCall{false, true, M, N, K, a, K, b, K, 1.0f, c});
}

void gemm_atb(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K) {
  run(GemmCall{true, false, M, N, K, a, M, b, N, 0.0f, c});
}

void gemm_ab(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K) {
  run(GemmCall{false, false, M, N, K, a, K, b, N, 0.0f, c});
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

const char* gemm_backend() { return kBackend; }

}  // namespace bnorm::kernels

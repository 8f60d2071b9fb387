#include "bnorm/kernels/gemm.hpp"

#include <cblas.h>
#include <omp.h>

namespace bnorm::kernels {

// OpenBLAS takes int sizes; layer sizes are far below 2^31, and the layer
// checks shapes before calling.
void gemm_abt(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M), static_cast<int>(N),
              static_cast<int>(K), 1.0f, a, static_cast<int>(K), b, static_cast<int>(K), 0.0f, c,
              static_cast<int>(N));
}

void gemm_abt_add(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M), static_cast<int>(N),
              static_cast<int>(K), 1.0f, a, static_cast<int>(K), b, static_cast<int>(K), 1.0f, c,
              static_cast<int>(N));
}

void gemm_atb(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K) {
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(M), static_cast<int>(N),
              static_cast<int>(K), 1.0f, a, static_cast<int>(M), b, static_cast<int>(N), 0.0f, c,
              static_cast<int>(N));
}

void gemm_ab(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(M), static_cast<int>(N),
              static_cast<int>(K), 1.0f, a, static_cast<int>(K), b, static_cast<int>(N), 0.0f, c,
              static_cast<int>(N));
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
  openblas_set_num_threads(threads);
  omp_set_num_threads(threads);
}

}  // namespace bnorm::kernels

// The packing-free products of the Winograd path (kernels/small_gemm.hpp)
// against a plain triple loop in double, at sizes that reach every block
// shape: rows in blocks of 6 (dot products: 3) plus each remainder, columns
// in 16s plus a last 8, and the dot products' column remainders.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "bnorm/kernels/small_gemm.hpp"
#include "bnorm/rng.hpp"

namespace bnorm {
namespace {

std::vector<float> random_values(std::int64_t n, Rng& rng) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = static_cast<float>(rng.normal());
  return v;
}

// The largest |got − want| over the largest |want|, want[i·N + j] computed
// in double as Σ_k a_at(i, k)·b_at(k, j) (+ the initial c for _add).
template <class A, class B>
double relative_error(const std::vector<float>& got, const std::vector<float>& initial, std::int64_t M, std::int64_t N,
                      std::int64_t K, A a_at, B b_at) {
  double gap = 0, scale = 0;
  for (std::int64_t i = 0; i < M; ++i)
    for (std::int64_t j = 0; j < N; ++j) {
      double want = initial.empty() ? 0.0 : initial[static_cast<std::size_t>(i * N + j)];
      for (std::int64_t k = 0; k < K; ++k) want += double(a_at(i, k)) * double(b_at(k, j));
      gap = std::max(gap, std::abs(want - got[static_cast<std::size_t>(i * N + j)]));
      scale = std::max(scale, std::abs(want));
    }
  return gap / scale;
}

TEST(SmallGemm, AbAndAtbMatchATripleLoop) {
  Rng rng(5);
  for (std::int64_t M : {1, 2, 5, 6, 7, 12, 64})
    for (std::int64_t N : {8, 16, 24, 56, 200})
      for (std::int64_t K : {1, 3, 32}) {
        const auto a = random_values(M * K, rng), b = random_values(K * N, rng);
        std::vector<float> c(static_cast<std::size_t>(M * N), 1e3f);  // junk: both assign
        kernels::small_gemm_ab(c.data(), a.data(), b.data(), M, N, K);
        EXPECT_LE(relative_error(
                      c, {}, M, N, K, [&](auto i, auto k) { return a[i * K + k]; },
                      [&](auto k, auto j) { return b[k * N + j]; }),
                  1e-5)
            << "ab M=" << M << " N=" << N << " K=" << K;
        std::fill(c.begin(), c.end(), 1e3f);
        kernels::small_gemm_atb(c.data(), a.data(), b.data(), M, N, K);  // a read as (K, M)
        EXPECT_LE(relative_error(
                      c, {}, M, N, K, [&](auto i, auto k) { return a[k * M + i]; },
                      [&](auto k, auto j) { return b[k * N + j]; }),
                  1e-5)
            << "atb M=" << M << " N=" << N << " K=" << K;
      }
}

TEST(SmallGemm, AbtAddAddsToC) {
  Rng rng(6);
  for (std::int64_t M : {1, 2, 3, 4, 7, 64})
    for (std::int64_t N : {1, 3, 4, 5, 32})
      for (std::int64_t K : {8, 16, 400}) {
        const auto a = random_values(M * K, rng), b = random_values(N * K, rng);
        const auto initial = random_values(M * N, rng);
        std::vector<float> c = initial;
        kernels::small_gemm_abt_add(c.data(), a.data(), b.data(), M, N, K);
        EXPECT_LE(relative_error(
                      c, initial, M, N, K, [&](auto i, auto k) { return a[i * K + k]; },
                      [&](auto k, auto j) { return b[j * K + k]; }),
                  1e-5)
            << "abt_add M=" << M << " N=" << N << " K=" << K;
      }
}

}  // namespace
}  // namespace bnorm

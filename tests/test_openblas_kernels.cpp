// bnorm's second kernel choice for OpenBLAS (src/kernels/openblas_kernels.cpp):
// when the library falls back to its generic Prescott kernels on a CPU with
// AVX2, bnorm has it choose again by the CPU's features. The Xeon this was
// written for cannot be had in CI, so the fallback is forced here the way a
// user would force it (OPENBLAS_CORETYPE=Prescott) and the second choice is
// run on top of it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bnorm/kernels/gemm.hpp"
#include "openblas_kernels.hpp"

extern "C" char* openblas_get_corename(void);
extern "C" void gotoblas_dynamic_quit(void) __attribute__((weak));
extern "C" void gotoblas_dynamic_init(void) __attribute__((weak));

namespace bnorm::test {
namespace {

using kernels::openblas_should_choose_by_features;

TEST(OpenblasKernels, ChoosesAgainOnlyAfterTheGenericFallbackOnAnAvx2Cpu) {
  EXPECT_TRUE(openblas_should_choose_by_features("Prescott", true, nullptr));
  EXPECT_FALSE(openblas_should_choose_by_features("Prescott", false, nullptr));    // SSE3 is all there is
  EXPECT_FALSE(openblas_should_choose_by_features("Prescott", true, "Prescott"));  // the user's choice stands
  EXPECT_FALSE(openblas_should_choose_by_features("Prescott", true, ""));
  EXPECT_FALSE(openblas_should_choose_by_features("Zen", true, nullptr));
  EXPECT_FALSE(openblas_should_choose_by_features("Cooperlake", true, nullptr));
  EXPECT_FALSE(openblas_should_choose_by_features(nullptr, true, nullptr));
}

// C = A·Bᵀ through bnorm's GEMM against a plain triple loop.
double largest_gemm_error() {
  const std::int64_t M = 37, N = 53, K = 71;
  std::vector<float> a(M * K), b(N * K), c(M * N);
  for (std::int64_t i = 0; i < M * K; ++i) a[i] = static_cast<float>((i * 7) % 13) / 13.0f - 0.5f;
  for (std::int64_t i = 0; i < N * K; ++i) b[i] = static_cast<float>((i * 5) % 11) / 11.0f - 0.5f;
  kernels::gemm_abt(c.data(), a.data(), b.data(), M, N, K);
  double worst = 0.0;
  for (std::int64_t i = 0; i < M; ++i)
    for (std::int64_t j = 0; j < N; ++j) {
      double want = 0.0;
      for (std::int64_t k = 0; k < K; ++k) want += static_cast<double>(a[i * K + k]) * b[j * K + k];
      worst = std::max(worst, std::abs(want - c[i * N + j]));
    }
  return worst;
}

TEST(OpenblasKernels, LeavesTheGenericFallbackOnAnAvx2CpuAndStillMultipliesRight) {
#if !defined(__x86_64__)
  GTEST_SKIP() << "the fallback rule is about x86 kernel sets";
#else
  if (gotoblas_dynamic_quit == nullptr || gotoblas_dynamic_init == nullptr)
    GTEST_SKIP() << "this OpenBLAS has no run-time kernel choice";
  EXPECT_LT(largest_gemm_error(), 1e-4);  // the first product also runs bnorm's once-per-process check
  // Force the fallback, as on a CPU newer than the library.
  const char* env = std::getenv("OPENBLAS_CORETYPE");
  const std::string saved = env ? env : "";
  setenv("OPENBLAS_CORETYPE", "Prescott", 1);
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
  ASSERT_STREQ(openblas_get_corename(), "Prescott");
  ASSERT_TRUE(kernels::openblas_choose_by_features());
  // The user's setting is back as it was.
  ASSERT_NE(std::getenv("OPENBLAS_CORETYPE"), nullptr);
  EXPECT_STREQ(std::getenv("OPENBLAS_CORETYPE"), "Prescott");
  if (__builtin_cpu_supports("avx2")) {
    EXPECT_STRNE(openblas_get_corename(), "Prescott");
  }
  EXPECT_LT(largest_gemm_error(), 1e-4);
  if (env)
    setenv("OPENBLAS_CORETYPE", saved.c_str(), 1);
  else
    unsetenv("OPENBLAS_CORETYPE");
#endif
}

TEST(OpenblasKernels, TheReportedCoreIsARealKernelSet) {
  const std::string core = kernels::openblas_core();
  EXPECT_FALSE(core.empty());
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2") && std::getenv("OPENBLAS_CORETYPE") == nullptr) {
    EXPECT_NE(core, "Prescott");
  }
#endif
}

}  // namespace
}  // namespace bnorm::test

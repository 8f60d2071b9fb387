// The optimizers' updates against the formulas PyTorch documents.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "bnorm/error.hpp"
#include "bnorm/train/optimizer.hpp"

namespace bnorm {
namespace {

TEST(Optimizer, SgdMomentumAndWeightDecayFollowPyTorch) {
  Sgd sgd(0.1f, 0.9f, 0.01f);
  std::vector<float> p = {1.0f, -2.0f};
  const std::vector<float> g = {0.5f, 0.25f};
  sgd.step(p, g);
  // v = g + wd*p; p -= lr*v
  const float v0 = 0.5f + 0.01f * 1.0f, v1 = 0.25f + 0.01f * -2.0f;
  EXPECT_FLOAT_EQ(p[0], 1.0f - 0.1f * v0);
  EXPECT_FLOAT_EQ(p[1], -2.0f - 0.1f * v1);
  const float p0 = p[0];
  sgd.step(p, g);
  const float v0b = 0.9f * v0 + 0.5f + 0.01f * p0;
  EXPECT_FLOAT_EQ(p[0], p0 - 0.1f * v0b);
}

TEST(Optimizer, AdamFollowsTheBiasCorrectedUpdate) {
  Adam adam(0.01f);
  std::vector<float> p = {1.0f};
  adam.step(p, std::vector<float>{0.5f});
  // Step 1: m̂ = g, v̂ = g², so the step is lr·g/(|g|+eps) ≈ lr.
  EXPECT_NEAR(p[0], 1.0f - 0.01f, 1e-6);
  adam.step(p, std::vector<float>{-0.25f});
  const double m = 0.9 * 0.1 * 0.5 + 0.1 * -0.25, v = 0.999 * 0.001 * 0.25 + 0.001 * 0.0625;
  const double mh = m / (1 - 0.81), vh = v / (1 - 0.999 * 0.999);
  EXPECT_NEAR(p[0], 0.99 - 0.01 * mh / (std::sqrt(vh) + 1e-8), 1e-6);
  EXPECT_THROW(make_optimizer("rmsprop", 0.1f, 0.9f, 0), Error);
  EXPECT_THROW(make_optimizer("sgd", -1.0f, 0.9f, 0), Error);
}

// Parameters, gradients and the same parameters updated one value at a time
// by the formulas above, over a buffer large enough that step() splits it
// between threads.
struct LargeStep {
  std::vector<float> params, grads;
  explicit LargeStep(std::size_t n) : params(n), grads(n) {
    for (std::size_t i = 0; i < n; ++i) {
      params[i] = static_cast<float>(static_cast<int>(i % 97) - 48) / 32.0f;
      grads[i] = static_cast<float>(static_cast<int>(i % 89) - 44) / 64.0f;
    }
  }
};

// Shares of each tensor or of the whole buffer, on 1 to 3 threads: every
// value gets exactly its own update, bit for bit as one thread gives it
// (a value updated twice, or skipped, by the shares would differ).
TEST(Optimizer, SharedStepsUpdateEveryValueOnceAsOneThreadDoes) {
  const std::size_t n = 100003;  // above the parallel threshold, odd
  const std::vector<std::vector<std::int64_t>> ends_cases = {{},
                                                             {40000, 40001, 70000, 100003},
                                                             {1, 2, 100003},
                                                             {50000},  // does not end the buffer: ignored
                                                             {60000, 40000, 100003}};  // out of order: ignored
  const int saved = omp_get_max_threads();
  for (const std::string name : {"sgd", "adam"}) {
    LargeStep want(n);
    omp_set_num_threads(1);
    auto one = make_optimizer(name, 0.05f, 0.9f, 0.01f);
    for (int s = 0; s < 3; ++s) one->step(want.params, want.grads);
    for (const auto& ends : ends_cases)
      for (int threads : {2, 3}) {
        omp_set_num_threads(threads);
        LargeStep got(n);
        auto opt = make_optimizer(name, 0.05f, 0.9f, 0.01f);
        opt->set_tensor_ends(ends);
        for (int s = 0; s < 3; ++s) opt->step(got.params, got.grads);
        std::size_t differ = 0;
        for (std::size_t i = 0; i < n; ++i) differ += got.params[i] != want.params[i];
        EXPECT_EQ(differ, 0u) << name << ", " << threads << " threads, " << ends.size() << " ends";
      }
  }
  omp_set_num_threads(saved);
}

}  // namespace
}  // namespace bnorm

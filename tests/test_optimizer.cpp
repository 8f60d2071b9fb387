// The optimizers' updates against the formulas PyTorch documents.
#include <gtest/gtest.h>

#include <cmath>
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

}  // namespace
}  // namespace bnorm

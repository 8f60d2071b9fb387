// Batch norm against PyTorch 1.13: forward, backward and running statistics
// over several training steps, then eval mode, for every case in
// fixtures/batchnorm_golden.safetensors (written by scripts/make_bn_fixtures.py).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "bnorm/io/safetensors.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "golden.hpp"
#include "test_util.hpp"

namespace bnorm::test {
namespace {

const std::string kFixture = fixture_path("batchnorm_golden.safetensors");

struct Case {
  std::string name;
  Shape shape;
  BatchNormOptions options;
  int steps = 0;
  double tol = 0;  // |got - want| <= tol * (1 + |want|)
};

std::vector<Case> load_cases(const SafetensorsFile& file) {
  EXPECT_EQ(file.metadata.at("format"), "bnorm-fixture");
  EXPECT_EQ(file.metadata.at("version"), "1");
  std::vector<Case> cases;
  for (const auto& j : nlohmann::json::parse(file.metadata.at("cases"))) {
    Case c;
    c.name = j.at("name");
    c.shape = j.at("shape").get<Shape>();
    c.options.eps = j.at("eps").get<float>();
    if (j.at("momentum").is_null())
      c.options.momentum.reset();
    else
      c.options.momentum = j.at("momentum").get<float>();
    c.options.scale = c.options.center = j.at("affine");
    c.options.track_running_stats = j.at("track_running_stats");
    c.steps = j.at("steps");
    // PyTorch's own float32 result drifts from the exact one as |mean|/std
    // grows (3.9e-4 relative at mean 1000, std 1, measured against float64 by
    // the generator); bnorm subtracts the mean first, so the bound scales.
    const double mean = j.value("input_mean", 0.0), sd = j.value("input_std", 1.0);
    c.tol = 2e-5 * (1.0 + std::abs(mean) / sd);
    cases.push_back(c);
  }
  return cases;
}

// dbeta = Σ dy and dgamma = Σ dy·x̂ over the m values of a channel. Each
// side's float sum is within (depth of its summation tree)·u·Σ|terms| of the
// exact one, whatever the order (u = 2^-24; at most m - 1 for PyTorch, whose
// order we do not assume, and 16 or 1024 for bnorm's float stretches), plus
// u·|sum| each for the final rounding. dgamma also carries each x̂'s own error,
// which the y check holds to c.tol·(1 + |x̂|): Σ|dy|·c.tol·(1 + |x̂|). So
//   |Δdbeta|  <= (m + B)·u·Σ|dy| + 2u·|dbeta|
//   |Δdgamma| <= (m + B)·u·Σ|dy·x̂| + Σ|dy|·c.tol·(1 + |x̂|) + 2u·|dgamma|
// with x̂ from the fixture's x in double.
void expect_parameter_gradients_within_bound(const std::string& what, const Case& c, const Tensor& x, const Tensor& dy,
                                             const float* grads, const std::vector<float>& dgamma,
                                             const std::vector<float>& dbeta) {
  constexpr double u = 0x1p-24;
  const std::int64_t N = c.shape[0], C = c.shape[1], S = numel(c.shape) / (N * C), m = N * S;
  const double B = S == 1 ? 16.0 : static_cast<double>(std::min<std::int64_t>(S, 1024));
  for (std::int64_t ch = 0; ch < C; ++ch) {
    double mean = 0, var = 0;
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t i = 0; i < S; ++i) mean += x[(n * C + ch) * S + i];
    mean /= static_cast<double>(m);
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t i = 0; i < S; ++i) {
        const double d = x[(n * C + ch) * S + i] - mean;
        var += d * d;
      }
    const double inv_std = 1.0 / std::sqrt(var / static_cast<double>(m) + c.options.eps);
    double abs_dy = 0, abs_dy_xhat = 0, xhat_error = 0;
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t i = 0; i < S; ++i) {
        const std::int64_t j = (n * C + ch) * S + i;
        const double xhat = (x[j] - mean) * inv_std;
        abs_dy += std::abs(dy[j]);
        abs_dy_xhat += std::abs(dy[j] * xhat);
        xhat_error += std::abs(dy[j]) * c.tol * (1.0 + std::abs(xhat));
      }
    const auto k = static_cast<std::size_t>(ch);
    const double reach = (static_cast<double>(m) + B) * u;
    EXPECT_LE(std::abs(grads[k] - dgamma[k]), reach * abs_dy_xhat + xhat_error + 2 * u * std::abs(dgamma[k]))
        << what << "dgamma channel " << ch;
    EXPECT_LE(std::abs(grads[C + ch] - dbeta[k]), reach * abs_dy + 2 * u * std::abs(dbeta[k]))
        << what << "dbeta channel " << ch;
  }
}

TEST(BatchNormGolden, MatchesPyTorchOverTrainingStepsAndEval) {
  const SafetensorsFile file = read_safetensors(kFixture);
  const auto cases = load_cases(file);
  ASSERT_GE(cases.size(), 10u);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name + " shape " + shape_str(c.shape));
    const std::int64_t C = c.shape[1];
    LayerHarness h(std::make_unique<BatchNorm>(C, c.options));
    auto& bn = static_cast<BatchNorm&>(*h.layer);
    if (c.options.scale) {
      const auto gamma = file.at(c.name + ".gamma", kFixture).to_f32();
      const auto beta = file.at(c.name + ".beta", kFixture).to_f32();
      std::copy(gamma.begin(), gamma.end(), h.params.begin());
      std::copy(beta.begin(), beta.end(), h.params.begin() + C);
    }
    for (int t = 0; t < c.steps; ++t) {
      const std::string p = c.name + ".step" + std::to_string(t) + ".";
      const Tensor x = tensor_from(file.at(p + "x", kFixture));
      const Tensor dy = tensor_from(file.at(p + "dy", kFixture));
      ASSERT_EQ(x.shape(), c.shape);
      Tensor y, dx;
      h->forward(y, x, Mode::train);
      h->backward(&dx, dy);
      expect_close(p + "y", y.data(), file.at(p + "y", kFixture).to_f32(), c.tol);
      expect_close(p + "dx", dx.data(), file.at(p + "dx", kFixture).to_f32(), c.tol);
      if (c.options.scale)
        expect_parameter_gradients_within_bound(p, c, x, dy, h.grads.data(), file.at(p + "dgamma", kFixture).to_f32(),
                                                file.at(p + "dbeta", kFixture).to_f32());
      if (c.options.track_running_stats) {
        expect_close(p + "running_mean", bn.running_mean().data(), file.at(p + "running_mean", kFixture).to_f32(),
                     c.tol);
        expect_close(p + "running_var", bn.running_var().data(), file.at(p + "running_var", kFixture).to_f32(), c.tol);
        EXPECT_EQ(bn.num_batches_tracked(), file.at(p + "num_batches_tracked", kFixture).to_i64_scalar());
      }
    }
    const Tensor x = tensor_from(file.at(c.name + ".eval.x", kFixture));
    Tensor y;
    h->forward(y, x, Mode::eval);
    expect_close(c.name + ".eval.y", y.data(), file.at(c.name + ".eval.y", kFixture).to_f32(), c.tol);
  }
}

// The comparison must be able to fail: a momentum other than the fixture's
// moves the running statistics outside the bound.
TEST(BatchNormGolden, WrongMomentumIsDetected) {
  const SafetensorsFile file = read_safetensors(kFixture);
  Case c = load_cases(file).at(0);
  ASSERT_TRUE(c.options.momentum.has_value());
  c.options.momentum = *c.options.momentum * 0.5f;
  LayerHarness h(std::make_unique<BatchNorm>(c.shape[1], c.options));
  auto& bn = static_cast<BatchNorm&>(*h.layer);
  Tensor y;
  h->forward(y, tensor_from(file.at(c.name + ".step0.x", kFixture)), Mode::train);
  const auto want = file.at(c.name + ".step0.running_mean", kFixture).to_f32();
  double worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i)
    worst = std::max(worst, std::abs(static_cast<double>(bn.running_mean()[i]) - want[i]) / (1.0 + std::abs(want[i])));
  EXPECT_GT(worst, c.tol);
}

}  // namespace
}  // namespace bnorm::test

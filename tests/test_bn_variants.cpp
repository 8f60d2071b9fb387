// Batch Renormalization (Ioffe 2017) and ghost batch norm (Hoffer, Hubara &
// Soudry 2017) in the BatchNorm layer: against a float64 reference written
// from the papers' formulas (forward, running statistics, backward), against
// central finite differences, and against plain batch norm where the two must
// agree (rmax = 1 and dmax = 0; one virtual batch covering the mini-batch).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "bnorm/error.hpp"
#include "bnorm/nn/activation.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/nn/layer_factory.hpp"
#include "gradcheck.hpp"
#include "test_util.hpp"

namespace bnorm::test {
namespace {

constexpr double kEps = 1e-5;
constexpr double kMomentum = 0.1;

struct Reference {
  std::vector<double> y, dx, dgamma, dbeta, running_mean, running_var;
};

// Written from the papers, in double, (N, C, S) layout. Ghost batch norm:
// slices of V examples (the remainder last, joined to the slice before when it
// has a single value per channel), each normalized on its own and moving the
// running estimates. Within a slice, Ioffe 2017's Algorithm 1:
//   sigma_B = sqrt(var_B + eps), sigma = sqrt(running_var + eps)
//   r = clip(sigma_B / sigma), d = clip((mu_B - mu) / sigma)
//   x_hat = (x - mu_B) / sigma_B * r + d,  y = gamma * x_hat + beta
// and its backward (Section 3), r and d constants:
//   g = dy * gamma
//   dsigma_B = Σ g (x - mu_B) (-r / sigma_B^2),  dmu_B = Σ g (-r / sigma_B)
//   dx = g r / sigma_B + dsigma_B (x - mu_B) / (m sigma_B) + dmu_B / m
//   dgamma = Σ dy x_hat,  dbeta = Σ dy
// Running estimates by this library's rule: momentum, unbiased variance.
// V = 0: one slice; rmax = 1, dmax = 0: plain batch norm.
Reference reference(const Tensor& x, const Tensor& dy, const std::vector<float>& gamma, const std::vector<float>& beta,
                    std::vector<double> running_mean, std::vector<double> running_var, std::int64_t V, double rmax,
                    double dmax) {
  const std::int64_t N = x.dim(0), C = x.dim(1), S = x.size() / (N * C);
  const std::int64_t slice = V > 0 ? std::min(V, N) : N;
  std::vector<std::pair<std::int64_t, std::int64_t>> slices;
  for (std::int64_t n0 = 0; n0 < N; n0 += slice) slices.push_back({n0, std::min(slice, N - n0)});
  if (slices.size() > 1 && slices.back().second * S < 2) {
    slices[slices.size() - 2].second += slices.back().second;
    slices.pop_back();
  }
  Reference out;
  out.y.assign(static_cast<std::size_t>(x.size()), 0.0);
  out.dx = out.y;
  out.dgamma.assign(static_cast<std::size_t>(C), 0.0);
  out.dbeta = out.dgamma;
  for (const auto& [n0, n] : slices) {
    const double m = static_cast<double>(n * S);
    for (std::int64_t c = 0; c < C; ++c) {
      std::vector<std::size_t> at;
      for (std::int64_t i = n0; i < n0 + n; ++i)
        for (std::int64_t s = 0; s < S; ++s) at.push_back(static_cast<std::size_t>((i * C + c) * S + s));
      const auto cs = static_cast<std::size_t>(c);
      double mu = 0, var = 0;
      for (const std::size_t k : at) mu += x[static_cast<std::int64_t>(k)];
      mu /= m;
      for (const std::size_t k : at)
        var += (x[static_cast<std::int64_t>(k)] - mu) * (x[static_cast<std::int64_t>(k)] - mu);
      var /= m;
      const double sigma_b = std::sqrt(var + kEps), sigma = std::sqrt(running_var[cs] + kEps);
      const double r = std::clamp(sigma_b / sigma, 1 / rmax, rmax);
      const double d = std::clamp((mu - running_mean[cs]) / sigma, -dmax, dmax);
      double dsigma = 0, dmu = 0;
      for (const std::size_t k : at) {
        const double xk = x[static_cast<std::int64_t>(k)], dyk = dy[static_cast<std::int64_t>(k)];
        const double x_hat = (xk - mu) / sigma_b * r + d;
        out.y[k] = gamma[cs] * x_hat + beta[cs];
        out.dgamma[cs] += dyk * x_hat;
        out.dbeta[cs] += dyk;
        const double g = dyk * gamma[cs];
        dsigma += g * (xk - mu) * (-r / (sigma_b * sigma_b));
        dmu += g * (-r / sigma_b);
      }
      for (const std::size_t k : at) {
        const double xk = x[static_cast<std::int64_t>(k)], g = dy[static_cast<std::int64_t>(k)] * gamma[cs];
        out.dx[k] = g * r / sigma_b + dsigma * (xk - mu) / (m * sigma_b) + dmu / m;
      }
      running_mean[cs] = (1 - kMomentum) * running_mean[cs] + kMomentum * mu;
      running_var[cs] = (1 - kMomentum) * running_var[cs] + kMomentum * var * m / (m - 1);
    }
  }
  out.running_mean = running_mean;
  out.running_var = running_var;
  return out;
}

template <class Values>
void expect_close(const std::string& what, const Values& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(static_cast<std::size_t>(got.size()), want.size()) << what;
  int shown = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double g = got[static_cast<decltype(got.size())>(i)];
    if (std::abs(g - want[i]) > tol * (1 + std::abs(want[i])) && shown++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: got " << g << ", reference " << want[i];
  }
}

struct Case {
  std::int64_t C;
  BatchNormOptions options;
};

BatchNormOptions variant(std::int64_t V, bool renorm, double rmax = 3, double dmax = 5) {
  BatchNormOptions o;
  o.virtual_batch_size = V;
  o.renorm = {renorm, static_cast<float>(rmax), static_cast<float>(dmax), 0};
  return o;
}

// gamma and beta away from 1 and 0; running statistics unlike the batch's,
// partly within the clipping limits and partly beyond them.
void prepare(LayerHarness& h, Rng& rng) {
  for (float& p : h.params) p += static_cast<float>(0.5 * rng.normal());
  auto& bn = dynamic_cast<BatchNorm&>(*h.layer);
  for (std::size_t c = 0; c < bn.running_mean().size(); ++c) {
    bn.running_mean()[c] = static_cast<float>(1.5 * rng.normal());
    bn.running_var()[c] = static_cast<float>(0.05 + 8 * rng.uniform());
  }
}

// The layer against the reference: y, running statistics, dx, dgamma, dbeta.
void check_against_reference(BatchNormOptions o, const Shape& shape, std::uint64_t seed) {
  Rng rng(seed);
  const std::int64_t C = shape[1];
  LayerHarness h(std::make_unique<BatchNorm>(C, o), seed);
  prepare(h, rng);
  auto& bn = dynamic_cast<BatchNorm&>(*h.layer);
  const std::vector<float> gamma(h.params.begin(), h.params.begin() + C), beta(h.params.begin() + C, h.params.end());
  const std::vector<double> rm(bn.running_mean().begin(), bn.running_mean().end());
  const std::vector<double> rv(bn.running_var().begin(), bn.running_var().end());
  const Tensor x = random_tensor(shape, rng, 0.7, 1.3);
  const Tensor dy = random_tensor(shape, rng);
  const double rmax = o.renorm.enabled ? o.renorm.rmax : 1, dmax = o.renorm.enabled ? o.renorm.dmax : 0;
  const Reference want = reference(x, dy, gamma, beta, rm, rv, o.virtual_batch_size, rmax, dmax);

  Tensor y, dx;
  h->forward(y, x, Mode::train);
  std::fill(h.grads.begin(), h.grads.end(), 1e6f);  // junk: the backward must assign, not add
  h->backward(&dx, dy);
  const std::string where = "V " + std::to_string(o.virtual_batch_size) + (o.renorm.enabled ? " renorm" : "") +
                            " input " + shape_str(shape) + ": ";
  expect_close(where + "y", y, want.y, 2e-5);
  expect_close(where + "running_mean", bn.running_mean(), want.running_mean, 1e-6);
  expect_close(where + "running_var", bn.running_var(), want.running_var, 1e-6);
  expect_close(where + "dx", dx, want.dx, 1e-4);
  expect_close(where + "dgamma", std::vector<float>(h.grads.begin(), h.grads.begin() + C), want.dgamma, 1e-5);
  expect_close(where + "dbeta", std::vector<float>(h.grads.begin() + C, h.grads.end()), want.dbeta, 1e-5);
}

TEST(BatchRenorm, MatchesReferenceNC) { check_against_reference(variant(0, true), {9, 6}, 1); }
TEST(BatchRenorm, MatchesReferenceNCHW) { check_against_reference(variant(0, true), {3, 4, 2, 3}, 2); }
TEST(BatchRenorm, MatchesReferenceTightLimits) { check_against_reference(variant(0, true, 1.2, 0.3), {7, 5}, 3); }
TEST(GhostBatchNorm, MatchesReferenceNC) { check_against_reference(variant(3, false), {8, 5}, 4); }
TEST(GhostBatchNorm, MatchesReferenceNCHW) { check_against_reference(variant(2, false), {5, 3, 2, 2}, 5); }
// 7 = 3 + 3 + 1: the lone last example joins the slice before it.
TEST(GhostBatchNorm, SingleExampleRemainderJoinsPreviousSlice) {
  check_against_reference(variant(3, false), {7, 4}, 6);
}
TEST(GhostBatchNorm, WithBatchRenorm) { check_against_reference(variant(4, true, 2, 1), {10, 3}, 7); }

// The reference itself must see the slices: with V = 3 it differs from V = 0.
TEST(GhostBatchNorm, ReferenceDependsOnSlices) {
  Rng rng(8);
  const Tensor x = random_tensor({6, 2}, rng), dy = random_tensor({6, 2}, rng);
  const std::vector<float> g(2, 1.0f), b(2, 0.0f);
  const std::vector<double> rm(2, 0.0), rv(2, 1.0);
  EXPECT_GT(std::abs(reference(x, dy, g, b, rm, rv, 3, 1, 0).y[0] - reference(x, dy, g, b, rm, rv, 0, 1, 0).y[0]),
            1e-3);
}

// Outputs, running statistics and gradients of two layers on the same input.
struct LayerRun {
  Tensor y, dx;
  std::vector<float> grads, running_mean, running_var;
};
LayerRun run_layer(BatchNormOptions o, const Tensor& x, const Tensor& dy, bool fused_relu = false) {
  Rng rng(30);
  LayerHarness h(std::make_unique<BatchNorm>(x.dim(1), o), 31);
  prepare(h, rng);
  auto& bn = dynamic_cast<BatchNorm&>(*h.layer);
  bn.set_fused_relu(fused_relu);
  LayerRun r;
  h->forward(r.y, x, Mode::train);
  h->backward(&r.dx, dy);
  r.grads = h.grads;
  r.running_mean.assign(bn.running_mean().begin(), bn.running_mean().end());
  r.running_var.assign(bn.running_var().begin(), bn.running_var().end());
  return r;
}

void expect_same(const LayerRun& a, const LayerRun& b, double tol) {
  const auto close = [tol](const std::string& what, auto&& u, auto&& v) {
    ASSERT_EQ(u.size(), v.size()) << what;
    for (std::size_t i = 0; i < static_cast<std::size_t>(u.size()); ++i) {
      const double p = u[static_cast<decltype(u.size())>(i)], q = v[static_cast<decltype(v.size())>(i)];
      ASSERT_LE(std::abs(p - q), tol * (1 + std::abs(q))) << what << "[" << i << "]: " << p << " vs " << q;
    }
  };
  close("y", a.y, b.y);
  close("dx", a.dx, b.dx);
  close("grads", a.grads, b.grads);
  close("running_mean", a.running_mean, b.running_mean);
  close("running_var", a.running_var, b.running_var);
}

TEST(BatchRenorm, RmaxOneDmaxZeroIsPlainBatchNorm) {
  Rng rng(9);
  for (const Shape& shape : {Shape{12, 5}, Shape{4, 3, 3, 2}}) {
    const Tensor x = random_tensor(shape, rng, 3.0, 2.0), dy = random_tensor(shape, rng);
    expect_same(run_layer(variant(0, true, 1, 0), x, dy), run_layer({}, x, dy), 1e-6);
  }
}

TEST(GhostBatchNorm, OneVirtualBatchIsPlainBatchNormBitForBit) {
  Rng rng(10);
  const Tensor x = random_tensor({8, 6}, rng, -1.0, 0.5), dy = random_tensor({8, 6}, rng);
  for (std::int64_t V : {8, 50}) {
    expect_same(run_layer(variant(V, false), x, dy), run_layer({}, x, dy), 0.0);
    expect_same(run_layer(variant(V, false), x, dy, true), run_layer({}, x, dy, true), 0.0);
  }
}

// Fused with the ReLU after it, each variant gives what the two layers give
// one after the other.
TEST(BatchNormVariants, FusedReluMatchesSeparateLayers) {
  Rng rng(11);
  const Tensor x = random_tensor({10, 4, 2, 1}, rng), dy = random_tensor({10, 4, 2, 1}, rng);
  for (const BatchNormOptions& o : {variant(4, false), variant(0, true, 2, 0.5), variant(3, true, 2, 0.5)}) {
    LayerRun separate = run_layer(o, x, dy);  // dy of the batch norm's output, masked below
    Activation relu(ActivationKind::relu);
    Tensor out, masked;
    relu.forward(out, separate.y, Mode::train);
    relu.backward(&masked, dy);
    separate = run_layer(o, x, masked);
    separate.y = out;
    expect_same(run_layer(o, x, dy, true), separate, 1e-6);
  }
}

// Finite differences. Ghost batch norm is an ordinary function of its input.
TEST(GhostBatchNorm, GradCheck) {
  Rng rng(12);
  LayerHarness nc(std::make_unique<BatchNorm>(5, variant(3, false)), 5);
  prepare(nc, rng);
  check_layer(nc, random_tensor({8, 5}, rng, 2.0, 1.5), 13);
  LayerHarness nchw(std::make_unique<BatchNorm>(3, variant(2, false)), 6);
  prepare(nchw, rng);
  check_layer(nchw, random_tensor({5, 3, 2, 2}, rng, -1.0, 0.7), 14);
}

// Batch Renormalization's gradient treats r and d as constants, which is the
// true gradient where both are clipped (they do not move with x there). With
// running statistics far from the batch's, every channel is clipped; momentum
// 0 keeps them where they are over the many forwards of the check.
void check_saturated_renorm(std::int64_t V, const Shape& shape, std::uint64_t seed) {
  Rng rng(seed);
  BatchNormOptions o = variant(V, true, 2, 1);
  o.momentum = 0.0f;
  const std::int64_t C = shape[1];
  LayerHarness h(std::make_unique<BatchNorm>(C, o), seed);
  for (float& p : h.params) p += static_cast<float>(0.5 * rng.normal());
  auto& bn = dynamic_cast<BatchNorm&>(*h.layer);
  for (std::int64_t c = 0; c < C; ++c) {
    bn.running_mean()[static_cast<std::size_t>(c)] = c % 2 ? 40.0f : -40.0f;  // d = ±dmax
    bn.running_var()[static_cast<std::size_t>(c)] = c % 3 ? 400.0f : 0.001f;  // r = 1/rmax or rmax
  }
  check_layer(h, random_tensor(shape, rng, 0.5, 1.0), seed + 1);
}

TEST(BatchRenorm, GradCheckWhereClipped) {
  check_saturated_renorm(0, {8, 6}, 15);
  check_saturated_renorm(0, {3, 3, 2, 2}, 17);
  check_saturated_renorm(3, {7, 4}, 19);
}

// The warm-up, as documented: plain for W/8 steps, then rmax reaches its limit
// at W and dmax at 5W/8, linearly.
TEST(BatchRenorm, WarmupSchedule) {
  const BatchRenormOptions o{true, 3.0f, 5.0f, 1600};
  const auto at = [&](std::int64_t step) { return renorm_limits(o, step); };
  EXPECT_EQ(at(0).rmax, 1.0);
  EXPECT_EQ(at(0).dmax, 0.0);
  EXPECT_EQ(at(200).rmax, 1.0);
  EXPECT_EQ(at(200).dmax, 0.0);
  EXPECT_NEAR(at(600).rmax, 1 + 2 * 400.0 / 1400, 1e-12);
  EXPECT_NEAR(at(600).dmax, 5 * 400.0 / 800, 1e-12);
  EXPECT_EQ(at(1000).dmax, 5.0);
  EXPECT_EQ(at(1600).rmax, 3.0);
  EXPECT_EQ(at(1 << 20).rmax, 3.0);
  EXPECT_EQ(renorm_limits({true, 3.0f, 5.0f, 0}, 0).rmax, 3.0);
}

// The layer follows the schedule through its own step count, which it saves:
// in the warm-up's plain phase it is plain batch norm, and a layer rebuilt
// from its config and state carries on where the first one was.
TEST(BatchRenorm, StepCountIsStateAndDrivesTheSchedule) {
  Rng rng(21);
  BatchNormOptions o = variant(0, true, 3, 5);
  o.renorm.warmup_steps = 16;  // plain for 2 steps
  const Tensor x = random_tensor({6, 3}, rng, 2.0, 0.3), dy = random_tensor({6, 3}, rng);
  LayerHarness h(std::make_unique<BatchNorm>(3, o), 1);
  LayerHarness plain(std::make_unique<BatchNorm>(3), 1);
  Tensor y, y_plain;
  for (int step = 0; step < 2; ++step) {
    h->forward(y, x, Mode::train);
    plain->forward(y_plain, x, Mode::train);
    for (std::int64_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], y_plain[i], 1e-5) << "step " << step;
  }
  auto& bn = dynamic_cast<BatchNorm&>(*h.layer);
  std::int64_t* steps = nullptr;
  for (const StateEntry& e : bn.state())
    if (e.name == "renorm_steps") steps = static_cast<std::int64_t*>(e.data);
  ASSERT_NE(steps, nullptr) << "renorm_steps is not part of the saved state";
  EXPECT_EQ(*steps, 2);

  LayerHarness copy(make_layer(bn.config()), 1);
  std::copy(h.params.begin(), h.params.end(), copy.params.begin());
  for (const StateEntry& from : bn.state())
    for (const StateEntry& to : copy->state())
      if (to.name == from.name) {
        const std::int64_t bytes = numel(from.shape) * (from.dtype == StateEntry::DType::i64 ? 8 : 4);
        std::memcpy(to.data, from.data, static_cast<std::size_t>(bytes));
      }
  for (int step = 0; step < 10; ++step) {  // well into the ramp, where r and d act
    Tensor a, b;
    h->forward(a, x, Mode::train);
    copy->forward(b, x, Mode::train);
    for (std::int64_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << "step " << step;
  }
  h->forward(y, x, Mode::train);
  plain->forward(y_plain, x, Mode::train);
  double apart = 0;
  for (std::int64_t i = 0; i < y.size(); ++i) apart = std::max(apart, static_cast<double>(std::abs(y[i] - y_plain[i])));
  EXPECT_GT(apart, 1e-3) << "after the warm-up the correction should act";
}

// Eval mode is plain batch norm with the running statistics, for both variants.
TEST(BatchNormVariants, EvalIsPlainBatchNorm) {
  Rng rng(22);
  const Tensor x = random_tensor({5, 4}, rng);
  for (const BatchNormOptions& o : {variant(2, false), variant(0, true)}) {
    LayerHarness a(std::make_unique<BatchNorm>(4, o), 1), b(std::make_unique<BatchNorm>(4), 1);
    Rng r1(3), r2(3);
    prepare(a, r1);
    prepare(b, r2);
    Tensor ya, yb;
    a->forward(ya, x, Mode::eval);
    b->forward(yb, x, Mode::eval);
    for (std::int64_t i = 0; i < ya.size(); ++i) ASSERT_EQ(ya[i], yb[i]);
  }
}

TEST(BatchNormVariants, ConfigRoundTripsAndPlainConfigUnchanged) {
  BatchNormOptions o = variant(8, true, 2.5, 4);
  o.renorm.warmup_steps = 321;
  const auto config = BatchNorm(7, o).config();
  EXPECT_EQ(make_layer(config)->config(), config);
  EXPECT_EQ(config.at("virtual_batch_size"), 8);
  EXPECT_EQ(config.at("renorm").at("warmup_steps"), 321);
  const auto plain = BatchNorm(7).config();
  EXPECT_FALSE(plain.contains("renorm"));
  EXPECT_FALSE(plain.contains("virtual_batch_size"));
}

TEST(BatchNormVariants, RefusesBadOptions) {
  BatchNormOptions o = variant(0, true, 0.5, 1);
  EXPECT_THROW(BatchNorm(3, o), Error);
  o = variant(0, true, 2, -1);
  EXPECT_THROW(BatchNorm(3, o), Error);
  o = variant(0, true);
  o.track_running_stats = false;
  EXPECT_THROW(BatchNorm(3, o), Error);
  EXPECT_THROW(BatchNorm(3, variant(-2, false)), Error);
  // A virtual batch of one example with one value per channel has no spread.
  LayerHarness h(std::make_unique<BatchNorm>(3, variant(1, false)));
  Tensor y;
  EXPECT_THROW(h->forward(y, Tensor(Shape{4, 3}), Mode::train), Error);
}

}  // namespace
}  // namespace bnorm::test

// The batch-norm kernels against the plain float64 reference written straight
// from the formulas, on odd sizes, batch 2 and far-from-zero means; and the
// layer's semantics (modes, running-average conventions, refusals).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "bnorm/error.hpp"
#include "bnorm/kernels/activation.hpp"
#include "bnorm/kernels/batchnorm.hpp"
#include "bnorm/kernels/batchnorm_reference.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "test_util.hpp"

namespace bnorm::test {
namespace {

// Scratch for one kernel call, filled with NaN: a kernel that read it before
// writing it would show in the results.
double* scratch(std::int64_t C) {
  static std::vector<double> work;
  work.assign(static_cast<std::size_t>(kernels::batchnorm_work_doubles(C)), std::nan(""));
  return work.data();
}

// The plain reference in double (kernels/batchnorm_reference.hpp): forward,
// then backward with its own statistics.
struct Reference {
  std::vector<double> y, dx, dgamma, dbeta, mean, var, inv_std;
};

Reference reference_batchnorm(const Tensor& x, const Tensor& dy, const std::vector<float>& gamma,
                              const std::vector<float>& beta, float eps, std::int64_t N, std::int64_t C,
                              std::int64_t S) {
  Reference r;
  const auto total = static_cast<std::size_t>(N * C * S), channels = static_cast<std::size_t>(C);
  r.y.resize(total);
  r.dx.resize(total);
  for (auto* per_channel : {&r.dgamma, &r.dbeta, &r.mean, &r.var, &r.inv_std}) per_channel->resize(channels);
  kernels::reference::batchnorm_forward_train(r.y.data(), nullptr, false, r.mean.data(), r.var.data(), r.inv_std.data(),
                                              x.data(), gamma.data(), beta.data(), eps, N, C, S);
  kernels::reference::batchnorm_backward(r.dx.data(), r.dgamma.data(), r.dbeta.data(), dy.data(), nullptr, x.data(),
                                         r.mean.data(), r.inv_std.data(), gamma.data(), N, C, S);
  return r;
}

// At least N examples, and as many more as make a pass over `tensors`
// tensors of (N, C, S) floats write around the caches on this machine
// (the threshold follows its L3).
std::int64_t examples_to_stream(std::int64_t N, std::int64_t C, std::int64_t S, std::int64_t tensors) {
  const std::int64_t bytes_per_example = tensors * C * S * std::int64_t{sizeof(float)};
  const std::int64_t threshold = kernels::batchnorm_tuning().stream_footprint_bytes;
  return std::max(N, (threshold + bytes_per_example - 1) / bytes_per_example);
}

double worst_error(const float* got, const std::vector<double>& want) {
  double worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i)
    worst = std::max(worst, std::abs(got[i] - want[i]) / (1.0 + std::abs(want[i])));
  return worst;
}

struct Shape3 {
  std::int64_t N, C, S;
  double mean, sd;
};

// Outputs start as NaN: a kernel that added to its output instead of
// assigning it, or left part of it unwritten, fails every comparison.
std::vector<float> junk(std::int64_t n) {
  return std::vector<float>(static_cast<std::size_t>(n), std::numeric_limits<float>::quiet_NaN());
}
Tensor junk_tensor(const Shape& shape) {
  Tensor t(shape);
  std::fill(t.span().begin(), t.span().end(), std::numeric_limits<float>::quiet_NaN());
  return t;
}

// Float rounding unit (half an ulp of 1).
constexpr double kU = 0x1p-24;

// The kernels sum in float only over stretches of at most B values (16 rows
// when S == 1, 1024 values of a run when S > 1; kernels/batchnorm.cpp) and
// merge those in double, so a per-channel sum of terms t_i is off by at most
// (B - 1)·u·Σ|t_i| from the exact one, plus u·|sum| for the final rounding to
// float. dbeta = Σ dy: exactly that. dgamma = Σ dy·(x - shift)·inv_std adds,
// per term, the rounding of the difference and of the product (2u, against
// |x - shift| <= |x - mean| + max|x - mean|, the shift being one of the
// channel's values), and the forward's float mean and inv_std, which the
// reference does not round: |Δmean|·inv_std·|Σ dy| + |Δinv_std|/inv_std·|dgamma|.
void expect_sums_within_rounding_bound(const Shape3& sh, const Tensor& x, const Tensor& dy, const float* dgamma,
                                       const float* dbeta, const float* mean, const float* inv_std,
                                       const std::vector<double>& ref_dgamma, const std::vector<double>& ref_dbeta,
                                       const std::vector<double>& ref_mean, const std::vector<double>& ref_inv_std) {
  const double B = sh.S == 1 ? 16.0 : static_cast<double>(std::min<std::int64_t>(sh.S, 1024));
  for (std::int64_t c = 0; c < sh.C; ++c) {
    const auto k = static_cast<std::size_t>(c);
    double abs_dy = 0, sum_dy = 0, max_dev = 0;
    for (std::int64_t n = 0; n < sh.N; ++n)
      for (std::int64_t i = 0; i < sh.S; ++i)
        max_dev = std::max(max_dev, std::abs(x[(n * sh.C + c) * sh.S + i] - ref_mean[k]));
    double abs_dy_dev = 0;
    for (std::int64_t n = 0; n < sh.N; ++n)
      for (std::int64_t i = 0; i < sh.S; ++i) {
        const std::int64_t j = (n * sh.C + c) * sh.S + i;
        abs_dy += std::abs(dy[j]);
        sum_dy += dy[j];
        abs_dy_dev += std::abs(dy[j]) * (std::abs(x[j] - ref_mean[k]) + max_dev);
      }
    const double dbeta_bound = (B - 1) * kU * abs_dy + kU * std::abs(ref_dbeta[k]);
    EXPECT_LE(std::abs(dbeta[k] - ref_dbeta[k]), dbeta_bound) << "dbeta channel " << c;
    const double d_mean = std::abs(mean[k] - ref_mean[k]);
    const double d_inv_std = std::abs(inv_std[k] - ref_inv_std[k]) / ref_inv_std[k];
    const double dgamma_bound = (B + 1) * kU * abs_dy_dev * ref_inv_std[k] + kU * std::abs(ref_dgamma[k]) +
                                d_mean * ref_inv_std[k] * std::abs(sum_dy) + d_inv_std * std::abs(ref_dgamma[k]);
    EXPECT_LE(std::abs(dgamma[k] - ref_dgamma[k]), dgamma_bound) << "dgamma channel " << c;
  }
}

TEST(BatchNormKernels, MatchFloat64ReferenceOnAwkwardShapes) {
  const Shape3 shapes[] = {{2, 1, 1, 0, 1},
                           {2, 7, 1, 5, 2},
                           {3, 13, 1, -3, 0.1},
                           {64, 33, 1, 10, 3},
                           {2, 3, 17, 0, 1},
                           {5, 4, 9, 100, 1},
                           {1, 6, 12, 0, 1},
                           {7, 5, 1, 1e3, 1},
                           {4, 2, 25, -50, 5},
                           {3, 3, 1, 0, 1e-3},
                           // (N, C) with C >= 64: register chunks of 64 channels plus a tail, and past 256
                           {20, 100, 1, 2, 1.5},
                           {17, 300, 1, -1, 1},
                           // large enough that forward (x, y) and backward both write around the
                           // caches: runs of 196 (whole lines every fourth run) and of an odd
                           // length (runs start at every alignment); rows of whole lines, and rows
                           // that are not (plain stores)
                           {examples_to_stream(88, 256, 196, 2), 256, 196, 1, 2},
                           {examples_to_stream(5, 173, 4913, 2), 173, 4913, -2, 1},
                           {examples_to_stream(1550, 1024, 1, 2), 1024, 1, 3, 1},
                           {examples_to_stream(1051, 1500, 1, 2), 1500, 1, 0, 1}};
  for (const Shape3& sh : shapes) {
    SCOPED_TRACE("N=" + std::to_string(sh.N) + " C=" + std::to_string(sh.C) + " S=" + std::to_string(sh.S) +
                 " mean=" + std::to_string(sh.mean));
    Rng rng(static_cast<std::uint64_t>(sh.N * 131 + sh.C * 17 + sh.S));
    const Tensor x = random_tensor({sh.N, sh.C, sh.S}, rng, sh.mean, sh.sd);
    const Tensor dy = random_tensor({sh.N, sh.C, sh.S}, rng);
    std::vector<float> gamma(static_cast<std::size_t>(sh.C)), beta(static_cast<std::size_t>(sh.C));
    for (auto& g : gamma) g = static_cast<float>(0.5 + rng.uniform());
    for (auto& b : beta) b = static_cast<float>(rng.normal());
    const auto ref = reference_batchnorm(x, dy, gamma, beta, 1e-5f, sh.N, sh.C, sh.S);

    Tensor y = junk_tensor(x.shape()), dx = junk_tensor(x.shape());
    std::vector<float> mean = junk(sh.C), var = junk(sh.C), inv_std = junk(sh.C), dgamma = junk(sh.C),
                       dbeta = junk(sh.C);
    kernels::batchnorm_forward_train(y.data(), mean.data(), var.data(), inv_std.data(), x.data(), gamma.data(),
                                     beta.data(), 1e-5f, sh.N, sh.C, sh.S, scratch(sh.C));
    kernels::batchnorm_backward(dx.data(), dgamma.data(), dbeta.data(), dy.data(), x.data(), mean.data(),
                                inv_std.data(), gamma.data(), sh.N, sh.C, sh.S, scratch(sh.C));
    // Float32 storage of x itself limits y to about 1e-7·|mean|/sd relative.
    const double tol = 2e-6 * (1.0 + std::abs(sh.mean) / sh.sd);
    EXPECT_LE(worst_error(y.data(), ref.y), tol) << "y";
    EXPECT_LE(worst_error(dx.data(), ref.dx), tol * 10) << "dx";
    expect_sums_within_rounding_bound(sh, x, dy, dgamma.data(), dbeta.data(), mean.data(), inv_std.data(), ref.dgamma,
                                      ref.dbeta, ref.mean, ref.inv_std);
    // The mean is stored in float (1e-7·|mean|), after float sums over short
    // stretches around a shift, whose rounding scales with the spread.
    EXPECT_LE(worst_error(mean.data(), ref.mean), 1e-7 * (1 + std::abs(sh.mean)) + 1e-6 * sh.sd) << "mean";
    EXPECT_LE(worst_error(var.data(), ref.var), 1e-6) << "var";
    // Inference with the reference's statistics, rounded to float as a layer keeps them.
    const std::vector<float> ref_mean(ref.mean.begin(), ref.mean.end()), ref_var(ref.var.begin(), ref.var.end());
    std::vector<double> ref_y_inference(ref.y.size());
    kernels::reference::batchnorm_forward_inference(ref_y_inference.data(), false, x.data(), ref_mean.data(),
                                                    ref_var.data(), gamma.data(), beta.data(), 1e-5f, sh.N, sh.C, sh.S);
    y = junk_tensor(x.shape());
    kernels::batchnorm_forward_inference(y.data(), x.data(), ref_mean.data(), ref_var.data(), gamma.data(), beta.data(),
                                         1e-5f, sh.N, sh.C, sh.S, scratch(sh.C));
    EXPECT_LE(worst_error(y.data(), ref_y_inference), tol) << "inference y";
  }
}

// The case where var = E[x^2] - E[x]^2 in float fails: mean 1e6, spread 1.
// Rows (S == 1), short runs, and runs longer than the float blocks (S > 1024).
TEST(BatchNormKernels, LargeMeanNormalizesAccurately) {
  const Shape3 shapes[] = {
      {256, 4, 1, 1e6, 1.0}, {40, 130, 1, 1e6, 1.0}, {8, 5, 961, 1e6, 1.0}, {3, 2, 5000, -1e6, 1.0}};
  for (const Shape3& sh : shapes) {
    Rng rng(7);
    const Tensor x = random_tensor({sh.N, sh.C, sh.S}, rng, sh.mean, sh.sd);
    Tensor y(x.shape());
    const auto Cs = static_cast<std::size_t>(sh.C);
    std::vector<float> mean(Cs), var(Cs), inv_std(Cs);
    kernels::batchnorm_forward_train(y.data(), mean.data(), var.data(), inv_std.data(), x.data(), nullptr, nullptr,
                                     1e-5f, sh.N, sh.C, sh.S, scratch(sh.C));
    const std::vector<float> ones(Cs, 1.0f), zeros(Cs, 0.0f);
    const auto ref = reference_batchnorm(x, x, ones, zeros, 1e-5f, sh.N, sh.C, sh.S);
    for (std::int64_t i = 0; i < x.size(); ++i)
      ASSERT_NEAR(y[i], ref.y[static_cast<std::size_t>(i)], 1e-3) << "S " << sh.S << " value " << i;
  }
}

TEST(BatchNormKernels, InferenceUsesGivenStatistics) {
  const float x[] = {1, 2, 3, 4, 5, 6};  // (N=3, C=2)
  const float mean[] = {2, 5}, var[] = {4, 1}, gamma[] = {2, 1}, beta[] = {0.5f, -1};
  float y[6];
  kernels::batchnorm_forward_inference(y, x, mean, var, gamma, beta, 0.0f, 3, 2, 1, scratch(2));
  // y = (x - mean) * gamma / sqrt(var) + beta
  const float want[] = {(1 - 2) * 2 / 2.0f + 0.5f, (2 - 5) * 1 / 1.0f - 1,    (3 - 2) * 2 / 2.0f + 0.5f,
                        (4 - 5) * 1 / 1.0f - 1,    (5 - 2) * 2 / 2.0f + 0.5f, (6 - 5) * 1 / 1.0f - 1};
  for (int i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(y[i], want[i]) << i;
}

// ---- Layer semantics ----

Tensor column_batch(std::initializer_list<float> values) {
  Tensor t(Shape{static_cast<std::int64_t>(values.size()), 1});
  std::int64_t i = 0;
  for (float v : values) t[i++] = v;
  return t;
}

// Fused BN + ReLU against the two kernels run one after the other: same bits,
// in training forward (outputs and statistics), backward and inference. Shapes
// cover rows (S == 1) with C not a multiple of the vector width, short and long
// runs with tails, a tensor large enough for streamed stores, and means that
// send many values below zero.
TEST(BatchNormKernels, FusedReluIsBitIdenticalToSeparateLayers) {
  const Shape3 shapes[] = {{7, 37, 1, 0.3, 1.0},
                           {64, 512, 1, -0.5, 2.0},
                           {3, 5, 17, 0.0, 1.0},
                           {4, 19, 196, 1.0, 3.0},
                           {2, 3, 1030, -1.0, 1.0},
                           {5, 173, 4913, 0.0, 1.0},
                           {examples_to_stream(1550, 1024, 1, 2), 1024, 1, 0.0, 1.0}};  // streamed
  for (const Shape3& sh : shapes) {
    const std::int64_t N = sh.N, C = sh.C, S = sh.S, total = N * C * S;
    Rng rng(static_cast<std::uint64_t>(N * 1000 + C * 10 + S));
    const Tensor x = random_tensor({N, C, S}, rng, sh.mean, sh.sd);
    const Tensor dout = random_tensor({N, C, S}, rng);
    std::vector<float> gamma(static_cast<std::size_t>(C)), beta(static_cast<std::size_t>(C));
    for (std::int64_t c = 0; c < C; ++c) {
      gamma[c] = static_cast<float>(0.5 + rng.uniform());
      beta[c] = static_cast<float>(rng.normal() * 0.5);
    }
    const auto Cs = static_cast<std::size_t>(C), Ts = static_cast<std::size_t>(total);
    const std::string where = std::to_string(N) + "x" + std::to_string(C) + "x" + std::to_string(S);

    // Separate: y = BN(x), out = relu(y); dy = relu'(out) * dout; dx = BN'(dy).
    std::vector<float> y = junk(total), out = junk(total), dy = junk(total), dx = junk(total), mean = junk(C),
                       var = junk(C), inv_std = junk(C), dg = junk(C), db = junk(C);
    kernels::batchnorm_forward_train(y.data(), mean.data(), var.data(), inv_std.data(), x.data(), gamma.data(),
                                     beta.data(), 1e-5f, N, C, S, scratch(C));
    kernels::relu_forward(out.data(), y.data(), total);
    kernels::relu_backward(dy.data(), dout.data(), out.data(), total);
    kernels::batchnorm_backward(dx.data(), dg.data(), db.data(), dy.data(), x.data(), mean.data(), inv_std.data(),
                                gamma.data(), N, C, S, scratch(C));

    std::vector<float> f_out = junk(total), f_dx = junk(total), f_mean = junk(C), f_var = junk(C), f_inv_std = junk(C),
                       f_dg = junk(C), f_db = junk(C);
    std::vector<std::uint8_t> mask(Ts, 7);
    kernels::batchnorm_relu_forward_train(f_out.data(), mask.data(), f_mean.data(), f_var.data(), f_inv_std.data(),
                                          x.data(), gamma.data(), beta.data(), 1e-5f, N, C, S, scratch(C));
    kernels::batchnorm_relu_backward(f_dx.data(), f_dg.data(), f_db.data(), dout.data(), mask.data(), x.data(),
                                     f_mean.data(), f_inv_std.data(), gamma.data(), N, C, S, scratch(C));
    std::int64_t zeros = 0;
    for (std::size_t i = 0; i < Ts; ++i) {
      ASSERT_EQ(f_out[i], out[i]) << where << " out " << i;
      ASSERT_EQ(mask[i], out[i] > 0.0f ? 1 : 0) << where << " mask " << i;
      ASSERT_EQ(f_dx[i], dx[i]) << where << " dx " << i;
      zeros += out[i] == 0.0f;
    }
    EXPECT_GT(zeros, total / 10) << where << ": the case must exercise the ReLU";
    for (std::size_t c = 0; c < Cs; ++c) {
      ASSERT_EQ(f_mean[c], mean[c]) << where;
      ASSERT_EQ(f_var[c], var[c]) << where;
      ASSERT_EQ(f_dg[c], dg[c]) << where;
      ASSERT_EQ(f_db[c], db[c]) << where;
    }

    std::fill(y.begin(), y.end(), std::numeric_limits<float>::quiet_NaN());
    std::fill(f_out.begin(), f_out.end(), std::numeric_limits<float>::quiet_NaN());
    kernels::batchnorm_forward_inference(y.data(), x.data(), mean.data(), var.data(), gamma.data(), beta.data(), 1e-5f,
                                         N, C, S, scratch(C));
    kernels::relu_forward(out.data(), y.data(), total);
    kernels::batchnorm_relu_forward_inference(f_out.data(), x.data(), mean.data(), var.data(), gamma.data(),
                                              beta.data(), 1e-5f, N, C, S, scratch(C));
    for (std::size_t i = 0; i < Ts; ++i) ASSERT_EQ(f_out[i], out[i]) << where << " inference " << i;
  }
}

// The layer picks one thread or the team for small passes by timing them
// (ThreadChoice), which is sound only if the thread count changes no bits:
// training forward and backward, plain and fused with ReLU, on one thread
// and on three, rows (S == 1) and planes, tails and all.
TEST(BatchNormKernels, ThreadCountDoesNotChangeBits) {
  struct Case {
    std::int64_t N, C, S;
  };
  const Case cases[] = {{64, 512, 1}, {40, 1000, 1}, {300, 77, 1}, {16, 24, 50}, {8, 33, 129}, {9, 70, 5}};
  const int saved = omp_get_max_threads();
  for (const Case& cs : cases) {
    const std::int64_t N = cs.N, C = cs.C, S = cs.S, total = N * C * S;
    Rng rng(static_cast<std::uint64_t>(N * 7 + C * 3 + S));
    const Tensor x = random_tensor({N, C, S}, rng, 0.5, 2.0);
    const Tensor dy = random_tensor({N, C, S}, rng);
    std::vector<float> gamma(static_cast<std::size_t>(C)), beta(static_cast<std::size_t>(C));
    for (std::int64_t c = 0; c < C; ++c) {
      gamma[c] = static_cast<float>(0.5 + rng.uniform());
      beta[c] = static_cast<float>(rng.normal());
    }
    struct Run {
      std::vector<float> y, dx, mean, var, inv_std, dg, db;
      std::vector<std::uint8_t> mask;
    };
    const auto run = [&](int threads, bool relu) {
      omp_set_num_threads(threads);
      Run r{junk(total), junk(total), junk(C), junk(C),
            junk(C),     junk(C),     junk(C), std::vector<std::uint8_t>(static_cast<std::size_t>(total), 7)};
      if (relu) {
        kernels::batchnorm_relu_forward_train(r.y.data(), r.mask.data(), r.mean.data(), r.var.data(), r.inv_std.data(),
                                              x.data(), gamma.data(), beta.data(), 1e-5f, N, C, S, scratch(C));
        kernels::batchnorm_relu_backward(r.dx.data(), r.dg.data(), r.db.data(), dy.data(), r.mask.data(), x.data(),
                                         r.mean.data(), r.inv_std.data(), gamma.data(), N, C, S, scratch(C));
      } else {
        kernels::batchnorm_forward_train(r.y.data(), r.mean.data(), r.var.data(), r.inv_std.data(), x.data(),
                                         gamma.data(), beta.data(), 1e-5f, N, C, S, scratch(C));
        kernels::batchnorm_backward(r.dx.data(), r.dg.data(), r.db.data(), dy.data(), x.data(), r.mean.data(),
                                    r.inv_std.data(), gamma.data(), N, C, S, scratch(C));
      }
      omp_set_num_threads(saved);
      return r;
    };
    for (const bool relu : {false, true}) {
      const Run one = run(1, relu), team = run(3, relu);
      const std::string where =
          std::to_string(N) + "x" + std::to_string(C) + "x" + std::to_string(S) + (relu ? " relu" : "");
      // Compared as bytes: equal floats are not enough, the bits must be.
      const auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
        return std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
      };
      EXPECT_TRUE(same(one.y, team.y)) << where << " y";
      EXPECT_TRUE(same(one.dx, team.dx)) << where << " dx";
      EXPECT_TRUE(same(one.mean, team.mean)) << where << " mean";
      EXPECT_TRUE(same(one.var, team.var)) << where << " var";
      EXPECT_TRUE(same(one.inv_std, team.inv_std)) << where << " inv_std";
      EXPECT_TRUE(same(one.dg, team.dg)) << where << " dgamma";
      EXPECT_TRUE(same(one.db, team.db)) << where << " dbeta";
      EXPECT_EQ(one.mask, team.mask) << where << " mask";
    }
  }
}

TEST(BatchNormLayer, RunningStatisticsFollowTheDocumentedFormulas) {
  // Batch {1, 3, 5, 7}: mean 4, biased var 5, unbiased var 20/3.
  const Tensor x = column_batch({1, 3, 5, 7});
  Tensor y;
  {
    LayerHarness h(std::make_unique<BatchNorm>(1));  // momentum 0.1, unbiased
    auto& bn = static_cast<BatchNorm&>(*h.layer);
    h->forward(y, x, Mode::train);
    EXPECT_FLOAT_EQ(bn.running_mean()[0], 0.9f * 0 + 0.1f * 4);
    EXPECT_FLOAT_EQ(bn.running_var()[0], 0.9f * 1 + 0.1f * (20.0f / 3));
    h->forward(y, x, Mode::train);
    EXPECT_FLOAT_EQ(bn.running_mean()[0], 0.9f * 0.4f + 0.1f * 4);
    EXPECT_EQ(bn.num_batches_tracked(), 2);
  }
  {
    BatchNormOptions o;
    o.unbiased_running_var = false;
    o.momentum = 0.5f;
    LayerHarness h(std::make_unique<BatchNorm>(1, o));
    auto& bn = static_cast<BatchNorm&>(*h.layer);
    h->forward(y, x, Mode::train);
    EXPECT_FLOAT_EQ(bn.running_var()[0], 0.5f * 1 + 0.5f * 5);
  }
  {
    BatchNormOptions o;
    o.momentum.reset();  // cumulative average: after k batches, the mean of the k statistics
    LayerHarness h(std::make_unique<BatchNorm>(1, o));
    auto& bn = static_cast<BatchNorm&>(*h.layer);
    h->forward(y, column_batch({1, 3}), Mode::train);    // mean 2
    h->forward(y, column_batch({10, 12}), Mode::train);  // mean 11
    h->forward(y, column_batch({0, 2}), Mode::train);    // mean 1
    EXPECT_FLOAT_EQ(bn.running_mean()[0], (2 + 11 + 1) / 3.0f);
    EXPECT_FLOAT_EQ(bn.running_var()[0], 2.0f);  // each batch's unbiased var is 2
  }
}

TEST(BatchNormLayer, EvalUsesRunningStatisticsAndChangesNothing) {
  LayerHarness h(std::make_unique<BatchNorm>(1));
  auto& bn = static_cast<BatchNorm&>(*h.layer);
  bn.running_mean()[0] = 3.0f;
  bn.running_var()[0] = 4.0f;
  Tensor y;
  h->forward(y, column_batch({5}), Mode::eval);  // a single example is fine in eval mode
  EXPECT_NEAR(y[0], (5 - 3) / std::sqrt(4 + 1e-5), 1e-6);
  EXPECT_EQ(bn.running_mean()[0], 3.0f);
  EXPECT_EQ(bn.num_batches_tracked(), 0);
}

TEST(BatchNormLayer, TrainingModeRefusesOneValuePerChannel) {
  LayerHarness h(std::make_unique<BatchNorm>(3));
  Tensor y;
  Tensor x(Shape{1, 3});
  try {
    h->forward(y, x, Mode::train);
    FAIL() << "a batch of one was accepted in training mode";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("more than one value per channel"), std::string::npos) << e.what();
  }
  // One example with spatial extent has several values per channel: allowed.
  Tensor image(Shape{1, 3, 2, 2});
  EXPECT_NO_THROW(h->forward(y, image, Mode::train));
}

TEST(BatchNormLayer, BatchStatsOfOneExampleCollapseToBeta) {
  LayerHarness h(std::make_unique<BatchNorm>(2));
  h.params = {2.0f, 3.0f, 0.25f, -0.5f};  // gamma, beta
  Tensor y;
  Tensor x(Shape{1, 2});
  x[0] = 17;
  x[1] = -4;
  h->forward(y, x, Mode::eval_batch_stats);
  EXPECT_FLOAT_EQ(y[0], 0.25f);
  EXPECT_FLOAT_EQ(y[1], -0.5f);
}

TEST(BatchNormLayer, WithoutRunningStatisticsEvalUsesTheBatch) {
  BatchNormOptions o;
  o.track_running_stats = false;
  LayerHarness h(std::make_unique<BatchNorm>(1, o));
  EXPECT_TRUE(h->state().empty() == false);  // weight and bias remain
  for (const auto& e : h->state()) EXPECT_NE(e.name, "running_mean");
  Tensor y_train, y_eval;
  const Tensor x = column_batch({1, 2, 4});
  h->forward(y_train, x, Mode::train);
  h->forward(y_eval, x, Mode::eval);
  for (std::int64_t i = 0; i < 3; ++i) EXPECT_EQ(y_train[i], y_eval[i]);
}

TEST(BatchNormLayer, BackwardWithoutTrainingForwardIsAnError) {
  LayerHarness h(std::make_unique<BatchNorm>(2));
  Tensor y, dx;
  Tensor x(Shape{4, 2});
  h->forward(y, x, Mode::eval);
  EXPECT_THROW(h->backward(&dx, y), Error);
}

TEST(BatchNormLayer, RejectsBadOptionsAndShapes) {
  BatchNormOptions o;
  o.eps = 0;
  EXPECT_THROW(BatchNorm(4, o), Error);
  o = {};
  o.momentum = 1.5f;
  EXPECT_THROW(BatchNorm(4, o), Error);
  EXPECT_THROW(BatchNorm(0), Error);
  LayerHarness h(std::make_unique<BatchNorm>(4));
  Tensor y;
  EXPECT_THROW(h->forward(y, Tensor(Shape{8, 3}), Mode::train), Error);
  EXPECT_THROW(h->forward(y, Tensor(Shape{8, 4, 2}), Mode::train), Error);
}

}  // namespace
}  // namespace bnorm::test

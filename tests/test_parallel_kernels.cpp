// The kernels that split their work across threads (matrix products by
// slices of the output, im2col / col2im and pooling by planes) against plain
// double-precision loops, on sizes large enough to take the parallel paths.
// Three threads, so slices are uneven and the split happens even on one core.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "bnorm/kernels/conv.hpp"
#include "bnorm/kernels/gemm.hpp"
#include "bnorm/nn/conv2d.hpp"
#include "bnorm/nn/pooling.hpp"
#include "bnorm/nn/thread_choice.hpp"
#include "test_util.hpp"

namespace bnorm {
namespace {

using test::LayerHarness;
using test::random_tensor;

class ParallelKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_ = omp_get_max_threads();
    omp_set_num_threads(3);
  }
  void TearDown() override { omp_set_num_threads(saved_); }

 private:
  int saved_ = 1;
};

std::vector<float> random_values(std::int64_t n, Rng& rng) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = static_cast<float>(rng.normal());
  return v;
}

// Largest |got − want| relative to the largest |want|; infinite if a value
// is not finite (std::max would pass over a NaN).
double max_rel_diff(const float* got, const std::vector<double>& want) {
  double diff = 0.0, scale = 1e-30;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    diff = std::max(diff, std::abs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return diff / scale;
}

TEST_F(ParallelKernels, GemmSlicesMatchPlainProducts) {
  // Tall (split by rows), wide (split by columns), and odd sizes so the last
  // slice is short; all above the size where the work is split.
  struct Case {
    std::int64_t M, N, K;
  };
  for (const Case c : {Case{203, 61, 37}, Case{29, 517, 45}, Case{64, 64, 64}}) {
    Rng rng(static_cast<std::uint64_t>(c.M + c.N + c.K));
    const auto a = random_values(c.M * c.K, rng),
               b = random_values(c.K * c.N, rng);  // read as (M,K)/(K,M), (K,N)/(N,K)
    std::vector<float> got(static_cast<std::size_t>(c.M * c.N));
    std::vector<double> want(got.size());
    auto reference = [&](auto at_a, auto at_b) {
      for (std::int64_t i = 0; i < c.M; ++i)
        for (std::int64_t j = 0; j < c.N; ++j) {
          double s = 0.0;
          for (std::int64_t k = 0; k < c.K; ++k) s += static_cast<double>(at_a(i, k)) * at_b(k, j);
          want[static_cast<std::size_t>(i * c.N + j)] = s;
        }
    };
    const auto a_mk = [&](std::int64_t i, std::int64_t k) { return a[static_cast<std::size_t>(i * c.K + k)]; };
    const auto a_km = [&](std::int64_t i, std::int64_t k) { return a[static_cast<std::size_t>(k * c.M + i)]; };
    const auto b_kn = [&](std::int64_t k, std::int64_t j) { return b[static_cast<std::size_t>(k * c.N + j)]; };
    const auto b_nk = [&](std::int64_t k, std::int64_t j) { return b[static_cast<std::size_t>(j * c.K + k)]; };
    const std::string size = std::to_string(c.M) + "x" + std::to_string(c.N) + "x" + std::to_string(c.K);

    // The plain products overwrite C whatever it held, NaN included (the
    // OpenBLAS path zeroes each slice itself, then accumulates).
    const auto fill_nan = [&] { std::fill(got.begin(), got.end(), std::numeric_limits<float>::quiet_NaN()); };
    fill_nan();
    kernels::gemm_ab(got.data(), a.data(), b.data(), c.M, c.N, c.K);
    reference(a_mk, b_kn);
    EXPECT_LT(max_rel_diff(got.data(), want), 1e-5) << "gemm_ab " << size;
    fill_nan();
    kernels::gemm_atb(got.data(), a.data(), b.data(), c.M, c.N, c.K);
    reference(a_km, b_kn);
    EXPECT_LT(max_rel_diff(got.data(), want), 1e-5) << "gemm_atb " << size;
    fill_nan();
    kernels::gemm_abt(got.data(), a.data(), b.data(), c.M, c.N, c.K);
    reference(a_mk, b_nk);
    EXPECT_LT(max_rel_diff(got.data(), want), 1e-5) << "gemm_abt " << size;
    // _add accumulates onto what C holds: the same product added again doubles it.
    kernels::gemm_abt_add(got.data(), a.data(), b.data(), c.M, c.N, c.K);
    for (double& w : want) w *= 2.0;
    EXPECT_LT(max_rel_diff(got.data(), want), 1e-5) << "gemm_abt_add " << size;
  }
}

// A convolution by its definition, in double: y, and the gradients for a given dy.
struct DirectConv {
  std::vector<double> y, dx, dw, db;
  DirectConv(const Tensor& x, const float* w, const float* b, const Tensor& dy, std::int64_t O, std::int64_t K,
             std::int64_t stride, std::int64_t pad) {
    const std::int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
    const std::int64_t OH = (H + 2 * pad - K) / stride + 1, OW = (W + 2 * pad - K) / stride + 1;
    y.assign(static_cast<std::size_t>(N * O * OH * OW), 0.0);
    dx.assign(static_cast<std::size_t>(x.size()), 0.0);
    dw.assign(static_cast<std::size_t>(O * C * K * K), 0.0);
    db.assign(static_cast<std::size_t>(O), 0.0);
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t o = 0; o < O; ++o)
        for (std::int64_t oh = 0; oh < OH; ++oh)
          for (std::int64_t ow = 0; ow < OW; ++ow) {
            const auto yi = static_cast<std::size_t>(((n * O + o) * OH + oh) * OW + ow);
            const double g = dy[static_cast<std::int64_t>(yi)];
            double s = b ? b[o] : 0.0;
            db[static_cast<std::size_t>(o)] += g;
            for (std::int64_t c = 0; c < C; ++c)
              for (std::int64_t i = 0; i < K; ++i)
                for (std::int64_t j = 0; j < K; ++j) {
                  const std::int64_t h = oh * stride - pad + i, v = ow * stride - pad + j;
                  if (h < 0 || h >= H || v < 0 || v >= W) continue;
                  const std::int64_t xi = ((n * C + c) * H + h) * W + v, wi = ((o * C + c) * K + i) * K + j;
                  s += static_cast<double>(w[wi]) * x[xi];
                  dx[static_cast<std::size_t>(xi)] += static_cast<double>(w[wi]) * g;
                  dw[static_cast<std::size_t>(wi)] += static_cast<double>(x[xi]) * g;
                }
            y[yi] = s;
          }
  }
};

TEST_F(ParallelKernels, ConvolutionMatchesItsDefinition) {
  // Padding wider than half the kernel (rows and columns entirely in the
  // padding), stride 2 with odd sizes, the default CNN's first layer, and a
  // 5x5 "same" convolution (im2col's shifted-copy path, as is the 3x3).
  struct Case {
    std::int64_t N, C, H, W, O, K, stride, pad;
    bool bias;
  };
  for (const Case& c : {Case{32, 4, 17, 19, 5, 3, 2, 2, true}, Case{4, 2, 23, 21, 4, 5, 1, 4, false},
                        Case{16, 1, 28, 28, 8, 3, 1, 1, false}, Case{40, 3, 9, 11, 4, 5, 1, 2, true}}) {
    Rng rng(static_cast<std::uint64_t>(c.H * 7 + c.K));
    LayerHarness h(std::make_unique<Conv2d>(c.C, c.O, c.K, c.K, c.stride, c.pad, c.bias), 3);
    for (float& p : h.params) p += static_cast<float>(0.1 * rng.normal());
    const Tensor x = random_tensor({c.N, c.C, c.H, c.W}, rng);
    Tensor y, dx;
    h->forward(y, x, Mode::train);
    const Tensor dy = random_tensor(y.shape(), rng);
    h->backward(&dx, dy);
    const float* bias = c.bias ? h.params.data() + c.O * c.C * c.K * c.K : nullptr;
    const DirectConv want(x, h.params.data(), bias, dy, c.O, c.K, c.stride, c.pad);
    ASSERT_EQ(static_cast<std::size_t>(y.size()), want.y.size());
    EXPECT_LT(max_rel_diff(y.data(), want.y), 1e-5) << "y, case H=" << c.H;
    EXPECT_LT(max_rel_diff(dx.data(), want.dx), 1e-5) << "dx, case H=" << c.H;
    EXPECT_LT(max_rel_diff(h.grads.data(), want.dw), 1e-5) << "dW, case H=" << c.H;
    if (c.bias) {
      EXPECT_LT(max_rel_diff(h.grads.data() + want.dw.size(), want.db), 1e-5) << "dbias, case H=" << c.H;
    }
  }
}

TEST_F(ParallelKernels, PoolingABatchEqualsPoolingEachPlane) {
  // One call over N·C planes (split across threads) against one call per
  // plane (too small to split): the same bits.
  const std::int64_t planes = 96, H = 28, W = 28;
  for (const auto& [K, stride] : {std::pair<std::int64_t, std::int64_t>{2, 2}, {3, 2}}) {
    const std::int64_t OH = (H - K) / stride + 1, OW = (W - K) / stride + 1;
    Rng rng(static_cast<std::uint64_t>(K));
    const auto x = random_values(planes * H * W, rng), dy = random_values(planes * OH * OW, rng);
    std::vector<float> y(static_cast<std::size_t>(planes * OH * OW)), y1(y.size());
    std::vector<std::int32_t> at(y.size()), at1(y.size());
    std::vector<float> dx(x.size()), dx1(x.size()), ya(y.size()), ya1(y.size()), dxa(x.size()), dxa1(x.size());
    kernels::maxpool_forward(y.data(), at.data(), x.data(), planes, H, W, K, stride);
    kernels::maxpool_backward(dx.data(), dy.data(), at.data(), planes, H, W, K, stride);
    kernels::avgpool_forward(ya.data(), x.data(), planes, H, W, K, stride);
    kernels::avgpool_backward(dxa.data(), dy.data(), planes, H, W, K, stride);
    for (std::int64_t p = 0; p < planes; ++p) {
      const std::int64_t i = p * H * W, o = p * OH * OW;
      kernels::maxpool_forward(y1.data() + o, at1.data() + o, x.data() + i, 1, H, W, K, stride);
      kernels::maxpool_backward(dx1.data() + i, dy.data() + o, at1.data() + o, 1, H, W, K, stride);
      kernels::avgpool_forward(ya1.data() + o, x.data() + i, 1, H, W, K, stride);
      kernels::avgpool_backward(dxa1.data() + i, dy.data() + o, 1, H, W, K, stride);
    }
    EXPECT_EQ(y, y1);
    EXPECT_EQ(at, at1);
    EXPECT_EQ(dx, dx1);
    EXPECT_EQ(ya, ya1);
    EXPECT_EQ(dxa, dxa1);
  }
}

// ThreadChoice, fed made-up times: a probe is kPhase calls on one thread then
// kPhase on the team, and only the second half of each phase counts.
template <class Time>
std::vector<bool> probe_and_choose(ThreadChoice& choice, Time time) {
  std::vector<bool> asked;
  for (std::int64_t i = 0; i < 2 * ThreadChoice::kPhase; ++i) {
    const bool on_one = choice.next_on_one_thread();
    asked.push_back(on_one);
    choice.record(time(on_one, i % ThreadChoice::kPhase >= ThreadChoice::kPhase / 2));
  }
  return asked;
}

TEST_F(ParallelKernels, ThreadChoiceKeepsTheFasterSideOfEachProbe) {
  ThreadChoice choice;
  // The team is faster where it counts; right after the switches, one
  // thread looks far faster, which must not count.
  const auto asked = probe_and_choose(
      choice, [](bool on_one, bool counted) { return counted ? (on_one ? 2e-5 : 1e-5) : (on_one ? 1e-9 : 1.0); });
  for (std::int64_t i = 0; i < 2 * ThreadChoice::kPhase; ++i)
    EXPECT_EQ(asked[static_cast<std::size_t>(i)], i < ThreadChoice::kPhase) << "call " << i;
  EXPECT_FALSE(choice.on_one_thread());
  for (std::int64_t i = 2 * ThreadChoice::kPhase; i < ThreadChoice::kPeriod; ++i) {
    EXPECT_FALSE(choice.next_on_one_thread()) << "call " << i;
    choice.record(1e-5);
  }
  // The next probe finds one thread faster, and it is used from then on.
  probe_and_choose(choice, [](bool on_one, bool) { return on_one ? 1e-5 : 3e-5; });
  EXPECT_TRUE(choice.on_one_thread());
  EXPECT_TRUE(choice.next_on_one_thread());
}

TEST_F(ParallelKernels, ThreadChoiceIsNotSwayedByOneSlowCallOrATie) {
  ThreadChoice choice;
  // One thread takes 1e-5 s but one of its counted calls is hit by an
  // interrupt (1e-3 s); the team takes 1.5e-5 s. A sum would pick the team.
  std::int64_t counted_on_one = 0;
  probe_and_choose(choice, [&](bool on_one, bool counted) {
    if (on_one && counted && counted_on_one++ == 1) return 1e-3;
    return on_one ? 1e-5 : 1.5e-5;
  });
  EXPECT_TRUE(choice.on_one_thread());
  for (std::int64_t i = 2 * ThreadChoice::kPhase; i < ThreadChoice::kPeriod; ++i) choice.record(1e-5);
  // The team 5 % faster: within the margin, so one thread stays.
  probe_and_choose(choice, [](bool on_one, bool) { return on_one ? 1e-5 : 0.95e-5; });
  EXPECT_TRUE(choice.on_one_thread());
  for (std::int64_t i = 2 * ThreadChoice::kPhase; i < ThreadChoice::kPeriod; ++i) choice.record(1e-5);
  // The team clearly faster, with one of its counted calls slow: the team.
  std::int64_t counted_on_team = 0;
  probe_and_choose(choice, [&](bool on_one, bool counted) {
    if (!on_one && counted && counted_on_team++ == 0) return 1e-3;
    return on_one ? 1e-5 : 0.6e-5;
  });
  EXPECT_FALSE(choice.on_one_thread());
}

TEST_F(ParallelKernels, ThreadChoiceRunsThePassOnTheThreadsItChose) {
  ThreadChoice choice;
  std::vector<int> seen;
  for (std::int64_t i = 0; i < 2 * ThreadChoice::kPhase + 2; ++i)
    choice.run([&] { seen.push_back(omp_get_max_threads()); });
  for (std::int64_t i = 0; i < 2 * ThreadChoice::kPhase; ++i)
    EXPECT_EQ(seen[static_cast<std::size_t>(i)], i < ThreadChoice::kPhase ? 1 : 3) << "call " << i;
  EXPECT_EQ(omp_get_max_threads(), 3) << "the team's size is restored";
}

}  // namespace
}  // namespace bnorm

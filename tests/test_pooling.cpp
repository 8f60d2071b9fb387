// The pooling kernels against plain references (their gradients are checked
// with the other layers' in test_gradcheck.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "bnorm/kernels/conv.hpp"
#include "bnorm/rng.hpp"

namespace bnorm {
namespace {

// Max pooling's forward against a plain reference: the first maximum wins a
// tie (PyTorch's choice, and where the gradient goes), a NaN wins and
// propagates, -inf is an ordinary value. Ties are made common by rounding.
TEST(MaxPoolKernel, MatchesReferenceOnTiesNaNAndInfinity) {
  struct Case {
    std::int64_t C, H, W, K, stride;
  };
  // The 2x2 cases take the row-by-row path (even width, eight windows a row
  // or more: 28 and 100 wide, the last eight overlapping), the whole-plane
  // path (even width, shorter rows), the one-at-a-time path (odd width) and
  // an odd height.
  for (const Case c : {Case{3, 8, 8, 2, 2}, Case{2, 9, 7, 2, 2}, Case{2, 11, 12, 2, 2}, Case{1, 100, 100, 2, 2},
                       Case{2, 29, 28, 2, 2}, Case{2, 7, 9, 3, 2}, Case{1, 6, 6, 3, 1}}) {
    Rng rng(static_cast<std::uint64_t>(c.H * 10 + c.K));
    std::vector<float> x(static_cast<std::size_t>(c.C * c.H * c.W));
    for (float& v : x) {
      const double u = rng.uniform();
      v = u < 0.03   ? std::numeric_limits<float>::quiet_NaN()
          : u < 0.06 ? -std::numeric_limits<float>::infinity()
                     : static_cast<float>(std::round(rng.normal() * 2.0));
    }
    x[1] = std::numeric_limits<float>::quiet_NaN();  // at least one, whatever the draw
    const std::int64_t OH = (c.H - c.K) / c.stride + 1, OW = (c.W - c.K) / c.stride + 1;
    std::vector<float> y(static_cast<std::size_t>(c.C * OH * OW));
    std::vector<std::int32_t> at(y.size());
    kernels::maxpool_forward(y.data(), at.data(), x.data(), c.C, c.H, c.W, c.K, c.stride);
    std::int64_t nans = 0;
    for (std::int64_t ch = 0; ch < c.C; ++ch)
      for (std::int64_t oh = 0; oh < OH; ++oh)
        for (std::int64_t ow = 0; ow < OW; ++ow) {
          const float* plane = x.data() + ch * c.H * c.W;
          std::int64_t want = (oh * c.stride) * c.W + ow * c.stride;
          float best = plane[want];
          for (std::int64_t i = 0; i < c.K; ++i)
            for (std::int64_t j = 0; j < c.K; ++j) {
              const std::int64_t k = (oh * c.stride + i) * c.W + ow * c.stride + j;
              if (std::isnan(plane[k]) ? (k != want || !std::isnan(best)) : (!std::isnan(best) && plane[k] > best)) {
                best = plane[k];
                want = k;
              }
            }
          const auto o = static_cast<std::size_t>((ch * OH + oh) * OW + ow);
          ASSERT_EQ(at[o], want) << "case " << c.H << "x" << c.W << " k" << c.K << " output " << o;
          if (std::isnan(best)) {
            ASSERT_TRUE(std::isnan(y[o]));
            ++nans;
          } else {
            ASSERT_EQ(y[o], best);
          }
        }
    EXPECT_GT(nans, 0) << "case " << c.H << "x" << c.W << " k" << c.K << " must exercise NaN";
  }
}

// Max pooling's backward against the plain scatter: zeros, then each
// output's gradient added at its argmax. The 2x2 cases take the
// window-by-window path with rows of fewer than eight windows, of eight and
// more (the last eight overlapping), and an odd height (a row in no window).
TEST(MaxPoolKernel, BackwardPutsEachGradientAtItsArgmax) {
  struct Case {
    std::int64_t C, H, W, K, stride;
  };
  for (const Case c : {Case{3, 8, 8, 2, 2}, Case{2, 28, 28, 2, 2}, Case{2, 11, 12, 2, 2}, Case{1, 100, 100, 2, 2},
                       Case{2, 9, 7, 2, 2}, Case{2, 7, 9, 3, 2}}) {
    Rng rng(static_cast<std::uint64_t>(c.H * 7 + c.W));
    std::vector<float> x(static_cast<std::size_t>(c.C * c.H * c.W));
    for (float& v : x) v = static_cast<float>(std::round(rng.normal() * 2.0));  // ties included
    const std::int64_t OH = (c.H - c.K) / c.stride + 1, OW = (c.W - c.K) / c.stride + 1;
    std::vector<float> y(static_cast<std::size_t>(c.C * OH * OW)), dy(y.size());
    std::vector<std::int32_t> at(y.size());
    for (float& v : dy) v = static_cast<float>(rng.normal());
    kernels::maxpool_forward(y.data(), at.data(), x.data(), c.C, c.H, c.W, c.K, c.stride);
    std::vector<float> dx(x.size(), std::numeric_limits<float>::quiet_NaN()), want(x.size(), 0.0f);
    kernels::maxpool_backward(dx.data(), dy.data(), at.data(), c.C, c.H, c.W, c.K, c.stride);
    for (std::int64_t ch = 0; ch < c.C; ++ch)
      for (std::int64_t o = 0; o < OH * OW; ++o)
        want[static_cast<std::size_t>(ch * c.H * c.W + at[static_cast<std::size_t>(ch * OH * OW + o)])] +=
            dy[static_cast<std::size_t>(ch * OH * OW + o)];
    for (std::size_t i = 0; i < x.size(); ++i)
      ASSERT_EQ(dx[i], want[i]) << "case " << c.H << "x" << c.W << " k" << c.K << " input " << i;
  }
}

}  // namespace
}  // namespace bnorm

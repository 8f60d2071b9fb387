// The Winograd path (every build) and the oneDNN path (BNORM_CONV=onednn)
// against the im2col path on the same random data: output, input gradient,
// weight and bias gradients. They sum in different orders (and Winograd adds
// its transforms), so they agree to float rounding: every value within
// kTolerance of the other, relative to the largest value of that tensor (a
// sum of C·KH·KW or N·P terms of size ~1 is off by a few ulps of its largest
// terms, far below 1e-4; a missed padding row, a dropped edge tile or a wrong
// stride is off by O(1)). The oneDNN tests are skipped in builds without it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "bnorm/error.hpp"
#include "bnorm/nn/conv2d.hpp"
#include "test_util.hpp"

namespace bnorm {
namespace {

using test::LayerHarness;
using test::random_tensor;
using Path = Conv2d::ConvPath;

constexpr double kTolerance = 1e-4;

struct Case {
  std::int64_t N, C, H, W, O, K, stride, pad;
  bool bias;
  std::string str() const {
    return "N=" + std::to_string(N) + " C=" + std::to_string(C) + " " + std::to_string(H) + "x" + std::to_string(W) +
           " O=" + std::to_string(O) + " K=" + std::to_string(K) + " s=" + std::to_string(stride) +
           " p=" + std::to_string(pad) + (bias ? " bias" : " no bias");
  }
};

struct Results {
  Tensor y, dx;
  std::vector<float> grads;  // dweight, then dbias
};

// One forward and backward on path, gradients prefilled with junk so that a
// pass that adds where it should assign is seen.
Results run(const Case& c, Path path, const Tensor& x, const Tensor& dy) {
  LayerHarness h(std::make_unique<Conv2d>(c.C, c.O, c.K, c.K, c.stride, c.pad, c.bias), 7);
  static_cast<Conv2d&>(*h.layer).set_path(path);
  // A bias starts at zero; a different one per channel shows a bias added
  // to the wrong channel. (The parameters are the weights, then the bias.)
  const auto nw = static_cast<std::size_t>(c.O * c.C * c.K * c.K);
  for (std::size_t o = nw; o < h.params.size(); ++o) h.params[o] = 0.1f * static_cast<float>(o - nw + 1);
  Results r;
  std::fill(h.grads.begin(), h.grads.end(), 1e3f);
  h->forward(r.y, x, Mode::train);
  r.dx = Tensor(x.shape());
  std::fill(r.dx.span().begin(), r.dx.span().end(), -1e3f);
  h->backward(&r.dx, dy);
  r.grads = h.grads;
  return r;
}

// The largest |a − b| over the largest |b|.
double relative_gap(const float* a, const float* b, std::int64_t n) {
  double gap = 0, scale = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    gap = std::max(gap, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return gap / std::max(scale, 1e-30);
}

void expect_paths_agree(const Case& c, Path path) {
  Rng rng(11);
  const Tensor x = random_tensor({c.N, c.C, c.H, c.W}, rng, 0.5, 1.0);
  const std::int64_t OH = (c.H + 2 * c.pad - c.K) / c.stride + 1, OW = (c.W + 2 * c.pad - c.K) / c.stride + 1;
  const Tensor dy = random_tensor({c.N, c.O, OH, OW}, rng);
  const Results ref = run(c, Path::im2col, x, dy), got = run(c, path, x, dy);
  ASSERT_EQ(got.y.shape(), ref.y.shape()) << c.str();
  EXPECT_LE(relative_gap(got.y.data(), ref.y.data(), ref.y.size()), kTolerance) << "y, " << c.str();
  EXPECT_LE(relative_gap(got.dx.data(), ref.dx.data(), ref.dx.size()), kTolerance) << "dx, " << c.str();
  const auto nw = static_cast<std::int64_t>(c.O * c.C * c.K * c.K);
  EXPECT_LE(relative_gap(got.grads.data(), ref.grads.data(), nw), kTolerance) << "dweight, " << c.str();
  if (c.bias) {
    EXPECT_LE(relative_gap(got.grads.data() + nw, ref.grads.data() + nw, c.O), kTolerance) << "dbias, " << c.str();
  }
}

TEST(ConvWinograd, MatchesIm2colPath) {
  const Case cases[] = {
      {64, 32, 14, 14, 64, 3, 1, 1, false},  // the default CNN's second layer
      {64, 1, 28, 28, 32, 3, 1, 1, false},   // and its first (im2col by default: one channel)
      {64, 1, 28, 28, 30, 3, 1, 1, true},    // the same with a bias, 30 channels: uneven thread shares
      {3, 5, 9, 7, 6, 3, 1, 1, true},        // odd output sizes: the last tile row and column half used
      {2, 4, 8, 8, 3, 3, 1, 0, true},        // no padding
      {2, 3, 5, 6, 4, 3, 1, 2, false},       // wide padding: tiles of zeros at the edges
      {1, 2, 3, 300, 2, 3, 1, 1, true},      // wider than one strip of tiles, batch of one
      {2, 3, 1, 1, 2, 3, 1, 1, false},       // a 1x1 plane: one tile, mostly padding
      {1, 2, 8, 16, 3, 3, 1, 1, true},       // 8 tile columns: the adjoint's block past the last tile
      {1, 2, 100, 90, 2, 3, 1, 1, false},    // too large for a padded copy: the strip-by-strip code
  };
  for (const Case& c : cases) expect_paths_agree(c, Path::winograd);
}

// The default path: Winograd only where it pays (3x3, stride 1, 8 channels or
// more), as the layer's comment says; seen through what set_path refuses.
TEST(ConvWinograd, RefusedForOtherKernels) {
  EXPECT_THROW(Conv2d(8, 8, 5, 5, 1, 2, false).set_path(Path::winograd), Error);
  EXPECT_THROW(Conv2d(8, 8, 3, 3, 2, 1, false).set_path(Path::winograd), Error);
  EXPECT_THROW(Conv2d(8, 8, 3, 1, 1, 1, false).set_path(Path::winograd), Error);
  EXPECT_NO_THROW(Conv2d(1, 8, 3, 3, 1, 0, false).set_path(Path::winograd));
}

// A layer that meets a new batch size (a last, smaller batch) gives the
// im2col path's values for it: the tile count, and every buffer, follow N.
TEST(ConvWinograd, NewBatchSize) {
  Rng rng(3);
  LayerHarness a(std::make_unique<Conv2d>(3, 4, 3, 3, 1, 1, true), 5),
      b(std::make_unique<Conv2d>(3, 4, 3, 3, 1, 1, true), 5);
  static_cast<Conv2d&>(*a.layer).set_path(Path::winograd);
  static_cast<Conv2d&>(*b.layer).set_path(Path::im2col);
  for (std::int64_t N : {4, 2, 4}) {
    const Tensor x = random_tensor({N, 3, 6, 5}, rng);
    const Tensor dy = random_tensor({N, 4, 6, 5}, rng);
    Tensor ya, yb, dxa(x.shape()), dxb(x.shape());
    a->forward(ya, x, Mode::train);
    b->forward(yb, x, Mode::train);
    a->backward(&dxa, dy);
    b->backward(&dxb, dy);
    ASSERT_TRUE(ya.has_shape({N, 4, 6, 5}));
    EXPECT_LE(relative_gap(ya.data(), yb.data(), yb.size()), kTolerance) << "N=" << N;
    EXPECT_LE(relative_gap(dxa.data(), dxb.data(), dxb.size()), kTolerance) << "N=" << N;
    EXPECT_LE(relative_gap(a.grads.data(), b.grads.data(), 4 * 3 * 9), kTolerance) << "N=" << N;
  }
}

TEST(ConvOnednn, MatchesIm2colPath) {
  if (!Conv2d::onednn_built()) GTEST_SKIP() << "built without oneDNN convolutions (BNORM_CONV=onednn)";
  const Case cases[] = {
      {64, 1, 28, 28, 32, 3, 1, 1, false},   // the default CNN's first layer
      {64, 32, 14, 14, 64, 3, 1, 1, false},  // and its second
      {3, 5, 9, 7, 6, 3, 2, 1, true},        // odd sizes, stride 2, bias
      {2, 4, 8, 8, 3, 5, 1, 2, true},        // wide padding
      {5, 3, 10, 11, 4, 2, 3, 0, false},     // stride larger than the kernel, rows left out
      {1, 2, 6, 6, 2, 1, 1, 0, true},        // 1x1, batch of one
  };
  for (const Case& c : cases) expect_paths_agree(c, Path::onednn);
}

// A layer that meets a new batch size makes its primitives again (a last,
// smaller batch), and gives the im2col path's values for it.
TEST(ConvOnednn, NewBatchSizeGetsNewPrimitives) {
  if (!Conv2d::onednn_built()) GTEST_SKIP() << "built without oneDNN convolutions (BNORM_CONV=onednn)";
  Rng rng(3);
  LayerHarness a(std::make_unique<Conv2d>(3, 4, 3, 3, 1, 1, true), 5),
      b(std::make_unique<Conv2d>(3, 4, 3, 3, 1, 1, true), 5);
  static_cast<Conv2d&>(*b.layer).set_path(Path::im2col);
  for (std::int64_t N : {4, 2, 4}) {
    const Tensor x = random_tensor({N, 3, 6, 6}, rng);
    Tensor ya, yb;
    a->forward(ya, x, Mode::train);
    b->forward(yb, x, Mode::train);
    ASSERT_TRUE(ya.has_shape({N, 4, 6, 6}));
    EXPECT_LE(relative_gap(ya.data(), yb.data(), yb.size()), kTolerance) << "N=" << N;
  }
}

TEST(ConvOnednn, PathRefusedWhereNotBuilt) {
  if (Conv2d::onednn_built()) GTEST_SKIP() << "this build has oneDNN convolutions";
  Conv2d conv(1, 1, 3, 3, 1, 1, false);
  EXPECT_THROW(conv.set_path(Conv2d::ConvPath::onednn), Error);
}

}  // namespace
}  // namespace bnorm

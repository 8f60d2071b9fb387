// Every layer's backward pass against central finite differences of
//   L(x, θ) = Σ r ⊙ f(x; θ)       (r a fixed random tensor, L accumulated in double)
// for the input and every parameter, BN in training mode included; then whole
// models through the softmax cross-entropy loss, with BN before and after the
// activation. Also proves each backward assigns rather than adds.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "bnorm/kernels/conv.hpp"
#include "bnorm/nn/activation.hpp"
#include "bnorm/nn/arch.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/nn/conv2d.hpp"
#include "bnorm/nn/layer_factory.hpp"
#include "bnorm/nn/linear.hpp"
#include "bnorm/nn/loss.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/nn/pooling.hpp"
#include "gradcheck.hpp"
#include "test_util.hpp"

namespace bnorm::test {
namespace {

TEST(GradCheck, LinearWithBias) {
  Rng rng(11);
  LayerHarness h(std::make_unique<Linear>(7, 5, true), 3);
  for (float& b : h.params) b += 0.1f;  // non-zero bias
  check_layer(h, random_tensor({4, 7}, rng), 12);
}

TEST(GradCheck, LinearWithoutBias) {
  Rng rng(13);
  LayerHarness h(std::make_unique<Linear>(6, 3, false), 4);
  check_layer(h, random_tensor({5, 6}, rng), 14);
}

TEST(GradCheck, Activations) {
  for (ActivationKind kind : {ActivationKind::relu, ActivationKind::tanh, ActivationKind::sigmoid}) {
    Rng rng(15);
    LayerHarness h(std::make_unique<Activation>(kind));
    check_layer(h, away_from_zero(random_tensor({3, 8}, rng)), 16);
  }
}

TEST(GradCheck, BatchNormTrainingModeNC) {
  Rng rng(17);
  LayerHarness h(std::make_unique<BatchNorm>(6), 5);
  perturb_affine(h, rng);
  check_layer(h, random_tensor({8, 6}, rng, 2.0, 1.5), 18);
}

TEST(GradCheck, BatchNormTrainingModeBatchOfTwo) {
  Rng rng(19);
  LayerHarness h(std::make_unique<BatchNorm>(3), 5);
  perturb_affine(h, rng);
  check_layer(h, random_tensor({2, 3}, rng), 20);
}

TEST(GradCheck, BatchNormTrainingModeNCHW) {
  Rng rng(21);
  LayerHarness h(std::make_unique<BatchNorm>(3), 6);
  perturb_affine(h, rng);
  check_layer(h, random_tensor({2, 3, 2, 3}, rng, -1.0, 0.7), 22);
}

TEST(GradCheck, BatchNormWithoutAffine) {
  Rng rng(23);
  BatchNormOptions o;
  o.scale = o.center = false;
  LayerHarness h(std::make_unique<BatchNorm>(5, o));
  check_layer(h, random_tensor({6, 5}, rng), 24);
}

// A frozen layer with running statistics unlike the batch's, so that a
// backward which treated them as batch statistics (terms through the mean
// and variance) would disagree with the finite differences.
LayerHarness frozen_bn(std::int64_t C, BnFreeze freeze, Rng& rng) {
  BatchNormOptions o;
  o.freeze = freeze;
  LayerHarness h(std::make_unique<BatchNorm>(C, o), 5);
  perturb_affine(h, rng);
  auto& bn = dynamic_cast<BatchNorm&>(*h.layer);
  for (std::int64_t c = 0; c < C; ++c) {
    bn.running_mean()[c] = static_cast<float>(rng.normal());
    bn.running_var()[c] = static_cast<float>(0.3 + rng.uniform());
  }
  return h;
}

TEST(GradCheck, FrozenStatsBatchNormNC) {
  Rng rng(41);
  LayerHarness h = frozen_bn(6, BnFreeze::stats, rng);
  check_layer(h, random_tensor({8, 6}, rng, 2.0, 1.5), 42);
}

TEST(GradCheck, FrozenStatsBatchNormNCHW) {
  Rng rng(43);
  LayerHarness h = frozen_bn(3, BnFreeze::stats, rng);
  check_layer(h, random_tensor({2, 3, 2, 3}, rng, -1.0, 0.7), 44);
}

// A batch of one is a per-channel affine map like any other when frozen.
TEST(GradCheck, FrozenStatsBatchNormSingleExample) {
  Rng rng(45);
  LayerHarness h = frozen_bn(4, BnFreeze::stats, rng);
  check_layer(h, random_tensor({1, 4}, rng), 46);
}

// freeze all: dx as for stats, and gamma and beta get exactly zero gradients
// (so an optimizer step leaves them alone).
TEST(GradCheck, FrozenAllBatchNormZeroesParameterGradients) {
  Rng rng(47);
  LayerHarness h = frozen_bn(5, BnFreeze::all, rng);
  const Tensor x = random_tensor({6, 5}, rng);
  const Tensor r = random_tensor({6, 5}, rng);
  Tensor y, dx;
  std::fill(h.grads.begin(), h.grads.end(), 7.0f);
  h->forward(y, x, Mode::train);
  h->backward(&dx, r);
  for (const float g : h.grads) EXPECT_EQ(g, 0.0f);
  Tensor xv = x;
  auto loss_x = [&] {
    Tensor out;
    h->forward(out, xv, Mode::train);
    double sum = 0.0;
    for (std::int64_t i = 0; i < out.size(); ++i) sum += static_cast<double>(r[i]) * out[i];
    return sum;
  };
  const auto bad = compare("dx", xv.data(), dx.data(), xv.size(), loss_x);
  EXPECT_TRUE(bad.empty()) << report(bad);
}

// The checker itself must be able to fail: a gradient off by 5 % is caught.
TEST(GradCheck, CheckerRejectsAWrongGradient) {
  Rng rng(25);
  LayerHarness h(std::make_unique<Linear>(4, 3, true), 7);
  Tensor x = random_tensor({3, 4}, rng), y, dx;
  const Tensor r = random_tensor({3, 3}, rng);
  h->forward(y, x, Mode::train);
  h->backward(&dx, r);
  for (std::int64_t i = 0; i < dx.size(); ++i) dx[i] *= 1.05f;
  auto loss = [&] {
    Tensor out;
    h->forward(out, x, Mode::train);
    double s = 0;
    for (std::int64_t i = 0; i < out.size(); ++i) s += static_cast<double>(r[i]) * out[i];
    return s;
  };
  const auto bad = compare("dx", x.data(), dx.data(), x.size(), loss);
  EXPECT_FALSE(bad.empty());
}

TEST(GradCheck, Conv2dShapesStridesPadding) {
  struct Case {
    std::int64_t C, O, KH, KW, stride, pad;
    bool bias;
    Shape x;
  };
  const Case cases[] = {{2, 3, 3, 3, 1, 1, true, {2, 2, 5, 5}},
                        {1, 2, 3, 3, 2, 1, false, {3, 1, 6, 7}},
                        {3, 2, 1, 1, 1, 0, true, {2, 3, 4, 3}},
                        {2, 4, 2, 3, 1, 0, true, {1, 2, 4, 5}},
                        {2, 2, 5, 5, 3, 2, false, {2, 2, 7, 6}},
                        // a small patch and P a multiple of 8: im2col's packing-free products
                        {1, 2, 3, 3, 1, 1, true, {2, 1, 4, 4}}};
  std::uint64_t seed = 50;
  for (const Case& c : cases) {
    Rng rng(seed++);
    LayerHarness h(std::make_unique<Conv2d>(c.C, c.O, c.KH, c.KW, c.stride, c.pad, c.bias), seed);
    for (float& p : h.params) p += static_cast<float>(0.1 * rng.normal());
    check_layer(h, random_tensor(c.x, rng), seed);
  }
}

// The Winograd path's backward is the adjoint of its own transforms and
// products: checked against finite differences of its own forward, at the
// shapes that reach its edge cases (no padding, odd outputs, wide padding).
TEST(GradCheck, Conv2dWinograd) {
  struct Case {
    std::int64_t C, O, pad;
    bool bias;
    Shape x;
  };
  const Case cases[] = {{2, 3, 1, true, {2, 2, 5, 5}}, {3, 2, 0, false, {1, 3, 6, 5}}, {1, 2, 2, true, {2, 1, 3, 4}}};
  std::uint64_t seed = 70;
  for (const Case& c : cases) {
    Rng rng(seed++);
    LayerHarness h(std::make_unique<Conv2d>(c.C, c.O, 3, 3, 1, c.pad, c.bias), seed);
    static_cast<Conv2d&>(*h.layer).set_path(Conv2d::ConvPath::winograd);
    for (float& p : h.params) p += static_cast<float>(0.1 * rng.normal());
    check_layer(h, random_tensor(c.x, rng), seed);
  }
}

TEST(GradCheck, Pooling) {
  Rng rng(60);
  LayerHarness max2(std::make_unique<Pool2d>(Pool2d::Kind::max, 2, 2));
  check_layer(max2, random_tensor({2, 3, 5, 4}, rng), 61);               // odd height: the last row is dropped
  LayerHarness max3(std::make_unique<Pool2d>(Pool2d::Kind::max, 3, 1));  // overlapping windows
  check_layer(max3, random_tensor({1, 2, 5, 5}, rng), 62);
  LayerHarness avg(std::make_unique<Pool2d>(Pool2d::Kind::average, 2, 2));
  check_layer(avg, random_tensor({2, 2, 4, 6}, rng), 63);
  LayerHarness gap(std::make_unique<GlobalAvgPool>());
  check_layer(gap, random_tensor({3, 4, 3, 2}, rng), 64);
  LayerHarness flatten(std::make_unique<Flatten>());
  check_layer(flatten, random_tensor({2, 3, 2, 2}, rng), 65);
}

// Dropout's mask changes on every training forward, so finite differences do
// not apply; its backward must route dy through exactly the forward's mask.
TEST(GradCheck, DropoutBackwardUsesTheForwardMask) {
  Rng rng(66);
  LayerHarness h(std::make_unique<Dropout>(0.3f), 67);
  const Tensor x = away_from_zero(random_tensor({4, 50}, rng));
  Tensor y, dx;
  h->forward(y, x, Mode::train);
  const Tensor dy = random_tensor(y.shape(), rng);
  h->backward(&dx, dy);
  std::int64_t dropped = 0;
  for (std::int64_t i = 0; i < x.size(); ++i) {
    const float scale = y[i] / x[i];  // 0 or 1/(1-p)
    ASSERT_TRUE(std::abs(scale) < 1e-6f || std::abs(scale - 1.0f / 0.7f) < 1e-5f) << scale;
    EXPECT_FLOAT_EQ(dx[i], dy[i] * scale);
    dropped += scale == 0.0f;
  }
  EXPECT_GT(dropped, 30);  // about 60 of 200
  EXPECT_LT(dropped, 100);
  h->forward(y, x, Mode::eval);
  for (std::int64_t i = 0; i < x.size(); ++i) ASSERT_EQ(y[i], x[i]);
}

// Whole models, loss included: every parameter gradient of the flat buffer.
// Parameters are moved off their init so that no gradient is trivially 0.
void check_model_gradients(Model& model, const Shape& x_shape, const std::vector<std::int32_t>& labels,
                           std::uint64_t seed, const std::string& description) {
  Rng rng(seed);
  model.init_parameters(rng);
  for (float& p : model.parameters()) p += static_cast<float>(0.1 * rng.normal());
  const Tensor x = random_tensor(x_shape, rng);
  auto loss = [&] { return softmax_cross_entropy(model.forward(x, Mode::train), labels, nullptr).loss; };
  Tensor dlogits;
  softmax_cross_entropy(model.forward(x, Mode::train), labels, &dlogits);
  model.backward(dlogits);
  const std::vector<float> grads(model.gradients().begin(), model.gradients().end());
  const auto bad =
      compare("dparams", model.parameters().data(), grads.data(), static_cast<std::int64_t>(grads.size()), loss);
  EXPECT_TRUE(bad.empty()) << description << ": " << bad.size() << " of " << grads.size() << " disagree\n"
                           << report(bad);
}

void check_model(BnPlacement placement, ActivationKind activation, std::uint64_t seed) {
  MlpSpec spec;
  spec.widths = {5, 6, 4, 3};
  spec.bn = placement;
  spec.activation = activation;
  Model model(Shape{5}, build_mlp_layers(spec));
  check_model_gradients(model, {6, 5}, {0, 2, 1, 1, 0, 2}, seed,
                        "bn " + bn_placement_name(placement) + ", " + activation_name(activation));
}

TEST(GradCheck, ModelBnBeforeActivation) {
  check_model(BnPlacement::before, ActivationKind::tanh, 31);
  check_model(BnPlacement::before, ActivationKind::relu, 32);
}
TEST(GradCheck, ModelBnAfterActivation) {
  check_model(BnPlacement::after, ActivationKind::tanh, 33);
  check_model(BnPlacement::after, ActivationKind::sigmoid, 34);
}
TEST(GradCheck, ModelWithoutBn) { check_model(BnPlacement::none, ActivationKind::tanh, 35); }

// Frozen BN in whole models through the loss, before and after the
// activation: the MLP's BN + ReLU is fused (the mask path of the frozen
// backward); the CNN uses tanh, whose smoothness keeps the finite differences
// of its many conv weights off ReLU's kink (test_recalibrate checks the fused
// (N, C, H, W) case against the unfused one).
TEST(GradCheck, ModelsWithFrozenBatchNorm) {
  BatchNormOptions frozen;
  frozen.freeze = BnFreeze::stats;
  for (BnPlacement placement : {BnPlacement::before, BnPlacement::after}) {
    MlpSpec spec;
    spec.widths = {5, 6, 4, 3};
    spec.bn = placement;
    spec.activation = ActivationKind::relu;
    spec.bn_options = frozen;
    Model mlp(Shape{5}, build_mlp_layers(spec));
    check_model_gradients(mlp, {6, 5}, {0, 2, 1, 1, 0, 2}, 51, "frozen mlp, bn " + bn_placement_name(placement));
    const auto arch = parse_arch("conv3x3:3,bn,tanh,avgpool2,conv3x3:4:s2,bn,tanh,fc:3", {2, 8, 8}, placement, frozen);
    Model cnn = Model::from_architecture(arch);
    check_model_gradients(cnn, {4, 2, 8, 8}, {0, 2, 1, 1}, 52, "frozen cnn, bn " + bn_placement_name(placement));
  }
}

// A small CNN through the loss: conv → BN over (N, C, H, W) → ReLU → pool, twice.
TEST(GradCheck, ConvolutionalModelWithBatchNormBothPlacements) {
  for (BnPlacement placement : {BnPlacement::before, BnPlacement::after}) {
    const auto arch = parse_arch("conv3x3:3,bn,relu,maxpool2,conv3x3:4:s2,bn,tanh,avgpool2,fc:3", {2, 8, 8}, placement,
                                 BatchNormOptions{});
    Model model = Model::from_architecture(arch);
    check_model_gradients(model, {4, 2, 8, 8}, {0, 2, 1, 1}, 70, "cnn, bn " + bn_placement_name(placement));
  }
}

// dlib's trick: fill every output buffer with junk first. A backward that adds
// to its gradients instead of assigning them gives a different answer.
TEST(GradientContract, BackwardAssignsAndDoesNotAdd) {
  const std::vector<std::pair<std::function<LayerPtr()>, Shape>> cases = {
      {[] { return std::make_unique<Linear>(5, 4, true); }, {4, 5}},
      {[] { return std::make_unique<BatchNorm>(5); }, {4, 5}},
      {[] { return std::make_unique<Linear>(5, 4, false); }, {4, 5}},
      {[] { return std::make_unique<Activation>(ActivationKind::sigmoid); }, {4, 5}},
      {[] { return std::make_unique<Activation>(ActivationKind::relu); }, {4, 5}},
      {[] { return std::make_unique<Activation>(ActivationKind::tanh); }, {4, 5}},
      {[] { return std::make_unique<Flatten>(); }, {2, 2, 4, 4}},
      {[] { return std::make_unique<Conv2d>(2, 3, 3, 3, 1, 1, true); }, {2, 2, 4, 4}},
      {[] { return std::make_unique<BatchNorm>(2); }, {2, 2, 4, 4}},
      {[] { return std::make_unique<Pool2d>(Pool2d::Kind::max, 2, 2); }, {2, 2, 4, 4}},
      {[] { return std::make_unique<Pool2d>(Pool2d::Kind::average, 2, 2); }, {2, 2, 4, 4}},
      {[] { return std::make_unique<GlobalAvgPool>(); }, {2, 2, 4, 4}},
  };
  for (const auto& [make, shape] : cases) {
    Rng rng(41);
    const Tensor x = random_tensor(shape, rng);
    std::vector<float> clean_grads;
    Tensor clean_dx;
    for (int pass = 0; pass < 2; ++pass) {
      LayerHarness h(make(), 9);
      Tensor y, dx(x.shape());
      if (pass == 1) {
        std::fill(h.grads.begin(), h.grads.end(), 1e30f);
        for (std::int64_t i = 0; i < dx.size(); ++i) dx[i] = std::numeric_limits<float>::quiet_NaN();
      }
      h->forward(y, x, Mode::train);
      Rng r(42);
      h->backward(&dx, random_tensor(y.shape(), r));
      if (pass == 0) {
        clean_grads = h.grads;
        clean_dx = dx;
        continue;
      }
      EXPECT_EQ(h.grads, clean_grads) << h->type() << " adds to its parameter gradients";
      for (std::int64_t i = 0; i < dx.size(); ++i) ASSERT_EQ(dx[i], clean_dx[i]) << h->type() << " dx[" << i << "]";
    }
  }
}

}  // namespace
}  // namespace bnorm::test

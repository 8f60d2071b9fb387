// GroupNorm and LayerNorm: backward against finite differences, forward and
// backward against PyTorch 1.13 (fixtures/group_layer_norm_golden.safetensors,
// written by scripts/make_norm_fixtures.py), their arch tokens, and model files
// that keep them.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "bnorm/error.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/io/safetensors.hpp"
#include "bnorm/nn/arch.hpp"
#include "bnorm/nn/fold.hpp"
#include "bnorm/nn/group_norm.hpp"
#include "bnorm/nn/layer_factory.hpp"
#include "bnorm/nn/layer_norm.hpp"
#include "bnorm/nn/model.hpp"
#include "file_test_util.hpp"
#include "golden.hpp"
#include "gradcheck.hpp"
#include "test_util.hpp"

namespace bnorm::test {
namespace {

// --- finite differences ------------------------------------------------------

struct GroupCase {
  Shape x;
  std::int64_t groups;
};

TEST(GroupNormGradCheck, GroupsOneInBetweenAndPerChannel) {
  const GroupCase cases[] = {{{4, 6}, 1},       {{4, 6}, 2},       {{3, 6}, 6},  // (N, C)
                             {{2, 6, 3, 2}, 1}, {{2, 6, 2, 3}, 3}, {{3, 4, 2, 2}, 4}, {{1, 4, 1, 5}, 2}};
  std::uint64_t seed = 100;
  for (const GroupCase& c : cases) {
    SCOPED_TRACE("groups " + std::to_string(c.groups) + " input " + shape_str(c.x));
    Rng rng(seed++);
    LayerHarness h(std::make_unique<GroupNorm>(c.groups, c.x[1]), seed);
    perturb_affine(h, rng);
    check_layer(h, random_tensor(c.x, rng, 3.0, 1.5), seed++);
  }
}

TEST(GroupNormGradCheck, WithoutAffine) {
  Rng rng(120);
  LayerHarness h(std::make_unique<GroupNorm>(2, 4, 1e-3f, false));
  ASSERT_TRUE(h->param_slots().empty());
  check_layer(h, random_tensor({3, 4, 2, 2}, rng), 121);
}

TEST(LayerNormGradCheck, FeaturesAndImages) {
  const Shape shapes[] = {{5, 7}, {2, 3}, {2, 2, 3, 2}, {1, 3, 2, 2}};
  std::uint64_t seed = 130;
  for (const Shape& x : shapes) {
    SCOPED_TRACE("input " + shape_str(x));
    Rng rng(seed++);
    LayerHarness h(std::make_unique<LayerNorm>(Shape(x.begin() + 1, x.end())), seed);
    perturb_affine(h, rng);
    check_layer(h, random_tensor(x, rng, -2.0, 0.8), seed++);
  }
}

TEST(LayerNormGradCheck, WithoutAffine) {
  Rng rng(140);
  LayerHarness h(std::make_unique<LayerNorm>(Shape{3, 2, 2}, 1e-5f, false));
  check_layer(h, random_tensor({3, 3, 2, 2}, rng), 141);
}

// --- PyTorch 1.13 ------------------------------------------------------------

const std::string kFixture = std::string(BNORM_FIXTURE_DIR) + "/group_layer_norm_golden.safetensors";

LayerPtr layer_for_case(const nlohmann::json& c) {
  const Shape shape = c.at("shape").get<Shape>();
  const float eps = c.at("eps").get<float>();
  const bool affine = c.at("affine").get<bool>();
  if (c.at("kind") == "gn")
    return std::make_unique<GroupNorm>(c.at("groups").get<std::int64_t>(), shape[1], eps, affine);
  return std::make_unique<LayerNorm>(Shape(shape.begin() + 1, shape.end()), eps, affine);
}

TEST(GroupLayerNormGolden, ForwardAndBackwardMatchPyTorch) {
  const SafetensorsFile file = read_safetensors(kFixture);
  EXPECT_EQ(file.metadata.at("format"), "bnorm-fixture");
  const auto cases = nlohmann::json::parse(file.metadata.at("cases"));
  ASSERT_GE(cases.size(), 10u);
  for (const auto& c : cases) {
    const std::string name = c.at("name");
    SCOPED_TRACE(name + " " + c.at("kind").get<std::string>() + " shape " + c.at("shape").dump() + " groups " +
                 c.at("groups").dump());
    // PyTorch's float32 result is torch_deviation from the exact one (the
    // generator measures it; large only for groups of one or two values).
    const double tol = 2e-5 * (1.0 + std::abs(c.at("input_mean").get<double>()) / c.at("input_std").get<double>()) +
                       c.at("torch_deviation").get<double>();
    LayerHarness h(layer_for_case(c));
    const bool affine = c.at("affine");
    if (affine) {
      const auto weight = file.at(name + ".weight", kFixture).to_f32();
      const auto bias = file.at(name + ".bias", kFixture).to_f32();
      ASSERT_EQ(weight.size() + bias.size(), h.params.size());
      std::copy(weight.begin(), weight.end(), h.params.begin());
      std::copy(bias.begin(), bias.end(), h.params.begin() + static_cast<std::ptrdiff_t>(weight.size()));
    }
    const Tensor x = tensor_from(file.at(name + ".x", kFixture));
    const Tensor dy = tensor_from(file.at(name + ".dy", kFixture));
    Tensor y, dx({1}), y_eval;
    std::fill(h.grads.begin(), h.grads.end(), 1e6f);  // junk: the backward must assign, not add
    h->forward(y, x, Mode::train);
    h->backward(&dx, dy);
    expect_close("y", y.data(), file.at(name + ".y", kFixture).to_f32(), tol);
    expect_close("dx", dx.data(), file.at(name + ".dx", kFixture).to_f32(), tol);
    if (affine) {
      const auto dweight = file.at(name + ".dweight", kFixture).to_f32();
      expect_close("dweight", h.grads.data(), dweight, tol);
      expect_close("dbias", h.grads.data() + dweight.size(), file.at(name + ".dbias", kFixture).to_f32(), tol);
    }
    // No running statistics: eval mode computes the same bits.
    h->forward(y_eval, x, Mode::eval);
    EXPECT_TRUE(std::equal(y.data(), y.data() + y.size(), y_eval.data())) << "eval differs from train";
  }
}

// --- behaviour and refusals --------------------------------------------------

TEST(GroupNorm, ParameterGradientsWithoutInputGradient) {
  Rng rng(150);
  LayerHarness h(std::make_unique<GroupNorm>(2, 4));
  perturb_affine(h, rng);
  const Tensor x = random_tensor({3, 4, 2, 2}, rng), dy = random_tensor({3, 4, 2, 2}, rng);
  Tensor y, dx;
  h->forward(y, x, Mode::train);
  h->backward(&dx, dy);
  const std::vector<float> with_dx = h.grads;
  h->forward(y, x, Mode::train);
  h->backward(nullptr, dy);
  EXPECT_EQ(h.grads, with_dx);
}

TEST(GroupNorm, LargeOffsetKeepsPrecision) {
  // Shifted sums: an input around 1e4 with unit spread normalizes as one around 0.
  Rng rng(151);
  LayerHarness h(std::make_unique<GroupNorm>(2, 4));
  const Tensor x = random_tensor({2, 4, 3, 3}, rng);
  Tensor shifted = x;
  for (std::int64_t i = 0; i < shifted.size(); ++i) shifted[i] += 1e4f;
  Tensor y, y_shifted;
  h->forward(y, x, Mode::eval);
  h->forward(y_shifted, shifted, Mode::eval);
  // float rounding of x + 1e4 alone moves values by up to 5e-4 (about 5e-4 of a unit spread).
  for (std::int64_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], y_shifted[i], 2e-3) << "at " << i;
}

TEST(GroupNorm, RefusesBadConfigurationsAndInputs) {
  EXPECT_THROW(GroupNorm(3, 8), Error);  // 3 does not divide 8
  EXPECT_THROW(GroupNorm(0, 8), Error);
  EXPECT_THROW(GroupNorm(16, 8), Error);
  EXPECT_THROW(GroupNorm(2, 8, 0.0f), Error);
  LayerHarness h(std::make_unique<GroupNorm>(2, 4));
  Tensor y, dx;
  EXPECT_THROW(h->forward(y, Tensor({2, 5}), Mode::train), Error);
  EXPECT_THROW(h->forward(y, Tensor({2, 4, 3}), Mode::train), Error);
  EXPECT_THROW(h->backward(&dx, Tensor({2, 4})), Error);  // no training forward yet
  const Tensor x({2, 4});
  h->forward(y, x, Mode::eval);
  EXPECT_THROW(h->backward(&dx, Tensor({2, 4})), Error);  // eval keeps nothing for a backward
  h->forward(y, x, Mode::train);
  EXPECT_THROW(h->backward(&dx, Tensor({2, 4, 1, 1})), Error);
  try {
    h->output_shape({5});
    FAIL() << "accepted 5 channels";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("groupnorm: expects 4 channels"), std::string::npos) << e.what();
  }
}

TEST(LayerNorm, RefusesBadConfigurationsAndInputs) {
  EXPECT_THROW(LayerNorm(Shape{}), Error);
  EXPECT_THROW(LayerNorm(Shape{3, 4}), Error);  // neither (F) nor (C, H, W)
  EXPECT_THROW(LayerNorm(Shape{0}), Error);
  LayerHarness h(std::make_unique<LayerNorm>(Shape{2, 3, 3}));
  Tensor y;
  EXPECT_THROW(h->forward(y, Tensor({2, 2, 3, 4}), Mode::train), Error);
  EXPECT_THROW(h->forward(y, Tensor({2, 18}), Mode::train), Error);
  EXPECT_THROW(h->output_shape({18}), Error);
}

// --- arch tokens, layer configs and model files -----------------------------

const Shape kImage{1, 28, 28};

TEST(GroupLayerNormArch, TokensBuildTheLayersAndDropTheBiasBeforeThem) {
  const auto arch = parse_arch("conv3x3:8,gn:4,relu,conv3x3:4,relu,gn:2,flatten,fc:16,ln,relu,fc:10", kImage,
                               BnPlacement::before, {});
  const auto& l = arch.at("layers");
  EXPECT_EQ(l[0].at("bias"), false);  // gn follows
  EXPECT_EQ(l[1].at("type"), "groupnorm");
  EXPECT_EQ(l[1].at("num_groups"), 4);
  EXPECT_EQ(l[1].at("num_channels"), 8);
  EXPECT_EQ(l[3].at("bias"), true);  // relu follows, then gn
  EXPECT_EQ(l[5].at("type"), "groupnorm");
  EXPECT_EQ(l[7].at("bias"), false);  // ln follows
  EXPECT_EQ(l[8].at("type"), "layernorm");
  EXPECT_EQ(l[8].at("normalized_shape"), nlohmann::json({16}));
  // ln on images normalizes the whole (C, H, W) example.
  const auto image_ln = parse_arch("conv3x3:3,ln,relu,flatten,fc:10", kImage, BnPlacement::before, {});
  EXPECT_EQ(image_ln.at("layers")[1].at("normalized_shape"), nlohmann::json({3, 28, 28}));
}

TEST(GroupLayerNormArch, BnPlacementMovesAndRemovesOnlyBatchNorm) {
  const std::string spec = "fc:16,gn:4,relu,fc:16,relu,ln,fc:10";
  for (BnPlacement placement : {BnPlacement::before, BnPlacement::after, BnPlacement::none}) {
    const auto l = parse_arch(spec, Shape{784}, placement, {}).at("layers");
    ASSERT_EQ(l.size(), 7u) << bn_placement_name(placement);
    EXPECT_EQ(l[1].at("type"), "groupnorm") << bn_placement_name(placement);
    EXPECT_EQ(l[5].at("type"), "layernorm") << bn_placement_name(placement);
  }
}

TEST(GroupLayerNormArch, BadGroupCountNamesTheToken) {
  try {
    parse_arch("conv3x3:8,gn:3,relu,flatten,fc:10", kImage, BnPlacement::before, {});
    FAIL() << "accepted gn:3 on 8 channels";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("'gn:3'"), std::string::npos) << what;
    EXPECT_NE(what.find("must divide"), std::string::npos) << what;
  }
  EXPECT_THROW(parse_arch("fc:8,gn:x,fc:10", Shape{784}, BnPlacement::before, {}), Error);
  EXPECT_THROW(parse_arch("fc:8,gn,fc:10", Shape{784}, BnPlacement::before, {}), Error);
}

TEST(GroupLayerNormConfig, RebuildsFromConfigAndCountsStateBytes) {
  const GroupNorm gn(4, 8, 1e-3f);
  const LayerNorm ln(Shape{3, 4, 4}, 1e-4f, true);
  for (const Layer* layer : std::initializer_list<const Layer*>{&gn, &ln}) {
    const LayerPtr rebuilt = make_layer(layer->config());
    EXPECT_EQ(rebuilt->config(), layer->config());
    std::int64_t values = 0;
    for (const ParamSlot& s : layer->param_slots()) values += numel(s.shape);
    EXPECT_EQ(layer_state_bytes(layer->config()), values * 4);
  }
  EXPECT_EQ(layer_state_bytes(GroupNorm(2, 8, 1e-5f, false).config()), 0);
  nlohmann::json bad = gn.config();
  bad["num_groups"] = 3;
  EXPECT_THROW(make_layer(bad), Error);
  bad = ln.config();
  bad.erase("elementwise_affine");
  EXPECT_THROW(make_layer(bad), Error);
}

TEST(GroupLayerNormModelFile, RoundTripKeepsWeightsAndOutputs) {
  TempDir dir;
  const std::string path = dir.file("norms.safetensors");
  Model model = Model::from_architecture(
      parse_arch("conv3x3:4,gn:2,relu,maxpool2,flatten,fc:8,ln,relu,fc:10", kImage, BnPlacement::before, {}));
  Rng rng(160);
  model.init_parameters(rng);
  for (float& p : model.parameters()) p += static_cast<float>(0.1 * rng.normal());  // weight != 1, bias != 0
  const Tensor x = random_tensor({3, 1, 28, 28}, rng);
  const Tensor before = model.forward(x, Mode::eval);
  save_model(path, model, InputNormalization{"global", {0.5f}, {0.25f}}, nlohmann::json::object());
  LoadedModel loaded = load_model(path);
  EXPECT_EQ(loaded.model.architecture(), model.architecture());
  const auto saved = model.parameters(), read = loaded.model.parameters();
  ASSERT_EQ(saved.size(), read.size());
  EXPECT_TRUE(std::equal(saved.begin(), saved.end(), read.begin()));
  const Tensor& after = loaded.model.forward(x, Mode::eval);
  EXPECT_TRUE(std::equal(before.data(), before.data() + before.size(), after.data()));
  // Tensor names as PyTorch's state_dict has them.
  const SafetensorsFile file = read_safetensors(path);
  EXPECT_NO_THROW(file.at("1.weight", path));
  EXPECT_NO_THROW(file.at("1.bias", path));
  EXPECT_EQ(file.at("6.weight", path).shape, Shape({8}));  // the LayerNorm after fc:8
}

TEST(GroupLayerNormFold, FoldingLeavesThemAlone) {
  Model model = Model::from_architecture(
      parse_arch("conv3x3:4,gn:2,relu,flatten,fc:8,ln,relu,fc:4,bn,fc:10", Shape{1, 4, 4}, BnPlacement::before, {}));
  Rng rng(170);
  model.init_parameters(rng);
  for (float& p : model.parameters()) p += static_cast<float>(0.1 * rng.normal());
  Model folded = fold_batchnorm(model);
  EXPECT_EQ(folded.num_layers(), model.num_layers() - 1);  // only the bn went
  EXPECT_EQ(folded.architecture().at("layers")[1], model.architecture().at("layers")[1]);
  EXPECT_EQ(folded.architecture().at("layers")[5], model.architecture().at("layers")[5]);
  const Tensor x = random_tensor({2, 1, 4, 4}, rng);
  const Tensor want = model.forward(x, Mode::eval);
  const Tensor& got = folded.forward(x, Mode::eval);
  for (std::int64_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-4 * (1 + std::abs(want[i])));
}

}  // namespace
}  // namespace bnorm::test

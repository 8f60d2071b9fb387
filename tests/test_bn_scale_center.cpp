// Batch norm's separate scale (learned gamma) and center (learned beta)
// switches: gradients by finite differences in every mode that has its own
// backward, the same numbers as full batch norm with the missing parameter at
// 1 or 0, layer configs old and new, model files, and folding.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "bnorm/error.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/nn/arch.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/nn/fold.hpp"
#include "bnorm/nn/layer_factory.hpp"
#include "bnorm/nn/model.hpp"
#include "file_test_util.hpp"
#include "gradcheck.hpp"
#include "test_util.hpp"

namespace bnorm::test {
namespace {

BatchNormOptions switches(bool scale, bool center) {
  BatchNormOptions o;
  o.scale = scale;
  o.center = center;
  return o;
}

struct Switches {
  bool scale, center;
  std::string name() const {
    return std::string(scale ? "scale" : "no scale") + ", " + (center ? "center" : "no center");
  }
};
constexpr Switches kOneOfTwo[] = {{true, false}, {false, true}};

TEST(BnScaleCenterGradCheck, TrainingModeNCAndNCHW) {
  std::uint64_t seed = 200;
  for (const Switches& s : kOneOfTwo)
    for (const Shape& x : {Shape{8, 5}, Shape{3, 4, 2, 3}}) {
      SCOPED_TRACE(s.name() + ", input " + shape_str(x));
      Rng rng(seed++);
      LayerHarness h(std::make_unique<BatchNorm>(x[1], switches(s.scale, s.center)));
      ASSERT_EQ(h->param_slots().size(), 1u);
      perturb_affine(h, rng);
      check_layer(h, random_tensor(x, rng, 1.0, 2.0), seed++);
    }
}

TEST(BnScaleCenterGradCheck, FrozenStatistics) {
  std::uint64_t seed = 220;
  for (const Switches& s : kOneOfTwo) {
    SCOPED_TRACE(s.name());
    Rng rng(seed++);
    BatchNormOptions o = switches(s.scale, s.center);
    o.freeze = BnFreeze::stats;
    LayerHarness h(std::make_unique<BatchNorm>(4, o));
    auto& bn = static_cast<BatchNorm&>(*h.layer);
    for (std::int64_t c = 0; c < 4; ++c) {
      bn.running_mean()[c] = static_cast<float>(rng.normal());
      bn.running_var()[c] = static_cast<float>(0.5 + rng.uniform());
    }
    perturb_affine(h, rng);
    check_layer(h, random_tensor({5, 4, 2, 2}, rng), seed++);
  }
}

// A switch that is off must act as the fixed value in full batch norm.
TEST(BnScaleCenter, MatchesFullBatchNormWithTheFixedValue) {
  Rng rng(230);
  const Tensor x = random_tensor({6, 3, 2, 2}, rng, 2.0, 1.5), dy = random_tensor({6, 3, 2, 2}, rng);
  const std::vector<float> gamma = {0.5f, 1.5f, -0.7f}, beta = {0.3f, -1.0f, 2.0f};
  for (const Switches& s : kOneOfTwo) {
    SCOPED_TRACE(s.name());
    LayerHarness full(std::make_unique<BatchNorm>(3));
    LayerHarness one(std::make_unique<BatchNorm>(3, switches(s.scale, s.center)));
    for (std::size_t c = 0; c < 3; ++c) {
      full.params[c] = s.scale ? gamma[c] : 1.0f;
      full.params[3 + c] = s.center ? beta[c] : 0.0f;
      one.params[c] = s.scale ? gamma[c] : beta[c];
    }
    Tensor y_full, y_one, dx_full, dx_one;
    full->forward(y_full, x, Mode::train);
    full->backward(&dx_full, dy);
    std::fill(one.grads.begin(), one.grads.end(), 1e6f);  // junk: the backward must assign
    one->forward(y_one, x, Mode::train);
    one->backward(&dx_one, dy);
    for (std::int64_t i = 0; i < x.size(); ++i) {
      ASSERT_FLOAT_EQ(y_one[i], y_full[i]) << "y at " << i;
      ASSERT_FLOAT_EQ(dx_one[i], dx_full[i]) << "dx at " << i;
    }
    const std::size_t learned = s.scale ? 0 : 3;  // dgamma or dbeta of the full layer
    for (std::size_t c = 0; c < 3; ++c) EXPECT_FLOAT_EQ(one.grads[c], full.grads[learned + c]) << "gradient " << c;
    for (Mode mode : {Mode::eval, Mode::eval_batch_stats}) {
      full->forward(y_full, x, mode);
      one->forward(y_one, x, mode);
      for (std::int64_t i = 0; i < x.size(); ++i) ASSERT_FLOAT_EQ(y_one[i], y_full[i]) << "eval y at " << i;
    }
  }
}

TEST(BnScaleCenter, StateHoldsOnlyTheLearnedParameter) {
  BatchNorm scale_only(4, switches(true, false)), center_only(4, switches(false, true));
  EXPECT_EQ(scale_only.param_slots().at(0).name, "weight");
  EXPECT_EQ(center_only.param_slots().at(0).name, "bias");
  std::vector<float> p(4), g(4);
  center_only.bind_parameters(p, g);
  const auto state = center_only.state();
  ASSERT_EQ(state.size(), 4u);  // bias, running_mean, running_var, num_batches_tracked
  EXPECT_EQ(state[0].name, "bias");
  EXPECT_EQ(state[0].data, p.data());
}

TEST(BnScaleCenterConfig, OldAndNewConfigsLoad) {
  // Both or neither: PyTorch's "affine", as every file before the switches.
  const nlohmann::json both = BatchNorm(4).config();
  EXPECT_EQ(both.at("affine"), true);
  EXPECT_FALSE(both.contains("scale"));
  EXPECT_EQ(BatchNorm(4, switches(false, false)).config().at("affine"), false);
  for (const Switches& s : kOneOfTwo) {
    SCOPED_TRACE(s.name());
    const nlohmann::json config = BatchNorm(4, switches(s.scale, s.center)).config();
    EXPECT_FALSE(config.contains("affine"));
    const LayerPtr rebuilt = make_layer(config);
    const auto& o = static_cast<const BatchNorm&>(*rebuilt).options();
    EXPECT_EQ(o.scale, s.scale);
    EXPECT_EQ(o.center, s.center);
    EXPECT_EQ(layer_state_bytes(config), (4 + 8) * 4);  // one parameter, mean and var
  }
  nlohmann::json old = both;  // a file written before the switches existed
  // The layers are kept: options() refers into them.
  const LayerPtr both_on = make_layer(old);
  const auto& o = static_cast<const BatchNorm&>(*both_on).options();
  EXPECT_TRUE(o.scale && o.center);
  old["affine"] = false;
  const LayerPtr both_off = make_layer(old);
  const auto& off = static_cast<const BatchNorm&>(*both_off).options();
  EXPECT_FALSE(off.scale || off.center);
  EXPECT_EQ(layer_state_bytes(old), 8 * 4);
}

TEST(BnScaleCenterConfig, RefusesMixedOrIncompleteSwitches) {
  nlohmann::json config = BatchNorm(4, switches(true, false)).config();
  config["affine"] = true;
  EXPECT_THROW(make_layer(config), Error);
  EXPECT_THROW(layer_state_bytes(config), Error);
  config.erase("affine");
  config.erase("center");
  EXPECT_THROW(make_layer(config), Error);
  config.erase("scale");
  EXPECT_THROW(make_layer(config), Error);
}

Model trained_looking_model(const std::string& spec, const Shape& input, const BatchNormOptions& o, Rng& rng) {
  Model model = Model::from_architecture(parse_arch(spec, input, BnPlacement::before, o));
  model.init_parameters(rng);
  for (float& p : model.parameters()) p += static_cast<float>(0.2 * rng.normal());  // gamma != 1, beta != 0
  const Tensor x = random_tensor(Shape{16, input[0], input[1], input[2]}, rng, 0.5, 2.0);
  for (int step = 0; step < 3; ++step) model.forward(x, Mode::train);  // running statistics away from 0 and 1
  return model;
}

TEST(BnScaleCenterModelFile, RoundTripAndFold) {
  TempDir dir;
  for (const Switches& s : kOneOfTwo) {
    SCOPED_TRACE(s.name());
    Rng rng(240);
    Model model = trained_looking_model("conv3x3:4,bn,relu,flatten,fc:6,bn,relu,fc:3", {1, 4, 4},
                                        switches(s.scale, s.center), rng);
    const Tensor x = random_tensor({5, 1, 4, 4}, rng);
    const Tensor want = model.forward(x, Mode::eval);

    const std::string path = dir.file(s.scale ? "scale.safetensors" : "center.safetensors");
    save_model(path, model, InputNormalization{"global", {0.5f}, {0.25f}}, nlohmann::json::object());
    LoadedModel loaded = load_model(path);
    EXPECT_EQ(loaded.model.architecture(), model.architecture());
    const Tensor& reread = loaded.model.forward(x, Mode::eval);
    EXPECT_TRUE(std::equal(want.data(), want.data() + want.size(), reread.data()));

    // The missing gamma folds in as 1, the missing beta as 0.
    Model folded = fold_batchnorm(model);
    EXPECT_EQ(folded.num_layers(), model.num_layers() - 2);
    const Tensor& got = folded.forward(x, Mode::eval);
    for (std::int64_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-4 * (1 + std::abs(want[i])));
  }
}

}  // namespace
}  // namespace bnorm::test

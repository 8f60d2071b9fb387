// The model and its pieces around batch norm: PyTorch naming, the flat
// buffers, test-time behaviour one example at a time, folding, save/load.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "bnorm/error.hpp"
#include "bnorm/io/dataset.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/nn/arch.hpp"
#include "bnorm/nn/fold.hpp"
#include "bnorm/nn/layer_factory.hpp"
#include "bnorm/nn/linear.hpp"
#include "bnorm/nn/loss.hpp"
#include "bnorm/train/batches.hpp"
#include "bnorm/train/optimizer.hpp"
#include "bnorm/train/trainer.hpp"
#include "test_util.hpp"

namespace bnorm::test {
namespace {

std::vector<std::string> names(Model& m) {
  std::vector<std::string> out;
  for (const auto& e : m.state_dict()) out.push_back(e.name + shape_str(e.shape));
  return out;
}

Model mlp(BnPlacement bn, std::vector<std::int64_t> widths = {6, 5, 4, 3}) {
  MlpSpec spec;
  spec.widths = std::move(widths);
  spec.bn = bn;
  return Model(Shape{spec.widths.front()}, build_mlp_layers(spec));
}

TEST(Model, StateDictFollowsTorchSequentialNaming) {
  Model before = mlp(BnPlacement::before);
  // Linear(6,5,bias=False), BatchNorm1d(5), ReLU, Linear(5,4,bias=False), BatchNorm1d(4), ReLU, Linear(4,3)
  const std::vector<std::string> want_before = {
      "0.weight(5, 6)", "1.weight(5)", "1.bias(5)", "1.running_mean(5)", "1.running_var(5)", "1.num_batches_tracked()",
      "3.weight(4, 5)", "4.weight(4)", "4.bias(4)", "4.running_mean(4)", "4.running_var(4)", "4.num_batches_tracked()",
      "6.weight(3, 4)", "6.bias(3)"};
  EXPECT_EQ(names(before), want_before);

  Model after = mlp(BnPlacement::after);  // Linear(bias), ReLU, BatchNorm1d
  const std::vector<std::string> want_after = {"0.weight(5, 6)",
                                               "0.bias(5)",
                                               "2.weight(5)",
                                               "2.bias(5)",
                                               "2.running_mean(5)",
                                               "2.running_var(5)",
                                               "2.num_batches_tracked()",
                                               "3.weight(4, 5)",
                                               "3.bias(4)",
                                               "5.weight(4)",
                                               "5.bias(4)",
                                               "5.running_mean(4)",
                                               "5.running_var(4)",
                                               "5.num_batches_tracked()",
                                               "6.weight(3, 4)",
                                               "6.bias(3)"};
  EXPECT_EQ(names(after), want_after);

  Model none = mlp(BnPlacement::none);
  const std::vector<std::string> want_none = {"0.weight(5, 6)", "0.bias(5)",      "2.weight(4, 5)",
                                              "2.bias(4)",      "4.weight(3, 4)", "4.bias(3)"};
  EXPECT_EQ(names(none), want_none);
}

TEST(Model, ParametersAndGradientsAreOneFlatBufferEach) {
  Model m = mlp(BnPlacement::before);
  // 5*6 + 2*5 + 4*5 + 2*4 + 3*4 + 3 weights, gammas/betas and the last bias
  EXPECT_EQ(m.parameters().size(), 30u + 10 + 20 + 8 + 12 + 3);
  EXPECT_EQ(m.gradients().size(), m.parameters().size());
  // Every trained state entry points inside the parameter buffer, in order.
  const float* base = m.parameters().data();
  const float* expect = base;
  for (const auto& e : m.state_dict()) {
    if (e.name.find("running") != std::string::npos || e.name.find("num_batches") != std::string::npos) continue;
    EXPECT_EQ(static_cast<const float*>(e.data), expect) << e.name;
    expect += numel(e.shape);
  }
  EXPECT_EQ(expect, base + m.parameters().size());
}

TEST(Model, ParameterTensorEndsAreWhereTheStateEntriesEnd) {
  Model m = mlp(BnPlacement::before);
  std::vector<std::int64_t> want;
  std::int64_t end = 0;
  for (const auto& e : m.state_dict()) {
    if (e.name.find("running") != std::string::npos || e.name.find("num_batches") != std::string::npos) continue;
    end += numel(e.shape);
    want.push_back(end);
  }
  // Three weights, two BN's γ and β, the last layer's bias: eight tensors, the last ending the buffer.
  EXPECT_EQ(m.parameter_tensor_ends(), want);
  ASSERT_EQ(want.size(), 8u);
  EXPECT_EQ(want.back(), static_cast<std::int64_t>(m.parameters().size()));
}

TEST(Model, RejectsLayersThatDoNotChain) {
  std::vector<LayerPtr> layers;
  layers.push_back(std::make_unique<Linear>(4, 3, true));
  layers.push_back(std::make_unique<Linear>(5, 2, true));
  try {
    Model m(Shape{4}, std::move(layers));
    FAIL() << "accepted Linear(4,3) → Linear(5,2)";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 1"), std::string::npos) << e.what();
  }
}

// A few training steps so the running statistics are not at their init.
void train_a_little(Model& m, Rng& rng, std::int64_t steps = 20) {
  Sgd sgd(0.05f, 0.9f, 0.0f);
  Tensor dlogits;
  for (std::int64_t s = 0; s < steps; ++s) {
    const Tensor x = random_tensor({16, m.input_shape()[0]}, rng, 1.0, 2.0);
    std::vector<std::int32_t> labels(16);
    for (auto& l : labels) l = static_cast<std::uint8_t>(rng.below(3));
    softmax_cross_entropy(m.forward(x, Mode::train), labels, &dlogits);
    m.backward(dlogits);
    sgd.step(m.parameters(), m.gradients());
  }
}

TEST(Model, OneExampleAtATimeEqualsTheWholeBatchInEvalMode) {
  for (BnPlacement bn : {BnPlacement::before, BnPlacement::after}) {
    Model m = mlp(bn);
    Rng rng(5);
    m.init_parameters(rng);
    train_a_little(m, rng);
    const Tensor x = random_tensor({50, 6}, rng, 1.0, 2.0);
    const Tensor batch_logits = m.forward(x, Mode::eval);  // copy
    Tensor one(Shape{1, 6});
    for (std::int64_t n = 0; n < 50; ++n) {
      std::copy(x.data() + n * 6, x.data() + n * 6 + 6, one.data());
      const Tensor& logits = m.forward(one, Mode::eval);
      for (std::int64_t k = 0; k < 3; ++k)
        ASSERT_NEAR(logits[k], batch_logits[n * 3 + k], 1e-5 * (1 + std::abs(batch_logits[n * 3 + k])))
            << "bn " << bn_placement_name(bn) << " example " << n;
    }
    // ...whereas training mode on the same batch gives different outputs:
    // the statistics of this batch are not the running ones.
    const Tensor& train_logits = m.forward(x, Mode::train);
    double diff = 0;
    for (std::int64_t i = 0; i < train_logits.size(); ++i) diff += std::abs(train_logits[i] - batch_logits[i]);
    EXPECT_GT(diff, 1e-3);
  }
}

TEST(Model, CnnOneExampleAtATimeEqualsTheWholeBatchInEvalMode) {
  Model m = Model::from_architecture(
      parse_arch("conv3x3:4,bn,relu,maxpool2,conv3x3:6,relu,bn,gap,fc:3", {2, 6, 6}, BnPlacement::before, {}));
  Rng rng(15);
  m.init_parameters(rng);
  Sgd sgd(0.05f, 0.9f, 0.0f);
  Tensor dlogits;
  for (int s = 0; s < 10; ++s) {
    const Tensor x = random_tensor({8, 2, 6, 6}, rng, 1.0, 2.0);
    const std::vector<std::int32_t> labels = {0, 1, 2, 0, 1, 2, 0, 1};
    softmax_cross_entropy(m.forward(x, Mode::train), labels, &dlogits);
    m.backward(dlogits);
    sgd.step(m.parameters(), m.gradients());
  }
  const Tensor x = random_tensor({12, 2, 6, 6}, rng, 1.0, 2.0);
  const Tensor batch_logits = m.forward(x, Mode::eval);
  Tensor one(Shape{1, 2, 6, 6});
  for (std::int64_t n = 0; n < 12; ++n) {
    std::copy(x.data() + n * 72, x.data() + (n + 1) * 72, one.data());
    const Tensor& logits = m.forward(one, Mode::eval);
    for (std::int64_t k = 0; k < 3; ++k)
      ASSERT_NEAR(logits[k], batch_logits[n * 3 + k], 1e-5 * (1 + std::abs(batch_logits[n * 3 + k]))) << n;
  }
}

// A BatchNorm followed by a ReLU runs fused by default; it must compute what
// the two layers compute one after the other, bit for bit, in every mode,
// gradients included, so fusion is never a reason for results to move.
TEST(Model, FusedBatchNormReluGivesTheSameBitsAsSeparateLayers) {
  const std::pair<std::string, Shape> cases[] = {
      {"fc:24,bn,relu,fc:16,bn,relu,fc:3", {10}},
      {"conv3x3:4,bn,relu,maxpool2,conv3x3:6,bn,relu,gap,fc:3", {2, 8, 8}},
  };
  for (const auto& [spec, input] : cases) {
    Model fused = Model::from_architecture(parse_arch(spec, input, BnPlacement::before, {}));
    Model plain = Model::from_architecture(parse_arch(spec, input, BnPlacement::before, {}));
    ASSERT_TRUE(fused.fusion());
    plain.set_fusion(false);
    Rng r1(3), r2(3);
    fused.init_parameters(r1);
    plain.init_parameters(r2);
    Sgd s1(0.05f, 0.9f, 0.0f), s2(0.05f, 0.9f, 0.0f);
    Rng data(9);
    Shape batch{16};
    batch.insert(batch.end(), input.begin(), input.end());
    Tensor d1, d2;
    for (int step = 0; step < 5; ++step) {
      const Tensor x = random_tensor(batch, data, 0.5, 1.5);
      std::vector<std::int32_t> labels(16);
      for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::uint8_t>((i * 7 + step) % 3);
      softmax_cross_entropy(fused.forward(x, Mode::train), labels, &d1);
      softmax_cross_entropy(plain.forward(x, Mode::train), labels, &d2);
      fused.backward(d1);
      plain.backward(d2);
      for (std::size_t i = 0; i < fused.gradients().size(); ++i)
        ASSERT_EQ(fused.gradients()[i], plain.gradients()[i]) << spec << " step " << step << " gradient " << i;
      s1.step(fused.parameters(), fused.gradients());
      s2.step(plain.parameters(), plain.gradients());
    }
    const Tensor x = random_tensor(batch, data, 0.5, 1.5);
    for (Mode mode : {Mode::eval, Mode::eval_batch_stats}) {
      const Tensor a = fused.forward(x, mode);
      const Tensor& b = plain.forward(x, mode);
      for (std::int64_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << spec << " logit " << i;
    }
    // The fused BatchNorm reports the pair's output for diagnostics.
    EXPECT_EQ(fused.layer_output(1).shape(), plain.layer_output(2).shape());
  }
}

// Folding BN into the layer before it changes the arithmetic, not the function.
TEST(Model, FoldingBatchNormKeepsEvalOutputs) {
  const std::tuple<std::string, Shape, BnPlacement> cases[] = {
      {"fc:8,bn,relu,fc:6,bn,tanh,fc:3", {10}, BnPlacement::before},
      {"fc:8,bn,relu,fc:3", {10}, BnPlacement::after},  // BN after the activation cannot fold: it stays
      {"conv3x3:4,bn,relu,maxpool2,conv3x3:5:s2,bn,relu,gap,fc:3", {2, 6, 6}, BnPlacement::before},
  };
  for (const auto& [spec, input, placement] : cases) {
    Model m = Model::from_architecture(parse_arch(spec, input, placement, {}));
    Rng rng(21);
    m.init_parameters(rng);
    Sgd sgd(0.05f, 0.9f, 0.0f);
    Tensor dlogits;
    Shape batch{8};
    batch.insert(batch.end(), input.begin(), input.end());
    for (int s = 0; s < 10; ++s) {  // running statistics and γ/β away from their init
      const Tensor x = random_tensor(batch, rng, 0.5, 2.0);
      softmax_cross_entropy(m.forward(x, Mode::train), std::vector<std::int32_t>{0, 1, 2, 0, 1, 2, 0, 1}, &dlogits);
      m.backward(dlogits);
      sgd.step(m.parameters(), m.gradients());
    }
    Model folded = fold_batchnorm(m);
    std::size_t bn_left = 0;
    for (std::size_t i = 0; i < folded.num_layers(); ++i) bn_left += folded.layer(i).type() == "batchnorm";
    EXPECT_EQ(bn_left, placement == BnPlacement::after ? 1u : 0u) << spec;
    const Tensor x = random_tensor(batch, rng, 0.5, 2.0);
    const Tensor want = m.forward(x, Mode::eval);
    const Tensor& got = folded.forward(x, Mode::eval);
    for (std::int64_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(got[i], want[i], 1e-5 * (1 + std::abs(want[i]))) << spec << " logit " << i;
  }
}

Dataset synthetic_images(std::int64_t count, std::int64_t features, std::uint64_t seed) {
  Rng rng(seed);
  Dataset d;
  d.count = count;
  d.features = features;
  d.example_shape = {features};
  d.num_classes = kFashionMnistClasses;
  for (std::int64_t i = 0; i < count; ++i) {
    const auto label = static_cast<std::uint8_t>(rng.below(kFashionMnistClasses));
    d.labels.push_back(label);
    // Each class brightens its own band of pixels, so the task is learnable.
    for (std::int64_t f = 0; f < features; ++f) {
      const bool band = f % kFashionMnistClasses == label;
      d.bytes.push_back(static_cast<std::uint8_t>(rng.below(band ? 256 : 96)));
    }
  }
  return d;
}

TEST(Model, EvaluateDoesNotDependOnBatchSize) {
  const Dataset data = synthetic_images(300, 20, 3);
  const InputNormalization norm = InputNormalization::fit(data, "global");
  Model m = mlp(BnPlacement::before, {20, 16, 10});
  Rng rng(4);
  m.init_parameters(rng);
  Sgd sgd(0.05f, 0.9f, 0);
  Trainer(m, sgd, norm, {2, 32, 9, true}).fit(data, {}, nullptr, nullptr);
  const EvalResult whole = evaluate(m, data, norm, 300);
  const EvalResult single = evaluate(m, data, norm, 1);
  EXPECT_EQ(whole.accuracy, single.accuracy);
  EXPECT_NEAR(whole.loss, single.loss, 1e-5);
  EXPECT_GT(whole.accuracy, 0.5);  // the bands are learnable: the model did train
}

TEST(Model, SaveLoadGivesIdenticalPredictions) {
  const auto dir = std::filesystem::temp_directory_path() / ("bnorm-model-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "m.safetensors").string();
  for (BnPlacement bn : {BnPlacement::before, BnPlacement::after, BnPlacement::none}) {
    Model m = mlp(bn);
    Rng rng(8);
    m.init_parameters(rng);
    train_a_little(m, rng);
    const InputNormalization norm{"pixel", {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f}, {1, 2, 3, 4, 5, 6}};
    save_model(path, m, norm, {{"note", "test"}});
    LoadedModel loaded = load_model(path);
    EXPECT_EQ(loaded.model.architecture(), m.architecture());
    EXPECT_EQ(loaded.input_normalization.mean, norm.mean);
    EXPECT_EQ(loaded.input_normalization.std, norm.std);
    EXPECT_EQ(loaded.training.at("note"), "test");
    const Tensor x = random_tensor({7, 6}, rng);
    const Tensor want = m.forward(x, Mode::eval);
    const Tensor& got = loaded.model.forward(x, Mode::eval);
    for (std::int64_t i = 0; i < want.size(); ++i)
      ASSERT_EQ(got[i], want[i]) << bn_placement_name(bn) << " logit " << i;
  }
  std::filesystem::remove_all(dir);
}

TEST(Model, SameSeedSameBitsOtherSeedOtherBits) {
  const Dataset data = synthetic_images(200, 12, 6);
  const InputNormalization norm = InputNormalization::fit(data, "global");
  auto run = [&](std::uint64_t seed) {
    Model m = mlp(BnPlacement::before, {12, 8, 10});
    Rng init(init_rng_seed(seed));
    m.init_parameters(init);
    Sgd sgd(0.05f, 0.9f, 0);
    Trainer(m, sgd, norm, {2, 16, seed, true}).fit(data, {}, nullptr, nullptr);
    return std::vector<float>(m.parameters().begin(), m.parameters().end());
  };
  EXPECT_EQ(run(1), run(1));
  EXPECT_NE(run(1), run(2));
}

}  // namespace
}  // namespace bnorm::test

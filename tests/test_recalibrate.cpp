// Precise batch-norm statistics (train/recalibrate.hpp) against statistics
// computed here directly in double, and frozen batch norm as training sees
// it: statistics untouched, gamma and beta learning or not as asked.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "bnorm/error.hpp"
#include "bnorm/io/safetensors.hpp"
#include "bnorm/nn/arch.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/nn/layer_factory.hpp"
#include "bnorm/nn/loss.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/train/optimizer.hpp"
#include "bnorm/train/recalibrate.hpp"
#include "bnorm/train/trainer.hpp"
#include "test_util.hpp"

namespace bnorm::test {
namespace {

constexpr const char* kMlp = "fc:12,bn,relu,fc:8,bn,relu,fc:10";
constexpr const char* kCnn = "conv3x3:3,bn,relu,conv3x3:4,bn,relu,fc:10";

Model model_for(const std::string& arch, const Shape& input, BatchNormOptions bn = {}) {
  Model model = Model::from_architecture(parse_arch(arch, input, BnPlacement::before, bn));
  Rng rng(5);
  model.init_parameters(rng);
  for (float& p : model.parameters()) p += static_cast<float>(0.2 * rng.normal());
  return model;
}

// A few training steps: running averages that lag the weights.
void train_briefly(Model& model, const Dataset& data, const InputNormalization& norm, std::int64_t epochs = 1) {
  auto opt = make_optimizer("sgd", 0.05f, 0.9f, 0.0f);
  TrainConfig tc;
  tc.epochs = epochs;
  tc.batch_size = 16;
  Trainer trainer(model, *opt, Preprocessing(norm), tc);
  trainer.fit(data, Dataset{}, {}, {});
}

std::vector<std::size_t> bn_layers(const Model& model) {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < model.num_layers(); ++i)
    if (model.layer(i).type() == "batchnorm") out.push_back(i);
  return out;
}

// Per channel of t (N, C[, H, W]): Σx and Σx² around the mean, in double.
struct Direct {
  std::vector<double> mean, m2;
  double count = 0;
};
Direct direct_stats(const Tensor& t) {
  const std::int64_t N = t.dim(0), C = t.dim(1), S = t.size() / (N * C);
  Direct d;
  d.mean.assign(static_cast<std::size_t>(C), 0.0);
  d.m2.assign(static_cast<std::size_t>(C), 0.0);
  d.count = static_cast<double>(N * S);
  for (std::int64_t c = 0; c < C; ++c) {
    double sum = 0;
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t k = 0; k < S; ++k) sum += t[(n * C + c) * S + k];
    const double mean = sum / d.count;
    double sq = 0;
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t k = 0; k < S; ++k) sq += (t[(n * C + c) * S + k] - mean) * (t[(n * C + c) * S + k] - mean);
    d.mean[static_cast<std::size_t>(c)] = mean;
    d.m2[static_cast<std::size_t>(c)] = sq;
  }
  return d;
}

Tensor inputs(const Dataset& data, const InputNormalization& norm, const Model& model, std::int64_t begin,
              std::int64_t n) {
  std::vector<std::int64_t> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), begin);
  Tensor x;
  norm.apply(x, data, model.input_shape(), idx);
  return x;
}

// Exact mode: each layer's running mean and (unbiased) variance are those of
// its input over the examples used, from one eval-mode forward of all of
// them at once with the recalibrated model.
void check_exact(const std::string& arch, const Shape& input, std::int64_t batches, std::int64_t batch_size) {
  const Dataset data = synthetic_images(333, 7);
  const InputNormalization norm = InputNormalization::fit(data, "pixel");
  Model model = model_for(arch, input);
  train_briefly(model, data, norm);
  std::vector<std::int64_t> tracked;
  for (const std::size_t i : bn_layers(model))
    tracked.push_back(dynamic_cast<BatchNorm&>(model.layer(i)).num_batches_tracked());

  RecalibrationOptions o;
  o.batch_size = batch_size;
  o.max_batches = batches;
  const RecalibrationReport r = recalibrate_batchnorm(model, data, norm, o);
  const std::int64_t used = batches ? std::min<std::int64_t>(data.count, batches * batch_size) : data.count;
  EXPECT_EQ(r.examples, used);
  ASSERT_EQ(r.layers.size(), 2u);

  const Tensor x = inputs(data, norm, model, 0, used);
  model.forward(x, Mode::eval);
  std::size_t k = 0;
  for (const std::size_t i : bn_layers(model)) {
    auto& bn = dynamic_cast<BatchNorm&>(model.layer(i));
    const Direct d = direct_stats(model.layer_output(i - 1));
    for (std::size_t c = 0; c < d.mean.size(); ++c) {
      const double var = d.m2[c] / (d.count - 1);
      EXPECT_NEAR(bn.running_mean()[c], d.mean[c], 2e-6 * (1 + std::abs(d.mean[c])))
          << "layer " << i << " channel " << c;
      EXPECT_NEAR(bn.running_var()[c], var, 2e-6 * (1 + var)) << "layer " << i << " channel " << c;
    }
    // Recalibration is not a training step.
    EXPECT_EQ(bn.num_batches_tracked(), tracked[k++]);
  }
}

TEST(RecalibrateExact, EqualsDirectStatisticsMlp) { check_exact(kMlp, {16}, 0, 50); }
TEST(RecalibrateExact, EqualsDirectStatisticsCnnPerChannel) { check_exact(kCnn, {1, 4, 4}, 0, 64); }
TEST(RecalibrateExact, FirstBatchesOnly) { check_exact(kMlp, {16}, 3, 40); }

// The batch size only changes how the sums are grouped.
TEST(RecalibrateExact, IndependentOfTheBatchSize) {
  const Dataset data = synthetic_images(200, 3);
  const InputNormalization norm = InputNormalization::fit(data, "pixel");
  Model a = model_for(kMlp, {16}), b = model_for(kMlp, {16});
  RecalibrationOptions o;
  o.batch_size = 7;
  recalibrate_batchnorm(a, data, norm, o);
  o.batch_size = 200;
  recalibrate_batchnorm(b, data, norm, o);
  for (const std::size_t i : bn_layers(a)) {
    auto& x = dynamic_cast<BatchNorm&>(a.layer(i));
    auto& y = dynamic_cast<BatchNorm&>(b.layer(i));
    for (std::size_t c = 0; c < x.running_mean().size(); ++c) {
      EXPECT_NEAR(x.running_mean()[c], y.running_mean()[c], 1e-6 * (1 + std::abs(y.running_mean()[c])));
      EXPECT_NEAR(x.running_var()[c], y.running_var()[c], 1e-6 * (1 + y.running_var()[c]));
    }
  }
}

// The drift report: large after a short training run, zero for a second
// recalibration of the same data.
TEST(RecalibrateExact, ReportsHowFarTheEstimatesMoved) {
  const Dataset data = synthetic_images(333, 7);
  const InputNormalization norm = InputNormalization::fit(data, "pixel");
  Model model = model_for(kMlp, {16});
  train_briefly(model, data, norm);
  const RecalibrationReport first = recalibrate_batchnorm(model, data, norm);
  double moved = 0;
  for (const auto& d : first.layers) moved = std::max({moved, d.mean, d.var});
  EXPECT_GT(moved, 1e-3);
  const RecalibrationReport again = recalibrate_batchnorm(model, data, norm);
  for (const auto& d : again.layers) {
    EXPECT_LT(d.mean, 1e-5) << "layer " << d.layer;
    EXPECT_LT(d.var, 1e-5) << "layer " << d.layer;
  }
}

// batch-average: the plain average over batches of each layer's per-batch
// mean and unbiased variance, every layer normalizing with batch statistics
// (eval_batch_stats gives the same layer inputs as training mode without
// touching anything); afterwards the layer's own options are back.
void check_batch_average(const std::string& arch, const Shape& input, BnFreeze freeze) {
  const Dataset data = synthetic_images(333, 9);
  const InputNormalization norm = InputNormalization::fit(data, "pixel");
  BatchNormOptions bn;
  bn.freeze = freeze;
  Model model = model_for(arch, input, bn);
  RecalibrationOptions o;
  o.mode = RecalibrationMode::batch_average;
  o.batch_size = 50;  // 6 batches of 50 and one of 33
  const RecalibrationReport r = recalibrate_batchnorm(model, data, norm, o);
  EXPECT_EQ(r.batches, 7);

  const auto layers = bn_layers(model);
  std::vector<std::vector<double>> mean(layers.size()), var(layers.size());
  for (std::int64_t begin = 0; begin < data.count; begin += 50) {
    const Tensor x = inputs(data, norm, model, begin, std::min<std::int64_t>(50, data.count - begin));
    model.forward(x, Mode::eval_batch_stats);
    for (std::size_t k = 0; k < layers.size(); ++k) {
      const Direct d = direct_stats(model.layer_output(layers[k] - 1));
      mean[k].resize(d.mean.size(), 0.0);
      var[k].resize(d.mean.size(), 0.0);
      for (std::size_t c = 0; c < d.mean.size(); ++c) {
        mean[k][c] += d.mean[c] / 7;
        var[k][c] += d.m2[c] / (d.count - 1) / 7;
      }
    }
  }
  for (std::size_t k = 0; k < layers.size(); ++k) {
    auto& b = dynamic_cast<BatchNorm&>(model.layer(layers[k]));
    EXPECT_EQ(b.num_batches_tracked(), 7);
    EXPECT_EQ(b.options().momentum, std::optional<float>(0.1f));
    EXPECT_EQ(b.options().freeze, freeze);
    for (std::size_t c = 0; c < mean[k].size(); ++c) {
      EXPECT_NEAR(b.running_mean()[c], mean[k][c], 1e-5 * (1 + std::abs(mean[k][c]))) << "layer " << layers[k];
      EXPECT_NEAR(b.running_var()[c], var[k][c], 1e-5 * (1 + var[k][c])) << "layer " << layers[k];
    }
  }
}

TEST(RecalibrateBatchAverage, EqualsTheAverageOfPerBatchStatistics) {
  check_batch_average(kMlp, {16}, BnFreeze::none);
  check_batch_average(kCnn, {1, 4, 4}, BnFreeze::none);
}

// A frozen layer is measured too, and stays frozen.
TEST(RecalibrateBatchAverage, MeasuresFrozenLayersAndKeepsThemFrozen) {
  check_batch_average(kMlp, {16}, BnFreeze::stats);
}

TEST(Recalibrate, RefusesWhatItCannotDo) {
  const Dataset data = synthetic_images(10, 1);
  const InputNormalization norm = InputNormalization::fit(data, "pixel");
  Model model = model_for(kMlp, {16});
  RecalibrationOptions o;
  o.batch_size = 0;
  EXPECT_THROW(recalibrate_batchnorm(model, data, norm, o), Error);
  o.batch_size = 1;
  o.mode = RecalibrationMode::batch_average;
  EXPECT_THROW(recalibrate_batchnorm(model, data, norm, o), Error);
  Model other = model_for(kMlp, {8});
  EXPECT_THROW(recalibrate_batchnorm(other, data, norm), Error);
  EXPECT_THROW(parse_recalibration_mode("fast"), Error);
}

// --- frozen batch norm in training ---------------------------------------

struct Snapshot {
  std::vector<float> mean, var, params;
  std::vector<std::int64_t> tracked;
};
Snapshot snapshot(Model& model) {
  Snapshot s;
  for (const std::size_t i : bn_layers(model)) {
    auto& bn = dynamic_cast<BatchNorm&>(model.layer(i));
    s.mean.insert(s.mean.end(), bn.running_mean().begin(), bn.running_mean().end());
    s.var.insert(s.var.end(), bn.running_var().begin(), bn.running_var().end());
    s.tracked.push_back(bn.num_batches_tracked());
    for (const StateEntry& e : bn.state())
      if (e.name == "weight" || e.name == "bias") {
        const auto* p = static_cast<const float*>(e.data);
        s.params.insert(s.params.end(), p, p + numel(e.shape));
      }
  }
  return s;
}

void set_freeze(Model& model, BnFreeze freeze) {
  for (const std::size_t i : bn_layers(model)) dynamic_cast<BatchNorm&>(model.layer(i)).set_freeze(freeze);
}

TEST(FrozenBatchNorm, TrainingLeavesRunningStatisticsExactlyAlone) {
  const Dataset data = synthetic_images(200, 4);
  const InputNormalization norm = InputNormalization::fit(data, "pixel");
  for (const char* arch : {kMlp, kCnn}) {
    Model model = model_for(arch, arch == kMlp ? Shape{16} : Shape{1, 4, 4});
    train_briefly(model, data, norm);  // running statistics that are not the init's
    const Snapshot before = snapshot(model);
    set_freeze(model, BnFreeze::stats);
    train_briefly(model, data, norm);
    const Snapshot after = snapshot(model);
    EXPECT_EQ(after.mean, before.mean) << arch;
    EXPECT_EQ(after.var, before.var) << arch;
    EXPECT_EQ(after.tracked, before.tracked) << arch;
    EXPECT_NE(after.params, before.params) << arch << ": gamma and beta still learn";

    set_freeze(model, BnFreeze::all);
    const Snapshot fixed = snapshot(model);
    train_briefly(model, data, norm);
    const Snapshot all = snapshot(model);
    EXPECT_EQ(all.mean, fixed.mean) << arch;
    EXPECT_EQ(all.params, fixed.params) << arch << ": freeze all fixes gamma and beta";

    set_freeze(model, BnFreeze::none);
    train_briefly(model, data, norm);
    EXPECT_NE(snapshot(model).mean, fixed.mean) << arch << ": unfrozen, the statistics move again";
  }
}

// In training mode a frozen layer computes what eval mode does.
TEST(FrozenBatchNorm, TrainingForwardIsTheEvalForward) {
  const Dataset data = synthetic_images(64, 6);
  const InputNormalization norm = InputNormalization::fit(data, "pixel");
  BatchNormOptions bn;
  bn.freeze = BnFreeze::stats;
  Model model = model_for(kCnn, {1, 4, 4}, bn);
  train_briefly(model, data, norm);  // moves gamma and beta only
  const Tensor x = inputs(data, norm, model, 0, 64);
  const Tensor eval = model.forward(x, Mode::eval);
  const Tensor& train = model.forward(x, Mode::train);
  ASSERT_EQ(eval.size(), train.size());
  for (std::int64_t i = 0; i < eval.size(); ++i) EXPECT_NEAR(eval[i], train[i], 1e-5f * (1 + std::abs(eval[i])));
}

// Fusing a frozen BN with its ReLU changes no bit of the outputs or the
// gradients, (N, C) and (N, C, H, W).
TEST(FrozenBatchNorm, FusedWithReluGivesTheSameResults) {
  const Dataset data = synthetic_images(48, 8);
  const InputNormalization norm = InputNormalization::fit(data, "pixel");
  BatchNormOptions bn;
  bn.freeze = BnFreeze::stats;
  for (const char* arch : {kMlp, kCnn}) {
    const Shape input = arch == kMlp ? Shape{16} : Shape{1, 4, 4};
    Model fused = model_for(arch, input, bn), plain = model_for(arch, input, bn);
    plain.set_fusion(false);
    ASSERT_TRUE(fused.fusion());
    const Tensor x = inputs(data, norm, fused, 0, 48);
    std::vector<std::int32_t> labels(data.labels.begin(), data.labels.begin() + 48);
    Tensor dl_fused, dl_plain;
    const LossResult a = softmax_cross_entropy(fused.forward(x, Mode::train), labels, &dl_fused);
    const LossResult b = softmax_cross_entropy(plain.forward(x, Mode::train), labels, &dl_plain);
    EXPECT_EQ(a.loss, b.loss) << arch;
    fused.backward(dl_fused);
    plain.backward(dl_plain);
    const std::vector<float> ga(fused.gradients().begin(), fused.gradients().end());
    const std::vector<float> gb(plain.gradients().begin(), plain.gradients().end());
    EXPECT_EQ(ga, gb) << arch;
  }
}

// The freezing is part of the architecture: saved, rebuilt, and absent from
// an unfrozen layer's config (older files stay as they were).
TEST(FrozenBatchNorm, IsPartOfTheArchitecture) {
  BatchNormOptions o;
  o.freeze = BnFreeze::all;
  const BatchNorm frozen(4, o);
  EXPECT_EQ(frozen.config().at("freeze"), "all");
  const LayerPtr rebuilt = make_layer(frozen.config());
  EXPECT_EQ(dynamic_cast<const BatchNorm&>(*rebuilt).options().freeze, BnFreeze::all);
  EXPECT_FALSE(BatchNorm(4).config().contains("freeze"));
  nlohmann::json bad = frozen.config();
  bad["freeze"] = "everything";
  EXPECT_THROW(make_layer(bad), Error);
  BatchNormOptions untracked = o;
  untracked.track_running_stats = false;
  EXPECT_THROW(BatchNorm(4, untracked), Error);
}

// --- against PyTorch (fixtures/recalibrate_golden.safetensors, written by
// scripts/make_recalibrate_fixtures.py) ---------------------------------------

const std::string kFixture = fixture_path("recalibrate_golden.safetensors");

// torch.optim.swa_utils.update_bn over batches of 5 (the last of 3), on a
// network whose parameters and stale running statistics come from the file.
TEST(RecalibrateGolden, BatchAverageMatchesTorchUpdateBn) {
  const SafetensorsFile file = read_safetensors(kFixture);
  const auto spec = nlohmann::json::parse(file.metadata.at("update_bn"));
  Model model = Model::from_architecture(
      parse_arch(spec.at("arch").get<std::string>(), spec.at("input").get<Shape>(), BnPlacement::before, {}));
  for (const StateEntry& e : model.state_dict()) {
    const SafeTensor& t = file.at("update_bn." + e.name, kFixture);
    ASSERT_EQ(t.shape, e.shape) << e.name;
    if (e.dtype == StateEntry::DType::f32) {
      const std::vector<float> v = t.to_f32();
      std::copy(v.begin(), v.end(), static_cast<float*>(e.data));
    }
  }
  Dataset data;
  data.values = file.at("update_bn.x", kFixture).to_f32();
  data.example_shape = spec.at("input").get<Shape>();
  data.features = numel(data.example_shape);
  data.count = spec.at("n").get<std::int64_t>();
  data.num_classes = 3;
  data.labels.assign(static_cast<std::size_t>(data.count), 0);
  RecalibrationOptions o;
  o.mode = RecalibrationMode::batch_average;
  o.batch_size = spec.at("batch").get<std::int64_t>();
  const RecalibrationReport r = recalibrate_batchnorm(model, data, InputNormalization{}, o);
  EXPECT_EQ(r.batches, 5);
  for (const std::size_t i : bn_layers(model)) {
    auto& bn = dynamic_cast<BatchNorm&>(model.layer(i));
    const std::string p = "update_bn.after." + std::to_string(i) + ".";
    expect_close(p + "running_mean", bn.running_mean(), file.at(p + "running_mean", kFixture).to_f32(), 1e-5);
    expect_close(p + "running_var", bn.running_var(), file.at(p + "running_var", kFixture).to_f32(), 1e-5);
    EXPECT_EQ(bn.num_batches_tracked(), file.at(p + "num_batches_tracked", kFixture).to_i64_scalar());
  }
}

// Frozen statistics in training mode against PyTorch's BN in eval mode with
// trainable gamma and beta: output, dx, dgamma, dbeta; (N, C) and (N, C, H, W).
TEST(RecalibrateGolden, FrozenBatchNormMatchesTorchEvalModeTraining) {
  const SafetensorsFile file = read_safetensors(kFixture);
  const auto shapes = nlohmann::json::parse(file.metadata.at("frozen"));
  for (std::size_t k = 0; k < shapes.size(); ++k) {
    const std::string p = "frozen" + std::to_string(k) + ".";
    const Shape shape = shapes[k].get<Shape>();
    const std::int64_t C = shape[1];
    BatchNormOptions o;
    o.freeze = BnFreeze::stats;
    BatchNorm bn(C, o);
    std::vector<float> params = file.at(p + "gamma", kFixture).to_f32();
    const std::vector<float> beta = file.at(p + "beta", kFixture).to_f32();
    params.insert(params.end(), beta.begin(), beta.end());
    std::vector<float> grads(params.size(), 0.0f);
    bn.bind_parameters(params, grads);
    const std::vector<float> mean = file.at(p + "running_mean", kFixture).to_f32();
    const std::vector<float> var = file.at(p + "running_var", kFixture).to_f32();
    std::copy(mean.begin(), mean.end(), bn.running_mean().begin());
    std::copy(var.begin(), var.end(), bn.running_var().begin());
    Tensor x(shape), dy(shape), y, dx;
    const std::vector<float> xs = file.at(p + "x", kFixture).to_f32(), dys = file.at(p + "dy", kFixture).to_f32();
    std::copy(xs.begin(), xs.end(), x.data());
    std::copy(dys.begin(), dys.end(), dy.data());
    bn.forward(y, x, Mode::train);
    bn.backward(&dx, dy);
    expect_close(p + "y", {y.data(), static_cast<std::size_t>(y.size())}, file.at(p + "y", kFixture).to_f32(), 1e-5);
    expect_close(p + "dx", {dx.data(), static_cast<std::size_t>(dx.size())}, file.at(p + "dx", kFixture).to_f32(),
                 1e-5);
    expect_close(p + "dgamma", {grads.data(), static_cast<std::size_t>(C)}, file.at(p + "dgamma", kFixture).to_f32(),
                 1e-4);
    expect_close(p + "dbeta", {grads.data() + C, static_cast<std::size_t>(C)}, file.at(p + "dbeta", kFixture).to_f32(),
                 1e-4);
    EXPECT_EQ(bn.num_batches_tracked(), 0);
    expect_close(p + "running_mean unchanged", bn.running_mean(), mean, 0.0);
  }
}

}  // namespace
}  // namespace bnorm::test

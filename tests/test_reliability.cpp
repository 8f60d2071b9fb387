// Numeric faults and interrupted training, on a small synthetic dataset so
// each case runs in milliseconds: a non-finite step stops with the step and
// the layer named, or is skipped with the running statistics put back; a run
// checkpointed at step j and resumed ends with the same bits as one that never
// stopped (SGD and Adam, mid-epoch and at an epoch's end); a damaged or
// inconsistent checkpoint is refused with the file named.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "bnorm/error.hpp"
#include "bnorm/io/checkpoint.hpp"
#include "bnorm/io/dataset.hpp"
#include "bnorm/io/safetensors.hpp"
#include "bnorm/nn/layer_factory.hpp"
#include "bnorm/nn/linear.hpp"
#include "bnorm/train/numeric_check.hpp"
#include "bnorm/train/trainer.hpp"

namespace bnorm {
namespace {

namespace fs = std::filesystem;

Dataset synthetic(std::int64_t count, std::int64_t features, std::uint64_t seed) {
  Rng rng(seed);
  Dataset d;
  d.count = count;
  d.features = features;
  d.example_shape = {features};
  d.num_classes = kFashionMnistClasses;
  for (std::int64_t i = 0; i < count * features; ++i) d.bytes.push_back(static_cast<std::uint8_t>(rng.below(256)));
  for (std::int64_t i = 0; i < count; ++i)
    d.labels.push_back(static_cast<std::uint8_t>(rng.below(kFashionMnistClasses)));
  return d;
}

std::vector<LayerPtr> mlp(BnPlacement bn) {
  MlpSpec spec;
  spec.widths = {16, 12, 8, 10};
  spec.bn = bn;
  return build_mlp_layers(spec);
}

// Passes its input through, except on the training forwards numbered in
// `bad` (1-based), where it writes an inf: a fault on a chosen step.
class NanInjector final : public Layer {
 public:
  explicit NanInjector(std::vector<int> bad) : bad_(std::move(bad)) {}
  std::string type() const override { return "inject"; }
  nlohmann::json config() const override { return {{"type", "inject"}}; }
  Shape output_shape(const Shape& input) const override { return input; }
  void forward(Tensor& y, const Tensor& x, Mode mode) override {
    y.resize(x.shape());
    std::memcpy(y.data(), x.data(), static_cast<std::size_t>(x.size()) * 4);
    if (mode == Mode::train && std::find(bad_.begin(), bad_.end(), ++calls_) != bad_.end())
      y.data()[0] = std::numeric_limits<float>::infinity();  // a NaN would vanish in ReLU
  }
  void backward(Tensor* dx, const Tensor& dy) override {
    if (!dx) return;
    dx->resize(dy.shape());
    std::memcpy(dx->data(), dy.data(), static_cast<std::size_t>(dy.size()) * 4);
  }

 private:
  std::vector<int> bad_;
  int calls_ = 0;
};

// Linear(no bias) → BN → inject → ReLU → Linear: the NaN appears after the
// batch norm has already updated its running statistics.
Model model_with_injector(std::vector<int> bad) {
  std::vector<LayerPtr> layers;
  layers.push_back(std::make_unique<Linear>(16, 12, false));
  layers.push_back(std::make_unique<BatchNorm>(12, BatchNormOptions{}));
  layers.push_back(std::make_unique<NanInjector>(std::move(bad)));
  layers.push_back(std::make_unique<Activation>(ActivationKind::relu));
  layers.push_back(std::make_unique<Linear>(12, 10, true));
  Model m(Shape{16}, std::move(layers));
  Rng rng(init_rng_seed(1));
  m.init_parameters(rng);
  return m;
}

const InputNormalization kNorm{"global", {0.5f}, {0.25f}};

TEST(NumericFault, StopNamesTheStepAndTheFirstBadLayer) {
  const Dataset data = synthetic(40, 16, 3);  // batch 8: 5 batches per epoch
  Model model = model_with_injector({7});     // epoch 2, batch 2, global step 7
  Sgd sgd(0.01f, 0.9f, 0.0f);
  Trainer trainer(model, sgd, kNorm, {3, 8, 0, true, OnNan::stop});
  try {
    trainer.fit(data, {}, nullptr, nullptr);
    FAIL() << "no NumericFault";
  } catch (const NumericFault& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("epoch 2, batch 2/5, global step 7"), std::string::npos) << what;
    EXPECT_NE(what.find("layer 2 (inject) output"), std::string::npos) << what;
    // The library speaks in its own terms; flag advice is the tool's to add.
    EXPECT_EQ(what.find("--"), std::string::npos) << what;
    EXPECT_EQ(e.cause(), NumericFault::Cause::non_finite_step);
  }
}

TEST(NumericFault, SkipBatchDropsTheUpdateAndRestoresRunningStatistics) {
  const Dataset data = synthetic(16, 16, 4);  // batch 8: 2 batches
  Model model = model_with_injector({1});
  Sgd sgd(0.01f, 0.9f, 0.0f);
  TrainConfig config{1, 8, 0, true, OnNan::skip_batch};
  Trainer trainer(model, sgd, kNorm, config);
  std::vector<std::string> skipped;
  trainer.on_skipped_batch([&](const std::string& m) { skipped.push_back(m); });
  EpochReport report;
  trainer.fit(data, {}, nullptr, [&](const EpochReport& r) { report = r; });
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_NE(skipped[0].find("global step 1"), std::string::npos) << skipped[0];
  EXPECT_EQ(report.skipped_batches, 1);
  EXPECT_TRUE(std::isfinite(report.train_loss));
  // Only the good batch counts: the bad one's running-statistics update was undone.
  const auto state = model.state_dict();
  for (const StateEntry& e : state) {
    if (e.name == "1.num_batches_tracked") {
      EXPECT_EQ(*static_cast<std::int64_t*>(e.data), 1);
    }
  }
  for (const float v : model.parameters()) ASSERT_TRUE(std::isfinite(v));
}

TEST(NumericFault, SkipBatchEveryBatchBadIsAnError) {
  const Dataset data = synthetic(16, 16, 4);
  Model model = model_with_injector({1, 2});
  Sgd sgd(0.01f, 0.9f, 0.0f);
  Trainer trainer(model, sgd, kNorm, {1, 8, 0, true, OnNan::skip_batch});
  try {
    trainer.fit(data, {}, nullptr, nullptr);
    FAIL() << "no NumericFault";
  } catch (const NumericFault& e) {
    EXPECT_EQ(e.cause(), NumericFault::Cause::every_batch_skipped) << e.what();
  }
}

TEST(NumericFault, HugeLearningRateWithoutBatchNormIsCaught) {
  const Dataset data = synthetic(256, 16, 5);
  Model model(Shape{16}, mlp(BnPlacement::none));
  Rng rng(init_rng_seed(0));
  model.init_parameters(rng);
  Sgd sgd(1e30f, 0.9f, 0.0f);
  Trainer trainer(model, sgd, kNorm, {5, 32, 0, true, OnNan::stop});
  try {
    trainer.fit(data, {}, nullptr, nullptr);
    FAIL() << "no NumericFault";
  } catch (const NumericFault& e) {
    EXPECT_NE(std::string(e.what()).find("global step"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("--"), std::string::npos) << e.what();
    EXPECT_NE(e.cause(), NumericFault::Cause::other);
  }
}

TEST(NumericCheck, AllFinite) {
  std::vector<float> v(1000, 1.0f);
  EXPECT_TRUE(all_finite(v));
  v[999] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(all_finite(v));
  v[999] = -std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(all_finite(v));
  v[999] = std::numeric_limits<float>::max();
  EXPECT_TRUE(all_finite(v));
  v[999] = -std::numeric_limits<float>::denorm_min();
  EXPECT_TRUE(all_finite(v));
}

TEST(RngState, RoundTripIncludesTheBoxMullerSpare) {
  Rng a(42);
  a.normal();  // leaves a spare
  const std::string s = a.state();
  Rng b(7);
  b.set_state(s);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(a.normal(), b.normal());
  EXPECT_EQ(a.next_u64(), b.next_u64());
  EXPECT_THROW(b.set_state("1 2 3"), Error);
  EXPECT_THROW(b.set_state(s + " junk"), Error);
}

// ---------------------------------------------------------------------------
// Resume

class TempDir {
 public:
  TempDir()
      : path_(fs::temp_directory_path() / ("bnorm_test_rel_" + std::to_string(::getpid()) + "_" +
                                           ::testing::UnitTest::GetInstance()->current_test_info()->name())) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

struct Snapshot {
  std::vector<float> params;
  std::vector<std::vector<unsigned char>> state;  // every state_dict entry's bytes
};

Snapshot snapshot(Model& m) {
  Snapshot s{{m.parameters().begin(), m.parameters().end()}, {}};
  for (const StateEntry& e : m.state_dict()) {
    const auto* p = static_cast<const unsigned char*>(e.data);
    s.state.emplace_back(p, p + numel(e.shape) * (e.dtype == StateEntry::DType::f32 ? 4 : 8));
  }
  return s;
}

Model fresh_model() {
  Model m(Shape{16}, mlp(BnPlacement::before));
  Rng rng(init_rng_seed(9));
  m.init_parameters(rng);
  return m;
}

const TrainConfig kResumeConfig{3, 8, 9, true, OnNan::stop};  // 45 examples: 6 batches (last of 5) per epoch

// Trains 3 epochs; if checkpoint_at > 0, saves a checkpoint after that step.
Snapshot run_uninterrupted(const std::string& opt, std::int64_t checkpoint_at, const std::string& path,
                           std::vector<EpochReport>* reports) {
  const Dataset data = synthetic(45, 16, 11);
  Model model = fresh_model();
  auto optimizer = make_optimizer(opt, 0.01f, 0.9f, 1e-4f);
  Trainer trainer(model, *optimizer, kNorm, kResumeConfig);
  trainer.on_checkpoint(1, [&](const TrainPosition& p) {
    if (p.global_step == checkpoint_at)
      save_checkpoint(path, model, kNorm, {{"note", "test"}}, {{"optimizer", opt}}, *optimizer, p);
  });
  trainer.fit(data, {}, nullptr, [&](const EpochReport& r) {
    if (reports) reports->push_back(r);
  });
  return snapshot(model);
}

Snapshot run_resumed(const std::string& path, std::vector<EpochReport>* reports) {
  const Dataset data = synthetic(45, 16, 11);
  Checkpoint c = load_checkpoint(path);
  auto optimizer = make_optimizer(c.optimizer_name, 0.01f, 0.9f, 1e-4f);
  optimizer->import_state(c.optimizer_state, c.model.model.parameters().size());
  Trainer trainer(c.model.model, *optimizer, c.model.input_normalization, kResumeConfig);
  trainer.resume_from(c.position);
  trainer.fit(data, {}, nullptr, [&](const EpochReport& r) {
    if (reports) reports->push_back(r);
  });
  return snapshot(c.model.model);
}

class Resume : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(Resume, EndsBitIdenticalToAnUninterruptedRun) {
  const auto [opt, step] = GetParam();
  TempDir dir;
  const std::string ckpt = dir.file("run.ckpt");
  std::vector<EpochReport> full_reports, resumed_reports;
  const Snapshot full = run_uninterrupted(opt, step, ckpt, &full_reports);
  ASSERT_TRUE(fs::exists(ckpt));
  const Snapshot resumed = run_resumed(ckpt, &resumed_reports);
  ASSERT_EQ(full.params.size(), resumed.params.size());
  EXPECT_EQ(0, std::memcmp(full.params.data(), resumed.params.data(), full.params.size() * 4));
  EXPECT_EQ(full.state, resumed.state);  // running statistics and batch counters too
  // The resumed run reports the epochs from the checkpoint's on, with the same training loss.
  ASSERT_FALSE(resumed_reports.empty());
  const EpochReport& a = full_reports.back();
  const EpochReport& b = resumed_reports.back();
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.train_loss, b.train_loss);
}

// Steps: 1 (first), 4 (mid-epoch 1), 6 (end of epoch 1), 10 (mid-epoch 2), 18 (the very end).
INSTANTIATE_TEST_SUITE_P(SgdAndAdam, Resume,
                         ::testing::Combine(::testing::Values("sgd", "adam"), ::testing::Values(1, 4, 6, 10, 18)));

TEST(Resume, OptimizerStateRoundTripsAndIsValidated) {
  Adam adam(0.01f);
  std::vector<float> p(4, 1.0f), g(4, 0.5f);
  adam.step(p, g);
  const OptimizerState s = adam.export_state();
  EXPECT_EQ(s.steps, 1);
  Adam other(0.01f);
  other.import_state(s, 4);
  EXPECT_EQ(other.export_state().buffers, s.buffers);
  EXPECT_THROW(other.import_state(s, 5), Error);  // wrong size
  OptimizerState neg = s;
  neg.buffers[1].second[0] = -1.0f;
  EXPECT_THROW(other.import_state(neg, 4), Error);  // negative second moment
  Sgd sgd(0.1f, 0.9f, 0.0f);
  EXPECT_THROW(sgd.import_state(s, 4), Error);  // Adam's buffers into SGD
}

TEST(Resume, DamagedCheckpointsAreRefusedWithTheFileNamed) {
  TempDir dir;
  const std::string ckpt = dir.file("run.ckpt");
  run_uninterrupted("adam", 4, ckpt, nullptr);
  std::ifstream in(ckpt, std::ios::binary);
  const std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const SafetensorsFile file = parse_safetensors(good, ckpt);
  auto expect_refused = [&](const SafetensorsFile& f, const std::string& problem) {
    try {
      load_checkpoint_from_bytes(serialize_safetensors(f), "bad.ckpt");
      ADD_FAILURE() << "accepted; expected " << problem;
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_EQ(what.rfind("bad.ckpt: ", 0), 0u) << what;
      EXPECT_NE(what.find(problem), std::string::npos) << what;
    }
  };
  {  // a model file is not a checkpoint
    SafetensorsFile f = file;
    f.metadata["format"] = kModelFormat;
    expect_refused(f, "not a bnorm checkpoint");
  }
  {
    SafetensorsFile f = file;
    f.metadata["version"] = "2";
    expect_refused(f, "version 2");
  }
  for (const char* key : {"config", "optimizer", "position"}) {
    SafetensorsFile f = file;
    f.metadata.erase(key);
    expect_refused(f, std::string("lacks \"") + key + "\"");
  }
  {
    SafetensorsFile f = file;
    f.metadata["position"] = R"({"epoch":"one"})";
    expect_refused(f, "\"epoch\" has the wrong type");
  }
  {
    SafetensorsFile f = file;
    f.metadata["position"] = R"({"batch":1})";
    expect_refused(f, "incomplete or mistyped");
  }
  {  // too big for int64: refused, not cast
    SafetensorsFile f = file;
    nlohmann::json p = nlohmann::json::parse(f.metadata["position"]);
    p["global_step"] = 1e300;
    f.metadata["position"] = p.dump();
    expect_refused(f, "\"global_step\" has the wrong type or is out of range");
  }
  {  // an optimizer buffer missing
    SafetensorsFile f;
    f.metadata = file.metadata;
    for (const auto& [n, t] : file.tensors)
      if (n != "optimizer.v") f.tensors.emplace_back(n, t);
    expect_refused(f, "optimizer buffers");
  }
  {  // no batch order
    SafetensorsFile f;
    f.metadata = file.metadata;
    for (const auto& [n, t] : file.tensors)
      if (n != "trainer.order") f.tensors.emplace_back(n, t);
    expect_refused(f, "trainer.order");
  }
  {  // the model part goes through the model loader's checks
    SafetensorsFile f;
    f.metadata = file.metadata;
    for (const auto& [n, t] : file.tensors)
      if (n != "0.weight") f.tensors.emplace_back(n, t);
    expect_refused(f, "missing tensor '0.weight'");
  }
  for (std::size_t cut : {std::size_t{0}, std::size_t{7}, good.size() / 2, good.size() - 1}) {
    EXPECT_THROW(load_checkpoint_from_bytes(good.substr(0, cut), "bad.ckpt"), Error) << cut;
  }
}

TEST(Resume, PositionInconsistentWithTheDataIsRefused) {
  TempDir dir;
  const std::string ckpt = dir.file("run.ckpt");
  run_uninterrupted("sgd", 4, ckpt, nullptr);
  const Dataset data = synthetic(45, 16, 11);
  const Dataset other = synthetic(44, 16, 11);
  auto attempt = [&](const Dataset& d, auto&& edit) {
    Checkpoint c = load_checkpoint(ckpt);
    edit(c.position);
    Sgd sgd(0.01f, 0.9f, 1e-4f);
    sgd.import_state(c.optimizer_state, c.model.model.parameters().size());
    Trainer t(c.model.model, sgd, c.model.input_normalization, kResumeConfig);
    t.resume_from(c.position);
    t.fit(d, {}, nullptr, nullptr);
  };
  EXPECT_NO_THROW(attempt(data, [](TrainPosition&) {}));
  EXPECT_THROW(attempt(other, [](TrainPosition&) {}), Error);  // another training set size
  EXPECT_THROW(attempt(data, [](TrainPosition& p) { p.order[0] = p.order[1]; }), Error);
  EXPECT_THROW(attempt(data, [](TrainPosition& p) { p.batch = 99; }), Error);
  EXPECT_THROW(attempt(data, [](TrainPosition& p) { p.epoch = 4; }), Error);
  EXPECT_THROW(attempt(data, [](TrainPosition& p) { p.rng = "garbage"; }), Error);
}

}  // namespace
}  // namespace bnorm

// bnorm model files: a saved model loads back bit for bit, and every damaged
// or inconsistent file is refused with an error naming the file and the problem.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "bnorm/error.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/io/safetensors.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/nn/layer_factory.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/rng.hpp"
#include "test_util.hpp"

namespace bnorm {
namespace {

namespace fs = std::filesystem;

using test::perturbed_mlp;
using test::read_file;
using test::succeeds_or_throws_error;
using test::TempDir;
using test::write_file;

InputNormalization make_norm() { return InputNormalization{"global", {0.5f}, {0.25f}}; }

SafeTensor* find_tensor(SafetensorsFile& file, const std::string& name) {
  for (auto& [n, t] : file.tensors)
    if (n == name) return &t;
  return nullptr;
}

// Loads a good model file, changes it, and writes it under a new name.
std::string model_variant(const TempDir& dir, const std::string& good, const std::string& name,
                          const std::function<void(SafetensorsFile&)>& change) {
  SafetensorsFile file = read_safetensors(good);
  change(file);
  const std::string path = dir.file(name);
  write_safetensors(path, file);
  return path;
}

// ===========================================================================
// Model files

struct ModelFixture : ::testing::Test {
  TempDir dir;
  Model model = perturbed_mlp();
  std::string good = dir.file("good.safetensors");

  void SetUp() override { save_model(good, model, make_norm(), nlohmann::json{{"epochs", 3}}); }

  std::string variant(const std::string& name, const std::function<void(SafetensorsFile&)>& change) {
    return model_variant(dir, good, name, change);
  }
  std::string with_metadata(const std::string& name, const std::string& key, const std::string& value) {
    return variant(name, [&](SafetensorsFile& f) { f.metadata[key] = value; });
  }
  std::string with_architecture(const std::string& name, const std::function<void(nlohmann::json&)>& change) {
    nlohmann::json arch = model.architecture();
    change(arch);
    return with_metadata(name, "architecture", arch.dump());
  }
};

TEST_F(ModelFixture, SaveLoadIsExact) {
  LoadedModel loaded = load_model(good);
  const auto a = model.parameters();
  const auto b = loaded.model.parameters();
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  EXPECT_EQ(loaded.model.architecture(), model.architecture());

  auto sa = model.state_dict();
  auto sb = loaded.model.state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  for (std::size_t i = 0; i < sa.size(); ++i) {
    SCOPED_TRACE(sa[i].name);
    EXPECT_EQ(sa[i].name, sb[i].name);
    EXPECT_EQ(sa[i].shape, sb[i].shape);
    ASSERT_EQ(sa[i].dtype, sb[i].dtype);
    const std::size_t bytes =
        static_cast<std::size_t>(numel(sa[i].shape)) * (sa[i].dtype == StateEntry::DType::f32 ? 4 : 8);
    EXPECT_EQ(std::memcmp(sa[i].data, sb[i].data, bytes), 0);
  }
  // Running statistics really were trained (not the defaults 0 and 1).
  auto& bn = dynamic_cast<BatchNorm&>(loaded.model.layer(1));
  EXPECT_EQ(bn.num_batches_tracked(), 2);
  EXPECT_NE(bn.running_mean()[0], 0.0f);
  EXPECT_NE(bn.running_var()[0], 1.0f);
  auto& bn0 = dynamic_cast<BatchNorm&>(model.layer(1));
  for (std::size_t c = 0; c < 5; ++c) {
    EXPECT_EQ(bn.running_mean()[c], bn0.running_mean()[c]);
    EXPECT_EQ(bn.running_var()[c], bn0.running_var()[c]);
  }

  EXPECT_EQ(loaded.input_normalization.mode, "global");
  EXPECT_EQ(loaded.input_normalization.mean, std::vector<float>{0.5f});
  EXPECT_EQ(loaded.input_normalization.std, std::vector<float>{0.25f});
  EXPECT_EQ(loaded.training, (nlohmann::json{{"epochs", 3}}));

  // Same logits in eval mode.
  Tensor x(Shape{2, 6});
  for (std::int64_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i) * 0.1f - 0.5f;
  const Tensor ya = model.forward(x, Mode::eval);
  const Tensor& yb = loaded.model.forward(x, Mode::eval);
  ASSERT_EQ(ya.shape(), yb.shape());
  for (std::int64_t i = 0; i < ya.size(); ++i) EXPECT_EQ(ya[i], yb[i]);
}

TEST_F(ModelFixture, WrongFormat) {
  const auto p = with_metadata("format.safetensors", "format", "something-else");
  EXPECT_FILE_ERROR(load_model(p), p, "not a bnorm model");
  const auto q = variant("noformat.safetensors", [](SafetensorsFile& f) { f.metadata.erase("format"); });
  EXPECT_FILE_ERROR(load_model(q), q, "not a bnorm model");
  // A safetensors file with no metadata at all (e.g. a plain PyTorch export).
  const auto r = variant("nometa.safetensors", [](SafetensorsFile& f) { f.metadata.clear(); });
  EXPECT_FILE_ERROR(load_model(r), r, "not a bnorm model");
}

TEST_F(ModelFixture, WrongVersion) {
  const auto p = with_metadata("version.safetensors", "version", "2");
  EXPECT_FILE_ERROR(load_model(p), p, "model format version 2 is not supported");
  const auto q = variant("noversion.safetensors", [](SafetensorsFile& f) { f.metadata.erase("version"); });
  EXPECT_FILE_ERROR(load_model(q), q, "version (none) is not supported");
}

TEST_F(ModelFixture, ArchitectureNotJson) {
  const auto p = with_metadata("arch.safetensors", "architecture", "{layers: [");
  EXPECT_FILE_ERROR(load_model(p), p, "metadata \"architecture\" is not valid JSON");
  const auto q = variant("noarch.safetensors", [](SafetensorsFile& f) { f.metadata.erase("architecture"); });
  EXPECT_FILE_ERROR(load_model(q), q, "metadata lacks \"architecture\"");
  const auto r = with_metadata("archarray.safetensors", "architecture", "[1,2]");
  EXPECT_FILE_ERROR(load_model(r), r, "bad architecture: architecture must be an object");
}

TEST_F(ModelFixture, ArchitectureUnknownLayerType) {
  const auto p = with_architecture("conv.safetensors", [](nlohmann::json& a) { a["layers"][2]["type"] = "conv9"; });
  EXPECT_FILE_ERROR(load_model(p), p, "unknown activation 'conv9'");
  const auto q = with_architecture("notype.safetensors", [](nlohmann::json& a) { a["layers"][2].erase("type"); });
  EXPECT_FILE_ERROR(load_model(q), q, "lacks \"type\"");
  const auto r = with_architecture("numtype.safetensors", [](nlohmann::json& a) { a["layers"][2]["type"] = 7; });
  EXPECT_FILE_ERROR(load_model(r), r, "\"type\" has the wrong type");
}

TEST_F(ModelFixture, ArchitectureLayersDoNotChain) {
  const auto p = with_architecture("chain.safetensors", [](nlohmann::json& a) { a["layers"][3]["in_features"] = 4; });
  EXPECT_FILE_ERROR(load_model(p), p, "layer 3 (linear)");
  const auto q = with_architecture("input.safetensors", [](nlohmann::json& a) { a["input_shape"] = {7}; });
  EXPECT_FILE_ERROR(load_model(q), q, "layer 0 (linear)");
  const auto r =
      with_architecture("bnwidth.safetensors", [](nlohmann::json& a) { a["layers"][1]["num_features"] = 6; });
  EXPECT_FILE_ERROR(load_model(r), r, "layer 1 (batchnorm)");
}

TEST_F(ModelFixture, ArchitectureTooLargeIsRefusedNotAllocated) {
  // Regression: a few-KB file declaring Linear(16777216 -> 16777216), 2^48
  // parameters, once made the loader allocate before checking anything. The
  // architecture's state is now bounded by the bytes the file holds.
  nlohmann::json arch = {
      {"input_shape", {1 << 24}},
      {"layers", {{{"type", "linear"}, {"in_features", 1 << 24}, {"out_features", 1 << 24}, {"bias", true}}}}};
  const auto p = with_metadata("huge.safetensors", "architecture", arch.dump());
  EXPECT_FILE_ERROR(load_model(p), p, "");
}

TEST_F(ModelFixture, ArchitectureNumbersOutOfRangeAreRefusedNotCast) {
  // Regression (fuzz_architecture, fuzz/corpus/fuzz_architecture/regression_huge_integer.json):
  // an integer too long for int64 parses as a double, and get<int64_t>() cast
  // it, undefined behaviour that UBSan reported. Fields now go through
  // json_number, which refuses what the target type cannot hold.
  const auto p = with_architecture("hugeint.safetensors", [](nlohmann::json& a) {
    a["layers"][0]["in_features"] = nlohmann::json::parse("3333333333333330000000000004741327996562045");
  });
  EXPECT_FILE_ERROR(load_model(p), p, "\"in_features\" has the wrong type or is out of range");
  const auto q =
      with_architecture("fraction.safetensors", [](nlohmann::json& a) { a["layers"][0]["in_features"] = 6.5; });
  EXPECT_FILE_ERROR(load_model(q), q, "\"in_features\" has the wrong type or is out of range");
  const auto r = with_architecture("hugeeps.safetensors", [](nlohmann::json& a) { a["layers"][1]["eps"] = 1e300; });
  EXPECT_FILE_ERROR(load_model(r), r, "\"eps\" has the wrong type or is out of range");
  const auto s =
      with_architecture("hugemom.safetensors", [](nlohmann::json& a) { a["layers"][1]["momentum"] = -1e300; });
  EXPECT_FILE_ERROR(load_model(s), s, "\"momentum\" has the wrong type or is out of range");
  const auto t =
      with_metadata("hugemean.safetensors", "input_normalization", R"({"mode":"global","mean":[1e300],"std":[1]})");
  EXPECT_FILE_ERROR(load_model(t), t, "within float range");
}

TEST_F(ModelFixture, MissingTensor) {
  const auto p = variant("missing.safetensors", [](SafetensorsFile& f) {
    std::erase_if(f.tensors, [](const auto& e) { return e.first == "1.running_var"; });
  });
  EXPECT_FILE_ERROR(load_model(p), p, "missing tensor '1.running_var'");
}

TEST_F(ModelFixture, ExtraTensor) {
  const auto p = variant("extra.safetensors", [](SafetensorsFile& f) {
    const float v = 1.0f;
    f.tensors.emplace_back("9.weight", make_f32_tensor({1}, &v));
  });
  EXPECT_FILE_ERROR(load_model(p), p, "unexpected tensor '9.weight'");
}

TEST_F(ModelFixture, WrongShape) {
  const auto p = variant("shape.safetensors", [](SafetensorsFile& f) {
    const float v[4] = {0, 0, 0, 0};
    *find_tensor(f, "3.bias") = make_f32_tensor({4}, v);
  });
  EXPECT_FILE_ERROR(load_model(p), p, "tensor '3.bias' has shape (4), the architecture needs (3)");
  // Same element count, transposed.
  const auto q = variant("transposed.safetensors", [](SafetensorsFile& f) {
    SafeTensor& t = *find_tensor(f, "0.weight");
    t.shape = {6, 5};
  });
  EXPECT_FILE_ERROR(load_model(q), q, "tensor '0.weight' has shape (6, 5), the architecture needs (5, 6)");
}

TEST_F(ModelFixture, WrongDtype) {
  const auto p = variant("dtype.safetensors", [](SafetensorsFile& f) {
    std::vector<std::int64_t> v(30, 1);
    *find_tensor(f, "0.weight") = make_i64_tensor({5, 6}, v.data());
  });
  EXPECT_FILE_ERROR(load_model(p), p, "tensor '0.weight' has dtype I64, expected F32");
  const auto q = variant("dtype2.safetensors", [](SafetensorsFile& f) {
    const float v = 2.0f;
    *find_tensor(f, "1.num_batches_tracked") = make_f32_tensor({}, &v);
  });
  EXPECT_FILE_ERROR(load_model(q), q, "tensor '1.num_batches_tracked' has dtype F32, expected I64");
}

TEST_F(ModelFixture, NonFiniteWeight) {
  const auto p = variant("nan.safetensors", [](SafetensorsFile& f) {
    SafeTensor& t = *find_tensor(f, "3.weight");
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(t.bytes.data() + 4 * 7, &nan, 4);
  });
  EXPECT_FILE_ERROR(load_model(p), p, "tensor '3.weight' holds a non-finite value at index 7");
  const auto q = variant("inf.safetensors", [](SafetensorsFile& f) {
    SafeTensor& t = *find_tensor(f, "1.running_mean");
    const float inf = std::numeric_limits<float>::infinity();
    std::memcpy(t.bytes.data(), &inf, 4);
  });
  EXPECT_FILE_ERROR(load_model(q), q, "tensor '1.running_mean' holds a non-finite value at index 0");
}

TEST_F(ModelFixture, NegativeRunningVar) {
  const auto p = variant("negvar.safetensors", [](SafetensorsFile& f) {
    SafeTensor& t = *find_tensor(f, "1.running_var");
    const float v = -0.5f;
    std::memcpy(t.bytes.data() + 4 * 2, &v, 4);
  });
  EXPECT_FILE_ERROR(load_model(p), p, "tensor '1.running_var' holds a negative variance at index 2");
  const auto q = variant("negcount.safetensors", [](SafetensorsFile& f) {
    const std::int64_t v = -1;
    *find_tensor(f, "1.num_batches_tracked") = make_i64_tensor({}, &v);
  });
  EXPECT_FILE_ERROR(load_model(q), q, "tensor '1.num_batches_tracked' is negative");
}

TEST_F(ModelFixture, BadInputNormalization) {
  const auto p =
      with_metadata("pixel.safetensors", "input_normalization", R"({"mode":"pixel","mean":[0.5],"std":[0.25]})");
  EXPECT_FILE_ERROR(load_model(p), p, "mode 'pixel' needs 6 means and stds for 6 features, got 1 and 1");
  const auto q =
      with_metadata("std0.safetensors", "input_normalization", R"({"mode":"global","mean":[0.5],"std":[0]})");
  EXPECT_FILE_ERROR(load_model(q), q, "std <= 0");
  const auto r =
      with_metadata("stdneg.safetensors", "input_normalization", R"({"mode":"global","mean":[0.5],"std":[-1]})");
  EXPECT_FILE_ERROR(load_model(r), r, "std <= 0");
  const auto s =
      with_metadata("mode.safetensors", "input_normalization", R"({"mode":"median","mean":[0.5],"std":[1]})");
  EXPECT_FILE_ERROR(load_model(s), s, "unknown mode 'median'");
  const auto t =
      with_metadata("types.safetensors", "input_normalization", R"({"mode":"global","mean":"0.5","std":[1]})");
  EXPECT_FILE_ERROR(load_model(t), t, "needs a string \"mode\" and number lists");
  const auto u = with_metadata("notjson.safetensors", "input_normalization", "mean=0.5");
  EXPECT_FILE_ERROR(load_model(u), u, "metadata \"input_normalization\" is not valid JSON");
  const auto v = variant("nonorm.safetensors", [](SafetensorsFile& f) { f.metadata.erase("input_normalization"); });
  EXPECT_FILE_ERROR(load_model(v), v, "metadata lacks \"input_normalization\"");
  const auto w =
      with_metadata("lengths.safetensors", "input_normalization", R"({"mode":"global","mean":[0.5],"std":[1,2]})");
  EXPECT_FILE_ERROR(load_model(w), w, "got 1 and 2");
}

TEST_F(ModelFixture, EveryTruncationThrows) {
  const std::string bytes = read_file(good);
  const std::string path = dir.file("cut.safetensors");
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    SCOPED_TRACE("cut to " + std::to_string(n) + " bytes");
    write_file(path, bytes.substr(0, n));
    EXPECT_FILE_ERROR(load_model(path), path, "");
  }
}

TEST_F(ModelFixture, RandomHeaderDamageNeverEscapesAsAnotherException) {
  const std::string bytes = read_file(good);
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  const std::string path = dir.file("damaged.safetensors");
  const std::string alphabet = "\"{}[],:0123456789-.eE \\ntfu";
  std::mt19937_64 gen(7);
  for (int trial = 0; trial < 2000; ++trial) {
    std::string bad = bytes;
    const int edits = 1 + static_cast<int>(gen() % 3);
    for (int e = 0; e < edits; ++e) bad[8 + gen() % header_len] = alphabet[gen() % alphabet.size()];
    write_file(path, bad);
    EXPECT_TRUE(succeeds_or_throws_error([&] { load_model(path); })) << "trial " << trial;
  }
}

}  // namespace
}  // namespace bnorm

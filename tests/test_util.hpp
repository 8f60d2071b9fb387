#pragma once
// Shared helpers for the tests, one header for all of them:
//   tensors and data: random tensors, synthetic image sets, a small MLP whose
//     state differs from its initialization, a harness that gives a lone layer
//     the parameter/gradient buffers a Model would normally provide;
//   golden fixtures: their paths, tensors from them, and expect_close;
//   files: a scratch directory per test, files written byte for byte (plain or
//     gzipped), and EXPECT_FILE_ERROR, which checks that a call fails with
//     bnorm::Error naming the file and the problem.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <numeric>
#include <span>
#include <string>
#include <system_error>
#include <typeinfo>
#include <vector>

#include "bnorm/error.hpp"
#include "bnorm/io/safetensors.hpp"
#include "bnorm/nn/layer.hpp"
#include "bnorm/nn/layer_factory.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/rng.hpp"
#include "bnorm/tensor.hpp"
#include "bnorm/train/dataset.hpp"

namespace bnorm::test {

namespace fs = std::filesystem;
inline Tensor random_tensor(const Shape& shape, Rng& rng, double mean = 0.0, double stddev = 1.0) {
  Tensor t(shape);
  for (std::int64_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>(mean + stddev * rng.normal());
  return t;
}

// n byte images (1, 4, 4) of 10 classes, pixel f of an example of class f
// brighter than the rest: enough signal that a few training steps move the
// weights (and the running averages away from the final statistics).
inline Dataset synthetic_images(std::int64_t n, std::uint64_t seed) {
  Dataset d;
  d.count = n;
  d.example_shape = {1, 4, 4};
  d.num_classes = 10;
  d.features = 16;
  Rng rng(seed);
  for (std::int64_t i = 0; i < n; ++i) {
    const auto label = static_cast<std::int32_t>(rng.below(10));
    d.labels.push_back(label);
    for (int f = 0; f < 16; ++f)
      d.bytes.push_back(
          static_cast<std::uint8_t>(std::min<std::uint64_t>(255, rng.below(120) + (f == label ? 120 : 0))));
  }
  return d;
}

struct LayerHarness {
  LayerPtr layer;
  std::vector<float> params, grads;

  explicit LayerHarness(LayerPtr l, std::uint64_t seed = 1) : layer(std::move(l)) {
    std::int64_t n = 0;
    for (const auto& slot : layer->param_slots()) n += numel(slot.shape);
    params.assign(static_cast<std::size_t>(n), 0.0f);
    grads.assign(static_cast<std::size_t>(n), 0.0f);
    layer->bind_parameters(params, grads);
    Rng rng(seed);
    layer->init_parameters(rng);
  }
  Layer* operator->() { return layer.get(); }
};

// A 6-5-3 MLP (batch norm before each ReLU) whose every parameter and running
// statistic differs from its initial value, so a save/load that drops or
// reinitializes anything shows.
inline Model perturbed_mlp() {
  MlpSpec spec;
  spec.widths = {6, 5, 3};
  Model model(Shape{6}, build_mlp_layers(spec));
  Rng rng(1234);
  model.init_parameters(rng);
  for (float& p : model.parameters()) p += static_cast<float>(0.1 * rng.normal());
  Tensor x(Shape{8, 6});
  for (std::int64_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(rng.normal());
  model.forward(x, Mode::train);
  model.forward(x, Mode::train);
  return model;
}

// --- golden fixtures (tests/fixtures, written by scripts/make_*_fixtures.py) ---

inline std::string fixture_path(const std::string& name) { return std::string(BNORM_FIXTURE_DIR) + "/" + name; }

inline Tensor tensor_from(const SafeTensor& t) {
  Tensor out(t.shape);
  const auto v = t.to_f32();
  std::copy(v.begin(), v.end(), out.data());
  return out;
}

// Every |got_i - want_i| <= tol·(1 + |want_i|) (absolute near zero, relative
// beyond); on failure, how many values are off and the worst of them.
inline void expect_close(const std::string& what, std::span<const float> got, const std::vector<float>& want,
                         double tol) {
  ASSERT_EQ(got.size(), want.size()) << what;
  std::size_t bad = 0, worst_at = 0;
  double worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double err = std::abs(static_cast<double>(got[i]) - want[i]) / (1.0 + std::abs(want[i]));
    if (!(err <= tol)) ++bad;
    if (!(err <= worst)) {
      worst = err;
      worst_at = i;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << want.size() << " values off by more than " << tol
                     << "·(1 + |want|); worst at " << worst_at << ": got " << got[worst_at] << ", want "
                     << want[worst_at];
}
inline void expect_close(const std::string& what, const float* got, const std::vector<float>& want, double tol) {
  expect_close(what, std::span<const float>(got, want.size()), want, tol);
}

// --- files ------------------------------------------------------------------

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    const std::string test = info ? info->name() : "none";
    path_ = fs::temp_directory_path() /
            ("bnorm_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + test);
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

inline void write_file(const std::string& path, const std::string& bytes) {
  // A new file each time: truncating an existing one makes ext4 flush it on
  // close (auto_da_alloc), which costs milliseconds per call.
  std::error_code ec;
  fs::remove(path, ec);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  ASSERT_TRUE(out) << "cannot write test file " << path;
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out) << "cannot write test file " << path;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Passes when fn throws bnorm::Error whose message starts with "<path>: " and
// contains fragment; otherwise says what happened instead.
inline ::testing::AssertionResult throws_error(const std::function<void()>& fn, const std::string& path,
                                               const std::string& fragment) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.rfind(path + ": ", 0) != 0)
      return ::testing::AssertionFailure() << "message does not start with \"" << path << ": \"\n  actual: " << msg;
    if (msg.find(fragment) == std::string::npos)
      return ::testing::AssertionFailure() << "message lacks \"" << fragment << "\"\n  actual: " << msg;
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a " << typeid(e).name() << " instead of bnorm::Error: " << e.what()
                                         << "\n  expected: " << path << ": ..." << fragment;
  } catch (...) {
    return ::testing::AssertionFailure() << "threw something that is not a std::exception";
  }
  return ::testing::AssertionFailure() << "did not throw; expected " << path << ": ..." << fragment;
}

#define EXPECT_FILE_ERROR(call, path, fragment) \
  EXPECT_TRUE(::bnorm::test::throws_error([&] { (void)(call); }, (path), (fragment)))

// Either succeeds or throws bnorm::Error: never another exception type.
inline ::testing::AssertionResult succeeds_or_throws_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error&) {
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a " << typeid(e).name() << " instead of bnorm::Error: " << e.what();
  }
  return ::testing::AssertionSuccess();
}

// An in-memory gzip stream (deflate with a gzip wrapper).
inline std::string gzip_bytes(const std::string& raw) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, static_cast<uLong>(raw.size())) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  z.avail_in = static_cast<uInt>(raw.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// A gzip file written through zlib's file interface, as gzip(1) would.
inline void write_gzip_file(const std::string& path, const std::string& raw) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, raw.data(), static_cast<unsigned>(raw.size())), static_cast<int>(raw.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

}  // namespace bnorm::test

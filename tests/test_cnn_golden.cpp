// A conv → BN2d → ReLU → maxpool → conv → ReLU → BN2d → GAP → linear stack
// against PyTorch 1.13 (fixtures/cnn_golden.safetensors, written by
// scripts/make_cnn_fixtures.py): logits, every parameter gradient and the
// running statistics over two training steps, then eval mode.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "bnorm/error.hpp"
#include "bnorm/io/safetensors.hpp"
#include "bnorm/nn/conv2d.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/tensor.hpp"
#include "test_util.hpp"

namespace bnorm::test {
namespace {

const std::string kFixture = fixture_path("cnn_golden.safetensors");
constexpr double kTol = 1e-4;  // |got - want| <= kTol * (1 + |want|)

bool is_buffer(const std::string& name) {
  return name.find("running_") != std::string::npos || name.find("num_batches_tracked") != std::string::npos;
}

// The fixture's layers are narrow (1 to 4 channels in), below the channel
// count from which a 3x3 convolution takes Winograd's path by default; with
// `winograd`, every convolution that can take it is sent there, so that the
// path is checked against PyTorch itself, not only against im2col.
void check_against_fixture(bool winograd) {
  const SafetensorsFile file = read_safetensors(kFixture);
  Model model = Model::from_architecture(nlohmann::json::parse(file.metadata.at("architecture")));
  if (winograd) {
    int switched = 0;
    for (std::size_t i = 0; i < model.num_layers(); ++i)
      if (auto* conv = dynamic_cast<Conv2d*>(&model.layer(i))) {
        try {
          conv->set_path(Conv2d::ConvPath::winograd);
          ++switched;
        } catch (const Error&) {  // not 3x3 with stride 1
        }
      }
    ASSERT_GT(switched, 0) << "no convolution of the fixture can take Winograd's path";
  }
  const float* param_base = model.parameters().data();
  // Initial weights and buffers from the fixture, by state_dict name.
  for (const StateEntry& e : model.state_dict()) {
    const SafeTensor& t = file.at("init." + e.name, kFixture);
    ASSERT_EQ(t.shape, e.shape) << e.name;
    std::memcpy(e.data, t.bytes.data(), t.bytes.size());
  }
  const int steps = std::stoi(file.metadata.at("steps"));
  for (int s = 0; s < steps; ++s) {
    const std::string p = "step" + std::to_string(s) + ".";
    const Tensor x = tensor_from(file.at(p + "x", kFixture));
    const Tensor dy = tensor_from(file.at(p + "dy", kFixture));
    expect_close(p + "y", model.forward(x, Mode::train).data(), file.at(p + "y", kFixture).to_f32(), kTol);
    model.backward(dy);
    for (const StateEntry& e : model.state_dict()) {
      if (is_buffer(e.name)) {
        if (e.dtype == StateEntry::DType::i64)
          EXPECT_EQ(*static_cast<std::int64_t*>(e.data), file.at(p + e.name, kFixture).to_i64_scalar()) << e.name;
        else
          expect_close(p + e.name, static_cast<float*>(e.data), file.at(p + e.name, kFixture).to_f32(), kTol);
        continue;
      }
      // The gradient of a parameter sits at the same offset in the gradient buffer.
      const std::ptrdiff_t offset = static_cast<float*>(e.data) - param_base;
      expect_close(p + "grad." + e.name, model.gradients().data() + offset,
                   file.at(p + "grad." + e.name, kFixture).to_f32(), kTol);
    }
  }
  const Tensor x = tensor_from(file.at("eval.x", kFixture));
  expect_close("eval.y", model.forward(x, Mode::eval).data(), file.at("eval.y", kFixture).to_f32(), kTol);
}

TEST(CnnGolden, MatchesPyTorchForwardBackwardAndRunningStatistics) { check_against_fixture(false); }

TEST(CnnGolden, WinogradPathMatchesPyTorch) { check_against_fixture(true); }

}  // namespace
}  // namespace bnorm::test

// The one-line network description: tokens, bn placement, automatic bias
// removal and flattening, and errors that name the token.
#include <gtest/gtest.h>

#include "bnorm/error.hpp"
#include "bnorm/nn/arch.hpp"
#include "bnorm/nn/model.hpp"

namespace bnorm::test {
namespace {

std::vector<std::string> types(const nlohmann::json& arch) {
  std::vector<std::string> t;
  for (const auto& l : arch.at("layers")) t.push_back(l.at("type"));
  return t;
}

const Shape kImage{1, 28, 28};

TEST(Arch, DefaultCnnMatchesTheDocumentedNetwork) {
  const auto arch = parse_arch("cnn", kImage, BnPlacement::before, {});
  EXPECT_EQ(types(arch), (std::vector<std::string>{"conv2d", "batchnorm", "relu", "maxpool2d", "conv2d", "batchnorm",
                                                   "relu", "maxpool2d", "flatten", "linear"}));
  const auto& layers = arch.at("layers");
  EXPECT_EQ(layers[0].at("bias"), false);  // bn follows: no bias
  EXPECT_EQ(layers[0].at("padding"), 1);   // "same" size for 3x3
  EXPECT_EQ(layers[4].at("in_channels"), 32);
  EXPECT_EQ(layers[9].at("in_features"), 64 * 7 * 7);
  EXPECT_EQ(layers[9].at("bias"), true);
  Model m = Model::from_architecture(arch);
  EXPECT_EQ(m.output_shape(), Shape{10});
}

TEST(Arch, PlacementMovesOrDropsBatchNorm) {
  const std::string spec = "conv3x3:8,bn,relu,fc:16,bn,tanh,fc:10";
  EXPECT_EQ(
      types(parse_arch(spec, kImage, BnPlacement::after, {})),
      (std::vector<std::string>{"conv2d", "relu", "batchnorm", "flatten", "linear", "tanh", "batchnorm", "linear"}));
  const auto none = parse_arch(spec, kImage, BnPlacement::none, {});
  EXPECT_EQ(types(none), (std::vector<std::string>{"conv2d", "relu", "flatten", "linear", "tanh", "linear"}));
  EXPECT_EQ(none.at("layers")[0].at("bias"), true);  // no bn follows any more: the bias returns
  // "before" turns an activation-then-bn pair around.
  EXPECT_EQ(types(parse_arch("fc:16,relu,bn,fc:10", kImage, BnPlacement::before, {})),
            (std::vector<std::string>{"flatten", "linear", "batchnorm", "relu", "linear"}));
}

TEST(Arch, OptionsStridesPaddingPoolingAndComments) {
  const auto arch = parse_arch("# a comment\nconv5x3:4:s2:p0\nrelu  # trailing\navgpool2:s1, gap, dropout:0.25, fc:10",
                               kImage, BnPlacement::before, {});
  const auto& l = arch.at("layers");
  EXPECT_EQ(l[0].at("kernel_size"), nlohmann::json({5, 3}));
  EXPECT_EQ(l[0].at("stride"), 2);
  EXPECT_EQ(l[0].at("padding"), 0);
  EXPECT_EQ(l[2].at("stride"), 1);
  EXPECT_EQ(types(arch), (std::vector<std::string>{"conv2d", "relu", "avgpool2d", "global_avgpool", "dropout",
                                                   "flatten", "linear"}));
  EXPECT_FLOAT_EQ(l[4].at("p").get<float>(), 0.25f);
}

TEST(Arch, BatchNormOptionsAreCarriedIntoEveryBnLayer) {
  BatchNormOptions o;
  o.eps = 1e-3f;
  o.momentum.reset();
  o.scale = o.center = false;
  const auto arch = parse_arch("fc:8,bn,relu,fc:10", Shape{784}, BnPlacement::before, o);
  const auto& bn = arch.at("layers")[1];
  EXPECT_FLOAT_EQ(bn.at("eps").get<float>(), 1e-3f);
  EXPECT_TRUE(bn.at("momentum").is_null());
  EXPECT_EQ(bn.at("affine"), false);
}

void expect_error(const std::string& spec, const std::string& fragment) {
  try {
    parse_arch(spec, kImage, BnPlacement::before, {});
    FAIL() << "accepted '" << spec << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << spec << " → " << e.what();
  }
}

TEST(Arch, ErrorsNameTheToken) {
  expect_error("conv3x3:8,bogus,fc:10", "'bogus'");
  expect_error("conv3:8", "conv<KH>x<KW>");
  expect_error("conv3x3:x", "'x' is not a non-negative whole number");
  expect_error("conv3x3:8:q4", "unknown option 'q4'");
  expect_error("maxpool64", "larger than the input");
  expect_error("dropout:abc", "dropout needs a probability");
  expect_error("dropout:1.5", "p must be in [0, 1)");
  expect_error("", "no layers");
  expect_error("conv3x3:0", "\"out_channels\" must be in 1..65536");
}

}  // namespace
}  // namespace bnorm::test

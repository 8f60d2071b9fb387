// bnorm import: small ONNX graphs built here node by node, each accepted
// into the layers and values it stands for or refused naming the file, the
// node and its op type, with nothing written. PyTorch's own exports are
// checked against PyTorch's outputs in tests/onnx_import.sh.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <filesystem>

#include "bnorm/error.hpp"
#include "bnorm/io/onnx_export.hpp"
#include "bnorm/io/onnx_import.hpp"
#include "bnorm/nn/activation.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/nn/conv2d.hpp"
#include "bnorm/nn/linear.hpp"
#include "bnorm/nn/pooling.hpp"
#include "bnorm/rng.hpp"
#include "file_test_util.hpp"

namespace bnorm {
namespace {

// A graph written by hand: input (N, features...) and nodes in order.
class Graph {
 public:
  explicit Graph(const std::vector<std::int64_t>& example, int opset = 15) {
    proto_.set_ir_version(7);
    auto* o = proto_.add_opset_import();
    o->set_domain("");
    o->set_version(opset);
    auto* in = proto_.mutable_graph()->add_input();
    in->set_name("input");
    auto* t = in->mutable_type()->mutable_tensor_type();
    t->set_elem_type(onnx::TensorProto::FLOAT);
    t->mutable_shape()->add_dim()->set_dim_param("N");
    for (std::int64_t d : example) t->mutable_shape()->add_dim()->set_dim_value(d);
    last_ = "input";
  }

  std::string initializer(const std::string& name, const std::vector<std::int64_t>& dims, float start, float step) {
    auto* t = proto_.mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    std::int64_t n = 1;
    for (std::int64_t d : dims) t->add_dims(d), n *= d;
    for (std::int64_t i = 0; i < n; ++i) t->add_float_data(start + step * static_cast<float>(i));
    return name;
  }

  onnx::NodeProto& node(const std::string& op, const std::string& name, std::vector<std::string> inputs) {
    auto* n = proto_.mutable_graph()->add_node();
    n->set_op_type(op);
    n->set_name(name);
    inputs.insert(inputs.begin(), last_);
    for (const auto& i : inputs) n->add_input(i);
    n->add_output(name + "_out");
    last_ = name + "_out";
    return *n;
  }

  // Gemm (out, in) with bias, transB = 1, as PyTorch writes a Linear.
  void linear(const std::string& name, std::int64_t in, std::int64_t out) {
    auto& n = node("Gemm", name,
                   {initializer(name + ".w", {out, in}, -0.3f, 0.01f), initializer(name + ".b", {out}, 0.1f, 0.05f)});
    auto* a = n.add_attribute();
    a->set_name("transB");
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(1);
  }

  onnx::NodeProto& batchnorm(const std::string& name, std::int64_t C, float momentum = 0.9f) {
    auto& n = node("BatchNormalization", name,
                   {initializer(name + ".scale", {C}, 0.5f, 0.1f), initializer(name + ".bias", {C}, -0.2f, 0.1f),
                    initializer(name + ".mean", {C}, 0.3f, 0.2f), initializer(name + ".var", {C}, 1.5f, 0.25f)});
    auto* a = n.add_attribute();
    a->set_name("momentum");
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(momentum);
    return n;
  }

  std::string bytes() {
    auto* out = proto_.mutable_graph()->add_output();
    out->set_name(last_);
    std::string b;
    proto_.SerializeToString(&b);
    return b;
  }

  onnx::ModelProto& proto() { return proto_; }

 private:
  onnx::ModelProto proto_;
  std::string last_;
};

OnnxImport import(const std::string& bytes, OnnxImportOptions options = {}) {
  return onnx_import_bytes(bytes, "m.onnx", options);
}

TEST(OnnxImport, MlpLayersStatisticsAndMomentum) {
  Graph g({6});
  g.linear("fc1", 6, 4);
  g.batchnorm("bn1", 4, 0.8f);
  g.node("Relu", "relu1", {});
  g.linear("fc2", 4, 3);
  const std::string bytes = g.bytes();
  OnnxImport m = import(bytes);
  const auto arch = m.model.model.architecture();
  ASSERT_EQ(arch["layers"].size(), 4u);
  EXPECT_EQ(arch["layers"][0]["bias"], true);  // a non-zero bias before a BN is kept
  auto& bn = static_cast<BatchNorm&>(m.model.model.layer(1));
  EXPECT_FLOAT_EQ(*bn.options().momentum, 0.2f);  // ONNX 0.8 weighs the old value
  EXPECT_TRUE(bn.options().scale && bn.options().center);
  for (int c = 0; c < 4; ++c) {
    EXPECT_FLOAT_EQ(bn.running_mean()[static_cast<std::size_t>(c)], 0.3f + 0.2f * static_cast<float>(c));
    EXPECT_FLOAT_EQ(bn.running_var()[static_cast<std::size_t>(c)], 1.5f + 0.25f * static_cast<float>(c));
  }
  bool said_momentum = false;
  for (const auto& note : m.notes) said_momentum |= note.find("momentum 0.8") != std::string::npos;
  EXPECT_TRUE(said_momentum);
  EXPECT_EQ(m.model.task.kind, Task::regress);  // raw outputs
  EXPECT_EQ(m.model.target_normalization.std, std::vector<float>(3, 1.0f));
  EXPECT_EQ(import(bytes, {.classify = true}).model.task.kind, Task::classify);
}

TEST(OnnxImport, AffineFalseAndZeroBiasBeforeBatchNorm) {
  Graph g({5});
  auto& fc = g.node("Gemm", "fc", {g.initializer("w", {3, 5}, 0.1f, 0.1f), g.initializer("b", {3}, 0.0f, 0.0f)});
  auto* a = fc.add_attribute();
  a->set_name("transB");
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(1);
  g.node("BatchNormalization", "bn",
         {g.initializer("s", {3}, 1.0f, 0.0f), g.initializer("z", {3}, 0.0f, 0.0f), g.initializer("m", {3}, 0.0f, 1.0f),
          g.initializer("v", {3}, 1.0f, 1.0f)});
  OnnxImport m = import(g.bytes());
  const auto arch = m.model.model.architecture();
  EXPECT_EQ(arch["layers"][0]["bias"], false);
  EXPECT_EQ(arch["layers"][1]["affine"], false);
  EXPECT_FLOAT_EQ(*static_cast<BatchNorm&>(m.model.model.layer(1)).options().momentum, 0.1f);  // ONNX default 0.9
}

// torch.onnx.export writes PyTorch's momentum=None (the cumulative average) as 1.
TEST(OnnxImport, MomentumOneIsTheCumulativeAverage) {
  Graph g({4});
  g.batchnorm("bn", 4, 1.0f);
  OnnxImport m = import(g.bytes());
  EXPECT_FALSE(static_cast<BatchNorm&>(m.model.model.layer(0)).options().momentum.has_value());
  EXPECT_NE(m.notes.at(0).find("cumulative average"), std::string::npos) << m.notes.at(0);
}

// bnorm export → bnorm import gives back the architecture, the input
// normalization and every value, so the outputs are the same bits. The batch
// norms are still at γ = 1, β = 0: the export's metadata says they are
// affine, and gives their momentum (the graph has none).
TEST(OnnxImport, RoundTripOfBnormExport) {
  std::vector<LayerPtr> layers;
  layers.push_back(std::make_unique<Conv2d>(3, 4, 3, 3, 1, 1, true));
  layers.push_back(std::make_unique<BatchNorm>(4));
  layers.push_back(std::make_unique<Activation>(ActivationKind::relu));
  layers.push_back(std::make_unique<Pool2d>(Pool2d::Kind::average, 2, 2));
  layers.push_back(std::make_unique<Flatten>());
  layers.push_back(std::make_unique<Linear>(64, 5, false));
  layers.push_back(std::make_unique<BatchNorm>(5, [] {
    BatchNormOptions o;
    o.momentum = std::nullopt;
    return o;
  }()));
  InputNormalization norm;
  norm.mode = "channel";
  norm.mean = {0.1f, 0.2f, 0.3f};
  norm.std = {1.5f, 2.5f, 3.5f};
  norm.divisor = 255.0f;
  LoadedModel original{Model(Shape{3, 8, 8}, std::move(layers)), norm, {}, {}, {}};
  Rng rng(7);
  original.model.init_parameters(rng);
  for (const StateEntry& e : original.model.state_dict())
    if (e.name == "0.bias") static_cast<float*>(e.data)[2] = 0.25f;  // a non-zero bias before a BN stays
  auto& bn = static_cast<BatchNorm&>(original.model.layer(1));
  for (std::size_t c = 0; c < 4; ++c)
    bn.running_mean()[c] = 0.1f * static_cast<float>(c) - 0.2f, bn.running_var()[c] = 0.5f + static_cast<float>(c);

  for (int opset : {kOnnxMinOpset, kOnnxMaxOpset}) {
    SCOPED_TRACE("opset " + std::to_string(opset));
    OnnxImport back = import(onnx_model_bytes(original, {.opset = opset}, "m.onnx"), {.classify = true});
    EXPECT_EQ(back.model.model.architecture(), original.model.architecture());
    EXPECT_EQ(back.model.input_normalization.mean, norm.mean);
    EXPECT_EQ(back.model.input_normalization.std, norm.std);
    EXPECT_EQ(back.model.input_normalization.divisor, norm.divisor);
    const auto a = original.model.parameters(), b = back.model.model.parameters();
    ASSERT_EQ(a.size(), b.size());
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin()));
    auto& bn_back = static_cast<BatchNorm&>(back.model.model.layer(1));
    EXPECT_TRUE(std::equal(bn.running_var().begin(), bn.running_var().end(), bn_back.running_var().begin()));
  }
}

// Each refusal names the file, the node and its op type, and what is wrong.
TEST(OnnxImport, RefusesUnsupportedOperator) {
  Graph g({6});
  g.linear("fc1", 6, 4);
  g.node("Softmax", "probabilities", {});
  EXPECT_FILE_ERROR(import(g.bytes()), "m.onnx", "node 'probabilities' (Softmax): operator Softmax is not supported");
}

TEST(OnnxImport, RefusesBatchNormOnSequences) {
  Graph g({3, 5});  // (N, C, L): BatchNorm1d over a sequence
  g.batchnorm("bn_seq", 3);
  EXPECT_FILE_ERROR(import(g.bytes()), "m.onnx", "node 'bn_seq' (BatchNormalization): normalizes examples of shape");
}

TEST(OnnxImport, RefusesBatchNormInTrainingMode) {
  Graph g({4});
  auto& n = g.batchnorm("bn_train", 4);
  auto* a = n.add_attribute();
  a->set_name("training_mode");
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(1);
  EXPECT_FILE_ERROR(import(g.bytes()), "m.onnx", "node 'bn_train' (BatchNormalization): is in training mode");
}

TEST(OnnxImport, RefusesWrongInitializerShape) {
  Graph g({4});
  g.node("BatchNormalization", "bn_bad",
         {g.initializer("s", {4}, 1.0f, 0.1f), g.initializer("b", {4}, 0.0f, 0.1f), g.initializer("m", {5}, 0.0f, 0.1f),
          g.initializer("v", {4}, 1.0f, 0.1f)});
  EXPECT_FILE_ERROR(import(g.bytes()), "m.onnx",
                    "node 'bn_bad' (BatchNormalization): its mean 'm' has shape [5], expected [4]");
}

TEST(OnnxImport, RefusesMissingInitializer) {
  Graph g({4});
  g.node("Gemm", "fc_orphan", {"no_such_weight"});
  EXPECT_FILE_ERROR(import(g.bytes()), "m.onnx",
                    "node 'fc_orphan' (Gemm): its weight 'no_such_weight' is not an initializer");
}

TEST(OnnxImport, RefusesBranches) {
  Graph g({4});
  g.node("Relu", "a", {});
  g.node("Add", "skip", {"input"});  // a residual connection
  EXPECT_FILE_ERROR(import(g.bytes()), "m.onnx", "node 'skip' (Add)");
}

TEST(OnnxImport, RefusesUnsupportedAttributes) {
  Graph g({2, 6, 6});
  auto& n = g.node("MaxPool", "pool_ceil", {});
  for (auto [name, value] : {std::pair{"kernel_shape", 2}, {"ceil_mode", 1}}) {
    auto* a = n.add_attribute();
    a->set_name(name);
    if (std::string(name) == "ceil_mode") {
      a->set_type(onnx::AttributeProto::INT);
      a->set_i(value);
    } else {
      a->set_type(onnx::AttributeProto::INTS);
      a->add_ints(value), a->add_ints(value);
    }
  }
  EXPECT_FILE_ERROR(import(g.bytes()), "m.onnx", "node 'pool_ceil' (MaxPool): rounds its output size up");
}

TEST(OnnxImport, RefusesOpsetsOutOfRange) {
  Graph g({4}, 17);
  g.node("Relu", "r", {});
  EXPECT_FILE_ERROR(import(g.bytes()), "m.onnx", "opset 17 is not supported");
}

TEST(OnnxImport, RefusesTruncatedAndForeignFiles) {
  Graph g({6});
  g.linear("fc1", 6, 4);
  g.batchnorm("bn1", 4);
  const std::string bytes = g.bytes();
  for (std::size_t keep : {bytes.size() / 2, bytes.size() - 3, std::size_t{1}}) {
    SCOPED_TRACE("first " + std::to_string(keep) + " bytes");
    EXPECT_FILE_ERROR(import(bytes.substr(0, keep)), "m.onnx", "");
  }
  EXPECT_FILE_ERROR(import("name,value\n1,2\n"), "m.onnx", "not an ONNX model");
  EXPECT_FILE_ERROR(import(""), "m.onnx", "empty");
}

TEST(OnnxImport, FileRefusalWritesNothingAndKeepsTheOldModel) {
  test::TempDir dir;
  Graph g({6});
  g.node("Softmax", "sm", {});
  test::write_file(dir.file("bad.onnx"), g.bytes());
  EXPECT_FILE_ERROR(import_onnx(dir.file("bad.onnx"), dir.file("out.safetensors"), {}), dir.file("bad.onnx"),
                    "'sm' (Softmax)");
  EXPECT_FALSE(std::filesystem::exists(dir.file("out.safetensors")));
  test::write_file(dir.file("kept.safetensors"), "keep me");
  EXPECT_FILE_ERROR(import_onnx(dir.file("bad.onnx"), dir.file("kept.safetensors"), {}), dir.file("bad.onnx"),
                    "Softmax");
  EXPECT_EQ(test::read_file(dir.file("kept.safetensors")), "keep me");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), std::filesystem::directory_iterator{}), 2);

  Graph good({6});
  good.linear("fc", 6, 2);
  test::write_file(dir.file("good.onnx"), good.bytes());
  import_onnx(dir.file("good.onnx"), dir.file("kept.safetensors"), {});
  EXPECT_EQ(load_model(dir.file("kept.safetensors")).model.architecture()["layers"].size(), 1u);
}

}  // namespace
}  // namespace bnorm

// The ONNX graph bnorm export writes: which nodes, in which order, with which
// attributes and constant shapes, for each opset it accepts. What the graph
// computes is checked against onnxruntime in tests/onnx_export.sh.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cstring>

#include "bnorm/error.hpp"
#include "bnorm/io/onnx_export.hpp"
#include "bnorm/nn/activation.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/nn/conv2d.hpp"
#include "bnorm/nn/linear.hpp"
#include "bnorm/nn/pooling.hpp"

namespace bnorm {
namespace {

// conv → bn → relu → maxpool → flatten → dropout → fc on (3, 8, 8) images,
// normalized per channel.
LoadedModel small_cnn(BatchNormOptions bn = {}) {
  std::vector<LayerPtr> layers;
  layers.push_back(std::make_unique<Conv2d>(3, 4, 3, 3, 1, 1, false));
  layers.push_back(std::make_unique<BatchNorm>(4, bn));
  layers.push_back(std::make_unique<Activation>(ActivationKind::relu));
  layers.push_back(std::make_unique<Pool2d>(Pool2d::Kind::max, 2, 2));
  layers.push_back(std::make_unique<Flatten>());
  layers.push_back(std::make_unique<Dropout>(0.5f));
  layers.push_back(std::make_unique<Linear>(64, 5, false));
  InputNormalization norm;
  norm.mode = "channel";
  norm.mean = {0.1f, 0.2f, 0.3f};
  norm.std = {1.5f, 2.5f, 3.5f};
  norm.divisor = 255.0f;
  return LoadedModel{Model(Shape{3, 8, 8}, std::move(layers)), norm, {}, {}, {}};
}

onnx::ModelProto exported(LoadedModel& loaded, OnnxExportOptions options = {}) {
  onnx::ModelProto proto;
  EXPECT_TRUE(proto.ParseFromString(onnx_model_bytes(loaded, options, "test.onnx")));
  return proto;
}

std::vector<std::string> op_types(const onnx::ModelProto& proto) {
  std::vector<std::string> ops;
  for (const auto& n : proto.graph().node()) ops.push_back(n.op_type());
  return ops;
}

const onnx::NodeProto& node_of(const onnx::ModelProto& proto, const std::string& op) {
  for (const auto& n : proto.graph().node())
    if (n.op_type() == op) return n;
  throw std::runtime_error("no " + op + " node");
}

std::vector<std::string> attribute_names(const onnx::NodeProto& node) {
  std::vector<std::string> names;
  for (const auto& a : node.attribute()) names.push_back(a.name());
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::int64_t> initializer_dims(const onnx::ModelProto& proto, const std::string& name) {
  for (const auto& t : proto.graph().initializer())
    if (t.name() == name) return {t.dims().begin(), t.dims().end()};
  throw std::runtime_error("no initializer " + name);
}

using Strings = std::vector<std::string>;
using Dims = std::vector<std::int64_t>;

TEST(OnnxExport, EveryLayerInOrderAfterTheInputNormalization) {
  LoadedModel loaded = small_cnn();
  const onnx::ModelProto proto = exported(loaded);
  EXPECT_EQ(op_types(proto),
            (Strings{"Div", "Sub", "Div", "Conv", "BatchNormalization", "Relu", "MaxPool", "Flatten", "Gemm"}));
  EXPECT_EQ(proto.opset_import(0).version(), 15);
  // One mean and std per channel, broadcast over each channel's plane.
  EXPECT_EQ(initializer_dims(proto, "input_mean"), (Dims{3, 1, 1}));
  EXPECT_EQ(initializer_dims(proto, "input_divisor"), Dims{});
  // BatchNormalization-15 has no `spatial`, and inference needs no momentum.
  EXPECT_EQ(attribute_names(node_of(proto, "BatchNormalization")), Strings{"epsilon"});
  EXPECT_EQ(attribute_names(node_of(proto, "Conv")), (Strings{"kernel_shape", "pads", "strides"}));
  EXPECT_EQ(node_of(proto, "Conv").input_size(), 2);  // no bias before a BN
  const auto& input = proto.graph().input(0);
  EXPECT_EQ(input.name(), "input");
  EXPECT_EQ(input.type().tensor_type().shape().dim(0).dim_param(), "N");
  EXPECT_EQ(input.type().tensor_type().shape().dim_size(), 4);
  EXPECT_EQ(proto.graph().output(0).name(), "logits");
  EXPECT_EQ(proto.graph().node(proto.graph().node_size() - 1).output(0), "logits");
}

TEST(OnnxExport, FoldingLeavesNoBatchNormAndGivesTheConvABias) {
  LoadedModel loaded = small_cnn();
  const onnx::ModelProto proto = exported(loaded, {.fold_bn = true});
  EXPECT_EQ(op_types(proto), (Strings{"Div", "Sub", "Div", "Conv", "Relu", "MaxPool", "Flatten", "Gemm"}));
  EXPECT_EQ(node_of(proto, "Conv").input_size(), 3);
}

TEST(OnnxExport, WithoutAffineTheScaleIsOnesAndTheShiftZeros) {
  LoadedModel loaded = small_cnn([] {
    BatchNormOptions o;
    o.scale = o.center = false;
    return o;
  }());
  const onnx::ModelProto proto = exported(loaded);
  const auto& bn = node_of(proto, "BatchNormalization");
  ASSERT_EQ(bn.input_size(), 5);
  int checked = 0;
  for (const auto& t : proto.graph().initializer()) {
    if (t.name() != bn.input(1) && t.name() != bn.input(2)) continue;
    ++checked;
    ASSERT_EQ(t.raw_data().size(), 4 * sizeof(float));
    float v[4];
    std::memcpy(v, t.raw_data().data(), sizeof v);
    for (float x : v) EXPECT_EQ(x, t.name() == bn.input(1) ? 1.0f : 0.0f);
  }
  EXPECT_EQ(checked, 2);
}

TEST(OnnxExport, Opset9GivesGemmTheBiasItRequires) {
  LoadedModel loaded = small_cnn();
  EXPECT_EQ(node_of(exported(loaded, {.opset = 9}), "Gemm").input_size(), 3);
  EXPECT_EQ(node_of(exported(loaded, {.opset = 11}), "Gemm").input_size(), 2);
}

TEST(OnnxExport, RegressionEndsInTheTargetsUnits) {
  std::vector<LayerPtr> layers;
  layers.push_back(std::make_unique<Linear>(3, 2, true));
  LoadedModel loaded{Model(Shape{3}, std::move(layers)), {}, {}, {}, {}};
  loaded.task.kind = Task::regress;
  loaded.target_normalization.mean = {10.0f, -2.0f};
  loaded.target_normalization.std = {3.0f, 0.5f};
  const onnx::ModelProto proto = exported(loaded);
  // Mode "none" with divisor 1: the raw values go straight in.
  EXPECT_EQ(op_types(proto), (Strings{"Gemm", "Mul", "Add"}));
  EXPECT_EQ(proto.graph().output(0).name(), "predictions");
}

TEST(OnnxExport, RefusesWhatItCannotExpress) {
  LoadedModel batch_stats = small_cnn([] {
    BatchNormOptions o;
    o.track_running_stats = false;
    return o;
  }());
  EXPECT_THROW(onnx_model_bytes(batch_stats, {}, "out.onnx"), Error);
  LoadedModel loaded = small_cnn();
  EXPECT_THROW(onnx_model_bytes(loaded, {.opset = 8}, "out.onnx"), Error);
  EXPECT_THROW(onnx_model_bytes(loaded, {.opset = 16}, "out.onnx"), Error);
}

}  // namespace
}  // namespace bnorm

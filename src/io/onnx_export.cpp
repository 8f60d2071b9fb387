#include "bnorm/io/onnx_export.hpp"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <bit>
#include <climits>
#include <cstring>
#include <exception>
#include <optional>
#include <span>
#include <vector>

#include "bnorm/error.hpp"
#include "bnorm/io/atomic_file.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/nn/fold.hpp"

namespace bnorm {
namespace {

// raw_data is little-endian by the ONNX spec; copying floats as they lie in
// memory is only right on such a machine.
static_assert(std::endian::native == std::endian::little, "ONNX raw_data needs a little-endian host");

// Appends nodes and constants to a graph, naming each tensor once so that
// runtimes and viewers show where it came from ("3_linear.weight").
class GraphBuilder {
 public:
  explicit GraphBuilder(onnx::GraphProto& graph) : graph_(graph) {}

  std::string constant(const std::string& name, const std::vector<std::int64_t>& dims, std::span<const float> values) {
    onnx::TensorProto* t = graph_.add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (std::int64_t d : dims) t->add_dims(d);
    t->set_raw_data(std::string(reinterpret_cast<const char*>(values.data()), values.size_bytes()));
    return name;
  }
  std::string constant(const std::string& name, const std::vector<std::int64_t>& dims, float fill) {
    std::int64_t n = 1;
    for (std::int64_t d : dims) n *= d;
    const std::vector<float> values(static_cast<std::size_t>(n), fill);
    return constant(name, dims, values);
  }

  onnx::NodeProto& node(const std::string& op, const std::string& name, const std::vector<std::string>& inputs) {
    onnx::NodeProto* n = graph_.add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (const std::string& in : inputs) n->add_input(in);
    n->add_output(name);  // one output per node, named after it
    last_ = name;
    return *n;
  }

  const std::string& last() const { return last_; }
  void set_last(std::string name) { last_ = std::move(name); }

 private:
  onnx::GraphProto& graph_;
  std::string last_;
};

void attribute(onnx::NodeProto& node, const std::string& name, std::int64_t value) {
  onnx::AttributeProto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
}

void attribute(onnx::NodeProto& node, const std::string& name, float value) {
  onnx::AttributeProto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(value);
}

void attribute(onnx::NodeProto& node, const std::string& name, const std::vector<std::int64_t>& values) {
  onnx::AttributeProto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (std::int64_t v : values) a->add_ints(v);
}

std::span<const float> floats(const StateEntry& e) {
  return {static_cast<const float*>(e.data), static_cast<std::size_t>(numel(e.shape))};
}

std::vector<std::int64_t> dims_of(const StateEntry& e) { return {e.shape.begin(), e.shape.end()}; }

const StateEntry* find_state(const std::vector<StateEntry>& state, const std::string& name) {
  for (const StateEntry& e : state)
    if (e.name == name) return &e;
  return nullptr;
}

// Where a normalization constant of `width` values broadcasts against one
// example of `shape`: a scalar for one value, the example's own shape for one
// per feature, [C, 1, 1] for one per channel of an image. A per-channel table
// on a flat input is spelled out per feature, as bnorm applies it (features in
// channel-major runs).
void input_constants(const InputNormalization& norm, const Shape& shape, std::vector<std::int64_t>& dims,
                     std::vector<float>& mean, std::vector<float>& std) {
  const auto width = static_cast<std::int64_t>(norm.mean.size());
  const std::int64_t features = numel(shape);
  if (width == 1) {
    dims = {};
    mean = norm.mean;
    std = norm.std;
  } else if (width == features) {
    dims.assign(shape.begin(), shape.end());
    mean = norm.mean;
    std = norm.std;
  } else if (shape.size() == 3 && shape[0] == width) {
    dims = {width, 1, 1};
    mean = norm.mean;
    std = norm.std;
  } else {
    dims.assign(shape.begin(), shape.end());
    const std::int64_t run = features / width;
    for (std::int64_t f = 0; f < features; ++f) {
      mean.push_back(norm.mean[static_cast<std::size_t>(f / run)]);
      std.push_back(norm.std[static_cast<std::size_t>(f / run)]);
    }
  }
}

void add_input_normalization(GraphBuilder& g, const InputNormalization& norm, const Shape& shape) {
  // The same three float operations, in the same order, as
  // InputNormalization::apply, so the graph sees bit-identical inputs.
  if (norm.divisor != 1.0f) g.node("Div", "input_scale", {g.last(), g.constant("input_divisor", {}, norm.divisor)});
  if (norm.mean.empty()) return;
  std::vector<std::int64_t> dims;
  std::vector<float> mean, std;
  input_constants(norm, shape, dims, mean, std);
  g.node("Sub", "input_center", {g.last(), g.constant("input_mean", dims, mean)});
  g.node("Div", "input_standardize", {g.last(), g.constant("input_std", dims, std)});
}

void add_layer(GraphBuilder& g, Layer& layer, const nlohmann::json& config, std::size_t index, int opset,
               const std::string& name) {
  const std::string type = layer.type();
  const std::string id = std::to_string(index) + "_" + type;
  const std::vector<StateEntry> state = layer.state();
  if (type == "linear") {
    const StateEntry* w = find_state(state, "weight");
    const StateEntry* b = find_state(state, "bias");
    std::vector<std::string> inputs{g.last(), g.constant(id + ".weight", dims_of(*w), floats(*w))};
    if (b)
      inputs.push_back(g.constant(id + ".bias", dims_of(*b), floats(*b)));
    else if (opset < 11)  // Gemm's C became optional in opset 11
      inputs.push_back(g.constant(id + ".bias", {w->shape[0]}, 0.0f));
    attribute(g.node("Gemm", id, inputs), "transB", std::int64_t{1});
  } else if (type == "conv2d") {
    const StateEntry* w = find_state(state, "weight");
    const StateEntry* b = find_state(state, "bias");
    std::vector<std::string> inputs{g.last(), g.constant(id + ".weight", dims_of(*w), floats(*w))};
    if (b) inputs.push_back(g.constant(id + ".bias", dims_of(*b), floats(*b)));
    onnx::NodeProto& n = g.node("Conv", id, inputs);
    const std::int64_t stride = config.at("stride").get<std::int64_t>();
    const std::int64_t pad = config.at("padding").get<std::int64_t>();
    attribute(n, "kernel_shape", std::vector<std::int64_t>{w->shape[2], w->shape[3]});
    attribute(n, "strides", std::vector<std::int64_t>{stride, stride});
    attribute(n, "pads", std::vector<std::int64_t>{pad, pad, pad, pad});
  } else if (type == "batchnorm") {
    auto& bn = static_cast<BatchNorm&>(layer);
    // Without running statistics eval normalizes each batch by its own
    // statistics; ONNX's BatchNormalization in inference form cannot.
    if (!bn.options().track_running_stats)
      fail_file(name, "layer " + std::to_string(index) +
                          " is a batch norm without running statistics (normalizes each batch by itself), "
                          "which ONNX inference cannot express");
    const std::int64_t C = bn.num_features();
    const StateEntry* gamma = find_state(state, "weight");
    const StateEntry* beta = find_state(state, "bias");
    const StateEntry* mean = find_state(state, "running_mean");
    const StateEntry* var = find_state(state, "running_var");
    const std::string scale =
        gamma ? g.constant(id + ".weight", dims_of(*gamma), floats(*gamma)) : g.constant(id + ".weight", {C}, 1.0f);
    const std::string shift =
        beta ? g.constant(id + ".bias", dims_of(*beta), floats(*beta)) : g.constant(id + ".bias", {C}, 0.0f);
    onnx::NodeProto& n = g.node("BatchNormalization", id,
                                {g.last(), scale, shift, g.constant(id + ".running_mean", {C}, floats(*mean)),
                                 g.constant(id + ".running_var", {C}, floats(*var))});
    attribute(n, "epsilon", bn.options().eps);
  } else if (type == "relu") {
    g.node("Relu", id, {g.last()});
  } else if (type == "tanh") {
    g.node("Tanh", id, {g.last()});
  } else if (type == "sigmoid") {
    g.node("Sigmoid", id, {g.last()});
  } else if (type == "maxpool2d" || type == "avgpool2d") {
    // No padding and the size rounded down (ceil_mode 0), as Pool2d does.
    const std::int64_t k = config.at("kernel_size").get<std::int64_t>();
    const std::int64_t stride = config.at("stride").get<std::int64_t>();
    onnx::NodeProto& n = g.node(type == "maxpool2d" ? "MaxPool" : "AveragePool", id, {g.last()});
    attribute(n, "kernel_shape", std::vector<std::int64_t>{k, k});
    attribute(n, "strides", std::vector<std::int64_t>{stride, stride});
  } else if (type == "global_avgpool") {
    g.node("GlobalAveragePool", id, {g.last()});
  } else if (type == "flatten") {
    attribute(g.node("Flatten", id, {g.last()}), "axis", std::int64_t{1});
  } else if (type == "groupnorm" || type == "layernorm") {
    // ONNX has LayerNormalization only from opset 17 and GroupNormalization
    // from 18, beyond the opsets written here.
    fail_file(name, "layer " + std::to_string(index) + " is a " + (type == "groupnorm" ? "GroupNorm" : "LayerNorm") +
                        ", which the ONNX export does not support (it writes opsets " + std::to_string(kOnnxMinOpset) +
                        " to " + std::to_string(kOnnxMaxOpset) + ")");
  } else if (type == "dropout") {
    // The identity at inference: no node.
  } else {
    fail_file(name, "layer " + std::to_string(index) + " has type '" + type + "', which the ONNX export does not know");
  }
}

void set_tensor_type(onnx::ValueInfoProto& v, const std::string& name, const Shape& example) {
  v.set_name(name);
  onnx::TypeProto_Tensor* t = v.mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  onnx::TensorShapeProto* s = t->mutable_shape();
  s->add_dim()->set_dim_param("N");  // any batch size
  for (std::int64_t d : example) s->add_dim()->set_dim_value(d);
}

void add_metadata(onnx::ModelProto& proto, const std::string& key, const std::string& value) {
  onnx::StringStringEntryProto* e = proto.add_metadata_props();
  e->set_key(key);
  e->set_value(value);
}

}  // namespace

std::string onnx_model_bytes(LoadedModel& loaded, const OnnxExportOptions& options, const std::string& name) {
  if (options.opset < kOnnxMinOpset || options.opset > kOnnxMaxOpset)
    throw Error("--opset " + std::to_string(options.opset) + ": the export writes opsets " +
                std::to_string(kOnnxMinOpset) + " to " + std::to_string(kOnnxMaxOpset));
  std::optional<Model> folded;
  if (options.fold_bn) folded.emplace(fold_batchnorm(loaded.model));
  Model& model = folded ? *folded : loaded.model;
  const bool regress = loaded.task.kind == Task::regress;

  onnx::ModelProto proto;
  proto.set_ir_version(onnx::IR_VERSION);
  proto.set_producer_name("bnorm");
  proto.set_producer_version("0.1.0");
  proto.set_doc_string("bnorm model: raw input values in, " +
                       std::string(regress ? "predictions in the targets' units" : "logits") + " out");
  onnx::OperatorSetIdProto* opset = proto.add_opset_import();
  opset->set_domain("");
  opset->set_version(options.opset);
  // What predict prints beside the numbers, for a client that wants it.
  if (!loaded.task.class_names.empty())
    add_metadata(proto, "class_names", nlohmann::json(loaded.task.class_names).dump());
  if (!loaded.task.target_names.empty())
    add_metadata(proto, "target_names", nlohmann::json(loaded.task.target_names).dump());
  add_metadata(proto, "architecture", model.architecture().dump());

  onnx::GraphProto& graph = *proto.mutable_graph();
  graph.set_name("bnorm");
  GraphBuilder g(graph);
  g.set_last("input");
  add_input_normalization(g, loaded.input_normalization, model.input_shape());
  const nlohmann::json arch = model.architecture();
  for (std::size_t i = 0; i < model.num_layers(); ++i)
    add_layer(g, model.layer(i), arch["layers"][i], i, options.opset, name);
  if (regress) {
    // Back from standardized targets, t·std + mean, as predict reports them.
    const auto T = static_cast<std::int64_t>(loaded.target_normalization.mean.size());
    g.node("Mul", "target_scale", {g.last(), g.constant("target_std", {T}, loaded.target_normalization.std)});
    g.node("Add", "target_shift", {g.last(), g.constant("target_mean", {T}, loaded.target_normalization.mean)});
  }

  // A graph of dropouts alone has no node to name its output after.
  const std::string output = regress ? "predictions" : "logits";
  if (graph.node_size() == 0) g.node("Identity", output, {g.last()});
  onnx::NodeProto& last = *graph.mutable_node(graph.node_size() - 1);
  last.set_output(0, output);
  set_tensor_type(*graph.add_input(), "input", model.input_shape());
  set_tensor_type(*graph.add_output(), output, model.output_shape());

  try {
    onnx::checker::check_model(proto);
  } catch (const std::exception& e) {
    fail_file(name, std::string("the ONNX checker refused the exported graph: ") + e.what());
  }
  if (proto.ByteSizeLong() > static_cast<std::size_t>(INT_MAX))
    fail_file(name, "the model is over 2 GiB, more than one ONNX protobuf file can hold");
  std::string bytes;
  if (!proto.SerializeToString(&bytes)) fail_file(name, "could not serialize the ONNX model");
  return bytes;
}

void export_onnx(const std::string& model_path, const std::string& onnx_path, const OnnxExportOptions& options) {
  LoadedModel loaded = load_model(model_path);
  write_file_atomically(onnx_path, onnx_model_bytes(loaded, options, onnx_path));
}

}  // namespace bnorm

#include "bnorm/io/onnx_import.hpp"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <set>

#include "bnorm/error.hpp"
#include "bnorm/io/atomic_file.hpp"
#include "bnorm/io/idx.hpp"
#include "bnorm/io/onnx_export.hpp"
#include "bnorm/json_number.hpp"
#include "bnorm/nn/layer_factory.hpp"

namespace bnorm {
namespace {

// raw_data is little-endian by the ONNX spec.
static_assert(std::endian::native == std::endian::little, "ONNX raw_data needs a little-endian host");

// The batch dimension in a shape computed from Shape(x): its value is not
// known until run time, only that it is the batch.
constexpr std::int64_t kBatch = INT64_MIN;

struct Constant {
  std::vector<std::int64_t> dims;
  std::vector<float> floats;       // FLOAT tensors
  std::vector<std::int64_t> ints;  // INT64/INT32 tensors (shapes, axes, indices)
  bool is_float = false;
};

std::string dims_str(const std::vector<std::int64_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

template <class T, class Repeated>
std::vector<T> values_of(const onnx::TensorProto& t, const Repeated& field, std::int64_t count,
                         const std::string& what) {
  std::vector<T> out(static_cast<std::size_t>(count));
  if (t.has_raw_data()) {
    if (t.raw_data().size() != out.size() * sizeof(T))
      throw Error(what + " holds " + std::to_string(t.raw_data().size()) + " bytes for " + std::to_string(count) +
                  " values");
    std::memcpy(out.data(), t.raw_data().data(), t.raw_data().size());
  } else {
    if (field.size() != count)
      throw Error(what + " holds " + std::to_string(field.size()) + " values, its dims say " + std::to_string(count));
    std::copy(field.begin(), field.end(), out.begin());
  }
  return out;
}

Constant read_tensor(const onnx::TensorProto& t, const std::string& what) {
  Constant c;
  std::int64_t count = 1;
  for (std::int64_t d : t.dims()) {
    if (d < 0 || d > (std::int64_t{1} << 32) || count > (std::int64_t{1} << 32) / std::max<std::int64_t>(d, 1))
      throw Error(what + " has impossible dims " + dims_str({t.dims().begin(), t.dims().end()}));
    count *= d;
    c.dims.push_back(d);
  }
  if (t.data_location() == onnx::TensorProto::EXTERNAL)
    throw Error(what + " is stored in an external file, which bnorm import does not read");
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT:
      c.is_float = true;
      c.floats = values_of<float>(t, t.float_data(), count, what);
      for (float v : c.floats)
        if (!std::isfinite(v)) throw Error(what + " holds a non-finite value");
      break;
    case onnx::TensorProto::INT64:
      c.ints = values_of<std::int64_t>(t, t.int64_data(), count, what);
      break;
    case onnx::TensorProto::INT32: {
      const auto v = values_of<std::int32_t>(t, t.int32_data(), count, what);
      c.ints.assign(v.begin(), v.end());
      break;
    }
    default:
      throw Error(what + " has ONNX data type " + std::to_string(t.data_type()) +
                  "; bnorm import reads float32 weights and int64/int32 shapes");
  }
  return c;
}

std::string number_text(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", v);
  return text;
}

std::optional<std::int64_t> int_attribute(const onnx::NodeProto& n, const std::string& name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return a.i();
  return std::nullopt;
}

std::optional<float> float_attribute(const onnx::NodeProto& n, const std::string& name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return a.f();
  return std::nullopt;
}

std::optional<std::vector<std::int64_t>> ints_attribute(const onnx::NodeProto& n, const std::string& name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return std::vector<std::int64_t>(a.ints().begin(), a.ints().end());
  return std::nullopt;
}

// Walks the nodes in order, keeping the one tensor the sequential chain is
// at, and turns each layer node into a bnorm layer config.
class Importer {
 public:
  Importer(const onnx::ModelProto& proto, std::string name) : proto_(proto), name_(std::move(name)) {}

  OnnxImport run(const OnnxImportOptions& options);

 private:
  const onnx::ModelProto& proto_;
  std::string name_;
  int opset_ = 0;
  std::map<std::string, Constant> constants_;
  // Values of the shape computations (Shape, Gather, Unsqueeze, Concat),
  // with kBatch for the batch dimension.
  std::map<std::string, std::vector<std::int64_t>> shape_values_;
  std::string current_;  // the tensor the chain has reached
  Shape shape_;          // one example's shape there
  nlohmann::json layers_ = nlohmann::json::array();
  std::map<std::string, std::vector<float>> tensors_;  // "<index>.<name>" → values
  std::vector<std::string> notes_;
  InputNormalization input_norm_;
  std::vector<std::int64_t> mean_dims_;  // of the input normalization's Sub
  std::optional<TargetNormalization> target_norm_;
  const onnx::NodeProto* pending_matmul_ = nullptr;
  // Each batch norm's config, in order, from the architecture bnorm export
  // keeps in the metadata: an affine one still at γ = 1, β = 0 looks like
  // affine=false in the graph alone, and the export writes no momentum.
  std::vector<nlohmann::json> exported_bn_;
  std::size_t batchnorms_seen_ = 0;
  void read_exported_batchnorms();  // a MatMul waiting for its bias Add

  [[noreturn]] void refuse(const onnx::NodeProto& n, const std::string& problem) const {
    const std::string who =
        n.name().empty() ? "(unnamed, output '" + (n.output_size() ? n.output(0) : "") + "')" : "'" + n.name() + "'";
    fail_file(name_, "node " + who + " (" + n.op_type() + "): " + problem);
  }

  const Constant& constant(const onnx::NodeProto& n, int input, const std::string& role) const {
    if (input >= n.input_size() || n.input(input).empty()) refuse(n, "has no " + role + " input");
    const auto it = constants_.find(n.input(input));
    if (it == constants_.end())
      refuse(n, "its " + role + " '" + n.input(input) +
                    "' is not an initializer or constant; bnorm import needs the weights and statistics in the file");
    return it->second;
  }
  const std::vector<float>& floats(const onnx::NodeProto& n, int input, const std::string& role,
                                   const std::vector<std::int64_t>& dims) const {
    const Constant& c = constant(n, input, role);
    if (!c.is_float) refuse(n, "its " + role + " '" + n.input(input) + "' is not float32");
    if (c.dims != dims)
      refuse(n, "its " + role + " '" + n.input(input) + "' has shape " + dims_str(c.dims) + ", expected " +
                    dims_str(dims));
    return c.floats;
  }
  bool has_input(const onnx::NodeProto& n, int i) const { return i < n.input_size() && !n.input(i).empty(); }

  void require_chain_input(const onnx::NodeProto& n) const {
    if (n.input_size() == 0 || n.input(0) != current_)
      refuse(n, "reads '" + (n.input_size() ? n.input(0) : std::string()) + "', not '" + current_ +
                    "' (the previous layer's output): the graph is not sequential");
  }
  void require_only_first_output_used(const onnx::NodeProto& n) const;
  void advance(const onnx::NodeProto& n) { current_ = n.output(0); }

  void add_layer(const onnx::NodeProto& n, nlohmann::json config) {
    try {
      shape_ = make_layer(config)->output_shape(shape_);
    } catch (const Error& e) {
      refuse(n, std::string("does not fit its input: ") + e.what());
    }
    layers_.push_back(std::move(config));
    advance(n);
  }
  std::string slot(const std::string& tensor) const { return std::to_string(layers_.size()) + "." + tensor; }
  bool bn_follows(int node_index) const;

  void read_constants();
  void read_input();
  bool read_prologue(const onnx::NodeProto& n);
  bool read_epilogue(const onnx::NodeProto& n, int index);
  bool read_shape_computation(const onnx::NodeProto& n);
  void read_node(const onnx::NodeProto& n, int index);
  void read_gemm(const onnx::NodeProto& n, int index);
  void read_matmul(const onnx::NodeProto& n, int index);
  void add_linear(const onnx::NodeProto& n, int index, std::vector<float> weight, std::int64_t out, std::int64_t in,
                  std::optional<std::vector<float>> bias);
  void read_conv(const onnx::NodeProto& n, int index);
  void read_batchnorm(const onnx::NodeProto& n);
  void read_pool(const onnx::NodeProto& n);
  void read_flatten(const onnx::NodeProto& n);
  void read_reshape(const onnx::NodeProto& n);
  void read_pad(const onnx::NodeProto& n);
};

void Importer::read_constants() {
  for (const auto& t : proto_.graph().initializer()) {
    try {
      constants_[t.name()] = read_tensor(t, "initializer '" + t.name() + "'");
    } catch (const Error& e) {
      fail_file(name_, e.what());
    }
  }
}

void Importer::read_exported_batchnorms() {
  if (proto_.producer_name() != "bnorm") return;
  for (const auto& p : proto_.metadata_props()) {
    if (p.key() != "architecture") continue;
    const nlohmann::json arch = nlohmann::json::parse(p.value(), nullptr, false);
    if (!arch.is_object() || !arch.contains("layers") || !arch["layers"].is_array()) return;
    for (const auto& layer : arch["layers"]) {
      if (!layer.is_object() || layer.value("type", "") != "batchnorm") continue;
      const bool valid = layer.contains("affine") && layer["affine"].is_boolean() && layer.contains("momentum") &&
                         (layer["momentum"].is_null() || layer["momentum"].is_number());
      if (!valid) {  // not as bnorm writes it: judge by the graph alone
        exported_bn_.clear();
        return;
      }
      exported_bn_.push_back(layer);
    }
  }
  std::size_t nodes = 0;
  for (const auto& n : proto_.graph().node()) nodes += n.op_type() == "BatchNormalization";
  if (nodes != exported_bn_.size()) exported_bn_.clear();
}

void Importer::read_input() {
  const onnx::GraphProto& g = proto_.graph();
  const onnx::ValueInfoProto* input = nullptr;
  for (const auto& v : g.input()) {
    if (constants_.count(v.name())) continue;  // older exporters list initializers as inputs too
    if (input)
      fail_file(name_, "the graph has more than one input ('" + input->name() + "', '" + v.name() +
                           "'); a bnorm model takes one");
    input = &v;
  }
  if (!input) fail_file(name_, "the graph has no input");
  const auto& type = input->type();
  if (!type.has_tensor_type() || type.tensor_type().elem_type() != onnx::TensorProto::FLOAT)
    fail_file(name_, "input '" + input->name() + "' is not a float32 tensor");
  const auto& dims = type.tensor_type().shape().dim();
  if (!type.tensor_type().has_shape() || dims.size() < 2)
    fail_file(name_, "input '" + input->name() + "' has no shape (N, ...) of rank 2 or more");
  for (int i = 1; i < dims.size(); ++i) {
    if (!dims[i].has_dim_value() || dims[i].dim_value() <= 0)
      fail_file(name_, "input '" + input->name() + "' dimension " + std::to_string(i) +
                           " is not a fixed size; bnorm needs each example's shape");
    shape_.push_back(dims[i].dim_value());
  }
  current_ = input->name();
}

void Importer::require_only_first_output_used(const onnx::NodeProto& n) const {
  const onnx::GraphProto& g = proto_.graph();
  for (int o = 1; o < n.output_size(); ++o) {
    if (n.output(o).empty()) continue;
    for (const auto& other : g.node())
      for (const auto& in : other.input())
        if (in == n.output(o)) refuse(n, "its output '" + n.output(o) + "' is used by node '" + other.name() + "'");
    for (const auto& out : g.output())
      if (out.name() == n.output(o)) refuse(n, "its output '" + n.output(o) + "' is a graph output");
  }
}

// The input normalization `bnorm export` writes as the first nodes: Div by a
// scalar (the divisor), Sub of the means, Div by the standard deviations.
bool Importer::read_prologue(const onnx::NodeProto& n) {
  if (!layers_.empty() || (n.op_type() != "Div" && n.op_type() != "Sub") || n.input_size() != 2 ||
      n.input(0) != current_ || !constants_.count(n.input(1)))
    return false;
  const Constant& c = constants_.at(n.input(1));
  if (!c.is_float) return false;
  const bool scalar = c.floats.size() == 1;
  if (n.op_type() == "Div" && input_norm_.mean.empty() && input_norm_.divisor == 1.0f && scalar && c.dims.empty()) {
    if (!(c.floats[0] > 0.0f)) refuse(n, "divides the input by " + std::to_string(c.floats[0]));
    input_norm_.divisor = c.floats[0];
  } else if (n.op_type() == "Sub" && input_norm_.mean.empty()) {
    input_norm_.mean = c.floats;
    mean_dims_ = c.dims;
    const std::int64_t features = numel(shape_);
    const auto width = static_cast<std::int64_t>(c.floats.size());
    if (width == 1)
      input_norm_.mode = "global";
    else if (width == features && c.dims == std::vector<std::int64_t>(shape_.begin(), shape_.end()))
      input_norm_.mode = "feature";
    else if (shape_.size() == 3 && c.dims == std::vector<std::int64_t>{shape_[0], 1, 1})
      input_norm_.mode = "channel";
    else
      refuse(n, "subtracts a constant of shape " + dims_str(c.dims) + " from the input of shape " + shape_str(shape_) +
                    ", which is no input normalization bnorm knows");
  } else if (n.op_type() == "Div" && !input_norm_.mean.empty() && input_norm_.std.empty()) {
    if (c.dims != mean_dims_)
      refuse(n, "divides by a constant of shape " + dims_str(c.dims) + ", unlike the means subtracted before " +
                    dims_str(mean_dims_));
    input_norm_.std = c.floats;
  } else {
    return false;
  }
  advance(n);
  return true;
}

// The target normalization `bnorm export` writes after the last layer of a
// regression model: Mul by the standard deviations, Add of the means.
bool Importer::read_epilogue(const onnx::NodeProto& n, int index) {
  const int last = proto_.graph().node_size() - 1;
  if (n.input_size() != 2 || n.input(0) != current_ || !constants_.count(n.input(1)) || shape_.size() != 1)
    return false;
  const Constant& c = constants_.at(n.input(1));
  if (!c.is_float || c.dims != std::vector<std::int64_t>{shape_[0]}) return false;
  if (n.op_type() == "Mul" && index == last - 1 && !target_norm_) {
    target_norm_ = TargetNormalization{};
    target_norm_->std = c.floats;
  } else if (n.op_type() == "Add" && index == last && target_norm_ && target_norm_->mean.empty()) {
    target_norm_->mean = c.floats;
  } else {
    return false;
  }
  advance(n);
  return true;
}

// Shape → Gather → Unsqueeze → Concat, the x.view(x.size(0), -1) of older
// exporters, evaluated on the example shape so that the Reshape after can be
// recognized as a flatten.
bool Importer::read_shape_computation(const onnx::NodeProto& n) {
  const std::string& op = n.op_type();
  auto value_of = [&](int i) -> std::vector<std::int64_t> {
    if (!has_input(n, i)) refuse(n, "lacks input " + std::to_string(i));
    if (const auto it = shape_values_.find(n.input(i)); it != shape_values_.end()) return it->second;
    if (const auto it = constants_.find(n.input(i)); it != constants_.end() && !it->second.is_float)
      return it->second.ints;
    refuse(n, "input '" + n.input(i) + "' is neither a constant nor the shape of the layer before");
  };
  std::vector<std::int64_t> result;
  if (op == "Shape") {
    if (n.input_size() != 1 || n.input(0) != current_)
      refuse(n, "takes the shape of a tensor other than '" + current_ + "'");
    result.push_back(kBatch);
    result.insert(result.end(), shape_.begin(), shape_.end());
  } else if (op == "Gather") {
    const auto data = value_of(0);
    const auto indices = value_of(1);
    if (int_attribute(n, "axis").value_or(0) != 0) refuse(n, "gathers along an axis other than 0");
    for (std::int64_t i : indices) {
      const std::int64_t k = i < 0 ? i + static_cast<std::int64_t>(data.size()) : i;
      if (k < 0 || k >= static_cast<std::int64_t>(data.size()))
        refuse(n, "index " + std::to_string(i) + " is out of range");
      result.push_back(data[static_cast<std::size_t>(k)]);
    }
  } else if (op == "Unsqueeze" || op == "Cast" || op == "Squeeze") {
    result = value_of(0);  // a scalar made a 1-vector or back; the values stay
  } else if (op == "Concat") {
    for (int i = 0; i < n.input_size(); ++i) {
      const auto part = value_of(i);
      result.insert(result.end(), part.begin(), part.end());
    }
  } else {
    return false;
  }
  shape_values_[n.output(0)] = std::move(result);
  return true;
}

bool Importer::bn_follows(int node_index) const {
  const auto& nodes = proto_.graph().node();
  for (int i = node_index + 1; i < nodes.size(); ++i) {
    const std::string& op = nodes[i].op_type();
    if (op == "Dropout" || op == "Identity") continue;
    if (op == "Add" && nodes[i].input_size() > 0 && nodes[i].input(0) == nodes[node_index].output(0)) continue;
    return op == "BatchNormalization";
  }
  return false;
}

void Importer::add_linear(const onnx::NodeProto& n, int index, std::vector<float> weight, std::int64_t out,
                          std::int64_t in, std::optional<std::vector<float>> bias) {
  // bnorm's convention is no bias in front of a batch norm (beta replaces
  // it), but a non-zero one changes the running statistics, so it is kept.
  if (bias && bn_follows(index) && std::all_of(bias->begin(), bias->end(), [](float b) { return b == 0.0f; })) {
    notes_.push_back("node '" + n.name() + "' (" + n.op_type() +
                     "): its bias is all zero and a batch norm follows, "
                     "so it is dropped (bnorm's convention: the batch norm's beta is the bias)");
    bias.reset();
  }
  tensors_[slot("weight")] = std::move(weight);
  if (bias) tensors_[slot("bias")] = std::move(*bias);
  add_layer(n, {{"type", "linear"}, {"in_features", in}, {"out_features", out}, {"bias", bias.has_value()}});
}

void Importer::read_gemm(const onnx::NodeProto& n, int index) {
  require_chain_input(n);
  if (shape_.size() != 1)
    refuse(n, "multiplies an input of example shape " + shape_str(shape_) + "; Gemm needs (N, features)");
  if (float_attribute(n, "alpha").value_or(1.0f) != 1.0f || float_attribute(n, "beta").value_or(1.0f) != 1.0f)
    refuse(n, "has alpha or beta other than 1, which a Linear layer does not have");
  if (int_attribute(n, "transA").value_or(0) != 0)
    refuse(n, "transposes its input (transA), which a Linear layer does not");
  const bool trans_b = int_attribute(n, "transB").value_or(0) != 0;
  const Constant& b = constant(n, 1, "weight");
  if (b.dims.size() != 2 || b.dims[trans_b ? 1 : 0] != shape_[0])
    refuse(n, "its weight '" + n.input(1) + "' has shape " + dims_str(b.dims) + ", which does not take " +
                  std::to_string(shape_[0]) + " input features" + (trans_b ? " (transB = 1)" : ""));
  const std::int64_t in = shape_[0], out = b.dims[trans_b ? 0 : 1];
  std::vector<float> weight = floats(n, 1, "weight", b.dims);
  if (!trans_b) {  // (in, out) → bnorm's (out, in)
    std::vector<float> t(weight.size());
    for (std::int64_t i = 0; i < in; ++i)
      for (std::int64_t o = 0; o < out; ++o)
        t[static_cast<std::size_t>(o * in + i)] = weight[static_cast<std::size_t>(i * out + o)];
    weight = std::move(t);
  }
  std::optional<std::vector<float>> bias;
  if (has_input(n, 2)) {
    const Constant& c = constant(n, 2, "bias");
    if (c.dims != std::vector<std::int64_t>{out} && c.dims != std::vector<std::int64_t>{1, out})
      refuse(n, "its bias '" + n.input(2) + "' has shape " + dims_str(c.dims) + ", expected " + dims_str({out}));
    bias = floats(n, 2, "bias", c.dims);
  }
  add_linear(n, index, std::move(weight), out, in, std::move(bias));
}

// A Linear without bias (or on inputs of rank > 2) is MatMul by the
// transposed weight, then Add of the bias.
void Importer::read_matmul(const onnx::NodeProto& n, int index) {
  require_chain_input(n);
  if (shape_.size() != 1)
    refuse(n, "multiplies an input of example shape " + shape_str(shape_) + "; bnorm's Linear takes (N, features)");
  const Constant& b = constant(n, 1, "weight");
  if (b.dims.size() != 2 || b.dims[0] != shape_[0])
    refuse(n, "its weight '" + n.input(1) + "' has shape " + dims_str(b.dims) + ", expected [" +
                  std::to_string(shape_[0]) + ", out]");
  const std::int64_t in = b.dims[0], out = b.dims[1];
  const std::vector<float>& w = floats(n, 1, "weight", b.dims);
  std::vector<float> weight(w.size());
  for (std::int64_t i = 0; i < in; ++i)
    for (std::int64_t o = 0; o < out; ++o)
      weight[static_cast<std::size_t>(o * in + i)] = w[static_cast<std::size_t>(i * out + o)];
  std::optional<std::vector<float>> bias;
  const auto& nodes = proto_.graph().node();
  if (index + 1 < nodes.size() && nodes[index + 1].op_type() == "Add" && nodes[index + 1].input_size() == 2) {
    const onnx::NodeProto& add = nodes[index + 1];
    const int other = add.input(0) == n.output(0) ? 1 : add.input(1) == n.output(0) ? 0 : -1;
    if (other >= 0 && constants_.count(add.input(other))) {
      const Constant& c = constants_.at(add.input(other));
      if (c.dims != std::vector<std::int64_t>{out})
        refuse(add,
               "its bias '" + add.input(other) + "' has shape " + dims_str(c.dims) + ", expected " + dims_str({out}));
      bias = floats(add, other, "bias", c.dims);
      pending_matmul_ = &add;  // the Add is part of this layer
    }
  }
  add_linear(n, index, std::move(weight), out, in, std::move(bias));
  if (pending_matmul_) current_ = pending_matmul_->output(0);
}

void Importer::read_conv(const onnx::NodeProto& n, int index) {
  require_chain_input(n);
  if (shape_.size() != 3)
    refuse(n, "convolves an input of example shape " + shape_str(shape_) + "; bnorm's Conv2d takes (C, H, W)");
  if (int_attribute(n, "group").value_or(1) != 1)
    refuse(n, "is a grouped convolution (group > 1), which bnorm does not have");
  for (const auto& a : n.attribute())
    if (a.name() == "auto_pad" && a.s() != "NOTSET" && a.s() != "")
      refuse(n, "uses auto_pad " + a.s() + "; bnorm needs explicit pads");
  const Constant& w = constant(n, 1, "weight");
  if (w.dims.size() != 4 || w.dims[1] != shape_[0])
    refuse(n, "its weight '" + n.input(1) + "' has shape " + dims_str(w.dims) + ", expected [out, " +
                  std::to_string(shape_[0]) + ", KH, KW]");
  const std::int64_t O = w.dims[0], KH = w.dims[2], KW = w.dims[3];
  if (const auto k = ints_attribute(n, "kernel_shape"); k && *k != std::vector<std::int64_t>{KH, KW})
    refuse(n, "kernel_shape " + dims_str(*k) + " differs from its weight's " + dims_str({KH, KW}));
  if (const auto d = ints_attribute(n, "dilations");
      d && std::any_of(d->begin(), d->end(), [](std::int64_t v) { return v != 1; }))
    refuse(n, "is dilated " + dims_str(*d) + ", which bnorm's Conv2d is not");
  const auto strides = ints_attribute(n, "strides").value_or(std::vector<std::int64_t>{1, 1});
  if (strides.size() != 2 || strides[0] != strides[1] || strides[0] < 1)
    refuse(n, "has strides " + dims_str(strides) + "; bnorm's Conv2d has one stride for both directions");
  const auto pads = ints_attribute(n, "pads").value_or(std::vector<std::int64_t>{0, 0, 0, 0});
  if (pads.size() != 4 || std::any_of(pads.begin(), pads.end(), [&](std::int64_t p) { return p != pads[0]; }) ||
      pads[0] < 0)
    refuse(n, "has pads " + dims_str(pads) + "; bnorm's Conv2d pads all four sides alike");
  tensors_[slot("weight")] = floats(n, 1, "weight", w.dims);
  bool bias = false;
  if (has_input(n, 2)) {
    const std::vector<float>& b = floats(n, 2, "bias", {O});
    bias = !(bn_follows(index) && std::all_of(b.begin(), b.end(), [](float v) { return v == 0.0f; }));
    if (bias)
      tensors_[slot("bias")] = b;
    else
      notes_.push_back("node '" + n.name() +
                       "' (Conv): its bias is all zero and a batch norm follows, so it is "
                       "dropped (bnorm's convention: the batch norm's beta is the bias)");
  }
  add_layer(n, {{"type", "conv2d"},
                {"in_channels", shape_[0]},
                {"out_channels", O},
                {"kernel_size", {KH, KW}},
                {"stride", strides[0]},
                {"padding", pads[0]},
                {"bias", bias}});
}

void Importer::read_batchnorm(const onnx::NodeProto& n) {
  require_chain_input(n);
  if (int_attribute(n, "training_mode").value_or(0) != 0)
    refuse(n,
           "is in training mode (training_mode = 1); bnorm imports the inference form, which normalizes with "
           "the running statistics");
  require_only_first_output_used(n);
  if (shape_.size() != 1 && shape_.size() != 3)
    refuse(n, "normalizes examples of shape " + shape_str(shape_) +
                  "; bnorm's batch norm cannot hold this position, only (C) features or (C, H, W) images");
  const std::int64_t C = shape_[0];
  const std::vector<float>& scale = floats(n, 1, "scale", {C});
  const std::vector<float>& bias = floats(n, 2, "bias", {C});
  const std::vector<float>& mean = floats(n, 3, "mean", {C});
  const std::vector<float>& var = floats(n, 4, "var", {C});
  if (std::any_of(var.begin(), var.end(), [](float v) { return v < 0.0f; }))
    refuse(n, "its variance '" + n.input(4) + "' holds a negative value");
  BatchNormOptions options;
  options.eps = float_attribute(n, "epsilon").value_or(1e-5f);
  if (!(options.eps > 0.0f)) refuse(n, "has epsilon " + std::to_string(options.eps) + "; it must be positive");
  // ONNX's momentum weighs the old running value, PyTorch's and bnorm's the
  // new batch. Rounded to 6 decimals so that 1 - 0.9f gives back torch's 0.1.
  const float onnx_momentum = float_attribute(n, "momentum").value_or(0.9f);
  if (!(onnx_momentum >= 0.0f && onnx_momentum <= 1.0f))
    refuse(n, "has momentum " + std::to_string(onnx_momentum) + " outside [0, 1]");
  const std::string node = "node '" + n.name() + "' (BatchNormalization): ";
  const std::size_t k = batchnorms_seen_++;
  const nlohmann::json* exported = k < exported_bn_.size() ? &exported_bn_[k] : nullptr;
  if (exported) {
    // bnorm export writes no momentum attribute; its metadata has the value.
    const nlohmann::json& m = exported->at("momentum");
    if (m.is_null())
      options.momentum.reset();
    else
      options.momentum = json_number<float>(m);
    if (!m.is_null() && !(options.momentum && *options.momentum >= 0.0f && *options.momentum <= 1.0f))
      refuse(n, "bnorm export's metadata gives momentum " + m.dump() + ", outside [0, 1]");
    notes_.push_back(node + "momentum " + (m.is_null() ? std::string("null (cumulative average)") : m.dump()) +
                     " from bnorm export's metadata; epsilon " + number_text(options.eps));
  } else if (onnx_momentum == 1.0f) {
    // What torch.onnx.export writes for momentum=None (1 - 0): the running
    // estimates would never move, which PyTorch did not mean.
    options.momentum.reset();
    notes_.push_back(node +
                     "ONNX momentum 1, as torch.onnx.export writes PyTorch's momentum=None -> bnorm's "
                     "cumulative average (momentum null); epsilon " +
                     number_text(options.eps));
  } else {
    options.momentum = static_cast<float>(std::round((1.0 - static_cast<double>(onnx_momentum)) * 1e6) / 1e6);
    notes_.push_back(node + "ONNX momentum " + number_text(onnx_momentum) +
                     " (weight of the old running value) -> bnorm momentum " + number_text(*options.momentum) +
                     " (weight of the new batch, as PyTorch); epsilon " + number_text(options.eps));
  }
  const bool scale_is_one = std::all_of(scale.begin(), scale.end(), [](float v) { return v == 1.0f; });
  const bool bias_is_zero = std::all_of(bias.begin(), bias.end(), [](float v) { return v == 0.0f; });
  if (exported) {
    // bnorm's own files say "affine" (both or neither) or "scale" and "center".
    const bool both = exported->contains("affine");
    options.scale = (both ? exported->at("affine") : exported->at("scale")).get<bool>();
    options.center = (both ? exported->at("affine") : exported->at("center")).get<bool>();
    if ((!options.scale && !scale_is_one) || (!options.center && !bias_is_zero))
      refuse(n,
             "bnorm export's metadata says this batch norm does not learn its scale or bias, but they are not 1 and 0");
  } else {
    options.scale = options.center = !(scale_is_one && bias_is_zero);
    if (!options.scale)
      notes_.push_back("node '" + n.name() +
                       "' (BatchNormalization): scale all 1 and bias all 0, imported as "
                       "affine=false (PyTorch's affine=False exports exactly these)");
  }
  if (options.scale) tensors_[slot("weight")] = scale;
  if (options.center) tensors_[slot("bias")] = bias;
  tensors_[slot("running_mean")] = mean;
  tensors_[slot("running_var")] = var;
  add_layer(n, BatchNorm(C, options).config());
}

void Importer::read_pool(const onnx::NodeProto& n) {
  require_chain_input(n);
  require_only_first_output_used(n);
  const bool max = n.op_type() == "MaxPool";
  const auto kernel = ints_attribute(n, "kernel_shape").value_or(std::vector<std::int64_t>{});
  if (kernel.size() != 2 || kernel[0] != kernel[1])
    refuse(n, "has kernel_shape " + dims_str(kernel) + "; bnorm pools square windows of a 2-D image");
  const auto strides = ints_attribute(n, "strides").value_or(std::vector<std::int64_t>{1, 1});
  if (strides.size() != 2 || strides[0] != strides[1])
    refuse(n, "has strides " + dims_str(strides) + "; bnorm's pooling has one stride for both directions");
  const auto pads = ints_attribute(n, "pads").value_or(std::vector<std::int64_t>{0, 0, 0, 0});
  if (std::any_of(pads.begin(), pads.end(), [](std::int64_t p) { return p != 0; }))
    refuse(n, "is padded " + dims_str(pads) + "; bnorm's pooling is not");
  if (int_attribute(n, "ceil_mode").value_or(0) != 0)
    refuse(n, "rounds its output size up (ceil_mode = 1); bnorm's pooling rounds down");
  if (const auto d = ints_attribute(n, "dilations");
      d && std::any_of(d->begin(), d->end(), [](std::int64_t v) { return v != 1; }))
    refuse(n, "is dilated " + dims_str(*d) + ", which bnorm's pooling is not");
  for (const auto& a : n.attribute())
    if (a.name() == "auto_pad" && a.s() != "NOTSET" && a.s() != "VALID" && a.s() != "")
      refuse(n, "uses auto_pad " + a.s());
  add_layer(n, {{"type", max ? "maxpool2d" : "avgpool2d"}, {"kernel_size", kernel[0]}, {"stride", strides[0]}});
}

void Importer::read_flatten(const onnx::NodeProto& n) {
  require_chain_input(n);
  if (int_attribute(n, "axis").value_or(1) != 1)
    refuse(n, "flattens from axis " + std::to_string(*int_attribute(n, "axis")) +
                  "; bnorm keeps the batch axis 0 apart (axis 1)");
  if (shape_.size() == 1) {
    advance(n);  // already flat
    return;
  }
  add_layer(n, {{"type", "flatten"}});
}

// A Reshape to (N, -1): a flatten, whether its shape is a constant or was
// computed from the layer before's shape.
void Importer::read_reshape(const onnx::NodeProto& n) {
  require_chain_input(n);
  std::vector<std::int64_t> target;
  if (const auto it = shape_values_.find(n.input(1)); has_input(n, 1) && it != shape_values_.end())
    target = it->second;
  else if (const auto c = constants_.find(n.input(1)); has_input(n, 1) && c != constants_.end() && !c->second.is_float)
    target = c->second.ints;
  else
    refuse(n, "its shape input is neither a constant nor computed from the layer before's shape");
  const std::int64_t features = numel(shape_);
  const auto batch_dim = proto_.graph().input_size() ? proto_.graph().input(0).type().tensor_type().shape().dim(0)
                                                     : onnx::TensorShapeProto_Dimension{};
  const bool keeps_batch = target.size() == 2 && (target[0] == kBatch || target[0] == 0 ||
                                                  (batch_dim.has_dim_value() && target[0] == batch_dim.dim_value()));
  const bool flat = keeps_batch ? (target[1] == -1 || target[1] == features)
                                : target.size() == 2 && target[0] == -1 && target[1] == features;
  if (!flat) {
    std::vector<std::int64_t> shown = target;
    std::replace(shown.begin(), shown.end(), kBatch, std::int64_t{-2});
    refuse(n, "reshapes to " + dims_str(shown) + " (-2: the batch size), which is not a flatten to (N, " +
                  std::to_string(features) + ")");
  }
  if (shape_.size() == 1) {
    advance(n);
    return;
  }
  add_layer(n, {{"type", "flatten"}});
}

// PyTorch writes AvgPool2d as a Pad by zeros before AveragePool: the
// identity, which is all bnorm can hold here.
void Importer::read_pad(const onnx::NodeProto& n) {
  require_chain_input(n);
  std::vector<std::int64_t> pads;
  if (const auto attr = ints_attribute(n, "pads"))
    pads = *attr;
  else if (has_input(n, 1) && constants_.count(n.input(1)) && !constants_.at(n.input(1)).is_float)
    pads = constants_.at(n.input(1)).ints;
  else
    refuse(n, "its pads are not a constant");
  if (std::any_of(pads.begin(), pads.end(), [](std::int64_t p) { return p != 0; }))
    refuse(n, "pads by " + dims_str(pads) + "; bnorm has no padding layer (only a Pad by zero sizes is dropped)");
  advance(n);
}

void Importer::read_node(const onnx::NodeProto& n, int index) {
  const std::string& op = n.op_type();
  if (!n.domain().empty() && n.domain() != "ai.onnx")
    refuse(n, "is from operator domain '" + n.domain() + "', which bnorm import does not read");
  if (n.output_size() == 0) refuse(n, "has no output");
  if (pending_matmul_ == &n) {  // the bias Add of a MatMul, already taken
    pending_matmul_ = nullptr;
    return;
  }
  if (op == "Constant") {
    for (const auto& a : n.attribute())
      if (a.name() == "value") {
        try {
          constants_[n.output(0)] = read_tensor(a.t(), "constant '" + n.output(0) + "'");
        } catch (const Error& e) {
          refuse(n, e.what());
        }
        return;
      }
    refuse(n, "holds no tensor 'value' (other Constant forms are not read)");
  }
  if (read_shape_computation(n)) return;
  if (read_prologue(n) || read_epilogue(n, index)) return;
  if (op == "Gemm") return read_gemm(n, index);
  if (op == "MatMul") return read_matmul(n, index);
  if (op == "Conv") return read_conv(n, index);
  if (op == "BatchNormalization") return read_batchnorm(n);
  if (op == "Relu" || op == "Tanh" || op == "Sigmoid") {
    require_chain_input(n);
    std::string type = op;
    std::transform(type.begin(), type.end(), type.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return add_layer(n, {{"type", type}});
  }
  if (op == "MaxPool" || op == "AveragePool") return read_pool(n);
  if (op == "GlobalAveragePool") {
    require_chain_input(n);
    return add_layer(n, {{"type", "global_avgpool"}});
  }
  if (op == "Flatten") return read_flatten(n);
  if (op == "Reshape") return read_reshape(n);
  if (op == "Pad") return read_pad(n);
  if (op == "Identity" && n.input_size() == 1 && constants_.count(n.input(0))) {
    // PyTorch sometimes names an initializer a second time through an Identity.
    const Constant copy = constants_.at(n.input(0));
    constants_[n.output(0)] = copy;
    return;
  }
  if (op == "Dropout" || op == "Identity") {  // the identity at inference
    require_chain_input(n);
    require_only_first_output_used(n);
    return advance(n);
  }
  refuse(n, "operator " + op +
                " is not supported (bnorm import reads Gemm, MatMul+Add, Conv, BatchNormalization, "
                "Relu, Tanh, Sigmoid, MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape to (N, -1), Dropout, "
                "Identity)");
}

OnnxImport Importer::run(const OnnxImportOptions& options) {
  if (proto_.ir_version() <= 0 || !proto_.has_graph())
    fail_file(name_, "not an ONNX model (no IR version or graph; a truncated file or another format?)");
  for (const auto& o : proto_.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") opset_ = static_cast<int>(o.version());
  if (opset_ < kOnnxMinOpset || opset_ > kOnnxMaxOpset)
    fail_file(name_, "ONNX opset " + std::to_string(opset_) + " is not supported (bnorm import reads opsets " +
                         std::to_string(kOnnxMinOpset) + " to " + std::to_string(kOnnxMaxOpset) + ")");
  read_constants();
  read_exported_batchnorms();
  read_input();
  const Shape input_shape = shape_;
  const auto& nodes = proto_.graph().node();
  for (int i = 0; i < nodes.size(); ++i) read_node(nodes[i], i);
  const onnx::GraphProto& g = proto_.graph();
  if (g.output_size() != 1)
    fail_file(name_, "the graph has " + std::to_string(g.output_size()) + " outputs; a bnorm model has one");
  if (g.output(0).name() != current_)
    fail_file(name_, "the graph's output '" + g.output(0).name() + "' is not the end of the layer chain ('" + current_ +
                         "'): the graph is not sequential");
  if (layers_.empty()) fail_file(name_, "the graph has no layer bnorm can hold");
  if (!input_norm_.mean.empty() && input_norm_.std.size() != input_norm_.mean.size())
    fail_file(name_, "the input normalization nodes subtract a mean but divide by no matching standard deviation");
  if (target_norm_ && target_norm_->mean.empty())
    fail_file(name_, "the graph ends in a Mul without the Add of a target normalization");

  Model model = Model::from_architecture({{"input_shape", input_shape}, {"layers", layers_}});
  for (const StateEntry& e : model.state_dict()) {
    if (e.dtype != StateEntry::DType::f32) continue;  // num_batches_tracked: ONNX keeps none, so 0
    const auto it = tensors_.find(e.name);
    if (it == tensors_.end()) throw Error(name_ + ": internal: no values for " + e.name);
    if (static_cast<std::int64_t>(it->second.size()) != numel(e.shape))
      throw Error(name_ + ": internal: " + e.name + " has " + std::to_string(it->second.size()) + " values");
    std::memcpy(e.data, it->second.data(), it->second.size() * sizeof(float));
  }
  OnnxImport out{LoadedModel{std::move(model), {}, {}, {}, {}}, std::move(notes_)};
  LoadedModel& loaded = out.model;
  loaded.input_normalization = input_norm_;
  try {
    loaded.input_normalization.validate(numel(input_shape));
  } catch (const Error& e) {
    fail_file(name_, e.what());
  }
  const std::int64_t outputs = numel(loaded.model.output_shape());
  if (options.classify) {
    loaded.task.kind = Task::classify;
    if (target_norm_) fail_file(name_, "the graph ends in a target normalization, so its outputs are not class scores");
  } else {
    // Raw outputs: a regression whose target normalization is the identity,
    // so predict writes the graph's outputs as they are.
    loaded.task.kind = Task::regress;
    loaded.target_normalization =
        target_norm_ ? *target_norm_
                     : TargetNormalization{std::vector<float>(static_cast<std::size_t>(outputs), 0.0f),
                                           std::vector<float>(static_cast<std::size_t>(outputs), 1.0f)};
    try {
      loaded.target_normalization.validate(outputs);
    } catch (const Error& e) {
      fail_file(name_, e.what());
    }
  }
  loaded.training = {
      {"imported_from", name_},
      {"onnx", {{"producer", proto_.producer_name() + " " + proto_.producer_version()}, {"opset", opset_}}}};
  return out;
}

}  // namespace

OnnxImport onnx_import_bytes(const std::string& bytes, const std::string& name, const OnnxImportOptions& options) {
  onnx::ModelProto proto;
  if (bytes.empty()) fail_file(name, "is empty, not an ONNX model");
  if (bytes.size() > static_cast<std::size_t>(INT_MAX) || !proto.ParseFromString(bytes))
    fail_file(name, "not an ONNX model (the protobuf does not parse: a truncated file or another format?)");
  return Importer(proto, name).run(options);
}

std::vector<std::string> import_onnx(const std::string& onnx_path, const std::string& model_path,
                                     const OnnxImportOptions& options) {
  const auto raw = read_file_maybe_gzip(onnx_path, std::uint64_t{1} << 31);
  OnnxImport imported = onnx_import_bytes(std::string(raw.begin(), raw.end()), onnx_path, options);
  save_model(model_path, imported.model.model, imported.model.preprocessing(), imported.model.training,
             imported.model.task);
  return std::move(imported.notes);
}

}  // namespace bnorm

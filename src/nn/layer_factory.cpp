#include "bnorm/nn/layer_factory.hpp"

#include <type_traits>

#include "bnorm/error.hpp"
#include "bnorm/json_number.hpp"
#include "bnorm/nn/conv2d.hpp"
#include "bnorm/nn/group_norm.hpp"
#include "bnorm/nn/layer_norm.hpp"
#include "bnorm/nn/linear.hpp"
#include "bnorm/nn/pooling.hpp"

namespace bnorm {
namespace {

// Reads a required field of a layer config, with an error that says which.
template <class T>
T field(const nlohmann::json& config, const char* key) {
  if (!config.contains(key)) throw Error("layer config " + config.dump() + " lacks \"" + key + "\"");
  if constexpr (std::is_arithmetic_v<T>) {
    if (const auto v = json_number<T>(config.at(key))) return *v;
    throw Error("layer config " + config.dump() + ": \"" + key + "\" has the wrong type or is out of range");
  }
  try {
    return config.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error("layer config " + config.dump() + ": \"" + key + "\" has the wrong type");
  }
}

std::int64_t bounded(const nlohmann::json& config, const char* key, std::int64_t lo, std::int64_t hi) {
  const auto v = field<std::int64_t>(config, key);
  if (v < lo || v > hi)
    throw Error("layer config " + config.dump() + ": \"" + key + "\" must be in " + std::to_string(lo) + ".." +
                std::to_string(hi));
  return v;
}

std::int64_t positive_size(const nlohmann::json& config, const char* key) { return bounded(config, key, 1, 1 << 24); }

struct ConvConfig {
  std::int64_t C, O, KH, KW, stride, pad;
  bool bias;
};

ConvConfig conv_config(const nlohmann::json& config) {
  const auto kernel = field<std::vector<std::int64_t>>(config, "kernel_size");
  if (kernel.size() != 2 || kernel[0] < 1 || kernel[1] < 1 || kernel[0] > 64 || kernel[1] > 64)
    throw Error("layer config " + config.dump() + ": \"kernel_size\" must be [kh, kw], each in 1..64");
  return {bounded(config, "in_channels", 1, 65536),
          bounded(config, "out_channels", 1, 65536),
          kernel[0],
          kernel[1],
          bounded(config, "stride", 1, 64),
          bounded(config, "padding", 0, 64),
          field<bool>(config, "bias")};
}

// Batch norm's learned gamma and beta: PyTorch's "affine" (both or neither;
// every file from before the separate switches), or "scale" and "center".
void read_scale_center(const nlohmann::json& config, BatchNormOptions& o) {
  const bool has_affine = config.contains("affine");
  if (has_affine == (config.contains("scale") || config.contains("center")))
    throw Error("layer config " + config.dump() + ": give either \"affine\" or \"scale\" and \"center\"");
  if (has_affine) {
    o.scale = o.center = field<bool>(config, "affine");
  } else {
    o.scale = field<bool>(config, "scale");
    o.center = field<bool>(config, "center");
  }
}

}  // namespace

LayerPtr make_layer(const nlohmann::json& config) {
  if (!config.is_object()) throw Error("layer config must be a JSON object, got " + config.dump());
  const auto type = field<std::string>(config, "type");
  if (type == "linear")
    return std::make_unique<Linear>(positive_size(config, "in_features"), positive_size(config, "out_features"),
                                    field<bool>(config, "bias"));
  if (type == "batchnorm") {
    BatchNormOptions o;
    o.eps = field<float>(config, "eps");
    if (!config.contains("momentum")) throw Error("layer config " + config.dump() + " lacks \"momentum\"");
    if (config.at("momentum").is_null())
      o.momentum.reset();
    else
      o.momentum = field<float>(config, "momentum");
    read_scale_center(config, o);
    o.track_running_stats = field<bool>(config, "track_running_stats");
    o.unbiased_running_var = field<bool>(config, "unbiased_running_var");
    if (config.contains("freeze")) o.freeze = parse_bn_freeze(field<std::string>(config, "freeze"));
    if (config.contains("renorm")) {
      const nlohmann::json& r = config.at("renorm");
      if (!r.is_object()) throw Error("layer config " + config.dump() + ": \"renorm\" must be an object");
      o.renorm = {true, field<float>(r, "rmax"), field<float>(r, "dmax"), field<std::int64_t>(r, "warmup_steps")};
    }
    if (config.contains("virtual_batch_size")) o.virtual_batch_size = field<std::int64_t>(config, "virtual_batch_size");
    return std::make_unique<BatchNorm>(positive_size(config, "num_features"), o);
  }
  if (type == "groupnorm")
    return std::make_unique<GroupNorm>(positive_size(config, "num_groups"), positive_size(config, "num_channels"),
                                       field<float>(config, "eps"), field<bool>(config, "affine"));
  if (type == "layernorm")
    return std::make_unique<LayerNorm>(field<Shape>(config, "normalized_shape"), field<float>(config, "eps"),
                                       field<bool>(config, "elementwise_affine"));
  if (type == "conv2d") {
    const ConvConfig c = conv_config(config);
    return std::make_unique<Conv2d>(c.C, c.O, c.KH, c.KW, c.stride, c.pad, c.bias);
  }
  if (type == "maxpool2d" || type == "avgpool2d")
    return std::make_unique<Pool2d>(type == "maxpool2d" ? Pool2d::Kind::max : Pool2d::Kind::average,
                                    bounded(config, "kernel_size", 1, 64), bounded(config, "stride", 1, 64));
  if (type == "global_avgpool") return std::make_unique<GlobalAvgPool>();
  if (type == "flatten") return std::make_unique<Flatten>();
  if (type == "dropout") return std::make_unique<Dropout>(field<float>(config, "p"));
  return std::make_unique<Activation>(parse_activation(type));
}

std::int64_t layer_state_bytes(const nlohmann::json& config) {
  if (!config.is_object()) throw Error("layer config must be a JSON object, got " + config.dump());
  const auto type = field<std::string>(config, "type");
  // Sizes are at most 2^24 each, so these products stay far below 2^63.
  if (type == "linear") {
    const std::int64_t in = positive_size(config, "in_features"), out = positive_size(config, "out_features");
    return (in * out + (field<bool>(config, "bias") ? out : 0)) * 4;
  }
  if (type == "batchnorm") {
    const std::int64_t C = positive_size(config, "num_features");
    BatchNormOptions o;
    read_scale_center(config, o);
    const std::int64_t per_channel =
        (o.scale ? 1 : 0) + (o.center ? 1 : 0) + (field<bool>(config, "track_running_stats") ? 2 : 0);
    return C * per_channel * 4;
  }
  if (type == "groupnorm" || type == "layernorm") {
    // weight and bias of the layer's parameter shape; the layer checks the config.
    std::int64_t bytes = 0;
    for (const ParamSlot& slot : make_layer(config)->param_slots()) bytes += numel(slot.shape) * 4;
    return bytes;
  }
  if (type == "conv2d") {
    const ConvConfig c = conv_config(config);
    return (c.O * c.C * c.KH * c.KW + (c.bias ? c.O : 0)) * 4;
  }
  // Layers without saved state; make_layer rejects an unknown type.
  make_layer(config);
  return 0;
}

std::string bn_placement_name(BnPlacement placement) {
  switch (placement) {
    case BnPlacement::before:
      return "before";
    case BnPlacement::after:
      return "after";
    case BnPlacement::none:
      return "none";
  }
  return "?";
}

BnPlacement parse_bn_placement(const std::string& name) {
  if (name == "before") return BnPlacement::before;
  if (name == "after") return BnPlacement::after;
  if (name == "none") return BnPlacement::none;
  throw Error("unknown batch-norm placement '" + name + "' (expected before, after or none)");
}

std::vector<LayerPtr> build_mlp_layers(const MlpSpec& spec) {
  if (spec.widths.size() < 2) throw Error("an MLP needs at least an input and an output width");
  std::vector<LayerPtr> layers;
  const std::size_t last = spec.widths.size() - 1;
  for (std::size_t i = 0; i + 1 < spec.widths.size(); ++i) {
    const std::int64_t in = spec.widths[i], out = spec.widths[i + 1];
    if (i + 1 == last) {  // output layer: logits, no normalization
      layers.push_back(std::make_unique<Linear>(in, out, true));
      break;
    }
    const bool bn_follows = spec.bn == BnPlacement::before;
    layers.push_back(std::make_unique<Linear>(in, out, !bn_follows));
    if (spec.bn == BnPlacement::before) layers.push_back(std::make_unique<BatchNorm>(out, spec.bn_options));
    layers.push_back(std::make_unique<Activation>(spec.activation));
    if (spec.bn == BnPlacement::after) layers.push_back(std::make_unique<BatchNorm>(out, spec.bn_options));
  }
  return layers;
}

}  // namespace bnorm

#include "bnorm/nn/layer_factory.hpp"

#include <type_traits>

#include "bnorm/error.hpp"
#include "bnorm/json_number.hpp"
#include "bnorm/nn/linear.hpp"

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

std::int64_t positive_size(const nlohmann::json& config, const char* key) {
  const auto v = field<std::int64_t>(config, key);
  if (v <= 0 || v > (1 << 24))
    throw Error("layer config " + config.dump() + ": \"" + key + "\" must be in 1..16777216");
  return v;
}

}  // namespace

LayerPtr make_layer(const nlohmann::json& config) {
  if (!config.is_object()) throw Error("layer config must be a JSON object, got " + config.dump());
  const auto type = field<std::string>(config, "type");
  if (type == "linear")
    return std::make_unique<Linear>(positive_size(config, "in_features"),
                                    positive_size(config, "out_features"), field<bool>(config, "bias"));
  if (type == "batchnorm") {
    BatchNormOptions o;
    o.eps = field<float>(config, "eps");
    if (!config.contains("momentum")) throw Error("layer config " + config.dump() + " lacks \"momentum\"");
    if (config.at("momentum").is_null())
      o.momentum.reset();
    else
      o.momentum = field<float>(config, "momentum");
    o.affine = field<bool>(config, "affine");
    o.track_running_stats = field<bool>(config, "track_running_stats");
    o.unbiased_running_var = field<bool>(config, "unbiased_running_var");
    return std::make_unique<BatchNorm>(positive_size(config, "num_features"), o);
  }
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
    const std::int64_t per_channel = (field<bool>(config, "affine") ? 2 : 0) + (field<bool>(config, "track_running_stats") ? 2 : 0);
    return C * per_channel * 4;
  }
  parse_activation(type);  // throws for an unknown type
  return 0;
}

std::string bn_placement_name(BnPlacement placement) {
  switch (placement) {
    case BnPlacement::before: return "before";
    case BnPlacement::after: return "after";
    case BnPlacement::none: return "none";
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

#pragma once
#include "bnorm/nn/activation.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/nn/layer.hpp"

namespace bnorm {

// Rebuilds one layer from its config() JSON; throws Error naming what is wrong.
LayerPtr make_layer(const nlohmann::json& config);

// Bytes of saved state (parameters and running statistics) the layer that
// make_layer(config) builds will allocate. A loader compares the sum with the
// bytes its file holds before building anything, so a small file cannot ask
// for a huge model. Validates the config like make_layer.
std::int64_t layer_state_bytes(const nlohmann::json& config);

// Where batch norm goes in each hidden block.
enum class BnPlacement { before, after, none };
std::string bn_placement_name(BnPlacement placement);
BnPlacement parse_bn_placement(const std::string& name);  // throws Error

// A multilayer perceptron: widths {784, 256, 256, 10} gives two hidden blocks
// and an output Linear. A hidden block is
//   before: Linear(no bias) → BatchNorm → activation
//   after:  Linear(bias)    → activation → BatchNorm
//   none:   Linear(bias)    → activation
// The bias is dropped only where a batch norm follows the Linear directly,
// since its mean subtraction would cancel it and beta replaces it.
struct MlpSpec {
  std::vector<std::int64_t> widths = {784, 256, 256, 10};
  BnPlacement bn = BnPlacement::before;
  ActivationKind activation = ActivationKind::relu;
  BatchNormOptions bn_options;
};
std::vector<LayerPtr> build_mlp_layers(const MlpSpec& spec);

}  // namespace bnorm

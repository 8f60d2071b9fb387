#include "bnorm/train/numeric_check.hpp"

#include <algorithm>
#include <bit>
#include <cstdint>

namespace bnorm {

bool all_finite(std::span<const float> values) {
  // A float is NaN or ±inf exactly when its exponent bits are all ones, i.e.
  // when |bits| >= 0x7f800000. An unsigned max reduction has no branch and
  // vectorizes (a float sum would not, without -ffast-math), so this costs
  // microseconds even on the whole parameter buffer.
  std::uint32_t worst = 0;
  for (const float v : values) worst = std::max(worst, std::bit_cast<std::uint32_t>(v) & 0x7fffffffu);
  return worst < 0x7f800000u;
}

std::string diagnose_numeric_fault(const Model& model) {
  const auto name = [&](std::size_t i) {
    return "layer " + std::to_string(i) + " (" + model.layer(i).type() + ")";
  };
  for (std::size_t i = 0; i < model.num_layers(); ++i)
    if (!all_finite(model.layer_output(i).span())) return name(i) + " output";
  // Parameter gradients live in the flat buffer in layer order (see Model's
  // constructor), so each layer's slice follows from its param_slots().
  std::vector<std::size_t> offsets(model.num_layers() + 1, 0);
  for (std::size_t i = 0; i < model.num_layers(); ++i) {
    std::size_t n = 0;
    for (const ParamSlot& slot : model.layer(i).param_slots()) n += static_cast<std::size_t>(numel(slot.shape));
    offsets[i + 1] = offsets[i] + n;
  }
  const std::span<const float> grads = model.gradients();
  for (std::size_t i = model.num_layers(); i-- > 0;) {
    if (!all_finite(grads.subspan(offsets[i], offsets[i + 1] - offsets[i]))) return name(i) + " parameter gradient";
    if (i > 0 && !all_finite(model.layer_input_gradient(i).span())) return name(i) + " input gradient";
  }
  return "no layer (the loss itself)";
}

}  // namespace bnorm

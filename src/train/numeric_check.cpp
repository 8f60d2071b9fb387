#include "bnorm/train/numeric_check.hpp"

namespace bnorm {

bool all_finite(std::span<const float> values) {
  // x * 0 is 0 for every finite x and NaN for NaN or ±inf, and a sum of
  // zeros stays 0, so the sum is 0 exactly when every value is finite. Eight
  // independent sums keep the loop free of branches and let the compiler
  // vectorize it without -ffast-math (a single float sum could not be
  // reordered); a bit-pattern max needs SSE4.1, which the portable build lacks.
  const float* p = values.data();
  const std::size_t n = values.size();
  float acc[8] = {};
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (std::size_t k = 0; k < 8; ++k) acc[k] += p[i + k] * 0.0f;
  float sum = 0.0f;
  for (const float a : acc) sum += a;
  for (; i < n; ++i) sum += p[i] * 0.0f;
  return sum == 0.0f;
}

std::string diagnose_numeric_fault(const Model& model) {
  const auto name = [&](std::size_t i) { return "layer " + std::to_string(i) + " (" + model.layer(i).type() + ")"; };
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

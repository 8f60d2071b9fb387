#include "bnorm/nn/fold.hpp"

#include <cmath>
#include <cstring>

#include "bnorm/error.hpp"
#include "bnorm/nn/batchnorm.hpp"

namespace bnorm {
namespace {

StateEntry find_entry(Layer& layer, const std::string& name) {
  for (StateEntry& e : layer.state())
    if (e.name == name) return e;
  throw Error("fold: layer " + layer.type() + " has no tensor '" + name + "'");
}

bool foldable(const Layer& producer, const Layer& next) {
  if (producer.type() != "linear" && producer.type() != "conv2d") return false;
  if (next.type() != "batchnorm") return false;
  return static_cast<const BatchNorm&>(next).options().track_running_stats;
}

}  // namespace

Model fold_batchnorm(Model& model) {
  nlohmann::json arch = model.architecture();
  nlohmann::json layers = nlohmann::json::array();
  std::vector<std::size_t> source;  // new layer index → old layer index
  std::vector<bool> folded;         // new layer absorbs the batch norm after its source
  for (std::size_t i = 0; i < model.num_layers(); ++i) {
    nlohmann::json config = arch["layers"][i];
    const bool fold = i + 1 < model.num_layers() && foldable(model.layer(i), model.layer(i + 1));
    if (fold) config["bias"] = true;
    layers.push_back(config);
    source.push_back(i);
    folded.push_back(fold);
    if (fold) ++i;  // the batch norm disappears
  }
  arch["layers"] = layers;
  Model out = Model::from_architecture(arch);

  for (std::size_t j = 0; j < out.num_layers(); ++j) {
    Layer& from = model.layer(source[j]);
    Layer& to = out.layer(j);
    if (!folded[j]) {
      for (const StateEntry& e : to.state()) {
        const StateEntry src = find_entry(from, e.name);
        std::memcpy(e.data, src.data,
                    static_cast<std::size_t>(numel(e.shape)) * (e.dtype == StateEntry::DType::f32 ? 4 : 8));
      }
      continue;
    }
    auto& bn = static_cast<BatchNorm&>(model.layer(source[j] + 1));
    const std::int64_t C = bn.num_features();
    // A gamma that is not learned is 1, a beta that is not learned 0.
    const auto* gamma = bn.options().scale ? static_cast<const float*>(find_entry(bn, "weight").data) : nullptr;
    const auto* beta = bn.options().center ? static_cast<const float*>(find_entry(bn, "bias").data) : nullptr;
    const StateEntry w_src = find_entry(from, "weight");
    const float* b_src =
        from.param_slots().size() > 1 ? static_cast<const float*>(find_entry(from, "bias").data) : nullptr;
    auto* w = static_cast<float*>(find_entry(to, "weight").data);
    auto* b = static_cast<float*>(find_entry(to, "bias").data);
    const std::int64_t per_channel = numel(w_src.shape) / C;  // weight rows are output channels
    for (std::int64_t c = 0; c < C; ++c) {
      const double s =
          (gamma ? gamma[c] : 1.0) / std::sqrt(static_cast<double>(bn.running_var()[c]) + bn.options().eps);
      for (std::int64_t k = 0; k < per_channel; ++k)
        w[c * per_channel + k] = static_cast<float>(static_cast<const float*>(w_src.data)[c * per_channel + k] * s);
      const double bias = b_src ? b_src[c] : 0.0;
      b[c] = static_cast<float>((bias - bn.running_mean()[c]) * s + (beta ? beta[c] : 0.0));
    }
  }
  return out;
}

}  // namespace bnorm

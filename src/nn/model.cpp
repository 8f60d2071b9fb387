#include "bnorm/nn/model.hpp"

#include <algorithm>

#include "bnorm/error.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/nn/layer_factory.hpp"

namespace bnorm {
namespace {

Shape with_batch(std::int64_t N, const Shape& example) {
  Shape s{N};
  s.insert(s.end(), example.begin(), example.end());
  return s;
}

}  // namespace

Model::Model(Shape input_shape, std::vector<LayerPtr> layers)
    : input_shape_(std::move(input_shape)), layers_(std::move(layers)) {
  if (layers_.empty()) throw Error("a model needs at least one layer");
  // Check the chain of shapes and count parameters before allocating.
  Shape shape = input_shape_;
  std::int64_t total = 0;
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    try {
      shape = layers_[i]->output_shape(shape);
    } catch (const Error& e) {
      throw Error("layer " + std::to_string(i) + " (" + layers_[i]->type() + "): " + e.what());
    }
    for (const ParamSlot& slot : layers_[i]->param_slots()) total += numel(slot.shape);
  }
  params_.assign(static_cast<std::size_t>(total), 0.0f);
  grads_.assign(static_cast<std::size_t>(total), 0.0f);
  std::int64_t offset = 0;
  for (auto& layer : layers_) {
    std::int64_t n = 0;
    for (const ParamSlot& slot : layer->param_slots()) n += numel(slot.shape);
    layer->bind_parameters({params_.data() + offset, static_cast<std::size_t>(n)},
                           {grads_.data() + offset, static_cast<std::size_t>(n)});
    offset += n;
  }
  activations_.resize(layers_.size());
  input_grads_.resize(layers_.size());
  set_fusion(true);
  // Usable as built: a forgotten init_parameters call must not train from zeros.
  Rng rng(kDefaultInitSeed);
  init_parameters(rng);
}

void Model::set_fusion(bool on) {
  fusion_ = on;
  fused_with_next_.assign(layers_.size(), false);
  for (std::size_t i = 0; i + 1 < layers_.size(); ++i) {
    auto* bn = dynamic_cast<BatchNorm*>(layers_[i].get());
    if (!bn) continue;
    const bool fuse = on && layers_[i + 1]->type() == "relu";
    bn->set_fused_relu(fuse);
    fused_with_next_[i] = fuse;
  }
  input_ = nullptr;  // a backward must follow a forward made with the same setting
}

Model Model::from_architecture(const nlohmann::json& architecture, std::int64_t max_state_bytes) {
  if (!architecture.is_object() || !architecture.contains("input_shape") || !architecture.contains("layers"))
    throw Error("architecture must be an object with \"input_shape\" and \"layers\"");
  const auto& in = architecture.at("input_shape");
  const auto& list = architecture.at("layers");
  if (!in.is_array() || in.empty() || in.size() > 3 || !list.is_array() || list.empty() || list.size() > 10000)
    throw Error("architecture: \"input_shape\" must be a list of 1-3 sizes and \"layers\" a non-empty list");
  Shape input_shape;
  for (const auto& d : in) {
    if (!d.is_number_integer() || d.get<std::int64_t>() <= 0 || d.get<std::int64_t>() > (1 << 24))
      throw Error("architecture: bad input size " + d.dump());
    input_shape.push_back(d.get<std::int64_t>());
  }
  std::int64_t state_bytes = 0;
  for (const auto& config : list) {
    state_bytes += layer_state_bytes(config);
    if (state_bytes > max_state_bytes)
      throw Error("architecture declares more than " + std::to_string(max_state_bytes) +
                  " bytes of parameters and statistics (layer " + config.dump() + " and those before it)");
  }
  std::vector<LayerPtr> layers;
  for (const auto& config : list) layers.push_back(make_layer(config));
  return Model(std::move(input_shape), std::move(layers));
}

std::vector<std::int64_t> Model::parameter_tensor_ends() const {
  std::vector<std::int64_t> ends;
  std::int64_t end = 0;
  for (const auto& layer : layers_)
    for (const ParamSlot& slot : layer->param_slots()) {
      end += numel(slot.shape);
      ends.push_back(end);
    }
  return ends;
}

nlohmann::json Model::architecture() const {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& layer : layers_) layers.push_back(layer->config());
  return {{"input_shape", input_shape_}, {"layers", layers}};
}

void Model::init_parameters(Rng& rng) {
  for (auto& layer : layers_) layer->init_parameters(rng);
}

Shape Model::output_shape() const {
  Shape shape = input_shape_;
  for (const auto& layer : layers_) shape = layer->output_shape(shape);
  return shape;
}

const Tensor& Model::forward(const Tensor& x, Mode mode) {
  if (x.rank() != input_shape_.size() + 1 ||
      !std::equal(input_shape_.begin(), input_shape_.end(), x.shape().begin() + 1))
    throw Error("model: expects input " + shape_str(with_batch(x.rank() ? x.dim(0) : 0, input_shape_)) + ", got " +
                shape_str(x.shape()));
  input_ = &x;
  const Tensor* in = &x;
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    // A fused BatchNorm writes the ReLU's output; the ReLU is then skipped.
    Tensor& out = fused_with_next_[i] ? activations_[i + 1] : activations_[i];
    layers_[i]->forward(out, *in, mode);
    in = &out;
    if (fused_with_next_[i]) ++i;
  }
  return *in;
}

void Model::backward(const Tensor& dlogits) {
  if (!input_) throw Error("model: backward called before forward");
  const Tensor* dy = &dlogits;
  for (std::size_t i = layers_.size(); i-- > 0;) {
    if (i > 0 && fused_with_next_[i - 1]) continue;  // the BatchNorm before it does this ReLU's backward
    Tensor* dx = i == 0 ? nullptr : &input_grads_[i];
    layers_[i]->backward(dx, *dy);
    dy = dx;
  }
}

std::vector<StateEntry> Model::state_dict() {
  std::vector<StateEntry> entries;
  for (std::size_t i = 0; i < layers_.size(); ++i)
    for (StateEntry e : layers_[i]->state()) {
      e.name = std::to_string(i) + "." + e.name;
      entries.push_back(std::move(e));
    }
  return entries;
}

}  // namespace bnorm

#pragma once
// A sequential model whose parameters and gradients each live in one flat
// buffer, so an optimizer (or an all-reduce) sees a single span.
#include <vector>

#include "bnorm/nn/layer.hpp"

namespace bnorm {

// The stream a new model's parameters are drawn from: the one `bnorm train
// --seed 0` uses (init_rng_seed(0) in train/trainer.hpp).
inline constexpr std::uint64_t kDefaultInitSeed = 0x9E3779B97F4A7C15ull;

class Model {
 public:
  // input_shape is one example's shape, e.g. {784}. Allocates the flat buffers,
  // binds every layer's slice and initializes the parameters from
  // kDefaultInitSeed (γ = 1, β = 0; init_parameters draws them anew). Throws
  // Error if the layers do not chain.
  Model(Shape input_shape, std::vector<LayerPtr> layers);
  Model(Model&&) = default;
  Model& operator=(Model&&) = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Rebuilds a model from architecture(); parameters are at their default init.
  // Throws Error, before allocating, if the layers' saved state would take
  // more than max_state_bytes (a loader passes what its file holds).
  static Model from_architecture(const nlohmann::json& architecture,
                                 std::int64_t max_state_bytes = std::int64_t{1} << 40);
  nlohmann::json architecture() const;  // {"input_shape": [...], "layers": [config, ...]}

  void init_parameters(Rng& rng);

  std::span<float> parameters() { return {params_.data(), params_.size()}; }
  std::span<const float> parameters() const { return {params_.data(), params_.size()}; }
  std::span<float> gradients() { return {grads_.data(), grads_.size()}; }
  std::span<const float> gradients() const { return {grads_.data(), grads_.size()}; }
  // Where each parameter tensor (a layer's weight, bias, γ, β, in order)
  // ends in parameters(): for Optimizer::set_tensor_ends.
  std::vector<std::int64_t> parameter_tensor_ends() const;

  // x is (N, input_shape...). The returned logits stay valid until the next forward.
  const Tensor& forward(const Tensor& x, Mode mode);
  // Backward of the last Mode::train forward from dL/dlogits. Assigns every
  // gradient in gradients(); computes no gradient for the input.
  void backward(const Tensor& dlogits);

  // A BatchNorm followed by a ReLU runs as one fused layer (the ReLU's work is
  // done inside the batch norm's passes over memory). On by default; off runs
  // every layer on its own. Either way gives the same bits.
  void set_fusion(bool on);
  bool fusion() const { return fusion_; }

  // PyTorch state_dict of the equivalent torch.nn.Sequential: "<index>.<name>".
  std::vector<StateEntry> state_dict();

  const Shape& input_shape() const { return input_shape_; }
  Shape output_shape() const;  // one example's, e.g. {10}
  std::size_t num_layers() const { return layers_.size(); }
  Layer& layer(std::size_t i) { return *layers_.at(i); }
  const Layer& layer(std::size_t i) const { return *layers_.at(i); }
  // What the last forward/backward kept: layer i's output, and dL/d(its
  // input) for i >= 1. For diagnosing a numeric fault after the fact. For a
  // fused BatchNorm + ReLU both indices give the ReLU's output, and the ReLU's
  // input gradient is not formed (empty).
  const Tensor& layer_output(std::size_t i) const {
    return fused_with_next_.at(i) ? activations_.at(i + 1) : activations_.at(i);
  }
  const Tensor& layer_input_gradient(std::size_t i) const { return input_grads_.at(i); }

 private:
  Shape input_shape_;
  std::vector<LayerPtr> layers_;
  AlignedVector<float> params_;
  AlignedVector<float> grads_;
  std::vector<Tensor> activations_;  // output of layer i
  std::vector<Tensor> input_grads_;  // dL/d(input of layer i), for i >= 1
  const Tensor* input_ = nullptr;
  bool fusion_ = false;
  std::vector<bool> fused_with_next_;  // layer i is a BatchNorm doing layer i+1's ReLU
};

}  // namespace bnorm

#pragma once
// The layer interface. A layer owns its semantics and any non-trained state
// (running statistics); its trained parameters and their gradients are views
// into the model's two flat buffers, handed over by bind_parameters().
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "bnorm/rng.hpp"
#include "bnorm/tensor.hpp"

namespace bnorm {

// Chosen by the caller, never guessed from the batch size.
enum class Mode {
  train,             // batch statistics; running estimates updated; caches kept for backward
  eval,              // running estimates (the test-time case, one example at a time)
  eval_batch_stats,  // batch statistics, nothing updated: only to show why eval exists
};

// A named parameter tensor the layer asks the model to allocate.
struct ParamSlot {
  std::string name;  // PyTorch's name inside the module: "weight", "bias"
  Shape shape;
};

// One entry of a state_dict: a view of a parameter or a buffer. Views stay
// valid as long as the model that produced them.
struct StateEntry {
  enum class DType { f32, i64 };
  std::string name;  // "weight", "running_mean", ...; the model prefixes "<index>."
  Shape shape;
  DType dtype = DType::f32;
  void* data = nullptr;
};

class Layer {
 public:
  virtual ~Layer() = default;

  virtual std::string type() const = 0;                      // "linear", "batchnorm", "relu", ...
  virtual nlohmann::json config() const = 0;                 // enough to rebuild the layer (layer_factory)
  virtual Shape output_shape(const Shape& input) const = 0;  // throws Error on a bad input shape

  virtual std::vector<ParamSlot> param_slots() const { return {}; }
  // params and grads are this layer's contiguous slices, in param_slots() order.
  virtual void bind_parameters(std::span<float> /*params*/, std::span<float> /*grads*/) {}
  virtual void init_parameters(Rng& /*rng*/) {}

  // Parameters and buffers in the order PyTorch's state_dict lists them.
  virtual std::vector<StateEntry> state() { return {}; }

  // Forward assigns y (resized here). In Mode::train it keeps what backward
  // needs; x must stay alive and unchanged until backward.
  virtual void forward(Tensor& y, const Tensor& x, Mode mode) = 0;
  // Backward of the last Mode::train forward. Assigns (does not add to) every
  // parameter gradient and dx; dx == nullptr skips the input gradient (the
  // first layer's input is data and needs none).
  virtual void backward(Tensor* dx, const Tensor& dy) = 0;
};

using LayerPtr = std::unique_ptr<Layer>;

}  // namespace bnorm

#pragma once
// Optimizers work on the model's flat parameter and gradient spans, so each is
// one loop. Conventions follow PyTorch's torch.optim so runs can be compared.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace bnorm {

// What an optimizer has accumulated over its steps: named buffers the size of
// the parameters (empty before the first step) and a step count. A checkpoint
// stores it so a resumed run continues bit for bit.
struct OptimizerState {
  std::vector<std::pair<std::string, std::vector<float>>> buffers;
  std::int64_t steps = 0;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual void step(std::span<float> params, std::span<const float> grads) = 0;
  virtual std::string name() const = 0;

  virtual OptimizerState export_state() const = 0;
  // Throws Error, leaving the optimizer unchanged, unless state has exactly
  // this optimizer's buffers, each empty or of num_params finite values.
  virtual void import_state(const OptimizerState& state, std::size_t num_params) = 0;

  // Where each parameter tensor ends in the flat buffer
  // (Model::parameter_tensor_ends()). With them, step() gives each thread the
  // same share of every tensor that the layers' matrix products give it (a
  // weight matrix's first rows to the first thread, and so on), so a thread
  // updates the weights it multiplies with and no cache line of them moves
  // between cores at each step. Without them, or if they are out of order
  // (then they are dropped here) or do not end where the buffer does, threads
  // take shares of the whole buffer. Either way every value gets the same
  // update, bit for bit.
  void set_tensor_ends(std::vector<std::int64_t> ends);

 protected:
  std::vector<std::int64_t> tensor_ends_;
};

// SGD with momentum and L2 weight decay (PyTorch's form, dampening 0):
//   g = grad + weight_decay * p
//   v = momentum * v + g           (v starts at 0, so the first step is v = g)
//   p = p - lr * v
class Sgd final : public Optimizer {
 public:
  Sgd(float lr, float momentum, float weight_decay);
  void step(std::span<float> params, std::span<const float> grads) override;
  std::string name() const override { return "sgd"; }
  OptimizerState export_state() const override;  // "velocity"
  void import_state(const OptimizerState& state, std::size_t num_params) override;

 private:
  float lr_, momentum_, weight_decay_;
  std::int64_t steps_ = 0;
  std::vector<float> velocity_;
};

// Adam (Kingma & Ba) with bias correction; weight decay added to the gradient
// as in torch.optim.Adam (not AdamW).
class Adam final : public Optimizer {
 public:
  Adam(float lr, float beta1 = 0.9f, float beta2 = 0.999f, float eps = 1e-8f, float weight_decay = 0.0f);
  void step(std::span<float> params, std::span<const float> grads) override;
  std::string name() const override { return "adam"; }
  OptimizerState export_state() const override;  // "m", "v", steps = t
  void import_state(const OptimizerState& state, std::size_t num_params) override;

 private:
  float lr_, beta1_, beta2_, eps_, weight_decay_;
  std::int64_t t_ = 0;
  std::vector<float> m_, v_;
};

// "sgd" or "adam"; throws Error otherwise. momentum is SGD's.
std::unique_ptr<Optimizer> make_optimizer(const std::string& name, float lr, float momentum, float weight_decay);

}  // namespace bnorm

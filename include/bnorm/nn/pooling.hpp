#pragma once
#include <cstdint>
#include <vector>

#include "bnorm/nn/layer.hpp"

namespace bnorm {

// Max or average over K×K windows with a stride (default K), no padding,
// rounding the output size down as PyTorch does. Input (N, C, H, W).
class Pool2d final : public Layer {
 public:
  enum class Kind { max, average };
  Pool2d(Kind kind, std::int64_t kernel, std::int64_t stride);

  std::string type() const override { return kind_ == Kind::max ? "maxpool2d" : "avgpool2d"; }
  nlohmann::json config() const override;
  Shape output_shape(const Shape& input) const override;

  void forward(Tensor& y, const Tensor& x, Mode mode) override;
  void backward(Tensor* dx, const Tensor& dy) override;

 private:
  Kind kind_;
  std::int64_t K_, stride_;
  Shape x_shape_;
  std::vector<std::int32_t> argmax_;  // (N, C, OH, OW), max pooling only
};

// Global average pooling: (N, C, H, W) → (N, C, 1, 1), PyTorch's AdaptiveAvgPool2d(1).
class GlobalAvgPool final : public Layer {
 public:
  std::string type() const override { return "global_avgpool"; }
  nlohmann::json config() const override { return {{"type", "global_avgpool"}}; }
  Shape output_shape(const Shape& input) const override;

  void forward(Tensor& y, const Tensor& x, Mode mode) override;
  void backward(Tensor* dx, const Tensor& dy) override;

 private:
  Shape x_shape_;
};

// (N, C, H, W) → (N, C·H·W), PyTorch's nn.Flatten(): the data does not move.
class Flatten final : public Layer {
 public:
  std::string type() const override { return "flatten"; }
  nlohmann::json config() const override { return {{"type", "flatten"}}; }
  Shape output_shape(const Shape& input) const override;

  void forward(Tensor& y, const Tensor& x, Mode mode) override;
  void backward(Tensor* dx, const Tensor& dy) override;

 private:
  Shape x_shape_;
};

// Inverted dropout: in training each value is zeroed with probability p and
// the survivors are scaled by 1/(1−p), so evaluation is the identity. The
// mask comes from the layer's own stream, seeded by init_parameters.
class Dropout final : public Layer {
 public:
  explicit Dropout(float p);

  std::string type() const override { return "dropout"; }
  nlohmann::json config() const override { return {{"type", "dropout"}, {"p", p_}}; }
  Shape output_shape(const Shape& input) const override { return input; }
  void init_parameters(Rng& rng) override { rng_ = Rng(rng.next_u64()); }

  void forward(Tensor& y, const Tensor& x, Mode mode) override;
  void backward(Tensor* dx, const Tensor& dy) override;

  // Data-parallel training: the input is examples [begin, begin + N) of a
  // batch of `total`. The masks are then the ones a single process would draw
  // for those examples of the whole batch (the stream skips the other
  // processes' values), so a run equals one process's. total < 0: the input
  // is the whole batch (the default).
  void set_batch_share(std::int64_t begin, std::int64_t total) {
    share_begin_ = begin;
    share_total_ = total;
  }
  // A process with no examples in a batch: advances the stream past it.
  void skip_batch(std::int64_t total, std::int64_t values_per_example) {
    rng_.discard(static_cast<std::uint64_t>(total * values_per_example));
  }

 private:
  float p_;
  std::int64_t share_begin_ = 0, share_total_ = -1;
  Rng rng_{0};
  std::vector<float> scale_;  // (N·…): 0 or 1/(1−p) per value of the last training forward
};

}  // namespace bnorm

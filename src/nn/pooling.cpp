#include "bnorm/nn/pooling.hpp"

#include <algorithm>

#include "bnorm/error.hpp"
#include "bnorm/kernels/conv.hpp"

namespace bnorm {
namespace {

void require_nchw(const std::string& who, const Shape& example) {
  if (example.size() != 3) throw Error(who + ": expects (C, H, W) per example, got " + shape_str(example));
}

Shape example_of(const Tensor& x) { return Shape(x.shape().begin() + 1, x.shape().end()); }

}  // namespace

Pool2d::Pool2d(Kind kind, std::int64_t kernel, std::int64_t stride) : kind_(kind), K_(kernel), stride_(stride) {
  if (K_ < 1 || K_ > 64 || stride_ < 1 || stride_ > 64) throw Error(type() + ": kernel and stride must be in 1..64");
}

nlohmann::json Pool2d::config() const { return {{"type", type()}, {"kernel_size", K_}, {"stride", stride_}}; }

Shape Pool2d::output_shape(const Shape& input) const {
  require_nchw(type(), input);
  if (input[1] < K_ || input[2] < K_)
    throw Error(type() + ": window " + std::to_string(K_) + " is larger than the input " + shape_str(input));
  return {input[0], (input[1] - K_) / stride_ + 1, (input[2] - K_) / stride_ + 1};
}

void Pool2d::forward(Tensor& y, const Tensor& x, Mode /*mode*/) {
  if (x.rank() != 4) throw Error(type() + ": expects input (N, C, H, W), got " + shape_str(x.shape()));
  const std::int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  if (H < K_ || W < K_) output_shape(example_of(x));  // throws, naming the problem
  const std::int64_t OH = (H - K_) / stride_ + 1, OW = (W - K_) / stride_ + 1, plane_out = C * OH * OW;
  y.resize({N, C, OH, OW});
  if (kind_ == Kind::max) argmax_.resize(static_cast<std::size_t>(N * plane_out));
  // The kernels see the batch as N·C planes.
  if (kind_ == Kind::max)
    kernels::maxpool_forward(y.data(), argmax_.data(), x.data(), N * C, H, W, K_, stride_);
  else
    kernels::avgpool_forward(y.data(), x.data(), N * C, H, W, K_, stride_);
  x_shape_ = x.shape();
}

void Pool2d::backward(Tensor* dx, const Tensor& dy) {
  if (x_shape_.empty()) throw Error(type() + ": backward called before forward");
  const std::int64_t N = x_shape_[0], C = x_shape_[1], H = x_shape_[2], W = x_shape_[3];
  const std::int64_t OH = (H - K_) / stride_ + 1, OW = (W - K_) / stride_ + 1;
  if (!dy.has_shape({N, C, OH, OW}))
    throw Error(type() + ": gradient " + shape_str(dy.shape()) + " does not match its output");
  if (!dx) return;
  dx->resize(x_shape_);
  if (kind_ == Kind::max)
    kernels::maxpool_backward(dx->data(), dy.data(), argmax_.data(), N * C, H, W, K_, stride_);
  else
    kernels::avgpool_backward(dx->data(), dy.data(), N * C, H, W, K_, stride_);
}

Shape GlobalAvgPool::output_shape(const Shape& input) const {
  require_nchw("global_avgpool", input);
  return {input[0], 1, 1};
}

void GlobalAvgPool::forward(Tensor& y, const Tensor& x, Mode /*mode*/) {
  if (x.rank() != 4) throw Error("global_avgpool: expects input (N, C, H, W), got " + shape_str(x.shape()));
  const std::int64_t NC = x.dim(0) * x.dim(1), S = x.dim(2) * x.dim(3);
  y.resize({x.dim(0), x.dim(1), 1, 1});
  for (std::int64_t i = 0; i < NC; ++i) {
    double sum = 0.0;
    for (std::int64_t s = 0; s < S; ++s) sum += x[i * S + s];
    y[i] = static_cast<float>(sum / static_cast<double>(S));
  }
  x_shape_ = x.shape();
}

void GlobalAvgPool::backward(Tensor* dx, const Tensor& dy) {
  if (x_shape_.empty()) throw Error("global_avgpool: backward called before forward");
  if (!dy.has_shape({x_shape_[0], x_shape_[1], 1, 1}))
    throw Error("global_avgpool: gradient " + shape_str(dy.shape()) + " does not match its output");
  if (!dx) return;
  dx->resize(x_shape_);
  const std::int64_t NC = x_shape_[0] * x_shape_[1], S = x_shape_[2] * x_shape_[3];
  for (std::int64_t i = 0; i < NC; ++i)
    std::fill(dx->data() + i * S, dx->data() + (i + 1) * S, dy[i] / static_cast<float>(S));
}

Shape Flatten::output_shape(const Shape& input) const {
  if (input.empty()) throw Error("flatten: empty input shape");
  return {numel(input)};
}

void Flatten::forward(Tensor& y, const Tensor& x, Mode /*mode*/) {
  if (x.rank() < 2) throw Error("flatten: expects a batch (N, ...), got " + shape_str(x.shape()));
  y.resize({x.dim(0), x.size() / std::max<std::int64_t>(x.dim(0), 1)});
  std::copy(x.data(), x.data() + x.size(), y.data());
  x_shape_ = x.shape();
}

void Flatten::backward(Tensor* dx, const Tensor& dy) {
  if (x_shape_.empty()) throw Error("flatten: backward called before forward");
  if (dy.size() != numel(x_shape_))
    throw Error("flatten: gradient " + shape_str(dy.shape()) + " does not match its output");
  if (!dx) return;
  dx->resize(x_shape_);
  std::copy(dy.data(), dy.data() + dy.size(), dx->data());
}

Dropout::Dropout(float p) : p_(p) {
  if (!(p_ >= 0.0f && p_ < 1.0f)) throw Error("dropout: p must be in [0, 1)");
}

void Dropout::forward(Tensor& y, const Tensor& x, Mode mode) {
  y.resize(x.shape());
  if (mode != Mode::train) {
    std::copy(x.data(), x.data() + x.size(), y.data());
    return;
  }
  const float keep_scale = 1.0f / (1.0f - p_);
  const std::int64_t N = x.shape().empty() ? 0 : x.dim(0);
  const std::int64_t per_example = N > 0 ? x.size() / N : 0;
  if (share_total_ >= 0) rng_.discard(static_cast<std::uint64_t>(share_begin_ * per_example));
  scale_.resize(static_cast<std::size_t>(x.size()));
  for (std::int64_t i = 0; i < x.size(); ++i) {
    scale_[static_cast<std::size_t>(i)] = rng_.uniform() < p_ ? 0.0f : keep_scale;
    y[i] = x[i] * scale_[static_cast<std::size_t>(i)];
  }
  if (share_total_ >= 0) rng_.discard(static_cast<std::uint64_t>((share_total_ - share_begin_ - N) * per_example));
}

void Dropout::backward(Tensor* dx, const Tensor& dy) {
  if (static_cast<std::int64_t>(scale_.size()) != dy.size())
    throw Error("dropout: backward needs a preceding forward in training mode of the same size");
  if (!dx) return;
  dx->resize(dy.shape());
  for (std::int64_t i = 0; i < dy.size(); ++i) (*dx)[i] = dy[i] * scale_[static_cast<std::size_t>(i)];
}

}  // namespace bnorm

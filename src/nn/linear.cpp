#include "bnorm/nn/linear.hpp"

#include <cmath>

#include "bnorm/error.hpp"
#include "bnorm/kernels/gemm.hpp"

namespace bnorm {

Linear::Linear(std::int64_t in_features, std::int64_t out_features, bool bias)
    : in_(in_features), out_(out_features), has_bias_(bias) {
  if (in_ <= 0 || out_ <= 0 || in_ > (1 << 24) || out_ > (1 << 24))
    throw Error("linear: sizes must be in 1..16777216, got in=" + std::to_string(in_) + " out=" + std::to_string(out_));
}

nlohmann::json Linear::config() const {
  return {{"type", "linear"}, {"in_features", in_}, {"out_features", out_}, {"bias", has_bias_}};
}

Shape Linear::output_shape(const Shape& input) const {
  if (input.size() != 1 || input[0] != in_)
    throw Error("linear: expects " + std::to_string(in_) + " features per example, got " + shape_str(input));
  return {out_};
}

std::vector<ParamSlot> Linear::param_slots() const {
  std::vector<ParamSlot> slots{{"weight", {out_, in_}}};
  if (has_bias_) slots.push_back({"bias", {out_}});
  return slots;
}

void Linear::bind_parameters(std::span<float> params, std::span<float> grads) {
  weight_ = params.data();
  dweight_ = grads.data();
  if (has_bias_) {
    bias_ = params.data() + out_ * in_;
    dbias_ = grads.data() + out_ * in_;
  }
}

void Linear::init_parameters(Rng& rng) {
  const double std = std::sqrt(2.0 / static_cast<double>(in_));
  for (std::int64_t i = 0; i < out_ * in_; ++i) weight_[i] = static_cast<float>(std * rng.normal());
  if (has_bias_)
    for (std::int64_t i = 0; i < out_; ++i) bias_[i] = 0.0f;
}

std::vector<StateEntry> Linear::state() {
  std::vector<StateEntry> s{{"weight", {out_, in_}, StateEntry::DType::f32, weight_}};
  if (has_bias_) s.push_back({"bias", {out_}, StateEntry::DType::f32, bias_});
  return s;
}

void Linear::forward(Tensor& y, const Tensor& x, Mode /*mode*/) {
  if (x.rank() != 2 || x.dim(1) != in_)
    throw Error("linear: expects input (N, " + std::to_string(in_) + "), got " + shape_str(x.shape()));
  const std::int64_t N = x.dim(0);
  y.resize({N, out_});
  kernels::gemm_abt(y.data(), x.data(), weight_, N, out_, in_);  // y = x · W^T
  if (has_bias_) kernels::add_row_bias(y.data(), bias_, N, out_);
  x_ = &x;
}

void Linear::backward(Tensor* dx, const Tensor& dy) {
  if (!x_) throw Error("linear: backward called before forward");
  const std::int64_t N = x_->dim(0);
  if (!dy.has_shape({N, out_}))
    throw Error("linear: gradient " + shape_str(dy.shape()) + " does not match output (" + std::to_string(N) + ", " +
                std::to_string(out_) + ")");
  kernels::gemm_atb(dweight_, dy.data(), x_->data(), out_, in_, N);  // dW = dy^T · x
  if (has_bias_) kernels::sum_rows(dbias_, dy.data(), N, out_);      // db = Σ_n dy
  if (dx) {
    dx->resize({N, in_});
    kernels::gemm_ab(dx->data(), dy.data(), weight_, N, in_, out_);  // dx = dy · W
  }
}

}  // namespace bnorm

#include "bnorm/nn/conv2d.hpp"

#include <algorithm>
#include <cmath>

#include "bnorm/error.hpp"
#include "bnorm/kernels/gemm.hpp"

namespace bnorm {
namespace {

// Below this many values the layout changes run on one thread.
constexpr std::int64_t kParallelMin = std::int64_t{1} << 16;

}  // namespace

Conv2d::Conv2d(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel_h, std::int64_t kernel_w,
               std::int64_t stride, std::int64_t padding, bool bias)
    : C_(in_channels), O_(out_channels), KH_(kernel_h), KW_(kernel_w), stride_(stride), pad_(padding), has_bias_(bias) {
  if (C_ <= 0 || O_ <= 0 || C_ > 65536 || O_ > 65536) throw Error("conv2d: channels must be in 1..65536");
  if (KH_ <= 0 || KW_ <= 0 || KH_ > 64 || KW_ > 64) throw Error("conv2d: kernel size must be in 1..64");
  if (stride_ <= 0 || stride_ > 64) throw Error("conv2d: stride must be in 1..64");
  if (pad_ < 0 || pad_ > 64) throw Error("conv2d: padding must be in 0..64");
}

nlohmann::json Conv2d::config() const {
  return {{"type", "conv2d"},  {"in_channels", C_}, {"out_channels", O_}, {"kernel_size", {KH_, KW_}},
          {"stride", stride_}, {"padding", pad_},   {"bias", has_bias_}};
}

kernels::ConvGeometry Conv2d::geometry(const Shape& x_shape) const {
  return {C_, x_shape[2], x_shape[3], KH_, KW_, stride_, pad_};
}

Shape Conv2d::output_shape(const Shape& input) const {
  if (input.size() != 3 || input[0] != C_)
    throw Error("conv2d: expects " + std::to_string(C_) + " channels per example (C, H, W), got " + shape_str(input));
  const kernels::ConvGeometry g{C_, input[1], input[2], KH_, KW_, stride_, pad_};
  if (input[1] + 2 * pad_ < KH_ || input[2] + 2 * pad_ < KW_)
    throw Error("conv2d: kernel " + std::to_string(KH_) + "x" + std::to_string(KW_) +
                " is larger than the padded input " + shape_str(input));
  return {O_, g.out_h(), g.out_w()};
}

std::vector<ParamSlot> Conv2d::param_slots() const {
  std::vector<ParamSlot> slots{{"weight", {O_, C_, KH_, KW_}}};
  if (has_bias_) slots.push_back({"bias", {O_}});
  return slots;
}

void Conv2d::bind_parameters(std::span<float> params, std::span<float> grads) {
  const std::int64_t nw = O_ * C_ * KH_ * KW_;
  weight_ = params.data();
  dweight_ = grads.data();
  if (has_bias_) {
    bias_ = params.data() + nw;
    dbias_ = grads.data() + nw;
  }
}

void Conv2d::init_parameters(Rng& rng) {
  const std::int64_t fan_in = C_ * KH_ * KW_;
  const double std = std::sqrt(2.0 / static_cast<double>(fan_in));
  for (std::int64_t i = 0; i < O_ * fan_in; ++i) weight_[i] = static_cast<float>(std * rng.normal());
  if (has_bias_) std::fill(bias_, bias_ + O_, 0.0f);
}

std::vector<StateEntry> Conv2d::state() {
  std::vector<StateEntry> s{{"weight", {O_, C_, KH_, KW_}, StateEntry::DType::f32, weight_}};
  if (has_bias_) s.push_back({"bias", {O_}, StateEntry::DType::f32, bias_});
  return s;
}

void Conv2d::forward(Tensor& y, const Tensor& x, Mode /*mode*/) {
  if (x.rank() != 4) throw Error("conv2d: expects input (N, C, H, W), got " + shape_str(x.shape()));
  const kernels::ConvGeometry g = geometry(x.shape());
  if (x.dim(1) != C_ || x.dim(2) + 2 * pad_ < KH_ || x.dim(3) + 2 * pad_ < KW_)
    output_shape({x.dim(1), x.dim(2), x.dim(3)});  // throws, naming the problem
  const std::int64_t N = x.dim(0), OH = g.out_h(), OW = g.out_w(), P = OH * OW, NP = N * P;
  const std::int64_t CKK = g.patch();
  cols_.resize(static_cast<std::size_t>(CKK * NP));
  y_t_.resize(static_cast<std::size_t>(O_ * NP));
  kernels::im2col(cols_.data(), x.data(), N, g);
  kernels::gemm_ab(y_t_.data(), weight_, cols_.data(), O_, NP, CKK);  // (O, N·P) = W (O, CKK) · col (CKK, N·P)
  // (O, N, P) → (N, O, P), adding the bias on the way.
  y.resize({N, O_, OH, OW});
#pragma omp parallel for schedule(static) if (O_ * NP >= kParallelMin)
  for (std::int64_t o = 0; o < O_; ++o) {
    const float b = has_bias_ ? bias_[o] : 0.0f;
    for (std::int64_t n = 0; n < N; ++n) {
      const float* src = y_t_.data() + o * NP + n * P;
      float* dst = y.data() + (n * O_ + o) * P;
      for (std::int64_t p = 0; p < P; ++p) dst[p] = src[p] + b;
    }
  }
  x_shape_ = x.shape();
}

void Conv2d::backward(Tensor* dx, const Tensor& dy) {
  if (x_shape_.empty()) throw Error("conv2d: backward called before forward");
  const kernels::ConvGeometry g = geometry(x_shape_);
  const std::int64_t N = x_shape_[0], OH = g.out_h(), OW = g.out_w(), P = OH * OW, NP = N * P, CKK = g.patch();
  if (!dy.has_shape({N, O_, OH, OW}))
    throw Error("conv2d: gradient " + shape_str(dy.shape()) + " does not match output " + shape_str({N, O_, OH, OW}));
    // dy (N, O, P) → (O, N·P), the layout of the forward GEMM's output; dbias on the way.
#pragma omp parallel for schedule(static) if (O_ * NP >= kParallelMin)
  for (std::int64_t o = 0; o < O_; ++o) {
    double sum = 0.0;
    for (std::int64_t n = 0; n < N; ++n) {
      const float* src = dy.data() + (n * O_ + o) * P;
      float* dst = y_t_.data() + o * NP + n * P;
      for (std::int64_t p = 0; p < P; ++p) {
        dst[p] = src[p];
        sum += src[p];
      }
    }
    if (has_bias_) dbias_[o] = static_cast<float>(sum);
  }
  kernels::gemm_abt(dweight_, y_t_.data(), cols_.data(), O_, CKK, NP);  // dW = dyᵀ-layout · colᵀ
  if (!dx) return;
  dcol_.resize(static_cast<std::size_t>(CKK * NP));
  kernels::gemm_atb(dcol_.data(), weight_, y_t_.data(), CKK, NP, O_);  // dcol (CKK, N·P) = Wᵀ · dy
  dx->resize(x_shape_);
  kernels::col2im(dx->data(), dcol_.data(), N, g);
}

}  // namespace bnorm

#include "bnorm/nn/conv2d.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "bnorm/error.hpp"
#include "bnorm/kernels/gemm.hpp"
#include "bnorm/kernels/small_gemm.hpp"
#include "bnorm/kernels/winograd.hpp"

#if defined(BNORM_CONV_WITH_ONEDNN)
#include "../kernels/conv_onednn.hpp"
#else
namespace bnorm::kernels {
class OnednnConv {};  // never made in this build; complete only so that Conv2d can be destroyed
}  // namespace bnorm::kernels
#endif

namespace bnorm {
namespace {

// Below this many im2col values a batch runs on one thread.
constexpr std::int64_t kParallelMin = std::int64_t{1} << 16;

// oneDNN's fast convolutions keep x and dx in blocks of 8 channels (AVX2) or
// 16 (AVX-512), so with fewer input channels most of a block is padding, and
// its backward passes lost to im2col badly: the default CNN's first layer
// (1 channel) took 16 ms for its weight gradient where im2col took 1.3, and
// oneDNN's alternative for plain layouts (its own im2col + GEMM) 250 ms on 2
// threads (bench/conv_pair, docs/convolutions.md). Such layers stay on im2col.
// A test build may lower it (-DBNORM_CONV_ONEDNN_MIN_CHANNELS=1) so that the
// gradient checks and golden tests, whose layers are narrow, run on oneDNN.
#ifndef BNORM_CONV_ONEDNN_MIN_CHANNELS
#define BNORM_CONV_ONEDNN_MIN_CHANNELS 8
#endif
constexpr std::int64_t kOnednnMinChannels = BNORM_CONV_ONEDNN_MIN_CHANNELS;

// Winograd's products have K = C (forward) or O (input gradient): with fewer
// channels they are too thin to run at speed, and the transforms, which
// cost the same per channel whatever the filter count, outweigh the
// multiplications they save. The default CNN's first layer (1 channel)
// stays on im2col.
constexpr std::int64_t kWinogradMinChannels = 8;

bool winograd_kernel(std::int64_t kernel_h, std::int64_t kernel_w, std::int64_t stride) {
  return kernels::winograd_applies({1, 1, 1, kernel_h, kernel_w, stride, 0});
}

Conv2d::ConvPath default_path(std::int64_t C, std::int64_t KH, std::int64_t KW, std::int64_t stride) {
  if (Conv2d::onednn_built() && C >= kOnednnMinChannels) return Conv2d::ConvPath::onednn;
  if (winograd_kernel(KH, KW, stride) && C >= kWinogradMinChannels) return Conv2d::ConvPath::winograd;
  return Conv2d::ConvPath::im2col;
}

// Whether im2col's per-example products go through the packing-free kernels:
// with a patch of a few values (the default CNN's first layer: 1 channel,
// K = 9) a BLAS spends longer packing and zeroing than multiplying. They
// need whole vectors along P.
bool small_products(const kernels::ConvGeometry& g) {
  constexpr std::int64_t kSmallPatch = 32;
  return g.patch() <= kSmallPatch && g.out_h() * g.out_w() % kernels::kSmallGemmAlign == 0;
}

// The calling thread's share of O output channels: one contiguous range per
// thread, in thread order (possibly empty).
struct Rows {
  std::int64_t first, count;
};
Rows thread_rows(std::int64_t O) {
  const std::int64_t t = omp_get_thread_num(), threads = omp_get_num_threads();
  const std::int64_t first = O * t / threads;
  return {first, O * (t + 1) / threads - first};
}

}  // namespace

Conv2d::Conv2d(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel_h, std::int64_t kernel_w,
               std::int64_t stride, std::int64_t padding, bool bias)
    : C_(in_channels),
      O_(out_channels),
      KH_(kernel_h),
      KW_(kernel_w),
      stride_(stride),
      pad_(padding),
      has_bias_(bias),
      path_(default_path(in_channels, kernel_h, kernel_w, stride)) {
  if (C_ <= 0 || O_ <= 0 || C_ > 65536 || O_ > 65536) throw Error("conv2d: channels must be in 1..65536");
  if (KH_ <= 0 || KW_ <= 0 || KH_ > 64 || KW_ > 64) throw Error("conv2d: kernel size must be in 1..64");
  if (stride_ <= 0 || stride_ > 64) throw Error("conv2d: stride must be in 1..64");
  if (pad_ < 0 || pad_ > 64) throw Error("conv2d: padding must be in 0..64");
}

Conv2d::~Conv2d() = default;

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

bool Conv2d::onednn_built() {
#if defined(BNORM_CONV_WITH_ONEDNN)
  return true;
#else
  return false;
#endif
}

void Conv2d::set_path(ConvPath path) {
  if (path == ConvPath::onednn && !onednn_built())
    throw Error("conv2d: this build has no oneDNN convolutions (configure with -DBNORM_CONV=onednn)");
  if (path == ConvPath::winograd && !winograd_kernel(KH_, KW_, stride_))
    throw Error("conv2d: Winograd's F(2x2, 3x3) needs a 3x3 kernel with stride 1, not " + std::to_string(KH_) + "x" +
                std::to_string(KW_) + " with stride " + std::to_string(stride_));
  path_ = path;
  onednn_.reset();
}

void Conv2d::forward(Tensor& y, const Tensor& x, Mode /*mode*/) {
  if (x.rank() != 4) throw Error("conv2d: expects input (N, C, H, W), got " + shape_str(x.shape()));
  const kernels::ConvGeometry g = geometry(x.shape());
  if (x.dim(1) != C_ || x.dim(2) + 2 * pad_ < KH_ || x.dim(3) + 2 * pad_ < KW_)
    output_shape({x.dim(1), x.dim(2), x.dim(3)});  // throws, naming the problem
  y.resize({x.dim(0), O_, g.out_h(), g.out_w()});
  x_shape_ = x.shape();
  if (path_ == ConvPath::onednn)
    forward_onednn(y, x, g);
  else if (path_ == ConvPath::winograd)
    forward_winograd(y, x, g);
  else
    forward_im2col(y, x, g);
}

void Conv2d::backward(Tensor* dx, const Tensor& dy) {
  if (x_shape_.empty()) throw Error("conv2d: backward called before forward");
  const kernels::ConvGeometry g = geometry(x_shape_);
  const std::int64_t N = x_shape_[0], OH = g.out_h(), OW = g.out_w(), P = OH * OW;
  if (!dy.has_shape({N, O_, OH, OW}))
    throw Error("conv2d: gradient " + shape_str(dy.shape()) + " does not match output " + shape_str({N, O_, OH, OW}));
  if (has_bias_) {
#pragma omp parallel for schedule(static) if (N * O_ * P >= kParallelMin)
    for (std::int64_t o = 0; o < O_; ++o) {
      double sum = 0.0;
      for (std::int64_t n = 0; n < N; ++n) {
        const float* dyr = dy.data() + (n * O_ + o) * P;
        for (std::int64_t p = 0; p < P; ++p) sum += dyr[p];
      }
      dbias_[o] = static_cast<float>(sum);
    }
  }
  if (dx) dx->resize(x_shape_);
  if (path_ == ConvPath::onednn)
    backward_onednn(dx, dy);
  else if (path_ == ConvPath::winograd)
    backward_winograd(dx, dy, g);
  else
    backward_im2col(dx, dy, g);
}

// oneDNN's primitives are called outside any parallel region: each runs on
// bnorm's OpenMP threads itself.
#if defined(BNORM_CONV_WITH_ONEDNN)
void Conv2d::forward_onednn(Tensor& y, const Tensor& x, const kernels::ConvGeometry& g) {
  // Made again only when the batch size or thread count changes (a last,
  // smaller batch; set_threads), so training steps make no primitives.
  const std::int64_t N = x.dim(0);
  if (!onednn_ || !onednn_->fits(N, omp_get_max_threads()))
    onednn_ = std::make_unique<kernels::OnednnConv>(N, g, O_, has_bias_);
  onednn_->forward(y.data(), x.data(), weight_, has_bias_ ? bias_ : nullptr);
  x_ = x.data();
}

void Conv2d::backward_onednn(Tensor* dx, const Tensor& dy) {
  onednn_->backward_weights(dweight_, x_, dy.data());
  if (dx) onednn_->backward_data(dx->data(), dy.data(), weight_);
}
#else
// Unreachable: set_path refuses ConvPath::onednn in this build, and says why.
void Conv2d::forward_onednn(Tensor&, const Tensor&, const kernels::ConvGeometry&) { set_path(ConvPath::onednn); }
void Conv2d::backward_onednn(Tensor*, const Tensor&) { set_path(ConvPath::onednn); }
#endif

// Each thread takes whole examples: its im2col columns are written and at
// once multiplied while still in its cache, and the GEMM writes y in NCHW
// directly. A single GEMM over the whole batch needed its output reordered
// from (O, N, P) to (N, O, P), and dy back again: two extra passes.
//
// With the packing-free products (a patch of a few values: a first layer),
// the columns are made first, by example, and then each thread writes its
// own range of output channels for the whole batch, as the batch norm after
// it reads them (a contiguous range of channels per thread). Written by
// example, half of each example's output was in the other core's cache when
// it was overwritten, and the layer ran slower on 2 threads than on 1 when
// the host put the cores far apart (default CNN, Zen 2, us per example: 20
// on 2 threads against 17 on 1; by channel range 16, and the batch norm
// after it 9.7 -> 8.5).
void Conv2d::forward_im2col(Tensor& y, const Tensor& x, const kernels::ConvGeometry& g) {
  const std::int64_t N = x.dim(0), P = g.out_h() * g.out_w(), CKK = g.patch();
  const bool small = small_products(g);
  const std::int64_t plane_in = C_ * g.H * g.W;
  cols_.resize(static_cast<std::size_t>(N * CKK * P));
  if (small && N > 1 && N * CKK * P >= kParallelMin) {
#pragma omp parallel
    {
#pragma omp for schedule(static)
      for (std::int64_t n = 0; n < N; ++n) kernels::im2col(cols_.data() + n * CKK * P, x.data() + n * plane_in, 1, g);
      const Rows rows = thread_rows(O_);
      for (std::int64_t n = 0; n < N; ++n) {
        float* yn = y.data() + (n * O_ + rows.first) * P;
        kernels::small_gemm_ab(yn, weight_ + rows.first * CKK, cols_.data() + n * CKK * P, rows.count, P, CKK);
        if (has_bias_)
          for (std::int64_t o = 0; o < rows.count; ++o)
            for (std::int64_t p = 0; p < P; ++p) yn[o * P + p] += bias_[rows.first + o];
      }
    }
    return;
  }
#pragma omp parallel for schedule(static) if (N > 1 && N * CKK * P >= kParallelMin)
  for (std::int64_t n = 0; n < N; ++n) {
    float* col = cols_.data() + n * CKK * P;
    float* yn = y.data() + n * O_ * P;
    kernels::im2col(col, x.data() + n * plane_in, 1, g);
    if (small)
      kernels::small_gemm_ab(yn, weight_, col, O_, P, CKK);  // y_n (O, P) = W (O, CKK) · col_n (CKK, P)
    else
      kernels::gemm_ab(yn, weight_, col, O_, P, CKK);
    if (has_bias_)
      for (std::int64_t o = 0; o < O_; ++o)
        for (std::int64_t p = 0; p < P; ++p) yn[o * P + p] += bias_[o];
  }
}

void Conv2d::backward_im2col(Tensor* dx, const Tensor& dy, const kernels::ConvGeometry& g) {
  const std::int64_t N = x_shape_[0], P = g.out_h() * g.out_w(), CKK = g.patch();
  const bool small = small_products(g);
  const std::int64_t plane_in = C_ * g.H * g.W, nw = O_ * CKK;
  // Each thread sums the weight gradient of its examples into its own
  // buffer; the buffers are added in thread order at the end.
  const bool parallel = N > 1 && N * CKK * P >= kParallelMin;
  const int threads = parallel ? omp_get_max_threads() : 1;
  dweight_parts_.resize(static_cast<std::size_t>(threads * nw));
  if (dx) dcol_.resize(static_cast<std::size_t>(threads * CKK * P));
  int used = 1;
#pragma omp parallel num_threads(threads) if (parallel)
  {
    const int t = omp_get_thread_num();
#pragma omp single
    used = omp_get_num_threads();
    float* dw = dweight_parts_.data() + t * nw;
    std::fill(dw, dw + nw, 0.0f);
#pragma omp for schedule(static)
    for (std::int64_t n = 0; n < N; ++n) {
      const float* dyn = dy.data() + n * O_ * P;
      const float* col = cols_.data() + n * CKK * P;
      if (small)
        kernels::small_gemm_abt_add(dw, dyn, col, O_, CKK, P);  // dW += dy_n (O, P) · col_nᵀ (P, CKK)
      else
        kernels::gemm_abt_add(dw, dyn, col, O_, CKK, P);
      if (!dx) continue;
      float* dcol = dcol_.data() + t * CKK * P;
      if (small)
        kernels::small_gemm_atb(dcol, weight_, dyn, CKK, P, O_);  // dcol_n (CKK, P) = Wᵀ · dy_n
      else
        kernels::gemm_atb(dcol, weight_, dyn, CKK, P, O_);
      kernels::col2im(dx->data() + n * plane_in, dcol, 1, g);
    }
  }
  std::copy(dweight_parts_.data(), dweight_parts_.data() + nw, dweight_);
  for (int t = 1; t < used; ++t)
    for (std::int64_t i = 0; i < nw; ++i) dweight_[i] += dweight_parts_[static_cast<std::size_t>(t * nw + i)];
}

namespace {

// How the Winograd path splits a batch of N examples, the same in forward and
// backward: groups of `per_group` examples, each taken through all its steps
// on one thread, and the sizes of the per-group and per-thread buffers.
//
// A group holds enough examples for kGroupTiles tiles, where the
// weight-gradient product (a sum over the group's tiles) runs at speed
// (bench/winograd_steps, default CNN's second layer, 1 thread: 38 GFLOP/s
// over one example's 49 tiles, 46–50 over 2 to 8 examples, the other two
// products 68–73 throughout; in the layer, bench/conv_pair, groups of 8 beat
// 1, 2 and 4), and no more than every thread gets a group.
struct WinogradGroups {
  static constexpr std::int64_t kGroupTiles = 384;
  std::int64_t N, C, O, tiles, per_group, groups;
  std::int64_t u_size;          // one filter transform (16, O, C), with its position stride
  std::int64_t v_size, m_size;  // one group's (16, C, T) and (16, O, T), for a whole group
  bool parallel;
  int threads;

  WinogradGroups(std::int64_t N_, std::int64_t C_, std::int64_t O_, const kernels::ConvGeometry& g)
      : N(N_), C(C_), O(O_), tiles(kernels::winograd_tiles(g)) {
    const std::int64_t max_threads = omp_get_max_threads();
    per_group =
        std::max<std::int64_t>(1, std::min((kGroupTiles + tiles - 1) / tiles, (N + max_threads - 1) / max_threads));
    groups = (N + per_group - 1) / per_group;
    const std::int64_t ld = kernels::winograd_row_length(per_group * tiles);
    u_size = kernels::kWinogradPositions * kernels::winograd_position_stride(O, C);
    v_size = kernels::kWinogradPositions * kernels::winograd_position_stride(C, ld);
    m_size = kernels::kWinogradPositions * kernels::winograd_position_stride(O, ld);
    parallel = groups > 1 && N * C * tiles * kernels::kWinogradPositions >= kParallelMin;
    threads = parallel ? static_cast<int>(max_threads) : 1;
  }

  // Group gi: its first example, its example count, and the row length and
  // position strides of its matrices (a last, smaller group has shorter rows).
  struct Group {
    std::int64_t n0, count, ld, su, sv, sm;
  };
  Group group(std::int64_t gi) const {
    const std::int64_t n0 = gi * per_group, count = std::min(per_group, N - n0);
    const std::int64_t ld = kernels::winograd_row_length(count * tiles);
    return {n0,
            count,
            ld,
            kernels::winograd_position_stride(O, C),
            kernels::winograd_position_stride(C, ld),
            kernels::winograd_position_stride(O, ld)};
  }
};

}  // namespace

void Conv2d::forward_winograd(Tensor& y, const Tensor& x, const kernels::ConvGeometry& g) {
  const WinogradGroups w(x.dim(0), C_, O_, g);
  const std::int64_t plane_in = C_ * g.H * g.W, plane_out = O_ * g.out_h() * g.out_w();
  wino_u_.resize(static_cast<std::size_t>(w.u_size));
  wino_v_.resize(static_cast<std::size_t>(w.groups * w.v_size));
  wino_m_.resize(static_cast<std::size_t>(w.threads * w.m_size));
  const float* u = wino_u_.data();
  kernels::winograd_filter(wino_u_.data(), weight_, O_, C_);
#pragma omp parallel num_threads(w.threads) if (w.parallel)
  {
    float* m = wino_m_.data() + omp_get_thread_num() * w.m_size;
#pragma omp for schedule(static)
    for (std::int64_t gi = 0; gi < w.groups; ++gi) {
      const WinogradGroups::Group b = w.group(gi);
      float* v = wino_v_.data() + gi * w.v_size;
      kernels::winograd_input(v, x.data() + b.n0 * plane_in, b.count, g);
      for (std::int64_t xi = 0; xi < kernels::kWinogradPositions; ++xi)
        kernels::small_gemm_ab(m + xi * b.sm, u + xi * b.su, v + xi * b.sv, O_, b.ld, C_);  // M = U · V
      kernels::winograd_output(y.data() + b.n0 * plane_out, m, has_bias_ ? bias_ : nullptr, b.count, O_, g);
    }
  }
}

void Conv2d::backward_winograd(Tensor* dx, const Tensor& dy, const kernels::ConvGeometry& g) {
  const WinogradGroups w(x_shape_[0], C_, O_, g);
  const std::int64_t plane_in = C_ * g.H * g.W, plane_out = O_ * g.out_h() * g.out_w();
  wino_m_.resize(static_cast<std::size_t>(w.threads * w.m_size));
  wino_du_.resize(static_cast<std::size_t>(w.threads * w.u_size));
  if (dx) wino_dv_.resize(static_cast<std::size_t>(w.threads * w.v_size));
  const float* u = wino_u_.data();
  int used = 1;
#pragma omp parallel num_threads(w.threads) if (w.parallel)
  {
    const int t = omp_get_thread_num();
#pragma omp single
    used = omp_get_num_threads();
    float *dm = wino_m_.data() + t * w.m_size, *du = wino_du_.data() + t * w.u_size;
    float* dv = dx ? wino_dv_.data() + t * w.v_size : nullptr;
    std::fill(du, du + w.u_size, 0.0f);
#pragma omp for schedule(static)
    for (std::int64_t gi = 0; gi < w.groups; ++gi) {
      const WinogradGroups::Group b = w.group(gi);
      const float* v = wino_v_.data() + gi * w.v_size;
      kernels::winograd_output_adjoint(dm, dy.data() + b.n0 * plane_out, b.count, O_, g);
      for (std::int64_t xi = 0; xi < kernels::kWinogradPositions; ++xi) {
        kernels::small_gemm_abt_add(du + xi * b.su, dm + xi * b.sm, v + xi * b.sv, O_, C_, b.ld);  // dU += dM · Vᵀ
        if (dx) kernels::small_gemm_atb(dv + xi * b.sv, u + xi * b.su, dm + xi * b.sm, C_, b.ld, O_);  // dV = Uᵀ · dM
      }
      if (dx) kernels::winograd_input_adjoint(dx->data() + b.n0 * plane_in, dv, b.count, g);
    }
  }
  // Each thread's share of dU, added in thread order.
  float* du = wino_du_.data();
  for (int t = 1; t < used; ++t)
    for (std::int64_t i = 0; i < w.u_size; ++i) du[i] += du[t * w.u_size + i];
  kernels::winograd_filter_adjoint(dweight_, du, O_, C_);
}

}  // namespace bnorm

// What batch norm means: modes, running estimates, validation. The arithmetic
// is in kernels/batchnorm.cpp.
#include "bnorm/nn/batchnorm.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "bnorm/error.hpp"
#include "bnorm/kernels/batchnorm.hpp"
#include "bnorm/nn/batch_stats_sync.hpp"

namespace bnorm {
namespace {

struct Dims {
  std::int64_t N, C, S;
};

// (N, C) or (N, C, H, W) → N, C and S = H*W.
Dims batch_dims(const Shape& shape, std::int64_t C) {
  if ((shape.size() != 2 && shape.size() != 4) || shape[1] != C)
    throw Error("batchnorm: expects input (N, " + std::to_string(C) + ") or (N, " + std::to_string(C) +
                ", H, W), got " + shape_str(shape));
  const std::int64_t S = shape.size() == 4 ? shape[2] * shape[3] : 1;
  return {shape[0], C, S};
}

void check_renorm(const BatchRenormOptions& renorm, bool track_running_stats) {
  if (!renorm.enabled) return;
  if (!track_running_stats)
    throw Error("batchnorm: batch renormalization corrects towards the running statistics, so it must keep them");
  if (!(renorm.rmax >= 1.0f) || !std::isfinite(renorm.rmax))
    throw Error("batchnorm: renorm rmax must be a finite number >= 1");
  if (!(renorm.dmax >= 0.0f) || !std::isfinite(renorm.dmax))
    throw Error("batchnorm: renorm dmax must be a finite number >= 0");
  if (renorm.warmup_steps < 0 || renorm.warmup_steps > (std::int64_t{1} << 40))
    throw Error("batchnorm: renorm warm-up steps must be in 0..2^40");
}

}  // namespace

const char* bn_freeze_name(BnFreeze f) {
  switch (f) {
    case BnFreeze::stats:
      return "stats";
    case BnFreeze::all:
      return "all";
    case BnFreeze::none:
      break;
  }
  return "none";
}

BnFreeze parse_bn_freeze(const std::string& text) {
  if (text == "none") return BnFreeze::none;
  if (text == "stats") return BnFreeze::stats;
  if (text == "all") return BnFreeze::all;
  throw Error("batchnorm: freeze must be none, stats or all, got '" + text + "'");
}

RenormLimits renorm_limits(const BatchRenormOptions& options, std::int64_t step) {
  const double W = static_cast<double>(options.warmup_steps);
  const double plain_until = W / 8, dmax_at = 5 * W / 8;  // the paper's 5k, 25k and 40k steps
  const auto ramp = [&](double end) {
    if (static_cast<double>(step) >= end) return 1.0;
    return std::max(0.0, (static_cast<double>(step) - plain_until) / (end - plain_until));
  };
  return {1.0 + (options.rmax - 1.0) * ramp(W), options.dmax * ramp(dmax_at)};
}

double* BatchNorm::work() {
  work_.resize(static_cast<std::size_t>(kernels::batchnorm_work_doubles(C_)));  // sized once, then kept
  return work_.data();
}

BatchNorm::BatchNorm(std::int64_t num_features, BatchNormOptions options) : C_(num_features), options_(options) {
  if (C_ <= 0 || C_ > (1 << 24)) throw Error("batchnorm: num_features must be in 1..16777216");
  if (!(options_.eps > 0.0f) || !std::isfinite(options_.eps))
    throw Error("batchnorm: eps must be a positive finite number");
  if (options_.momentum && !(*options_.momentum >= 0.0f && *options_.momentum <= 1.0f))
    throw Error("batchnorm: momentum must be in [0, 1]");
  if (options_.freeze != BnFreeze::none && !options_.track_running_stats)
    throw Error("batchnorm: a frozen layer normalizes with its running statistics, so it must keep them");
  check_renorm(options_.renorm, options_.track_running_stats);
  if (options_.virtual_batch_size < 0 || options_.virtual_batch_size > (std::int64_t{1} << 30))
    throw Error("batchnorm: virtual batch size must be in 0..2^30 (0: the whole batch)");
  const auto Cs = static_cast<std::size_t>(C_);
  if (options_.track_running_stats) {
    running_mean_.assign(Cs, 0.0f);
    running_var_.assign(Cs, 1.0f);
  }
}

nlohmann::json BatchNorm::config() const {
  nlohmann::json momentum = nullptr;
  if (options_.momentum) momentum = *options_.momentum;
  nlohmann::json c = {{"type", "batchnorm"},
                      {"num_features", C_},
                      {"eps", options_.eps},
                      {"momentum", momentum},
                      {"track_running_stats", options_.track_running_stats},
                      {"unbiased_running_var", options_.unbiased_running_var}};
  // PyTorch's "affine" where it says it all, so that files of models with
  // both or neither stay as they were; "scale" and "center" otherwise.
  if (options_.scale == options_.center) {
    c["affine"] = options_.scale;
  } else {
    c["scale"] = options_.scale;
    c["center"] = options_.center;
  }
  // Absent unless frozen: files of unfrozen models stay as they were.
  if (options_.freeze != BnFreeze::none) c["freeze"] = bn_freeze_name(options_.freeze);
  // Likewise absent for plain batch norm.
  if (options_.renorm.enabled)
    c["renorm"] = {
        {"rmax", options_.renorm.rmax}, {"dmax", options_.renorm.dmax}, {"warmup_steps", options_.renorm.warmup_steps}};
  if (options_.virtual_batch_size > 0) c["virtual_batch_size"] = options_.virtual_batch_size;
  return c;
}

void BatchNorm::reset_running_stats() {
  std::fill(running_mean_.begin(), running_mean_.end(), 0.0f);
  std::fill(running_var_.begin(), running_var_.end(), 1.0f);
  num_batches_tracked_ = 0;
}

void BatchNorm::set_momentum(std::optional<float> momentum) {
  if (momentum && !(*momentum >= 0.0f && *momentum <= 1.0f)) throw Error("batchnorm: momentum must be in [0, 1]");
  options_.momentum = momentum;
}

void BatchNorm::set_freeze(BnFreeze freeze) {
  if (freeze != BnFreeze::none && !options_.track_running_stats)
    throw Error("batchnorm: a frozen layer normalizes with its running statistics, so it must keep them");
  options_.freeze = freeze;
  have_train_cache_ = false;  // a backward must follow a forward of the same kind
}

void BatchNorm::set_renorm(const BatchRenormOptions& renorm) {
  check_renorm(renorm, options_.track_running_stats);
  options_.renorm = renorm;
  have_train_cache_ = false;
}

Shape BatchNorm::output_shape(const Shape& input) const {
  if (input.empty() || input[0] != C_ || (input.size() != 1 && input.size() != 3))
    throw Error("batchnorm: expects " + std::to_string(C_) + " channels per example, got " + shape_str(input));
  return input;
}

std::vector<ParamSlot> BatchNorm::param_slots() const {
  std::vector<ParamSlot> slots;  // PyTorch calls gamma "weight", beta "bias"
  if (options_.scale) slots.push_back({"weight", {C_}});
  if (options_.center) slots.push_back({"bias", {C_}});
  return slots;
}

void BatchNorm::bind_parameters(std::span<float> params, std::span<float> grads) {
  std::size_t next = 0;  // gamma then beta, each only if learned
  if (options_.scale) {
    gamma_ = params.data();
    dgamma_ = grads.data();
    next = static_cast<std::size_t>(C_);
  }
  if (options_.center) {
    beta_ = params.data() + next;
    dbeta_ = grads.data() + next;
  }
}

void BatchNorm::init_parameters(Rng& /*rng*/) {
  if (gamma_) std::fill(gamma_, gamma_ + C_, 1.0f);
  if (beta_) std::fill(beta_, beta_ + C_, 0.0f);
}

std::vector<StateEntry> BatchNorm::state() {
  std::vector<StateEntry> s;
  if (gamma_) s.push_back({"weight", {C_}, StateEntry::DType::f32, gamma_});
  if (beta_) s.push_back({"bias", {C_}, StateEntry::DType::f32, beta_});
  if (options_.track_running_stats) {
    s.push_back({"running_mean", {C_}, StateEntry::DType::f32, running_mean_.data()});
    s.push_back({"running_var", {C_}, StateEntry::DType::f32, running_var_.data()});
    s.push_back({"num_batches_tracked", {}, StateEntry::DType::i64, &num_batches_tracked_});
  }
  // The warm-up's position travels with the model and its checkpoints.
  if (options_.renorm.enabled) s.push_back({"renorm_steps", {}, StateEntry::DType::i64, &renorm_steps_});
  return s;
}

namespace {

// A pass over fewer values than this runs where `choice` says (ThreadChoice):
// a few tens of microseconds of work, where a second thread's cost is of the
// same order. Larger passes always run on the team.
constexpr std::int64_t kChosenThreadsBelow = std::int64_t{1} << 18;

template <class Pass>
void on_chosen_threads(ThreadChoice& choice, std::int64_t values, Pass&& pass) {
  if (values < kChosenThreadsBelow)
    choice.run(pass);
  else
    pass();
}

}  // namespace

void BatchNorm::forward(Tensor& y, const Tensor& x, Mode mode) {
  const Dims d = batch_dims(x.shape(), C_);
  y.resize(x.shape());
  have_train_cache_ = false;
  frozen_cache_ = false;
  variant_cache_ = false;
  synced_count_ = 0;

  const bool use_running = mode == Mode::eval && options_.track_running_stats;
  if (use_running) {
    if (fused_relu_)
      kernels::batchnorm_relu_forward_inference(y.data(), x.data(), running_mean_.data(), running_var_.data(), gamma_,
                                                beta_, options_.eps, d.N, C_, d.S, work());
    else
      kernels::batchnorm_forward_inference(y.data(), x.data(), running_mean_.data(), running_var_.data(), gamma_, beta_,
                                           options_.eps, d.N, C_, d.S, work());
    return;
  }
  if (mode == Mode::train && options_.freeze != BnFreeze::none) {
    forward_frozen(y, x, d.N, d.S);
    return;
  }
  if (mode == Mode::train && variant_training()) {
    if (sync_)
      throw Error(
          "batchnorm: batch renormalization and ghost batch norm normalize each process's share alone; "
          "with --distributed use --bn-sync local");
    forward_variants(y, x, d.N, d.S);
    return;
  }
  if (sync_ && mode == Mode::train) {
    forward_synced(y, x, d.N, d.S);
    return;
  }

  const std::int64_t m = d.N * d.S;
  // One value per channel has no spread: x_hat would be 0 for every input and
  // the unbiased running variance would divide by m - 1 = 0. PyTorch refuses
  // this too. Only the eval_batch_stats demonstration may go ahead.
  if (m < 2 && mode != Mode::eval_batch_stats)
    throw Error("batchnorm: training-mode normalization needs more than one value per channel, got input " +
                shape_str(x.shape()) + " (a batch of one example; use eval mode for single examples)");
  if (m < 1) throw Error("batchnorm: empty batch " + shape_str(x.shape()));

  // Sized on first use (then kept): constructing a layer allocates only the
  // state a model file holds, which lets the loader bound it by the file size.
  const auto Cs = static_cast<std::size_t>(C_);
  mean_.resize(Cs);
  var_.resize(Cs);
  inv_std_.resize(Cs);
  if (fused_relu_) relu_mask_.resize(static_cast<std::size_t>(x.size()));  // grows once, then reused
  on_chosen_threads(forward_threads_, x.size(), [&] {
    if (fused_relu_)
      kernels::batchnorm_relu_forward_train(y.data(), relu_mask_.data(), mean_.data(), var_.data(), inv_std_.data(),
                                            x.data(), gamma_, beta_, options_.eps, d.N, C_, d.S, work());
    else
      kernels::batchnorm_forward_train(y.data(), mean_.data(), var_.data(), inv_std_.data(), x.data(), gamma_, beta_,
                                       options_.eps, d.N, C_, d.S, work());
  });
  if (mode != Mode::train) return;

  x_ = &x;
  have_train_cache_ = true;
  update_running_estimates(m, mean_.data(), var_.data());
}

void BatchNorm::update_running_estimates(std::int64_t m, const float* mean, const float* var) {
  if (!options_.track_running_stats) return;
  // Running estimates, once per training step:
  //   running = (1 - f) * running + f * batch_statistic
  // with f = momentum, or f = 1 / num_batches_tracked for the cumulative average.
  ++num_batches_tracked_;
  const double f =
      options_.momentum ? static_cast<double>(*options_.momentum) : 1.0 / static_cast<double>(num_batches_tracked_);
  const double var_correction =
      options_.unbiased_running_var ? static_cast<double>(m) / static_cast<double>(m - 1) : 1.0;
  kernels::batchnorm_update_running(running_mean_.data(), running_var_.data(), mean, var, f, var_correction, C_);
}

void BatchNorm::backward(Tensor* dx, const Tensor& dy) {
  if (!have_train_cache_) throw Error("batchnorm: backward needs a preceding forward in training mode");
  if (dy.shape() != x_->shape())
    throw Error("batchnorm: gradient " + shape_str(dy.shape()) + " does not match input " + shape_str(x_->shape()));
  const Dims d = batch_dims(x_->shape(), C_);
  if (frozen_cache_) {
    backward_frozen(dx, dy, d.N, d.S);
    return;
  }
  if (synced_count_ > 0) {
    backward_synced(dx, dy, d.N, d.S);
    return;
  }
  if (variant_cache_) {
    backward_variants(dx, dy, d.S);
    return;
  }
  // The kernel always writes dx; when the caller wants none we still need a
  // buffer, so route it to dy-sized scratch only in that (rare) case.
  Tensor scratch;
  Tensor* out = dx;
  if (!out) out = &scratch;
  out->resize(x_->shape());
  on_chosen_threads(backward_threads_, dy.size(), [&] {
    if (fused_relu_)
      kernels::batchnorm_relu_backward(out->data(), dgamma_, dbeta_, dy.data(), relu_mask_.data(), x_->data(),
                                       mean_.data(), inv_std_.data(), gamma_, d.N, C_, d.S, work());
    else
      kernels::batchnorm_backward(out->data(), dgamma_, dbeta_, dy.data(), x_->data(), mean_.data(), inv_std_.data(),
                                  gamma_, d.N, C_, d.S, work());
  });
}

// Frozen training forward: the running statistics play the batch's part, so
// the output is the eval-mode one; normalize_with also keeps what the
// backward needs (and the ReLU mask when fused), which the inference kernels do not.
void BatchNorm::forward_frozen(Tensor& y, const Tensor& x, std::int64_t N, std::int64_t S) {
  const auto Cs = static_cast<std::size_t>(C_);
  frozen_work_.resize(4 * Cs);  // sized once, then kept: a training step allocates nothing
  double* mean = frozen_work_.data();
  double* var = mean + Cs;
  for (std::size_t c = 0; c < Cs; ++c) {
    mean[c] = running_mean_[c];
    var[c] = running_var_[c];
  }
  mean_.resize(Cs);
  var_.resize(Cs);
  inv_std_.resize(Cs);
  if (fused_relu_) relu_mask_.resize(static_cast<std::size_t>(x.size()));
  kernels::batchnorm_normalize_with(y.data(), fused_relu_ ? relu_mask_.data() : nullptr, fused_relu_, mean_.data(),
                                    var_.data(), inv_std_.data(), x.data(), mean, var, gamma_, beta_, options_.eps, N,
                                    C_, S, work());
  x_ = &x;
  have_train_cache_ = true;
  frozen_cache_ = true;
}

// With fixed statistics the layer is a per-channel affine map, so
//   dx = dy * gamma * inv_std,  dgamma = Σ dy * x_hat,  dbeta = Σ dy
// (no terms through a batch mean or variance). The sync kernels do exactly
// this when handed zero sums: grad_sums gives Σ dy and Σ dy (x - mean), and
// apply_grad with sums of 0 reduces to gamma * inv_std * dy (masked when fused).
void BatchNorm::backward_frozen(Tensor* dx, const Tensor& dy, std::int64_t N, std::int64_t S) {
  const auto Cs = static_cast<std::size_t>(C_);
  double* sum_dy = frozen_work_.data();
  double* sum_dy_xc = sum_dy + Cs;
  double* zeros = sum_dy + 2 * Cs;
  const std::uint8_t* mask = fused_relu_ ? relu_mask_.data() : nullptr;
  if (options_.freeze == BnFreeze::all) {
    if (dgamma_) std::fill(dgamma_, dgamma_ + C_, 0.0f);
    if (dbeta_) std::fill(dbeta_, dbeta_ + C_, 0.0f);
  } else if (dgamma_ || dbeta_) {
    kernels::batchnorm_grad_sums(sum_dy, sum_dy_xc, dy.data(), mask, x_->data(), mean_.data(), N, C_, S);
    for (std::size_t c = 0; c < Cs; ++c) {
      if (dbeta_) dbeta_[c] = static_cast<float>(sum_dy[c]);
      if (dgamma_) dgamma_[c] = static_cast<float>(sum_dy_xc[c] * static_cast<double>(inv_std_[c]));
    }
  }
  if (!dx) return;
  dx->resize(x_->shape());
  std::fill(zeros, zeros + 2 * Cs, 0.0);
  kernels::batchnorm_apply_grad(dx->data(), dy.data(), mask, x_->data(), mean_.data(), inv_std_.data(), gamma_, zeros,
                                zeros + Cs, 1.0, N, C_, S, work());
}

// Synchronized forward: this process's (count, mean, M2) per channel go to
// every process; each merges all of them in rank order (identical bits
// everywhere), normalizes its part with the result, and moves its running
// estimates with the whole batch's statistics and m, as one process holding
// the whole batch would.
void BatchNorm::forward_synced(Tensor& y, const Tensor& x, std::int64_t N, std::int64_t S) {
  const auto Cs = static_cast<std::size_t>(C_);
  const std::size_t width = 1 + 2 * Cs;  // count, mean (C), M2 (C)
  std::vector<double> local(width);
  local[0] = static_cast<double>(N * S);
  kernels::batchnorm_channel_moments(local.data() + 1, local.data() + 1 + Cs, x.data(), N, C_, S, work());
  const auto ranks = static_cast<std::size_t>(sync_->size());
  std::vector<double> all(ranks * width);
  sync_->allgather(all, local);
  std::vector<MomentsView> parts;
  for (std::size_t r = 0; r < ranks; ++r) {
    const double* p = all.data() + r * width;
    parts.push_back({p[0], {p + 1, Cs}, {p + 1 + Cs, Cs}});
  }
  std::vector<double> mean(Cs), var(Cs);
  const double m = merge_moments(mean, var, parts);
  if (m < 2)
    throw Error("batchnorm: training-mode normalization needs more than one value per channel, got " +
                std::to_string(static_cast<long long>(m)) + " in the whole batch across " + std::to_string(ranks) +
                " processes (this one's input " + shape_str(x.shape()) + ")");
  for (double& v : var) v /= m;  // biased: this is what normalizes

  mean_.resize(Cs);
  var_.resize(Cs);
  inv_std_.resize(Cs);
  if (fused_relu_) relu_mask_.resize(static_cast<std::size_t>(x.size()));
  kernels::batchnorm_normalize_with(y.data(), fused_relu_ ? relu_mask_.data() : nullptr, fused_relu_, mean_.data(),
                                    var_.data(), inv_std_.data(), x.data(), mean.data(), var.data(), gamma_, beta_,
                                    options_.eps, N, C_, S, work());
  x_ = &x;
  have_train_cache_ = true;
  synced_count_ = m;
  update_running_estimates(static_cast<std::int64_t>(m), mean_.data(), var_.data());
}

// Synchronized backward: Σ dy and Σ dy·(x − mean) over the whole batch (one
// all-reduce of 2C doubles) give dx of this part. dgamma and dbeta keep this
// part's sums: the model's one gradient all-reduce adds the parts up.
void BatchNorm::backward_synced(Tensor* dx, const Tensor& dy, std::int64_t N, std::int64_t S) {
  const auto Cs = static_cast<std::size_t>(C_);
  std::vector<double> sums(2 * Cs);  // Σ dy (C), then Σ dy·(x − mean) (C)
  const std::uint8_t* mask = fused_relu_ ? relu_mask_.data() : nullptr;
  kernels::batchnorm_grad_sums(sums.data(), sums.data() + Cs, dy.data(), mask, x_->data(), mean_.data(), N, C_, S);
  for (std::size_t c = 0; c < Cs; ++c) {
    if (dbeta_) dbeta_[c] = static_cast<float>(sums[c]);
    if (dgamma_) dgamma_[c] = static_cast<float>(sums[Cs + c] * static_cast<double>(inv_std_[c]));
  }
  sync_->allreduce_sum(sums);
  if (!dx) return;  // the first layer's input gradient is not wanted
  dx->resize(x_->shape());
  kernels::batchnorm_apply_grad(dx->data(), dy.data(), mask, x_->data(), mean_.data(), inv_std_.data(), gamma_,
                                sums.data(), sums.data() + Cs, synced_count_, N, C_, S, work());
}

// Ghost batch norm's slices: V examples each, the remainder last, and a
// remainder with a single value per channel (no spread) joined to the slice
// before it. Without a virtual batch size, one slice: the whole batch.
void BatchNorm::plan_slices(std::int64_t N, std::int64_t S) {
  const std::int64_t V = options_.virtual_batch_size > 0 ? std::min(options_.virtual_batch_size, N) : N;
  if (V * S < 2 && options_.virtual_batch_size > 0 && N * S >= 2)
    throw Error("batchnorm: a virtual batch of " + std::to_string(V) + " example(s) with " + std::to_string(S) +
                " value(s) per channel each has no spread to normalize with; use a virtual batch size of 2 or more");
  if (V * S < 2)
    throw Error("batchnorm: training-mode normalization needs more than one value per channel, got " +
                std::to_string(N) + " example(s) of " + std::to_string(S) + " value(s) per channel");
  slices_.clear();
  for (std::int64_t n0 = 0; n0 < N; n0 += V) slices_.push_back({n0, std::min(V, N - n0)});
  if (slices_.size() > 1 && slices_.back().second * S < 2) {
    slices_[slices_.size() - 2].second += slices_.back().second;
    slices_.pop_back();
  }
}

// Batch Renormalization and ghost batch norm in training mode: each slice is
// normalized with its own statistics (renormalized when asked) and moves the
// running estimates, as a batch of its own would.
void BatchNorm::forward_variants(Tensor& y, const Tensor& x, std::int64_t N, std::int64_t S) {
  plan_slices(N, S);
  const auto Cs = static_cast<std::size_t>(C_);
  const std::size_t rows = slices_.size() * Cs;
  mean_.resize(rows);
  var_.resize(rows);
  inv_std_.resize(rows);
  if (options_.renorm.enabled) {
    renorm_r_.resize(rows);
    renorm_d_.resize(rows);
  }
  if (fused_relu_) relu_mask_.resize(static_cast<std::size_t>(x.size()));
  for (std::size_t s = 0; s < slices_.size(); ++s) {
    const auto [n0, n] = slices_[s];
    const std::int64_t at = n0 * C_ * S;
    float* ys = y.data() + at;
    std::uint8_t* mask = fused_relu_ ? relu_mask_.data() + at : nullptr;
    float *mean = mean_.data() + s * Cs, *var = var_.data() + s * Cs, *inv_std = inv_std_.data() + s * Cs;
    if (options_.renorm.enabled)
      normalize_renorm_slice(ys, mask, s, x.data() + at, n, S);
    else if (fused_relu_)
      kernels::batchnorm_relu_forward_train(ys, mask, mean, var, inv_std, x.data() + at, gamma_, beta_, options_.eps, n,
                                            C_, S, work());
    else
      kernels::batchnorm_forward_train(ys, mean, var, inv_std, x.data() + at, gamma_, beta_, options_.eps, n, C_, S,
                                       work());
    update_running_estimates(n * S, mean, var);
  }
  if (options_.renorm.enabled) ++renorm_steps_;
  x_ = &x;
  have_train_cache_ = true;
  variant_cache_ = true;
}

// Batch Renormalization of one slice. With r and d fixed,
//   y = gamma * (x_hat_B * r + d) + beta = (gamma * r) * x_hat_B + (gamma * d + beta),
// batch norm with gamma' = gamma * r and beta' = gamma * d + beta, so the
// batch's statistics and the normalize kernel do the rest; mean_, var_ and
// inv_std_ keep the batch's own values (x_hat_B) for the backward.
void BatchNorm::normalize_renorm_slice(float* y, std::uint8_t* mask, std::size_t slice, const float* x, std::int64_t n,
                                       std::int64_t S) {
  const auto Cs = static_cast<std::size_t>(C_);
  variant_work_.resize(2 * Cs);
  double* batch_mean = variant_work_.data();
  double* batch_var = batch_mean + Cs;
  kernels::batchnorm_channel_moments(batch_mean, batch_var, x, n, C_, S, work());
  const double m = static_cast<double>(n * S);
  for (std::size_t c = 0; c < Cs; ++c) batch_var[c] /= m;  // M2 to the biased variance, which normalizes
  float* r = renorm_r_.data() + slice * Cs;
  float* d = renorm_d_.data() + slice * Cs;
  const RenormLimits limits = renorm_limits(options_.renorm, renorm_steps_);
  kernels::batchnorm_renorm_correction(r, d, batch_mean, batch_var, running_mean_.data(), running_var_.data(),
                                       options_.eps, limits.rmax, limits.dmax, C_);
  slice_gamma_.resize(Cs);
  slice_beta_.resize(Cs);
  for (std::size_t c = 0; c < Cs; ++c) {
    const float gamma = gamma_ ? gamma_[c] : 1.0f;
    slice_gamma_[c] = gamma * r[c];
    slice_beta_[c] = gamma * d[c] + (beta_ ? beta_[c] : 0.0f);
  }
  kernels::batchnorm_normalize_with(y, mask, fused_relu_, mean_.data() + slice * Cs, var_.data() + slice * Cs,
                                    inv_std_.data() + slice * Cs, x, batch_mean, batch_var, slice_gamma_.data(),
                                    slice_beta_.data(), options_.eps, n, C_, S, work());
}

// Each slice's backward is batch norm's over that slice (its statistics depend
// on its own examples only). With Batch Renormalization, r and d are constants
// (stop-gradient), so y = gamma' * x_hat_B + beta' with gamma' = gamma * r:
//   dx     = batch norm's dx with gamma'   (the mean and variance terms are those of x_hat_B)
//   dbeta  = Σ dy
//   dgamma = Σ dy * (r * x_hat_B + d) = r * Σ dy * x_hat_B + d * Σ dy
// The kernel's dgamma and dbeta are Σ dy * x_hat_B and Σ dy, so dgamma is
// r * kernel_dgamma + d * kernel_dbeta; slices add up.
void BatchNorm::backward_variants(Tensor* dx, const Tensor& dy, std::int64_t S) {
  Tensor scratch;
  Tensor* out = dx ? dx : &scratch;
  out->resize(x_->shape());
  const auto Cs = static_cast<std::size_t>(C_);
  const bool renorm = options_.renorm.enabled;
  slice_dgamma_.resize(Cs);
  slice_dbeta_.resize(Cs);
  slice_gamma_.resize(Cs);
  variant_work_.resize(2 * Cs);
  double* sum_dgamma = variant_work_.data();
  double* sum_dbeta = sum_dgamma + Cs;
  std::fill(sum_dgamma, sum_dgamma + 2 * Cs, 0.0);
  float* dgamma = dgamma_ ? slice_dgamma_.data() : nullptr;
  float* dbeta = dgamma_ ? slice_dbeta_.data() : nullptr;
  for (std::size_t s = 0; s < slices_.size(); ++s) {
    const auto [n0, n] = slices_[s];
    const std::int64_t at = n0 * C_ * S;
    const float* r = renorm ? renorm_r_.data() + s * Cs : nullptr;
    const float* d = renorm ? renorm_d_.data() + s * Cs : nullptr;
    const float* gamma = gamma_;
    if (renorm) {
      for (std::size_t c = 0; c < Cs; ++c) slice_gamma_[c] = (gamma_ ? gamma_[c] : 1.0f) * r[c];
      gamma = slice_gamma_.data();
    }
    const float* mean = mean_.data() + s * Cs;
    const float* inv_std = inv_std_.data() + s * Cs;
    if (fused_relu_)
      kernels::batchnorm_relu_backward(out->data() + at, dgamma, dbeta, dy.data() + at, relu_mask_.data() + at,
                                       x_->data() + at, mean, inv_std, gamma, n, C_, S, work());
    else
      kernels::batchnorm_backward(out->data() + at, dgamma, dbeta, dy.data() + at, x_->data() + at, mean, inv_std,
                                  gamma, n, C_, S, work());
    if (!dgamma_) continue;
    for (std::size_t c = 0; c < Cs; ++c) {
      sum_dgamma[c] += renorm ? static_cast<double>(r[c]) * dgamma[c] + static_cast<double>(d[c]) * dbeta[c]
                              : static_cast<double>(dgamma[c]);
      sum_dbeta[c] += dbeta[c];
    }
  }
  if (!dgamma_) return;
  for (std::size_t c = 0; c < Cs; ++c) {
    dgamma_[c] = static_cast<float>(sum_dgamma[c]);
    dbeta_[c] = static_cast<float>(sum_dbeta[c]);
  }
}

}  // namespace bnorm

#pragma once
#include <optional>

#include "bnorm/nn/layer.hpp"
#include "bnorm/nn/thread_choice.hpp"

namespace bnorm {
class BatchStatsSync;
}

namespace bnorm {

// Frozen batch norm, for fine-tuning a trained network on little or shifted
// data, where batch statistics of small batches would be noisy and would
// overwrite the statistics learned on the original data.
enum class BnFreeze {
  none,   // ordinary batch norm
  stats,  // training mode normalizes with the running statistics and leaves them alone; gamma, beta learn
  all,    // as stats, and gamma and beta get zero gradients
};
const char* bn_freeze_name(BnFreeze f);             // "none", "stats", "all"
BnFreeze parse_bn_freeze(const std::string& text);  // throws Error on anything else

// Batch Renormalization (Ioffe 2017): in training mode the batch-normalized
// value is corrected towards what the running statistics would give,
//   x_hat = (x - mean_B) / sigma_B * r + d,
//   r = clip(sigma_B / sigma, 1/rmax_t, rmax_t),  d = clip((mean_B - mean) / sigma, -dmax_t, dmax_t),
// sigma_B = sqrt(var_B + eps), sigma = sqrt(running_var + eps), with r and d
// constants in the backward pass. Eval mode is plain batch norm.
// Warm-up, the paper's proportions (5k : 25k : 40k steps) scaled to
// warmup_steps = W: plain batch norm (rmax_t = 1, dmax_t = 0) for the first
// W/8 steps, then rmax_t rises linearly to rmax at step W and dmax_t to dmax at step 5W/8.
struct BatchRenormOptions {
  bool enabled = false;
  float rmax = 3.0f;                 // >= 1
  float dmax = 5.0f;                 // >= 0
  std::int64_t warmup_steps = 1600;  // W; 0: the full limits from the first step
};
struct RenormLimits {
  double rmax, dmax;
};
// The limits at a step (0-based count of training steps already taken).
RenormLimits renorm_limits(const BatchRenormOptions& options, std::int64_t step);

// Options of a batch-norm layer, with PyTorch's defaults.
struct BatchNormOptions {
  // Added to the variance inside the square root: 1/sqrt(var + eps).
  float eps = 1e-5f;
  // Weight of the new batch in the running estimates (PyTorch's convention):
  //   running = (1 - momentum) * running + momentum * batch_statistic
  // This is an exponentially weighted average with beta = 1 - momentum, so
  // momentum 0.1 is beta 0.9, and Keras' momentum 0.99 is this momentum 0.01.
  // std::nullopt selects the cumulative average instead: the factor is
  // 1 / num_batches_tracked, so every batch counts equally.
  std::optional<float> momentum = 0.1f;
  // The running variance stores var * m / (m - 1), an unbiased estimate of the
  // population variance (PyTorch); false stores the biased batch variance.
  bool unbiased_running_var = true;
  // Learned gamma (init 1), Keras' "scale"; false fixes gamma at 1.
  bool scale = true;
  // Learned beta (init 0), Keras' "center"; false fixes beta at 0.
  // PyTorch's affine is both together: affine=True is scale and center,
  // affine=False neither; PyTorch has no switch for one without the other.
  bool center = true;
  // false keeps no running estimates: eval mode then normalizes with batch
  // statistics too, as PyTorch does.
  bool track_running_stats = true;
  // Part of the architecture (saved with the model), so that a resumed or
  // reloaded run cannot quietly start updating statistics again. Needs
  // track_running_stats. Eval mode is unaffected.
  BnFreeze freeze = BnFreeze::none;
  // Batch Renormalization (above); needs track_running_stats.
  BatchRenormOptions renorm;
  // Ghost batch norm (Hoffer, Hubara & Soudry 2017): 0 normalizes the whole
  // mini-batch at once; V > 0 normalizes each slice of V consecutive examples
  // with its own statistics in training mode, and the running estimates move
  // once per slice. The last slice holds the N mod V examples left over; if
  // that leaves one value per channel (one example, S = 1), it joins the slice
  // before it. Eval mode is unchanged.
  std::int64_t virtual_batch_size = 0;
};

// Batch normalization over an input (N, C) or (N, C, H, W): statistics per
// channel over the N (and H*W) values. One implementation serves both; an
// (N, C) input is the case H*W = 1.
class BatchNorm final : public Layer {
 public:
  BatchNorm(std::int64_t num_features, BatchNormOptions options = {});

  std::string type() const override { return "batchnorm"; }
  nlohmann::json config() const override;
  Shape output_shape(const Shape& input) const override;
  std::vector<ParamSlot> param_slots() const override;
  void bind_parameters(std::span<float> params, std::span<float> grads) override;
  void init_parameters(Rng& rng) override;  // gamma = 1, beta = 0 (never random)
  std::vector<StateEntry> state() override;

  void forward(Tensor& y, const Tensor& x, Mode mode) override;
  void backward(Tensor* dx, const Tensor& dy) override;

  std::int64_t num_features() const { return C_; }
  const BatchNormOptions& options() const { return options_; }
  // Running estimates, readable and settable (importing a model needs both).
  std::span<float> running_mean() { return running_mean_; }
  std::span<float> running_var() { return running_var_; }
  std::int64_t num_batches_tracked() const { return num_batches_tracked_; }
  // Forgets the running estimates (mean 0, variance 1, no batches), as
  // PyTorch's reset_running_stats(); recalibration starts from here.
  void reset_running_stats();
  // Changes the running-average rule (recalibration switches to the
  // cumulative average for a while, as torch's update_bn does).
  void set_momentum(std::optional<float> momentum);
  // Changes the freezing (recalibration lifts it while it measures).
  void set_freeze(BnFreeze freeze);
  // Turns Batch Renormalization on or off (recalibration measures plain
  // batch statistics); the step count is kept.
  void set_renorm(const BatchRenormOptions& renorm);

  // Fused with the ReLU that follows (the model sets this; a runtime choice,
  // not part of the architecture): forward outputs max(0, y) and keeps a byte
  // mask of y > 0, and backward takes the gradient of the ReLU's output.
  // Results are bit-identical to the two layers run separately.
  void set_fused_relu(bool fused) { fused_relu_ = fused; }
  bool fused_relu() const { return fused_relu_; }
  // Synchronized batch norm (nn/batch_stats_sync.hpp). With a hook, a
  // Mode::train forward normalizes with the statistics of the whole batch
  // across processes and its backward uses the gradient sums of the whole
  // batch; the input may then have N = 0. The parameter gradients stay this
  // process's own sums (the caller all-reduces them with the rest).
  // nullptr (the default) normalizes this process's input alone.
  void set_stats_sync(BatchStatsSync* sync) { sync_ = sync; }
  BatchStatsSync* stats_sync() const { return sync_; }

 private:
  std::int64_t C_;
  BatchNormOptions options_;
  float* gamma_ = nullptr;           // (C), or nullptr without scale
  float* beta_ = nullptr;            // (C), or nullptr without center
  float* dgamma_ = nullptr;          // (C), or nullptr without scale
  float* dbeta_ = nullptr;           // (C), or nullptr without center
  std::vector<float> running_mean_;  // (C), init 0
  std::vector<float> running_var_;   // (C), init 1
  std::int64_t num_batches_tracked_ = 0;
  BatchStatsSync* sync_ = nullptr;

  void forward_synced(Tensor& y, const Tensor& x, std::int64_t N, std::int64_t S);
  void backward_synced(Tensor* dx, const Tensor& dy, std::int64_t N, std::int64_t S);
  // From a slice's batch mean and var (C) over m values.
  void update_running_estimates(std::int64_t m, const float* mean, const float* var);
  void forward_frozen(Tensor& y, const Tensor& x, std::int64_t N, std::int64_t S);
  void backward_frozen(Tensor* dx, const Tensor& dy, std::int64_t N, std::int64_t S);
  // Batch Renormalization and ghost batch norm: one or more slices of the
  // batch, each normalized with its own statistics.
  bool variant_training() const { return options_.renorm.enabled || options_.virtual_batch_size > 0; }
  void plan_slices(std::int64_t N, std::int64_t S);
  void forward_variants(Tensor& y, const Tensor& x, std::int64_t N, std::int64_t S);
  void normalize_renorm_slice(float* y, std::uint8_t* mask, std::size_t slice, const float* x, std::int64_t n,
                              std::int64_t S);
  void backward_variants(Tensor* dx, const Tensor& dy, std::int64_t S);

  // Saved by the training forward for the backward: x_hat is recomputed from these.
  const Tensor* x_ = nullptr;   // (N, C, S)
  std::vector<float> mean_;     // (C)
  std::vector<float> var_;      // (C) biased batch variance
  std::vector<float> inv_std_;  // (C)
  bool have_train_cache_ = false;
  bool fused_relu_ = false;
  std::vector<std::uint8_t> relu_mask_;  // (N, C, S) when fused: 1 where the ReLU passed the value
  std::vector<double> work_;             // the kernels' scratch, kept between steps
  // For passes small enough that a second thread may cost more than it
  // brings: the training forward's and the backward's own choices.
  ThreadChoice forward_threads_, backward_threads_;
  double* work();
  double synced_count_ = 0;          // values in the whole batch of the last synced forward; 0: not synced
  bool frozen_cache_ = false;        // the last training forward normalized with the running statistics
  std::vector<double> frozen_work_;  // (4C): running mean and variance in double, then the gradient sums

  // Batch Renormalization and ghost batch norm. With k slices, mean_, var_
  // and inv_std_ hold (k, C), one row per slice.
  std::int64_t renorm_steps_ = 0;  // training steps taken, the warm-up's position (saved as "renorm_steps")
  bool variant_cache_ = false;     // the last training forward was forward_variants
  std::vector<std::pair<std::int64_t, std::int64_t>> slices_;  // (first example, examples) per slice
  std::vector<float> renorm_r_, renorm_d_;                     // (k, C)
  std::vector<float> slice_gamma_, slice_beta_;                // (C): gamma*r and gamma*d + beta of a slice
  std::vector<float> slice_dgamma_, slice_dbeta_;              // (C): a slice's sums before they are added up
  std::vector<double> variant_work_;  // (2C): a slice's mean and variance in double, then dgamma and dbeta sums
};

}  // namespace bnorm

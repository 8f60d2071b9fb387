// The plain batch norm of batchnorm_reference.hpp. Every channel is computed
// on its own, start to end, so the results do not depend on the threads.
#include "bnorm/kernels/batchnorm_reference.hpp"

#include <algorithm>
#include <cmath>

namespace bnorm::kernels::reference {
namespace {

// Below this many values the channels are not split across threads: waking
// them costs more than the work (as in the fast kernels).
constexpr std::int64_t kParallelMin = std::int64_t{1} << 18;

// Where value s of channel c of example n lies in an (N, C, S) tensor.
struct Layout {
  std::int64_t N, C, S;
  std::int64_t at(std::int64_t n, std::int64_t c, std::int64_t s) const { return (n * C + c) * S + s; }
  double values_per_channel() const { return static_cast<double>(N * S); }
  bool parallel() const { return N * C * S >= kParallelMin; }
};

// dy as the batch norm's output sees it: 0 where a fused ReLU let nothing pass.
double gradient_at(const float* dy, const std::uint8_t* relu_mask, std::int64_t i) {
  return relu_mask && !relu_mask[i] ? 0.0 : static_cast<double>(dy[i]);
}

// One channel's mean, and its M2 = Σ (x - mean)^2, in two passes.
void channel_mean_m2(double& mean, double& m2, const float* x, std::int64_t c, const Layout& t) {
  double sum = 0.0;
  for (std::int64_t n = 0; n < t.N; ++n)
    for (std::int64_t s = 0; s < t.S; ++s) sum += x[t.at(n, c, s)];
  mean = sum / t.values_per_channel();
  double squares = 0.0;
  for (std::int64_t n = 0; n < t.N; ++n)
    for (std::int64_t s = 0; s < t.S; ++s) {
      const double centered = x[t.at(n, c, s)] - mean;
      squares += centered * centered;
    }
  m2 = squares;
}

// y = gamma * (x - mean) * inv_std + beta over channel c, then the ReLU if asked.
template <class Real>
void normalize_channel(Real* y, std::uint8_t* relu_mask, bool relu, const float* x, std::int64_t c, double mean,
                       double inv_std, const float* gamma, const float* beta, const Layout& t) {
  const double g = gamma ? gamma[c] : 1.0, b = beta ? beta[c] : 0.0;
  for (std::int64_t n = 0; n < t.N; ++n)
    for (std::int64_t s = 0; s < t.S; ++s) {
      const std::int64_t i = t.at(n, c, s);
      const Real value = static_cast<Real>(g * ((x[i] - mean) * inv_std) + b);
      y[i] = relu && !(value > 0) ? Real{0} : value;
      if (relu_mask) relu_mask[i] = value > 0;
    }
}

// Σ dy and Σ dy * (x - mean) over channel c.
void channel_grad_sums(double& sum_dy, double& sum_dy_xc, const float* dy, const std::uint8_t* relu_mask,
                       const float* x, std::int64_t c, double mean, const Layout& t) {
  sum_dy = sum_dy_xc = 0.0;
  for (std::int64_t n = 0; n < t.N; ++n)
    for (std::int64_t s = 0; s < t.S; ++s) {
      const std::int64_t i = t.at(n, c, s);
      const double g = gradient_at(dy, relu_mask, i);
      sum_dy += g;
      sum_dy_xc += g * (x[i] - mean);
    }
}

// dx = gamma * inv_std * (dy - Σdy / m - x_hat * inv_std * Σ dy (x - mean) / m) over channel c.
template <class Real>
void apply_grad_channel(Real* dx, const float* dy, const std::uint8_t* relu_mask, const float* x, std::int64_t c,
                        double mean, double inv_std, const float* gamma, double sum_dy, double sum_dy_xc, double m,
                        const Layout& t) {
  const double scale = (gamma ? gamma[c] : 1.0) * inv_std;
  for (std::int64_t n = 0; n < t.N; ++n)
    for (std::int64_t s = 0; s < t.S; ++s) {
      const std::int64_t i = t.at(n, c, s);
      const double x_hat = (x[i] - mean) * inv_std;
      dx[i] = static_cast<Real>(scale * (gradient_at(dy, relu_mask, i) - sum_dy / m - x_hat * inv_std * sum_dy_xc / m));
    }
}

double inverse_std(double var, float eps) { return 1.0 / std::sqrt(var + static_cast<double>(eps)); }

}  // namespace

template <class Real>
void batchnorm_forward_train(Real* y, std::uint8_t* relu_mask, bool relu, Real* mean, Real* var, Real* inv_std,
                             const float* x, const float* gamma, const float* beta, float eps, std::int64_t N,
                             std::int64_t C, std::int64_t S) {
  const Layout t{N, C, S};
#pragma omp parallel for schedule(static) if (t.parallel())
  for (std::int64_t c = 0; c < C; ++c) {
    double channel_mean = 0.0, m2 = 0.0;
    channel_mean_m2(channel_mean, m2, x, c, t);
    const double channel_var = m2 / t.values_per_channel(), channel_inv_std = inverse_std(channel_var, eps);
    mean[c] = static_cast<Real>(channel_mean);
    var[c] = static_cast<Real>(channel_var);
    inv_std[c] = static_cast<Real>(channel_inv_std);
    normalize_channel(y, relu_mask, relu, x, c, channel_mean, channel_inv_std, gamma, beta, t);
  }
}

template <class Real>
void batchnorm_forward_inference(Real* y, bool relu, const float* x, const float* mean, const float* var,
                                 const float* gamma, const float* beta, float eps, std::int64_t N, std::int64_t C,
                                 std::int64_t S) {
  const Layout t{N, C, S};
#pragma omp parallel for schedule(static) if (t.parallel())
  for (std::int64_t c = 0; c < C; ++c)
    normalize_channel(y, nullptr, relu, x, c, mean[c], inverse_std(var[c], eps), gamma, beta, t);
}

template <class Real>
void batchnorm_backward(Real* dx, Real* dgamma, Real* dbeta, const float* dy, const std::uint8_t* relu_mask,
                        const float* x, const Real* mean, const Real* inv_std, const float* gamma, std::int64_t N,
                        std::int64_t C, std::int64_t S) {
  const Layout t{N, C, S};
#pragma omp parallel for schedule(static) if (t.parallel())
  for (std::int64_t c = 0; c < C; ++c) {
    double sum_dy = 0.0, sum_dy_xc = 0.0;
    channel_grad_sums(sum_dy, sum_dy_xc, dy, relu_mask, x, c, mean[c], t);
    if (dbeta) dbeta[c] = static_cast<Real>(sum_dy);
    if (dgamma) dgamma[c] = static_cast<Real>(sum_dy_xc * inv_std[c]);
    apply_grad_channel(dx, dy, relu_mask, x, c, mean[c], inv_std[c], gamma, sum_dy, sum_dy_xc, t.values_per_channel(),
                       t);
  }
}

template void batchnorm_forward_train<float>(float*, std::uint8_t*, bool, float*, float*, float*, const float*,
                                             const float*, const float*, float, std::int64_t, std::int64_t,
                                             std::int64_t);
template void batchnorm_forward_train<double>(double*, std::uint8_t*, bool, double*, double*, double*, const float*,
                                              const float*, const float*, float, std::int64_t, std::int64_t,
                                              std::int64_t);
template void batchnorm_forward_inference<float>(float*, bool, const float*, const float*, const float*, const float*,
                                                 const float*, float, std::int64_t, std::int64_t, std::int64_t);
template void batchnorm_forward_inference<double>(double*, bool, const float*, const float*, const float*, const float*,
                                                  const float*, float, std::int64_t, std::int64_t, std::int64_t);
template void batchnorm_backward<float>(float*, float*, float*, const float*, const std::uint8_t*, const float*,
                                        const float*, const float*, const float*, std::int64_t, std::int64_t,
                                        std::int64_t);
template void batchnorm_backward<double>(double*, double*, double*, const float*, const std::uint8_t*, const float*,
                                         const double*, const double*, const float*, std::int64_t, std::int64_t,
                                         std::int64_t);

void batchnorm_update_running(float* running_mean, float* running_var, const float* mean, const float* var, double f,
                              double var_scale, std::int64_t C) {
  for (std::int64_t c = 0; c < C; ++c) {
    running_mean[c] = static_cast<float>((1.0 - f) * running_mean[c] + f * mean[c]);
    running_var[c] = static_cast<float>((1.0 - f) * running_var[c] + f * var[c] * var_scale);
  }
}

void batchnorm_channel_moments(double* mean, double* m2, const float* x, std::int64_t N, std::int64_t C,
                               std::int64_t S) {
  const Layout t{N, C, S};
  if (N * S == 0) {
    std::fill(mean, mean + C, 0.0);
    std::fill(m2, m2 + C, 0.0);
    return;
  }
#pragma omp parallel for schedule(static) if (t.parallel())
  for (std::int64_t c = 0; c < C; ++c) channel_mean_m2(mean[c], m2[c], x, c, t);
}

void batchnorm_normalize_with(float* y, std::uint8_t* relu_mask, bool relu, float* mean_out, float* var_out,
                              float* inv_std, const float* x, const double* mean, const double* var, const float* gamma,
                              const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S) {
  const Layout t{N, C, S};
#pragma omp parallel for schedule(static) if (t.parallel())
  for (std::int64_t c = 0; c < C; ++c) {
    const double channel_inv_std = inverse_std(var[c], eps);
    mean_out[c] = static_cast<float>(mean[c]);
    var_out[c] = static_cast<float>(var[c]);
    inv_std[c] = static_cast<float>(channel_inv_std);
    normalize_channel(y, relu_mask, relu, x, c, mean[c], channel_inv_std, gamma, beta, t);
  }
}

void batchnorm_grad_sums(double* sum_dy, double* sum_dy_xc, const float* dy, const std::uint8_t* relu_mask,
                         const float* x, const float* mean, std::int64_t N, std::int64_t C, std::int64_t S) {
  const Layout t{N, C, S};
#pragma omp parallel for schedule(static) if (t.parallel())
  for (std::int64_t c = 0; c < C; ++c) channel_grad_sums(sum_dy[c], sum_dy_xc[c], dy, relu_mask, x, c, mean[c], t);
}

void batchnorm_apply_grad(float* dx, const float* dy, const std::uint8_t* relu_mask, const float* x, const float* mean,
                          const float* inv_std, const float* gamma, const double* sum_dy, const double* sum_dy_xc,
                          double m, std::int64_t N, std::int64_t C, std::int64_t S) {
  const Layout t{N, C, S};
#pragma omp parallel for schedule(static) if (t.parallel())
  for (std::int64_t c = 0; c < C; ++c)
    apply_grad_channel(dx, dy, relu_mask, x, c, mean[c], inv_std[c], gamma, sum_dy[c], sum_dy_xc[c], m, t);
}

}  // namespace bnorm::kernels::reference

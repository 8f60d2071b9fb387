// Batch-normalization kernels. Semantics are documented in
// include/bnorm/kernels/batchnorm.hpp; the comments here explain the loop order.
//
// Two layouts share one contract. For S == 1 (an (N, C) input) a channel's
// values are strided by C, so the loops walk rows and keep C accumulators,
// which the compiler vectorizes across channels. For S > 1 each (n, c) pair is
// a contiguous run of S values and the loops are per channel.
#include "bnorm/kernels/batchnorm.hpp"

#include <cmath>
#include <vector>

namespace bnorm::kernels {
namespace {

// Per-channel sums of (x - shift) and (x - shift)^2 in double. Shifting by one
// sample of the channel keeps the two sums small when the mean is far from 0,
// so var = E[(x-k)^2] - E[x-k]^2 does not cancel catastrophically.
void channel_moments(double* mean, double* var, const float* x, std::int64_t N, std::int64_t C,
                     std::int64_t S) {
  const double m = static_cast<double>(N * S);
  std::vector<double> sum(static_cast<std::size_t>(C), 0.0), sumsq(static_cast<std::size_t>(C), 0.0);
  std::vector<float> shift(static_cast<std::size_t>(C));
  for (std::int64_t c = 0; c < C; ++c) shift[c] = x[c * S];

  if (S == 1) {
    for (std::int64_t n = 0; n < N; ++n) {
      const float* row = x + n * C;
      for (std::int64_t c = 0; c < C; ++c) {
        const double d = static_cast<double>(row[c] - shift[c]);
        sum[c] += d;
        sumsq[c] += d * d;
      }
    }
  } else {
    for (std::int64_t n = 0; n < N; ++n) {
      for (std::int64_t c = 0; c < C; ++c) {
        const float* run = x + (n * C + c) * S;
        const float k = shift[c];
        double s = 0.0, q = 0.0;
        for (std::int64_t i = 0; i < S; ++i) {
          const double d = static_cast<double>(run[i] - k);
          s += d;
          q += d * d;
        }
        sum[c] += s;
        sumsq[c] += q;
      }
    }
  }
  for (std::int64_t c = 0; c < C; ++c) {
    const double mean_shifted = sum[c] / m;
    mean[c] = shift[c] + mean_shifted;
    const double v = sumsq[c] / m - mean_shifted * mean_shifted;
    var[c] = v > 0.0 ? v : 0.0;  // rounding can leave a tiny negative
  }
}

// y = ((x - mean_hi[c]) - mean_lo[c]) * scale[c] + offset[c].
// The mean is split into a float and the float of its remainder: near 1e6 a
// float mean alone is off by up to 0.03, which is 3 % of a unit spread, while
// x - mean_hi is exact there (both within a factor of two) and mean_lo removes
// the rest. Subtracting before scaling keeps the same precision for y.
void normalize(float* y, const float* x, const float* mean_hi, const float* mean_lo, const float* scale,
               const float* offset, std::int64_t N, std::int64_t C, std::int64_t S) {
  if (S == 1) {
    for (std::int64_t n = 0; n < N; ++n) {
      const float* xr = x + n * C;
      float* yr = y + n * C;
      for (std::int64_t c = 0; c < C; ++c) yr[c] = ((xr[c] - mean_hi[c]) - mean_lo[c]) * scale[c] + offset[c];
    }
    return;
  }
  for (std::int64_t n = 0; n < N; ++n) {
    for (std::int64_t c = 0; c < C; ++c) {
      const float* xr = x + (n * C + c) * S;
      float* yr = y + (n * C + c) * S;
      const float hi = mean_hi[c], lo = mean_lo[c], a = scale[c], b = offset[c];
      for (std::int64_t i = 0; i < S; ++i) yr[i] = ((xr[i] - hi) - lo) * a + b;
    }
  }
}

}  // namespace

void batchnorm_forward_train(float* y, float* mean, float* var, float* inv_std, const float* x,
                             const float* gamma, const float* beta, float eps, std::int64_t N,
                             std::int64_t C, std::int64_t S) {
  std::vector<double> mean_d(static_cast<std::size_t>(C)), var_d(static_cast<std::size_t>(C));
  channel_moments(mean_d.data(), var_d.data(), x, N, C, S);
  std::vector<float> scale(static_cast<std::size_t>(C)), offset(static_cast<std::size_t>(C)),
      mean_lo(static_cast<std::size_t>(C));
  for (std::int64_t c = 0; c < C; ++c) {
    mean[c] = static_cast<float>(mean_d[c]);
    mean_lo[c] = static_cast<float>(mean_d[c] - static_cast<double>(mean[c]));
    var[c] = static_cast<float>(var_d[c]);
    inv_std[c] = static_cast<float>(1.0 / std::sqrt(var_d[c] + static_cast<double>(eps)));
    scale[c] = gamma ? gamma[c] * inv_std[c] : inv_std[c];
    offset[c] = beta ? beta[c] : 0.0f;
  }
  normalize(y, x, mean, mean_lo.data(), scale.data(), offset.data(), N, C, S);
}

void batchnorm_forward_inference(float* y, const float* x, const float* mean, const float* var,
                                 const float* gamma, const float* beta, float eps, std::int64_t N,
                                 std::int64_t C, std::int64_t S) {
  std::vector<float> scale(static_cast<std::size_t>(C)), offset(static_cast<std::size_t>(C)),
      no_remainder(static_cast<std::size_t>(C), 0.0f);  // a given float mean is exact as it stands
  for (std::int64_t c = 0; c < C; ++c) {
    const float inv_std = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var[c]) + eps));
    scale[c] = gamma ? gamma[c] * inv_std : inv_std;
    offset[c] = beta ? beta[c] : 0.0f;
  }
  normalize(y, x, mean, no_remainder.data(), scale.data(), offset.data(), N, C, S);
}

void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                        const float* mean, const float* inv_std, const float* gamma,
                        std::int64_t N, std::int64_t C, std::int64_t S) {
  const auto Cs = static_cast<std::size_t>(C);
  // Pass 1: Σ dy and Σ dy * x_hat together, in double.
  std::vector<double> sum_dy(Cs, 0.0), sum_dy_xhat(Cs, 0.0);
  if (S == 1) {
    for (std::int64_t n = 0; n < N; ++n) {
      const float* xr = x + n * C;
      const float* dyr = dy + n * C;
      for (std::int64_t c = 0; c < C; ++c) {
        const float x_hat = (xr[c] - mean[c]) * inv_std[c];
        sum_dy[c] += dyr[c];
        sum_dy_xhat[c] += static_cast<double>(dyr[c] * x_hat);
      }
    }
  } else {
    for (std::int64_t n = 0; n < N; ++n) {
      for (std::int64_t c = 0; c < C; ++c) {
        const float* xr = x + (n * C + c) * S;
        const float* dyr = dy + (n * C + c) * S;
        const float mu = mean[c], is = inv_std[c];
        double s = 0.0, q = 0.0;
        for (std::int64_t i = 0; i < S; ++i) {
          s += dyr[i];
          q += static_cast<double>(dyr[i] * ((xr[i] - mu) * is));
        }
        sum_dy[c] += s;
        sum_dy_xhat[c] += q;
      }
    }
  }

  // Pass 2: dx = gamma*inv_std * (dy - mean(dy) - x_hat * mean(dy*x_hat)).
  const double m = static_cast<double>(N * S);
  std::vector<float> k(Cs), mean_dy(Cs), mean_dy_xhat(Cs);
  for (std::int64_t c = 0; c < C; ++c) {
    if (dbeta) dbeta[c] = static_cast<float>(sum_dy[c]);
    if (dgamma) dgamma[c] = static_cast<float>(sum_dy_xhat[c]);
    k[c] = (gamma ? gamma[c] : 1.0f) * inv_std[c];
    mean_dy[c] = static_cast<float>(sum_dy[c] / m);
    mean_dy_xhat[c] = static_cast<float>(sum_dy_xhat[c] / m);
  }
  if (S == 1) {
    for (std::int64_t n = 0; n < N; ++n) {
      const float* xr = x + n * C;
      const float* dyr = dy + n * C;
      float* dxr = dx + n * C;
      for (std::int64_t c = 0; c < C; ++c) {
        const float x_hat = (xr[c] - mean[c]) * inv_std[c];
        dxr[c] = k[c] * (dyr[c] - mean_dy[c] - x_hat * mean_dy_xhat[c]);
      }
    }
    return;
  }
  for (std::int64_t n = 0; n < N; ++n) {
    for (std::int64_t c = 0; c < C; ++c) {
      const float* xr = x + (n * C + c) * S;
      const float* dyr = dy + (n * C + c) * S;
      float* dxr = dx + (n * C + c) * S;
      const float mu = mean[c], is = inv_std[c], kc = k[c], a = mean_dy[c], b = mean_dy_xhat[c];
      for (std::int64_t i = 0; i < S; ++i) dxr[i] = kc * (dyr[i] - a - (xr[i] - mu) * is * b);
    }
  }
}

}  // namespace bnorm::kernels

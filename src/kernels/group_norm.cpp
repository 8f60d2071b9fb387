// The group-normalization formulas of group_norm.hpp, one row (an example's
// group) at a time. Rows are independent, so they are split across threads
// for large inputs; the parameter gradients are split by parameter, each
// summed over the examples in a fixed order, so results do not depend on the
// number of threads.
#include "bnorm/kernels/group_norm.hpp"

#include <algorithm>
#include <cmath>

namespace bnorm::kernels {
namespace {

// Below this many values the work is not split across threads: waking them
// costs more than it saves (as in the batch-norm kernels).
constexpr std::int64_t kParallelMin = std::int64_t{1} << 18;

// Σ g and Σ g * x_hat over one row, g = dy * gamma: the two sums of the dx formula.
struct RowGradSums {
  double g = 0.0, g_x_hat = 0.0;
};

RowGradSums row_grad_sums(const float* dy, const float* x, double mean, double inv_std, const float* gamma,
                          std::int64_t m, std::int64_t R) {
  RowGradSums s;
  for (std::int64_t j = 0; j < m; ++j) {
    const double g = static_cast<double>(dy[j]) * (gamma ? gamma[j / R] : 1.0f);
    s.g += g;
    s.g_x_hat += g * ((x[j] - mean) * inv_std);
  }
  return s;
}

}  // namespace

void group_norm_statistics(float* mean, float* inv_std, const float* x, float eps, std::int64_t rows, std::int64_t m) {
#pragma omp parallel for schedule(static) if (rows * m >= kParallelMin)
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * m;
    const double shift = row[0];
    double sum = 0.0, squares = 0.0;
    for (std::int64_t j = 0; j < m; ++j) {
      const double d = row[j] - shift;
      sum += d;
      squares += d * d;
    }
    const double mean_shifted = sum / static_cast<double>(m);
    const double var = std::max(0.0, squares / static_cast<double>(m) - mean_shifted * mean_shifted);
    mean[r] = static_cast<float>(shift + mean_shifted);
    inv_std[r] = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
  }
}

void group_norm_forward(float* y, float* mean, float* inv_std, const float* x, const float* gamma, const float* beta,
                        float eps, std::int64_t N, std::int64_t G, std::int64_t m, std::int64_t R) {
  const std::int64_t rows = N * G;
  group_norm_statistics(mean, inv_std, x, eps, rows, m);
#pragma omp parallel for schedule(static) if (rows * m >= kParallelMin)
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t p0 = (r % G) * m / R;  // the row's first parameter
    const float* gamma_row = gamma ? gamma + p0 : nullptr;
    const float* beta_row = beta ? beta + p0 : nullptr;
    const double mu = mean[r], is = inv_std[r];
    for (std::int64_t j = 0; j < m; ++j) {
      const double x_hat = (x[r * m + j] - mu) * is;
      const double g = gamma_row ? gamma_row[j / R] : 1.0, b = beta_row ? beta_row[j / R] : 0.0;
      y[r * m + j] = static_cast<float>(g * x_hat + b);
    }
  }
}

void group_norm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* mean,
                         const float* inv_std, const float* gamma, std::int64_t N, std::int64_t G, std::int64_t m,
                         std::int64_t R) {
  const std::int64_t rows = N * G;
  const bool parallel = rows * m >= kParallelMin;
  if (dx) {
#pragma omp parallel for schedule(static) if (parallel)
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t offset = r * m;
      const float* gamma_row = gamma ? gamma + (r % G) * m / R : nullptr;
      const double mu = mean[r], is = inv_std[r];
      const RowGradSums s = row_grad_sums(dy + offset, x + offset, mu, is, gamma_row, m, R);
      const double dm = static_cast<double>(m);
      for (std::int64_t j = 0; j < m; ++j) {
        const double g = static_cast<double>(dy[offset + j]) * (gamma_row ? gamma_row[j / R] : 1.0f);
        const double x_hat = (x[offset + j] - mu) * is;
        dx[offset + j] = static_cast<float>(is / dm * (dm * g - s.g - x_hat * s.g_x_hat));
      }
    }
  }
  if (!dgamma && !dbeta) return;
  // Parameter p covers values p*R .. p*R+R-1 of every example, all in the row
  // (p*R)/m of that example's G rows.
  const std::int64_t P = G * m / R;
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t p = 0; p < P; ++p) {
    double a = 0.0, b = 0.0;
    for (std::int64_t n = 0; n < N; ++n) {
      const std::int64_t r = n * G + p * R / m;
      const double mu = mean[r], is = inv_std[r];
      const std::int64_t first = n * G * m + p * R;
      for (std::int64_t k = first; k < first + R; ++k) {
        a += static_cast<double>(dy[k]) * ((x[k] - mu) * is);
        b += dy[k];
      }
    }
    if (dgamma) dgamma[p] = static_cast<float>(a);
    if (dbeta) dbeta[p] = static_cast<float>(b);
  }
}

}  // namespace bnorm::kernels

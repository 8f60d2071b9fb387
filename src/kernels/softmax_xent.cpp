#include "bnorm/kernels/softmax_xent.hpp"

#include <algorithm>
#include <cmath>

namespace bnorm::kernels {

double softmax_cross_entropy(float* dlogits, const float* logits, const std::int32_t* labels, std::int64_t N,
                             std::int64_t K) {
  double total = 0.0;
  const float inv_n = 1.0f / static_cast<float>(N);
  for (std::int64_t n = 0; n < N; ++n) {
    const float* z = logits + n * K;
    // Subtract the row maximum so exp cannot overflow; log-sum-exp in double.
    const float zmax = *std::max_element(z, z + K);
    double sum = 0.0;
    for (std::int64_t k = 0; k < K; ++k) sum += std::exp(static_cast<double>(z[k] - zmax));
    const double log_sum = std::log(sum);
    total += log_sum - static_cast<double>(z[labels[n]] - zmax);
    if (dlogits) {
      float* d = dlogits + n * K;
      for (std::int64_t k = 0; k < K; ++k) {
        const double p = std::exp(static_cast<double>(z[k] - zmax) - log_sum);
        d[k] = static_cast<float>(p) * inv_n;
      }
      d[labels[n]] -= inv_n;
    }
  }
  return total / static_cast<double>(N);
}

void argmax_rows(std::int64_t* predicted, const float* logits, std::int64_t N, std::int64_t K) {
  for (std::int64_t n = 0; n < N; ++n) {
    const float* z = logits + n * K;
    predicted[n] = std::max_element(z, z + K) - z;
  }
}

double mean_squared_error(float* dpred, const float* pred, const float* target, std::int64_t N, std::int64_t T) {
  const std::int64_t count = N * T;
  const float scale = 2.0f / static_cast<float>(count);
  double total = 0.0;
  for (std::int64_t i = 0; i < count; ++i) {
    const float diff = pred[i] - target[i];
    total += static_cast<double>(diff) * static_cast<double>(diff);
    if (dpred) dpred[i] = scale * diff;
  }
  return total / static_cast<double>(count);
}

}  // namespace bnorm::kernels

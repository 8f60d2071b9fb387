#pragma once
// Central finite differences of
//   L(x, θ) = Σ r ⊙ f(x; θ)       (r a fixed random tensor, L accumulated in double)
// against a layer's backward pass, for the input and every parameter.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace bnorm::test {

// Float32 forward passes put noise of about 1e-7·|L| into L; with h = 1e-3 the
// central difference is good to a few 1e-4, so these bounds leave headroom yet
// fail for any gradient that is off by more than about 1 %.
constexpr double kStep = 1e-3;
constexpr double kAbsTol = 3e-3;
constexpr double kRelTol = 1e-2;

struct Mismatch {
  std::string what;
  std::int64_t index = -1;
  double analytic = 0, numeric = 0;
};

// Compares analytic[i] with the central difference of loss() in *value[i].
inline std::vector<Mismatch> compare(const std::string& what, float* values, const float* analytic, std::int64_t n,
                              const std::function<double()>& loss) {
  std::vector<Mismatch> bad;
  for (std::int64_t i = 0; i < n; ++i) {
    const float saved = values[i];
    values[i] = static_cast<float>(saved + kStep);
    const double up = loss();
    values[i] = static_cast<float>(saved - kStep);
    const double down = loss();
    values[i] = saved;
    // The perturbation actually applied, after rounding to float.
    const double h2 = static_cast<double>(static_cast<float>(saved + kStep)) - static_cast<float>(saved - kStep);
    const double numeric = (up - down) / h2;
    if (std::abs(numeric - analytic[i]) > kAbsTol + kRelTol * std::abs(numeric))
      bad.push_back({what, i, analytic[i], numeric});
  }
  return bad;
}

inline std::string report(const std::vector<Mismatch>& bad) {
  std::string s;
  for (std::size_t i = 0; i < bad.size() && i < 8; ++i)
    s += bad[i].what + "[" + std::to_string(bad[i].index) + "]: analytic " + std::to_string(bad[i].analytic) +
         " numeric " + std::to_string(bad[i].numeric) + "\n";
  return s;
}

// Checks dx and every parameter gradient of one layer in training mode.
inline void check_layer(LayerHarness& h, Tensor x, std::uint64_t seed) {
  Rng rng(seed);
  Tensor y;
  h->forward(y, x, Mode::train);
  const Tensor r = random_tensor(y.shape(), rng);
  auto loss = [&] {
    Tensor out;
    h->forward(out, x, Mode::train);
    double sum = 0.0;
    for (std::int64_t i = 0; i < out.size(); ++i) sum += static_cast<double>(r[i]) * out[i];
    return sum;
  };
  Tensor dx;
  h->forward(y, x, Mode::train);
  h->backward(&dx, r);
  const std::vector<float> grads = h.grads;  // the next forwards must not disturb the copy
  ASSERT_EQ(dx.shape(), x.shape());

  auto bad = compare("dx", x.data(), dx.data(), x.size(), loss);
  std::int64_t offset = 0;
  for (const auto& slot : h->param_slots()) {
    const std::int64_t n = numel(slot.shape);
    auto more = compare("d" + slot.name, h.params.data() + offset, grads.data() + offset, n, loss);
    bad.insert(bad.end(), more.begin(), more.end());
    offset += n;
  }
  EXPECT_TRUE(bad.empty()) << h->type() << " on input " << shape_str(x.shape()) << ": " << bad.size()
                           << " gradient entries disagree\n"
                           << report(bad);
}

}  // namespace bnorm::test

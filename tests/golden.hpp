#pragma once
// Comparing results with golden values a PyTorch script wrote into a
// safetensors fixture (tests/fixtures, scripts/make_*_fixtures.py).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "bnorm/io/safetensors.hpp"
#include "bnorm/tensor.hpp"

namespace bnorm::test {

// Every value within |got - want| <= tol * (1 + |want|); a failure names the
// first value off and how many are.
inline void expect_close(const std::string& what, const float* got, const std::vector<float>& want, double tol) {
  std::int64_t bad = 0, first = -1;
  for (std::size_t i = 0; i < want.size(); ++i)
    if (!(std::abs(static_cast<double>(got[i]) - want[i]) <= tol * (1.0 + std::abs(want[i])))) {
      if (first < 0) first = static_cast<std::int64_t>(i);
      ++bad;
    }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << want.size() << " values off; first at " << first << ": got "
                    << (first >= 0 ? got[first] : 0.0f) << " want " << (first >= 0 ? want[static_cast<std::size_t>(first)] : 0.0f)
                    << " (tol " << tol << ")";
}

// A fixture tensor as a float32 Tensor of its shape.
inline Tensor tensor_from(const SafeTensor& t) {
  Tensor out(t.shape);
  const auto v = t.to_f32();
  std::copy(v.begin(), v.end(), out.data());
  return out;
}

}  // namespace bnorm::test

#pragma once
// Shared helpers for the tests: random tensors and a harness that gives a lone
// layer the parameter/gradient buffers a Model would normally provide.
#include <cmath>
#include <numeric>
#include <vector>

#include "bnorm/nn/layer.hpp"
#include "bnorm/rng.hpp"
#include "bnorm/tensor.hpp"

namespace bnorm::test {

inline Tensor random_tensor(const Shape& shape, Rng& rng, double mean = 0.0, double stddev = 1.0) {
  Tensor t(shape);
  for (std::int64_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>(mean + stddev * rng.normal());
  return t;
}

struct LayerHarness {
  LayerPtr layer;
  std::vector<float> params, grads;

  explicit LayerHarness(LayerPtr l, std::uint64_t seed = 1) : layer(std::move(l)) {
    std::int64_t n = 0;
    for (const auto& slot : layer->param_slots()) n += numel(slot.shape);
    params.assign(static_cast<std::size_t>(n), 0.0f);
    grads.assign(static_cast<std::size_t>(n), 0.0f);
    layer->bind_parameters(params, grads);
    Rng rng(seed);
    layer->init_parameters(rng);
  }
  Layer* operator->() { return layer.get(); }
};

}  // namespace bnorm::test

#pragma once
// Shared helpers for the tests: random tensors and a harness that gives a lone
// layer the parameter/gradient buffers a Model would normally provide.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "bnorm/nn/layer.hpp"
#include "bnorm/rng.hpp"
#include "bnorm/tensor.hpp"
#include "bnorm/train/dataset.hpp"

namespace bnorm::test {

inline Tensor random_tensor(const Shape& shape, Rng& rng, double mean = 0.0, double stddev = 1.0) {
  Tensor t(shape);
  for (std::int64_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>(mean + stddev * rng.normal());
  return t;
}

// n byte images (1, 4, 4) of 10 classes, pixel f of an example of class f
// brighter than the rest: enough signal that a few training steps move the
// weights (and the running averages away from the final statistics).
inline Dataset synthetic_images(std::int64_t n, std::uint64_t seed) {
  Dataset d;
  d.count = n;
  d.example_shape = {1, 4, 4};
  d.num_classes = 10;
  d.features = 16;
  Rng rng(seed);
  for (std::int64_t i = 0; i < n; ++i) {
    const auto label = static_cast<std::int32_t>(rng.below(10));
    d.labels.push_back(label);
    for (int f = 0; f < 16; ++f)
      d.bytes.push_back(static_cast<std::uint8_t>(std::min<std::uint64_t>(255, rng.below(120) + (f == label ? 120 : 0))));
  }
  return d;
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

#pragma once
// The order in which a training epoch visits examples: a fresh permutation per
// epoch drawn from the run's Rng, cut into mini-batches.
#include <cstdint>
#include <span>
#include <vector>

#include "bnorm/rng.hpp"

namespace bnorm {

class BatchOrder {
 public:
  // drop_singleton: leave out a last batch of exactly one example, which a
  // training-mode batch norm cannot normalize (its variance is 0).
  BatchOrder(std::int64_t count, std::int64_t batch_size, bool drop_singleton);

  void shuffle(Rng& rng);  // Fisher-Yates over all examples
  std::int64_t num_batches() const;
  std::span<const std::int64_t> batch(std::int64_t b) const;  // indices of batch b
  std::int64_t examples_per_epoch() const;

 private:
  std::vector<std::int64_t> order_;
  std::int64_t batch_size_;
  bool drop_singleton_;
};

}  // namespace bnorm

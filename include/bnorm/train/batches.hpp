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

  // The current permutation, and a saved one put back (a resumed run must
  // visit the rest of the epoch in the same order). restore throws Error
  // unless order is a permutation of 0..count-1.
  std::span<const std::int64_t> order() const { return order_; }
  void restore(const std::vector<std::int64_t>& order);

 private:
  std::vector<std::int64_t> order_;
  std::int64_t batch_size_;
  bool drop_singleton_;
};

}  // namespace bnorm

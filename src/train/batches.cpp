#include "bnorm/train/batches.hpp"

#include <algorithm>
#include <numeric>
#include <string>
#include <utility>

#include "bnorm/error.hpp"

namespace bnorm {

BatchOrder::BatchOrder(std::int64_t count, std::int64_t batch_size, bool drop_singleton)
    : order_(static_cast<std::size_t>(count)), batch_size_(batch_size), drop_singleton_(drop_singleton) {
  if (batch_size_ < 1) throw Error("batch size must be at least 1");
  std::iota(order_.begin(), order_.end(), std::int64_t{0});
}

void BatchOrder::shuffle(Rng& rng) {
  for (std::size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rng.below(i)]);
}

void BatchOrder::restore(const std::vector<std::int64_t>& order) {
  if (order.size() != order_.size())
    throw Error("saved batch order has " + std::to_string(order.size()) + " entries, the training set " +
                std::to_string(order_.size()));
  std::vector<bool> seen(order.size(), false);
  for (const std::int64_t i : order) {
    if (i < 0 || static_cast<std::size_t>(i) >= order.size() || seen[static_cast<std::size_t>(i)])
      throw Error("saved batch order is not a permutation of the training set");
    seen[static_cast<std::size_t>(i)] = true;
  }
  order_ = order;
}

std::int64_t BatchOrder::examples_per_epoch() const {
  const auto n = static_cast<std::int64_t>(order_.size());
  const bool drop = drop_singleton_ && n % batch_size_ == 1;
  return drop ? n - 1 : n;
}

std::int64_t BatchOrder::num_batches() const { return (examples_per_epoch() + batch_size_ - 1) / batch_size_; }

std::span<const std::int64_t> BatchOrder::batch(std::int64_t b) const {
  const std::int64_t begin = b * batch_size_;
  const std::int64_t end = std::min(begin + batch_size_, examples_per_epoch());
  return {order_.data() + begin, static_cast<std::size_t>(end - begin)};
}

}  // namespace bnorm

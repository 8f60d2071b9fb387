// Mini-batch order: which batches an epoch has and how they are shuffled.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "bnorm/rng.hpp"
#include "bnorm/train/batches.hpp"

namespace bnorm {
namespace {

TEST(Batches, DropsOnlyALastBatchOfOneAndShufflesAPermutation) {
  BatchOrder keep(130, 64, true);  // 64 + 64 + 2
  EXPECT_EQ(keep.num_batches(), 3);
  EXPECT_EQ(keep.batch(2).size(), 2u);
  BatchOrder drop(129, 64, true);  // 64 + 64 + 1 → the 1 is left out
  EXPECT_EQ(drop.num_batches(), 2);
  EXPECT_EQ(drop.examples_per_epoch(), 128);
  BatchOrder no_drop(129, 64, false);
  EXPECT_EQ(no_drop.num_batches(), 3);

  Rng a(3), b(3);
  BatchOrder x(1000, 10, true), y(1000, 10, true);
  x.shuffle(a);
  y.shuffle(b);
  std::vector<std::int64_t> seen;
  for (std::int64_t i = 0; i < x.num_batches(); ++i) {
    const auto bx = x.batch(i), by = y.batch(i);
    EXPECT_TRUE(std::equal(bx.begin(), bx.end(), by.begin()));
    seen.insert(seen.end(), bx.begin(), bx.end());
  }
  std::vector<std::int64_t> sorted = seen;
  std::sort(sorted.begin(), sorted.end());
  for (std::int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[static_cast<std::size_t>(i)], i);
  EXPECT_NE(seen[0] + seen[1] * 1000, 1000);  // not the identity order
}

}  // namespace
}  // namespace bnorm

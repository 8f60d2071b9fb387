// The cache sizes the kernels read at run time, the parsing of sysfs's sizes,
// and the rules that turn sizes into the batch-norm kernels' tuning.
#include <gtest/gtest.h>

#include "bnorm/kernels/batchnorm.hpp"
#include "bnorm/kernels/cpu_caches.hpp"

namespace bnorm::test {
namespace {

using kernels::CacheSizes;

TEST(CpuCaches, SizesArePositiveAndGrowWithTheLevel) {
  const CacheSizes& caches = kernels::cpu_caches();
  EXPECT_GT(caches.l1d_bytes, 0);
  EXPECT_LE(caches.l1d_bytes, caches.l2_bytes);
  EXPECT_LE(caches.l2_bytes, caches.l3_bytes);
  // Read once: a second call gives the same object.
  EXPECT_EQ(&caches, &kernels::cpu_caches());
  for (int level = 0; level < 3; ++level) {
    const std::string source = kernels::cpu_cache_source(level);
    EXPECT_TRUE(source == "environment" || source == "sysfs" || source == "cpuid" || source == "default") << source;
  }
}

TEST(CpuCaches, ParsesSysfsSizes) {
  EXPECT_EQ(kernels::parse_cache_size("32K"), 32 * 1024);
  EXPECT_EQ(kernels::parse_cache_size("1024K\n"), 1024 * 1024);
  EXPECT_EQ(kernels::parse_cache_size("32768K"), 32 * 1024 * 1024);
  EXPECT_EQ(kernels::parse_cache_size("2M"), 2 * 1024 * 1024);
  EXPECT_EQ(kernels::parse_cache_size("65536"), 65536);
  EXPECT_EQ(kernels::parse_cache_size("3\n"), 3);  // a level file
  // Anything else is "not known", never a guess.
  for (const char* bad : {"", "K", "32KB", "32 K", "-32K", "32G", "1.5M", "99999999999999999999"})
    EXPECT_EQ(kernels::parse_cache_size(bad), 0) << '"' << bad << '"';
}

// Larger caches never give a smaller group, a lower streaming threshold or a
// shorter prefetch distance; and every value is usable.
TEST(CpuCaches, TuningRulesGrowWithTheCaches) {
  const CacheSizes sizes[] = {{16 << 10, 256 << 10, 4 << 20},
                              {32 << 10, 512 << 10, 32 << 20},
                              {48 << 10, 2 << 20, 260 << 20},
                              {64 << 10, 4 << 20, 512 << 20}};
  for (std::size_t i = 0; i < std::size(sizes); ++i) {
    const kernels::BatchnormTuning tuning = kernels::batchnorm_tuning(sizes[i]);
    EXPECT_GT(tuning.group_bytes, 0);
    EXPECT_GT(tuning.stream_footprint_bytes, 0);
    EXPECT_GE(tuning.prefetch_bytes, 64);
    // A group fits the core's L2; a streamed pass is larger than any group.
    EXPECT_LE(tuning.group_bytes, sizes[i].l2_bytes);
    EXPECT_GT(tuning.stream_footprint_bytes, tuning.group_bytes);
    if (i == 0) continue;
    const kernels::BatchnormTuning smaller = kernels::batchnorm_tuning(sizes[i - 1]);
    EXPECT_GE(tuning.group_bytes, smaller.group_bytes);
    EXPECT_GE(tuning.stream_footprint_bytes, smaller.stream_footprint_bytes);
    EXPECT_GE(tuning.prefetch_bytes, smaller.prefetch_bytes);
  }
}

TEST(CpuCaches, KernelsUseTheRulesForThisMachine) {
  const kernels::BatchnormTuning expected = kernels::batchnorm_tuning(kernels::cpu_caches());
  const kernels::BatchnormTuning& used = kernels::batchnorm_tuning();
  EXPECT_EQ(used.group_bytes, expected.group_bytes);
  EXPECT_EQ(used.stream_footprint_bytes, expected.stream_footprint_bytes);
  EXPECT_EQ(used.prefetch_bytes, expected.prefetch_bytes);
}

}  // namespace
}  // namespace bnorm::test

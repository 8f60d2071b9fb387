#pragma once
// The data caches of the machine the kernels run on, for the kernels that size
// their blocks and pick their stores by them. Read once per process from
// Linux's sysfs, then (x86) from CPUID, else taken as 32 KiB, 1 MiB and
// 32 MiB; never chosen by CPU model. The environment variables
// BNORM_L1D_BYTES, BNORM_L2_BYTES and BNORM_L3_BYTES, when set to a positive
// size ("2M", "1536K", "65536"), replace what was read, so that a test or a
// measurement can play another machine.
#include <cstdint>
#include <string_view>

namespace bnorm::kernels {

struct CacheSizes {
  std::int64_t l1d_bytes;  // one core's level-1 data cache
  std::int64_t l2_bytes;   // one core's level-2 cache
  std::int64_t l3_bytes;   // the level-3 cache that core shares, whole
};

// This machine's, read on the first call (thread-safe) and kept.
const CacheSizes& cpu_caches();

// Where each of cpu_caches()'s three sizes came from: "environment", "sysfs",
// "cpuid" or "default", in the order L1d, L2, L3 (for `bnorm bench bn`).
const char* cpu_cache_source(int level_index);

// A size as sysfs and the environment variables write it: decimal digits,
// then nothing (bytes), K or M (KiB, MiB), then at most a line end. 0 for
// anything else, so a malformed file reads as "not known".
std::int64_t parse_cache_size(std::string_view text);

}  // namespace bnorm::kernels

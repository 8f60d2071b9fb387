#pragma once
// What the trainer needs from a group of processes training one model on
// shares of each mini-batch. The MPI implementation is in src/dist; nothing
// here names MPI, so the library builds without it.
#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "bnorm/nn/batch_stats_sync.hpp"

namespace bnorm {

class DataParallel : public BatchStatsSync {
 public:
  virtual int rank() const = 0;  // 0 .. size() - 1; rank 0 prints and writes files
  // The flat gradient buffer, summed over processes in place: one collective
  // per training step. Every process must end with the same bits.
  virtual void allreduce_sum(std::span<float> data) = 0;
  using BatchStatsSync::allreduce_sum;
  // Rank root's bytes to every process.
  virtual void broadcast(std::span<unsigned char> data, int root) = 0;
  // Every process's value, in rank order (consistency checks).
  virtual std::vector<std::uint64_t> allgather(std::uint64_t value) = 0;
  using BatchStatsSync::allgather;
};

// The contiguous share [begin, begin + count) of a global batch of `total`
// examples that rank `rank` of `ranks` takes: the first total % ranks ranks
// get one example more. A share may be empty when total < ranks.
struct Share {
  std::int64_t begin = 0, count = 0;
};
inline Share share_of(std::int64_t total, int rank, int ranks) {
  const std::int64_t base = total / ranks, extra = total % ranks, r = rank;
  return {r * base + std::min<std::int64_t>(r, extra), base + (r < extra ? 1 : 0)};
}

// FNV-1a of bytes: a cheap fingerprint to check that processes agree.
inline std::uint64_t fingerprint(std::span<const unsigned char> bytes, std::uint64_t h = 1469598103934665603ull) {
  for (unsigned char b : bytes) h = (h ^ b) * 1099511628211ull;
  return h;
}

}  // namespace bnorm

#pragma once
// Synchronized batch norm: when a mini-batch is split across processes, each
// BatchNorm layer can combine its statistics over the whole batch through
// this hook instead of normalizing its own part alone. The interface speaks
// only of doubles and ranks; the MPI implementation is in src/dist.
#include <cstdint>
#include <span>

namespace bnorm {

class Model;

class BatchStatsSync {
 public:
  virtual ~BatchStatsSync() = default;
  virtual int size() const = 0;  // processes taking part
  // out (size() * in.size()) receives every process's `in`, in rank order.
  // Every process must call it, in the same order, with the same in.size().
  virtual void allgather(std::span<double> out, std::span<const double> in) = 0;
  // Element-wise sum over all processes, in place, identical bits on every one.
  virtual void allreduce_sum(std::span<double> data) = 0;
};

// Per-channel statistics of a part of a batch: count values, their mean and
// M2 = Σ (x - mean)^2.
struct MomentsView {
  double count;
  std::span<const double> mean;  // (C)
  std::span<const double> m2;    // (C)
};

// Combines parts with Chan et al.'s pairwise formula, in the order given:
//   n = na + nb,  delta = mean_b - mean_a,
//   mean = mean_a + delta * nb / n,  M2 = M2_a + M2_b + delta^2 * na * nb / n.
// Parts with count 0 are skipped. Works on differences of means, so a common
// offset (mean 1e6, spread 1) costs no precision. Returns the total count;
// mean and m2 (C) are assigned.
double merge_moments(std::span<double> mean, std::span<double> m2, std::span<const MomentsView> parts);

// Points every BatchNorm layer of the model at sync (nullptr: each normalizes
// its own input again). Returns how many layers there are.
int attach_batch_stats_sync(Model& model, BatchStatsSync* sync);

// For a process whose share of a training step is empty: takes part in every
// synchronized BatchNorm's collectives as a training forward and backward
// would (forward in layer order, backward in reverse), contributing no values.
// Its running estimates move with the global statistics like everyone's.
// The model's parameter gradients are left to the caller (they are zero).
void join_step_without_examples(Model& model);

}  // namespace bnorm

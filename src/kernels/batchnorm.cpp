// Batch-normalization kernels. Semantics are documented in
// include/bnorm/kernels/batchnorm.hpp; the comments here explain how the loops
// are made fast without giving up precision.
//
// Memory traffic is the cost: training forward reads x twice (statistics, then
// normalize) and writes y once; backward reads x and dy twice and writes dx once.
// The training passes take a group of channels at a time (an L2's worth of
// data: runs of whole channels, or a block of columns for S == 1) and run the
// second pass while the group is still in the core's cache, so memory sees x
// read once. A pass whose tensors would crowd the L3 writes its output with
// streaming stores, which skip reading the old contents first. Both sizes
// follow the caches of the machine (batchnorm_tuning).
//
// Layouts: for S == 1, an (N, C) input, a channel's values are strided by C, so
// the loops walk rows and keep C accumulators, vectorized across channels; the
// threads split the channels. For S > 1 each (n, c) pair is a contiguous run of
// S values; the threads split the channels and vectorize within runs.
//
// Precision: sums run in float only over short stretches (1024 values of a
// run, or a block of 16 rows), around a per-channel shift, then merge into double.
// Float lanes keep the inner loops vectorizable; the shift and the short
// stretches keep the error near float epsilon even for |mean| >> std.
//
// Each hot function is compiled three times (AVX-512, AVX2, baseline x86-64)
// and the loader picks the best for the CPU it runs on (GCC/Clang
// target_clones), so the portable build is fast on new machines too.
#include "bnorm/kernels/batchnorm.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

// The vectorized paths store around the caches and fence with SSE
// instructions, which every x86-64 has (a 32-bit x86 need not); elsewhere the
// entry points run the plain reference (batchnorm_reference.cpp).
#if defined(__x86_64__)
#define BNORM_BN_VECTORIZED 1
#include <immintrin.h>
#include <omp.h>

#include "multiversion.hpp"
#else
#define BNORM_BN_VECTORIZED 0
#include "bnorm/kernels/batchnorm_reference.hpp"
#endif

namespace bnorm::kernels {

// The rules, each from the one cache that limits it. Sizes are as the
// machine reports them: the AMD EPYC (Zen 4) these were measured on reports
// L1d 32 KiB, L2 512 KiB per core and L3 32 MiB, where the rules give
// today's measured values (512 KiB, 12 MiB, 4 KiB).
BatchnormTuning batchnorm_tuning(const CacheSizes& caches) {
  BatchnormTuning tuning{};
  // A group the size of the L2: its sums read it once, and the second pass,
  // last example first, starts with what the sums read last, so that what
  // its own output pushes out of the L2 is what it needs last. (The 512 KiB
  // the machine above reports is the budget these kernels were tuned with.)
  tuning.group_bytes = caches.l2_bytes;
  // Stream when the pass's tensors come to 3/8 of the L3 or more: a smaller pass
  // leaves its output in the L3, with room for the layer's other data and
  // the other cores, for the next layer to read. With 4 MiB tensors
  // (256x4096, below the 12 MiB this gives on a 32 MiB L3) inference took
  // 0.71 and the training forward 0.86 of the streamed time; the backward,
  // with three tensors, was faster streamed, and the default CNN's first
  // batch norm (6.4 MB tensors) streams in both directions.
  tuning.stream_footprint_bytes = caches.l3_bytes / 8 * 3;
  // Ask for data an eighth of the L1d ahead (at least a line): enough lines
  // in flight to cover the memory's latency, while the lines asked for and
  // the two streams of a backward stay a small part of the L1d. One example
  // ahead was too short for 128x256x14x14 (stretches of 1.5-3.9 KB): two,
  // that is at least 4 KiB, made forward+backward 13 % faster there; for
  // 32x64x56x56 (12.5 KB stretches) one is enough.
  tuning.prefetch_bytes = std::max<std::int64_t>(caches.l1d_bytes / 8, 64);
  return tuning;
}

const BatchnormTuning& batchnorm_tuning() {
  static const BatchnormTuning tuning = batchnorm_tuning(cpu_caches());
  return tuning;
}

std::int64_t batchnorm_work_doubles(std::int64_t C) { return 4 * C; }

#if BNORM_BN_VECTORIZED
namespace {

// These stay fixed on every machine: kRowBlock and kRunBlock set where float
// sums merge into double, so the results' bits depend on them; kLanes,
// kRowChunk, kRowWidth and kChannelBlockMax are register and stack-array
// shapes (a block's coefficients and lanes, 4-32 KB, sit in any L1d); and
// kParallelMin is the cost of waking threads, not of memory.
constexpr std::int64_t kLanes = 16;             // independent float accumulators: one AVX-512 register
constexpr std::int64_t kRowBlock = 16;          // rows summed in float before merging into double (S == 1)
constexpr std::int64_t kRowWidth = 256;         // most columns in one block (S == 1)
constexpr int kRowChunk = 4;                    // lane groups summed in registers at a time (S == 1)
constexpr std::int64_t kRunBlock = 1024;        // values of a run summed in float before merging (S > 1)
constexpr std::int64_t kChannelBlockMax = 256;  // channels a thread owns at most (S > 1): 32 KB of lanes
// Below this many values a parallel region costs more than it saves: a hidden
// layer of 64x256 takes microseconds, while waking a second thread, and
// waiting for it at the barrier when another process holds that core, can
// take milliseconds.
constexpr std::int64_t kParallelMin = std::int64_t{1} << 18;

// Channels per group: as many as fit the group budget (batchnorm_tuning), at
// least one, and no more than a thread's share of C, so every thread has work.
std::int64_t channels_per_group(std::int64_t bytes_per_channel, std::int64_t C, bool parallel) {
  const std::int64_t threads = parallel ? omp_get_max_threads() : 1;
  const std::int64_t fit = batchnorm_tuning().group_bytes / std::max<std::int64_t>(bytes_per_channel, 1);
  return std::clamp<std::int64_t>(std::min(fit, (C + threads - 1) / threads), 1, kChannelBlockMax);
}

// How far ahead (in values) the sums over a group's stretch of example n ask
// for data: the same stretch of a later example, at least the tuning's
// prefetch distance on; 0 near the end of the batch.
std::int64_t prefetch_ahead(std::int64_t n, std::int64_t N, std::int64_t C, std::int64_t S, std::int64_t count) {
  const std::int64_t stretch = count * S * std::int64_t{sizeof(float)};
  const std::int64_t examples = (batchnorm_tuning().prefetch_bytes + stretch - 1) / stretch;
  return n + examples < N ? examples * C * S : 0;
}

// Columns per block in the fused (N, C) passes: whole groups of 64 (the
// register path), as many as fit the group budget, from 64 up to kRowWidth, and
// no more than a thread's share of C, so every thread has work.
std::int64_t row_block_width(std::int64_t bytes_per_column, std::int64_t C, bool parallel) {
  constexpr std::int64_t unit = kRowChunk * kLanes;
  const std::int64_t threads = parallel ? omp_get_max_threads() : 1;
  const std::int64_t fit = batchnorm_tuning().group_bytes / std::max<std::int64_t>(bytes_per_column, 1);
  const std::int64_t share = ((C + threads - 1) / threads + unit - 1) / unit * unit;
  return std::clamp<std::int64_t>(std::min(fit / unit * unit, share), unit, kRowWidth);
}

// Sixteen float lanes as one value (GCC/Clang vector extension): one zmm
// register in the AVX-512 copy, two ymm or four xmm in the others. Every copy
// adds the same values in the same lane order, so all give identical bits;
// an auto-vectorized scalar loop gave GCC room to shuffle lanes and ran at a
// third of the speed.
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));
typedef std::int32_t LaneBits __attribute__((vector_size(kLanes * sizeof(std::int32_t))));

// Loads through memcpy (unaligned-safe). A macro rather than a function: a
// function returning Lanes by value has a different ABI in each copy.
#define BNORM_LOAD_LANES(var, ptr) \
  Lanes var;                       \
  std::memcpy(&var, (ptr), sizeof var)

// Sixteen lanes stored around the caches to p (a whole cache line): four SSE
// streaming stores, which every x86-64 copy of the kernels can use.
__attribute__((always_inline)) inline void stream_lanes(float* p, const Lanes& v) {
  _mm_stream_ps(p, __builtin_shufflevector(v, v, 0, 1, 2, 3));
  _mm_stream_ps(p + 4, __builtin_shufflevector(v, v, 4, 5, 6, 7));
  _mm_stream_ps(p + 8, __builtin_shufflevector(v, v, 8, 9, 10, 11));
  _mm_stream_ps(p + 12, __builtin_shufflevector(v, v, 12, 13, 14, 15));
}

// Sixteen lanes to p: streamed (p is then a whole cache line) or stored plainly.
__attribute__((always_inline)) inline void store_lanes(float* p, const Lanes& v, bool stream) {
  if (stream)
    stream_lanes(p, v);
  else
    std::memcpy(p, &v, sizeof v);
}

// Whether a pass writes its output with streaming stores (batchnorm_tuning);
// tensors: how many tensors of N*C*S floats the pass reads or writes.
inline bool streams(std::int64_t N, std::int64_t C, std::int64_t S, std::int64_t tensors) {
  return tensors * N * C * S * static_cast<std::int64_t>(sizeof(float)) >= batchnorm_tuning().stream_footprint_bytes;
}

// Sixteen normalized values to y: with relu, max(0, v) as the plain loops
// compute it, and the mask bytes when mask is given.
__attribute__((always_inline)) inline void store_normalized(float* y, std::uint8_t* mask, bool relu, const Lanes& value,
                                                            bool stream) {
  Lanes v = value;  // by reference: clang refuses a 64-byte vector argument in the baseline copy
  if (relu) {
    const LaneBits positive = v > 0.0f;
    v = reinterpret_cast<Lanes>(reinterpret_cast<LaneBits>(v) & positive);
    if (mask)
      for (std::int64_t l = 0; l < kLanes; ++l) mask[l] = static_cast<std::uint8_t>(-positive[l]);
  }
  store_lanes(y, v, stream);
}

// Lane l's number, l, in each lane.
__attribute__((always_inline)) inline void lane_numbers(LaneBits& index) {
  for (std::int64_t l = 0; l < kLanes; ++l) index[l] = static_cast<std::int32_t>(l);
}

// b in the lanes where take_b is all ones, a where it is 0.
__attribute__((always_inline)) inline void blend(Lanes& a, const Lanes& b, const LaneBits& take_b) {
  a = reinterpret_cast<Lanes>((reinterpret_cast<LaneBits>(a) & ~take_b) | (reinterpret_cast<LaneBits>(b) & take_b));
}

// Lanes below `first` set to 0 (those values were counted already).
__attribute__((always_inline)) inline void keep_lanes_from(Lanes& d, std::int64_t first) {
  LaneBits lane;
  lane_numbers(lane);
  d = reinterpret_cast<Lanes>(reinterpret_cast<LaneBits>(d) & (lane >= static_cast<std::int32_t>(first)));
}

// Values before p starts a cache line (p is float-aligned): 0 to 15. Only
// whole lines are streamed; a line that two runs share is written with plain
// stores, since mixing the two kinds in one line makes the memory controller
// merge a partial line.
inline std::int64_t until_line(const float* p) {
  return static_cast<std::int64_t>((64 - (reinterpret_cast<std::uintptr_t>(p) & 63)) & 63) / 4;
}

// g = 0 where the ReLU mask is 0: the gradient that reaches a fused batch
// norm's output is dy where its ReLU let the value pass. Always inlined, so
// each compiled copy of a caller keeps its own vector width.
__attribute__((always_inline)) inline void keep_where_mask(Lanes& g, const std::uint8_t* mask) {
  LaneBits keep;
  for (std::int64_t l = 0; l < kLanes; ++l) keep[l] = -static_cast<std::int32_t>(mask[l]);
  g = reinterpret_cast<Lanes>(reinterpret_cast<LaneBits>(g) & keep);
}

inline double lane_sum(const Lanes& v) {
  double sum = 0.0;
  for (std::int64_t l = 0; l < kLanes; ++l) sum += v[l];
  return sum;
}

// Adds Σ (x - shift[c]) and Σ (x - shift[c])^2 over `runs` consecutive runs of
// S values (channels c0.. of one example): whole lane-widths into the float
// lanes s[r] and q[r] (a run's last partial lane-width masked, or, for
// S < 16, its values into the doubles). One call covers a block of channels,
// so the dispatch and the lane loads happen per block, not per run.
// `ahead` (in values, from prefetch_ahead) is where the same block of a later
// example lies: the stretches of one block are short and far apart, and the
// hardware prefetchers lose the first lines of each, so this asks for them
// early (0: nothing to ask for).
BNORM_MULTIVERSION
void block_moments(Lanes* s_out, Lanes* q_out, double* tail_sum, double* tail_sumsq, const float* x, std::int64_t runs,
                   std::int64_t S, const float* shift, std::int64_t ahead) {
  for (std::int64_t r = 0; r < runs; ++r) {
    // Local copies: through the pointers the compiler must assume x may alias
    // the lanes and would store them back on every step.
    Lanes s = s_out[r], q = q_out[r];
    const float* run = x + r * S;
    const float k = shift[r];
    std::int64_t i = 0;
    for (; i + kLanes <= S; i += kLanes) {
      __builtin_prefetch(run + i + ahead);
      BNORM_LOAD_LANES(v, run + i);
      const Lanes d = v - k;
      s += d;
      q += d * d;
    }
    if (i < S && S >= kLanes) {  // the run's last lane-width, less the lanes counted above
      BNORM_LOAD_LANES(v, run + S - kLanes);
      Lanes d = v - k;
      keep_lanes_from(d, kLanes - (S - i));
      s += d;
      q += d * d;
    } else if (i < S) {  // a run shorter than a lane-width
      double ts = 0.0, tq = 0.0;
      for (; i < S; ++i) {
        const double d = static_cast<double>(run[i] - k);
        ts += d;
        tq += d * d;
      }
      tail_sum[r] += ts;
      tail_sumsq[r] += tq;
    }
    s_out[r] = s;
    q_out[r] = q;
  }
}

// Adds Σ dy and Σ dy * (x - mean[c]) over `runs` consecutive runs, as block_moments does.
// With a ReLU mask (fused BN + ReLU) dy counts only where the mask is 1: the
// gradient that reaches the batch norm's output is dy where ReLU let it pass.
// `ahead` as in block_moments.
BNORM_MULTIVERSION
void block_grad_sums(Lanes* s_out, Lanes* q_out, double* tail_dy, double* tail_dy_xc, const float* dy, const float* x,
                     const std::uint8_t* mask, std::int64_t runs, std::int64_t S, const float* mean,
                     std::int64_t ahead) {
  for (std::int64_t r = 0; r < runs; ++r) {
    Lanes s = s_out[r], q = q_out[r];
    const float* dyr = dy + r * S;
    const float* xr = x + r * S;
    const std::uint8_t* mr = mask ? mask + r * S : nullptr;
    const float mu = mean[r];
    std::int64_t i = 0;
    if (mr) {
      for (; i + kLanes <= S; i += kLanes) {
        __builtin_prefetch(dyr + i + ahead);
        __builtin_prefetch(xr + i + ahead);
        BNORM_LOAD_LANES(g, dyr + i);
        BNORM_LOAD_LANES(v, xr + i);
        keep_where_mask(g, mr + i);
        s += g;
        q += g * (v - mu);
      }
    } else {
      for (; i + kLanes <= S; i += kLanes) {
        __builtin_prefetch(dyr + i + ahead);
        __builtin_prefetch(xr + i + ahead);
        BNORM_LOAD_LANES(g, dyr + i);
        BNORM_LOAD_LANES(v, xr + i);
        s += g;
        q += g * (v - mu);
      }
    }
    if (i < S && S >= kLanes) {  // the last lane-width, as in block_moments
      BNORM_LOAD_LANES(g, dyr + S - kLanes);
      BNORM_LOAD_LANES(v, xr + S - kLanes);
      if (mr) keep_where_mask(g, mr + S - kLanes);
      keep_lanes_from(g, kLanes - (S - i));
      s += g;
      q += g * (v - mu);
    } else if (i < S) {
      double ts = 0.0, tq = 0.0;
      for (; i < S; ++i) {
        const float d = dyr[i];
        const float g = mr && !mr[i] ? 0.0f : d;
        ts += g;
        tq += static_cast<double>(g) * static_cast<double>(xr[i] - mu);
      }
      tail_dy[r] += ts;
      tail_dy_xc[r] += tq;
    }
    s_out[r] = s;
    q_out[r] = q;
  }
}

// Two per-channel sums over one group of `count` consecutive channels of
// (N, C, S) data with S > 1, walking the group example by example.
// add_run_block(lanes_a, lanes_b, sums_a, sums_b, n) adds the group's runs of
// example n. Float lanes merge into the double sums every kRunBlock values of
// a channel; that schedule depends on N and S only, so a channel's sums do not
// depend on the group it falls in, and neither the thread count nor the group
// size changes the results.
template <class AddRunBlock>
void group_sums(double* sum_a, double* sum_b, std::int64_t N, std::int64_t S, std::int64_t count,
                AddRunBlock add_run_block) {
  Lanes a[kChannelBlockMax], b[kChannelBlockMax];
  for (std::int64_t r = 0; r < count; ++r) {
    sum_a[r] = sum_b[r] = 0.0;
    a[r] = b[r] = Lanes{};
  }
  std::int64_t since_merge = 0;
  for (std::int64_t n = 0; n < N; ++n) {
    add_run_block(a, b, sum_a, sum_b, n);
    since_merge += S;
    if (since_merge >= kRunBlock || n + 1 == N) {
      for (std::int64_t r = 0; r < count; ++r) {
        sum_a[r] += lane_sum(a[r]);
        sum_b[r] += lane_sum(b[r]);
        a[r] = b[r] = Lanes{};
      }
      since_merge = 0;
    }
  }
}

// group_sums over all channels when nothing else is to be done with them:
// each thread takes one block of consecutive channels (up to
// kChannelBlockMax), so it reads its block's part of every example as one
// long stretch. With blocks of 16 channels, 128x256x14x14 read 12.5 KB
// stretches 200 KB apart and the hardware prefetchers restarted at each jump.
// add_run_block(lanes_a, lanes_b, sums_a, sums_b, n, c0, count) as above for
// channels c0..c0+count-1.
template <class AddRunBlock>
void block_sums(double* sum_a, double* sum_b, std::int64_t N, std::int64_t C, std::int64_t S,
                AddRunBlock add_run_block) {
  const bool parallel = N * C * S >= kParallelMin;
  const std::int64_t threads = parallel ? omp_get_max_threads() : 1;
  const std::int64_t block = std::clamp<std::int64_t>((C + threads - 1) / threads, 1, kChannelBlockMax);
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t c0 = 0; c0 < C; c0 += block) {
    const std::int64_t count = std::min(C - c0, block);
    group_sums(sum_a + c0, sum_b + c0, N, S, count, [&](Lanes* a, Lanes* b, double* sa, double* sb, std::int64_t n) {
      add_run_block(a, b, sa, sb, n, c0, count);
    });
  }
}

// Σ(x − shift[c]) and Σ(x − shift[c])² for columns [c0, c1) (at most
// kRowWidth) of an (N, C) input, over all rows.
// moments_row_block and grad_sums_row_block share their blocking on purpose:
// folded into one template taking a lambda, the lambda was not vectorized for
// the AVX-512 copy and 64x512 forward+backward went from 0.015 to 0.023 ms.
BNORM_MULTIVERSION
void moments_row_block(double* sum, double* sumsq, const float* shift, const float* x, std::int64_t N, std::int64_t C,
                       std::int64_t c0, std::int64_t c1) {
  float s[kRowChunk * kLanes], q[kRowChunk * kLanes];  // the tail: fewer than 64 columns
  for (std::int64_t c = c0; c < c1; ++c) sum[c] = sumsq[c] = 0.0;
  // Sixty-four channels at a time with the sums in registers: through
  // the arrays below every value cost two extra loads and two stores.
  // Each channel's sums run over the same rows in the same order either
  // way, so the bits do not depend on the path.
  std::int64_t cv = c0;
  for (; cv + kRowChunk * kLanes <= c1; cv += kRowChunk * kLanes) {
    Lanes k[kRowChunk];
    for (int u = 0; u < kRowChunk; ++u) std::memcpy(&k[u], shift + cv + u * kLanes, sizeof(Lanes));
    for (std::int64_t n0 = 0; n0 < N; n0 += kRowBlock) {
      const std::int64_t n1 = std::min(N, n0 + kRowBlock);
      Lanes sv[kRowChunk] = {}, qv[kRowChunk] = {};
      for (std::int64_t n = n0; n < n1; ++n)
        for (int u = 0; u < kRowChunk; ++u) {
          BNORM_LOAD_LANES(v, x + n * C + cv + u * kLanes);
          const Lanes d = v - k[u];
          sv[u] += d;
          qv[u] += d * d;
        }
      for (int u = 0; u < kRowChunk; ++u)
        for (std::int64_t l = 0; l < kLanes; ++l) {
          sum[cv + u * kLanes + l] += sv[u][l];
          sumsq[cv + u * kLanes + l] += qv[u][l];
        }
    }
  }
  const std::int64_t w = c1 - cv;
  if (w == 0) return;
  std::fill(s, s + w, 0.0f);
  std::fill(q, q + w, 0.0f);
  for (std::int64_t n0 = 0; n0 < N; n0 += kRowBlock) {
    const std::int64_t n1 = std::min(N, n0 + kRowBlock);
    for (std::int64_t n = n0; n < n1; ++n) {
      const float* row = x + n * C + cv;
      for (std::int64_t j = 0; j < w; ++j) {
        const float d = row[j] - shift[cv + j];
        s[j] += d;
        q[j] += d * d;
      }
    }
    for (std::int64_t j = 0; j < w; ++j) {
      sum[cv + j] += s[j];
      sumsq[cv + j] += q[j];
      s[j] = q[j] = 0.0f;
    }
  }
}

// moments_row_block over all columns, threads taking blocks of columns.
void channel_moments_rows(double* sum, double* sumsq, const float* shift, const float* x, std::int64_t N,
                          std::int64_t C) {
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (std::int64_t c0 = 0; c0 < C; c0 += kRowWidth)
    moments_row_block(sum, sumsq, shift, x, N, C, c0, std::min(C, c0 + kRowWidth));
}

// Per-channel Σ(x-shift), Σ(x-shift)^2 in double.

void channel_moments(double* sum, double* sumsq, const float* shift, const float* x, std::int64_t N, std::int64_t C,
                     std::int64_t S) {
  if (S == 1) {
    channel_moments_rows(sum, sumsq, shift, x, N, C);
    return;
  }
  block_sums(sum, sumsq, N, C, S,
             [&](Lanes* a, Lanes* b, double* sa, double* sb, std::int64_t n, std::int64_t c0, std::int64_t count) {
               const float* xn = x + (n * C + c0) * S;
               block_moments(a, b, sa, sb, xn, count, S, shift + c0, prefetch_ahead(n, N, C, S, count));
             });
}

// y = ((x - mean_hi[c]) - mean_lo[c]) * scale[c] + offset[c].
// The mean is split into a float and the float of its remainder: near 1e6 a
// float mean alone is off by up to 0.03, which is 3 % of a unit spread, while
// x - mean_hi is exact there (both within a factor of two) and mean_lo removes
// the rest. Subtracting before scaling keeps the same precision for y.
//
// With relu, y = max(0, that), as the separate ReLU computes it (r > 0 ? r : 0,
// so fused and unfused give the same bits), and mask, when given, records
// r > 0 per value: one byte where the ReLU's backward would read a float.
// Each variant has its own loop so the inner loops stay branch-free.
//
// normalize_rows: columns [c0, c1) of rows [0, rows) of an (N, C) input.
BNORM_MULTIVERSION
void normalize_rows(float* y, std::uint8_t* mask, bool relu, const float* x, const float* mean_hi, const float* mean_lo,
                    const float* scale, const float* offset, std::int64_t rows, std::int64_t C, std::int64_t c0,
                    std::int64_t c1, bool stream) {
  // Tiles of 16 rows by 64 columns with the columns' coefficients in
  // registers: loaded per value, they made four of every five loads. Whole
  // lines are streamed only when every row starts a cache line.
  stream = stream && until_line(y) == 0 && C % kLanes == 0 && c0 % kLanes == 0;
  constexpr std::int64_t kTile = kRowChunk * kLanes;
  for (std::int64_t n0 = 0; n0 < rows; n0 += kRowBlock) {
    const std::int64_t n1 = std::min(rows, n0 + kRowBlock);
    std::int64_t c = c0;
    for (; c + kTile <= c1; c += kTile) {
      Lanes hi[kRowChunk], lo[kRowChunk], a[kRowChunk], b[kRowChunk];
      std::memcpy(hi, mean_hi + c, sizeof hi);
      std::memcpy(lo, mean_lo + c, sizeof lo);
      std::memcpy(a, scale + c, sizeof a);
      std::memcpy(b, offset + c, sizeof b);
      for (std::int64_t n = n0; n < n1; ++n)
        for (int u = 0; u < kRowChunk; ++u) {
          const std::int64_t at = n * C + c + u * kLanes;
          BNORM_LOAD_LANES(v, x + at);
          store_normalized(y + at, mask ? mask + at : nullptr, relu, ((v - hi[u]) - lo[u]) * a[u] + b[u], stream);
        }
    }
    for (std::int64_t n = n0; n < n1 && c < c1; ++n) {  // the last columns, fewer than a tile
      const float* xr = x + n * C;
      float* yr = y + n * C;
      std::uint8_t* mr = mask ? mask + n * C : nullptr;
      if (!relu) {
        for (std::int64_t j = c; j < c1; ++j) yr[j] = ((xr[j] - mean_hi[j]) - mean_lo[j]) * scale[j] + offset[j];
      } else if (!mr) {
        for (std::int64_t j = c; j < c1; ++j) {
          const float v = ((xr[j] - mean_hi[j]) - mean_lo[j]) * scale[j] + offset[j];
          yr[j] = v > 0.0f ? v : 0.0f;
        }
      } else {
        for (std::int64_t j = c; j < c1; ++j) {
          const float v = ((xr[j] - mean_hi[j]) - mean_lo[j]) * scale[j] + offset[j];
          yr[j] = v > 0.0f ? v : 0.0f;
          mr[j] = v > 0.0f;
        }
      }
    }
  }
}

// `count` runs of S > 1 values, run r with channel r's coefficients; with
// `stream`, whole cache lines are written with streaming stores.
BNORM_MULTIVERSION
void normalize_segment(float* y, std::uint8_t* mask, bool relu, const float* x, const float* mean_hi,
                       const float* mean_lo, const float* scale, const float* offset, std::int64_t count,
                       std::int64_t S, bool stream) {
  // Values [from, to) of the segment, all in run r, one at a time.
  const auto plain = [&](std::int64_t from, std::int64_t to, std::int64_t r) {
    const float hi = mean_hi[r], lo = mean_lo[r], a = scale[r], b = offset[r];
    if (!relu) {
      for (std::int64_t i = from; i < to; ++i) y[i] = ((x[i] - hi) - lo) * a + b;
    } else if (!mask) {
      for (std::int64_t i = from; i < to; ++i) {
        const float v = ((x[i] - hi) - lo) * a + b;
        y[i] = v > 0.0f ? v : 0.0f;
      }
    } else {
      for (std::int64_t i = from; i < to; ++i) {
        const float v = ((x[i] - hi) - lo) * a + b;
        y[i] = v > 0.0f ? v : 0.0f;
        mask[i] = v > 0.0f;
      }
    }
  };
  if (S < kLanes) {
    for (std::int64_t r = 0; r < count; ++r) plain(r * S, (r + 1) * S, r);
    return;
  }
  // The runs lie end to end, so the segment goes by lane-widths that start at
  // cache lines of y, whatever S is; a lane-width across the end of a run is
  // computed with both runs' coefficients and each lane takes its own run's
  // (S >= 16: at most one end per lane-width). Every line but the segment's
  // first and last is then whole, and no run has a head or tail of its own.
  const std::int64_t total = count * S;
  std::int64_t i = std::min(total, until_line(y));  // fewer than 16 values: inside run 0
  plain(0, i, 0);
  LaneBits lane;
  lane_numbers(lane);
  for (std::int64_t r = 0; r < count; ++r) {
    const std::int64_t end = (r + 1) * S;
    const float hi = mean_hi[r], lo = mean_lo[r], a = scale[r], b = offset[r];
    for (; i + kLanes <= end; i += kLanes) {
      BNORM_LOAD_LANES(v, x + i);
      store_normalized(y + i, mask ? mask + i : nullptr, relu, ((v - hi) - lo) * a + b, stream);
    }
    if (i < end && i + kLanes <= total) {
      BNORM_LOAD_LANES(v, x + i);
      Lanes out = ((v - hi) - lo) * a + b;
      blend(out, ((v - mean_hi[r + 1]) - mean_lo[r + 1]) * scale[r + 1] + offset[r + 1],
            lane >= static_cast<std::int32_t>(end - i));
      store_normalized(y + i, mask ? mask + i : nullptr, relu, out, stream);
      i += kLanes;
    }
  }
  plain(i, total, count - 1);
}

// body(i) for i = 0, step, 2*step, ... below end, split statically across the
// threads when parallel. With stream, each thread then fences once: streamed
// stores are weakly ordered, and they must reach memory before the threads
// join (a fence per block stalled on every block's stores).
template <class Body>
void parallel_blocks(std::int64_t end, std::int64_t step, bool parallel, bool stream, Body body) {
#pragma omp parallel if (parallel)
  {
#pragma omp for schedule(static) nowait
    for (std::int64_t i = 0; i < end; i += step) body(i);
    if (stream) _mm_sfence();
  }
}

// Splits the N*C (example, channel) pairs into one contiguous share per
// thread and calls segment(n, c0, count) for each piece of a share that lies
// in one example. Shares follow memory, so a batch of one still splits.
// With stream, each thread fences once at the end, as in parallel_blocks.
template <class Segment>
void parallel_segments(std::int64_t N, std::int64_t C, bool parallel, bool stream, Segment segment) {
#pragma omp parallel if (parallel)
  {
    const std::int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    const std::int64_t first = N * C * t / threads, last = N * C * (t + 1) / threads;
    for (std::int64_t p = first; p < last;) {
      const std::int64_t n = p / C, c0 = p % C, count = std::min(C - c0, last - p);
      segment(n, c0, count);
      p += count;
    }
    if (stream) _mm_sfence();  // as in parallel_blocks
  }
}

// The whole tensor normalized with given coefficients (inference, and the
// synchronized training forward).
void normalize(float* y, std::uint8_t* mask, bool relu, const float* x, const float* mean_hi, const float* mean_lo,
               const float* scale, const float* offset, std::int64_t N, std::int64_t C, std::int64_t S) {
  const bool parallel = N * C * S >= kParallelMin, stream = streams(N, C, S, 2);
  if (S == 1) {  // blocks of columns, so the coefficients of a block stay in L1
    const std::int64_t width = row_block_width(N * std::int64_t{sizeof(float)}, C, parallel);
    parallel_blocks(C, width, parallel, stream, [&](std::int64_t c0) {
      normalize_rows(y, mask, relu, x, mean_hi, mean_lo, scale, offset, N, C, c0, std::min(C, c0 + width), stream);
    });
    return;
  }
  parallel_segments(N, C, parallel, stream, [&](std::int64_t n, std::int64_t c0, std::int64_t count) {
    const std::int64_t at = (n * C + c0) * S;
    normalize_segment(y + at, mask ? mask + at : nullptr, relu, x + at, mean_hi + c0, mean_lo + c0, scale + c0,
                      offset + c0, count, S, stream);
  });
}

// Σ dy and Σ dy·(x − mean[c]) for columns [c0, c1) (at most kRowWidth) of an
// (N, C) input, over all rows.
BNORM_MULTIVERSION
void grad_sums_row_block(double* sum_dy, double* sum_dy_xc, const float* dy, const float* x, const std::uint8_t* mask,
                         const float* mean, std::int64_t N, std::int64_t C, std::int64_t c0, std::int64_t c1) {
  float s[kRowChunk * kLanes], q[kRowChunk * kLanes];  // the tail: fewer than 64 columns
  for (std::int64_t c = c0; c < c1; ++c) sum_dy[c] = sum_dy_xc[c] = 0.0;
  // Sixty-four channels at a time in registers, as in moments_row_block.
  std::int64_t cv = c0;
  for (; cv + kRowChunk * kLanes <= c1; cv += kRowChunk * kLanes) {
    Lanes mu[kRowChunk];
    for (int u = 0; u < kRowChunk; ++u) std::memcpy(&mu[u], mean + cv + u * kLanes, sizeof(Lanes));
    for (std::int64_t n0 = 0; n0 < N; n0 += kRowBlock) {
      const std::int64_t n1 = std::min(N, n0 + kRowBlock);
      Lanes sv[kRowChunk] = {}, qv[kRowChunk] = {};
      for (std::int64_t n = n0; n < n1; ++n)
        for (int u = 0; u < kRowChunk; ++u) {
          const std::int64_t at = n * C + cv + u * kLanes;
          BNORM_LOAD_LANES(g, dy + at);
          BNORM_LOAD_LANES(v, x + at);
          if (mask) keep_where_mask(g, mask + at);
          sv[u] += g;
          qv[u] += g * (v - mu[u]);
        }
      for (int u = 0; u < kRowChunk; ++u)
        for (std::int64_t l = 0; l < kLanes; ++l) {
          sum_dy[cv + u * kLanes + l] += sv[u][l];
          sum_dy_xc[cv + u * kLanes + l] += qv[u][l];
        }
    }
  }
  const std::int64_t w = c1 - cv;
  if (w == 0) return;
  std::fill(s, s + w, 0.0f);
  std::fill(q, q + w, 0.0f);
  for (std::int64_t n0 = 0; n0 < N; n0 += kRowBlock) {
    const std::int64_t n1 = std::min(N, n0 + kRowBlock);
    for (std::int64_t n = n0; n < n1; ++n) {
      const float* xr = x + n * C + cv;
      const float* dyr = dy + n * C + cv;
      if (mask) {
        const std::uint8_t* mr = mask + n * C + cv;
        for (std::int64_t j = 0; j < w; ++j) {
          const float d = dyr[j];  // loaded unconditionally, so the select needs no branch
          const float g = mr[j] ? d : 0.0f;
          s[j] += g;
          q[j] += g * (xr[j] - mean[cv + j]);
        }
      } else {
        for (std::int64_t j = 0; j < w; ++j) {
          s[j] += dyr[j];
          q[j] += dyr[j] * (xr[j] - mean[cv + j]);
        }
      }
    }
    for (std::int64_t j = 0; j < w; ++j) {
      sum_dy[cv + j] += s[j];
      sum_dy_xc[cv + j] += q[j];
      s[j] = q[j] = 0.0f;
    }
  }
}

void grad_sums_rows(double* sum_dy, double* sum_dy_xc, const float* dy, const float* x, const std::uint8_t* mask,
                    const float* mean, std::int64_t N, std::int64_t C) {
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (std::int64_t c0 = 0; c0 < C; c0 += kRowWidth)
    grad_sums_row_block(sum_dy, sum_dy_xc, dy, x, mask, mean, N, C, c0, std::min(C, c0 + kRowWidth));
}

// dx = k*dy + (x - mean)*u + v, the backward's closing pass (coefficients per
// channel), over `count` channels of one example as in normalize_segment;
// with a mask, dy is taken as 0 where the mask is 0.
BNORM_MULTIVERSION
void apply_grad_segment(float* dx, const float* dy, const float* x, const std::uint8_t* mask, const float* mean,
                        const float* k, const float* u, const float* v, std::int64_t count, std::int64_t S,
                        bool stream) {
  const auto plain = [&](std::int64_t from, std::int64_t to, std::int64_t r) {
    const float mu = mean[r], kc = k[r], uc = u[r], vc = v[r];
    if (mask) {
      for (std::int64_t i = from; i < to; ++i) {
        const float d = dy[i];  // loaded unconditionally, so the select needs no branch
        dx[i] = kc * (mask[i] ? d : 0.0f) + (x[i] - mu) * uc + vc;
      }
    } else {
      for (std::int64_t i = from; i < to; ++i) dx[i] = kc * dy[i] + (x[i] - mu) * uc + vc;
    }
  };
  if (S < kLanes) {
    for (std::int64_t r = 0; r < count; ++r) plain(r * S, (r + 1) * S, r);
    return;
  }
  // By lane-widths across the runs, as in normalize_segment.
  const std::int64_t total = count * S;
  std::int64_t i = std::min(total, until_line(dx));
  plain(0, i, 0);
  LaneBits lane;
  lane_numbers(lane);
  for (std::int64_t r = 0; r < count; ++r) {
    const std::int64_t end = (r + 1) * S;
    const float mu = mean[r], kc = k[r], uc = u[r], vc = v[r];
    for (; i + kLanes <= end; i += kLanes) {
      BNORM_LOAD_LANES(g, dy + i);
      BNORM_LOAD_LANES(xv, x + i);
      if (mask) keep_where_mask(g, mask + i);
      store_lanes(dx + i, kc * g + (xv - mu) * uc + vc, stream);
    }
    if (i < end && i + kLanes <= total) {
      BNORM_LOAD_LANES(g, dy + i);
      BNORM_LOAD_LANES(xv, x + i);
      if (mask) keep_where_mask(g, mask + i);
      Lanes out = kc * g + (xv - mu) * uc + vc;
      blend(out, k[r + 1] * g + (xv - mean[r + 1]) * u[r + 1] + v[r + 1], lane >= static_cast<std::int32_t>(end - i));
      store_lanes(dx + i, out, stream);
      i += kLanes;
    }
  }
  plain(i, total, count - 1);
}

// The same for columns [c0, c1) of rows [0, rows) of an (N, C) input.
BNORM_MULTIVERSION
void apply_grad_rows(float* dx, const float* dy, const float* x, const std::uint8_t* mask, const float* mean,
                     const float* k, const float* u, const float* v, std::int64_t rows, std::int64_t C, std::int64_t c0,
                     std::int64_t c1, bool stream) {
  // Tiles with the coefficients in registers, as in normalize_rows (kept
  // apart from it for the reason given at moments_row_block).
  stream = stream && until_line(dx) == 0 && C % kLanes == 0 && c0 % kLanes == 0;
  constexpr std::int64_t kTile = kRowChunk * kLanes;
  for (std::int64_t n0 = 0; n0 < rows; n0 += kRowBlock) {
    const std::int64_t n1 = std::min(rows, n0 + kRowBlock);
    std::int64_t c = c0;
    for (; c + kTile <= c1; c += kTile) {
      Lanes mu[kRowChunk], kc[kRowChunk], uc[kRowChunk], vc[kRowChunk];
      std::memcpy(mu, mean + c, sizeof mu);
      std::memcpy(kc, k + c, sizeof kc);
      std::memcpy(uc, u + c, sizeof uc);
      std::memcpy(vc, v + c, sizeof vc);
      for (std::int64_t n = n0; n < n1; ++n)
        for (int w = 0; w < kRowChunk; ++w) {
          const std::int64_t at = n * C + c + w * kLanes;
          BNORM_LOAD_LANES(g, dy + at);
          BNORM_LOAD_LANES(xv, x + at);
          if (mask) keep_where_mask(g, mask + at);
          store_lanes(dx + at, kc[w] * g + (xv - mu[w]) * uc[w] + vc[w], stream);
        }
    }
    for (std::int64_t n = n0; n < n1 && c < c1; ++n) {  // the last columns, fewer than a tile
      const float* xr = x + n * C;
      const float* dyr = dy + n * C;
      float* dxr = dx + n * C;
      if (mask) {
        const std::uint8_t* mr = mask + n * C;
        for (std::int64_t j = c; j < c1; ++j) {
          const float d = dyr[j];  // loaded unconditionally, so the select needs no branch
          dxr[j] = k[j] * (mr[j] ? d : 0.0f) + (xr[j] - mean[j]) * u[j] + v[j];
        }
      } else {
        for (std::int64_t j = c; j < c1; ++j) dxr[j] = k[j] * dyr[j] + (xr[j] - mean[j]) * u[j] + v[j];
      }
    }
  }
}

void apply_grad(float* dx, const float* dy, const float* x, const std::uint8_t* mask, const float* mean, const float* k,
                const float* u, const float* v, std::int64_t N, std::int64_t C, std::int64_t S) {
  const bool parallel = N * C * S >= kParallelMin, stream = streams(N, C, S, 3);
  if (S == 1) {  // blocks of columns, as in normalize
    const std::int64_t width = row_block_width(N * std::int64_t{2 * sizeof(float)}, C, parallel);
    parallel_blocks(C, width, parallel, stream, [&](std::int64_t c0) {
      apply_grad_rows(dx, dy, x, mask, mean, k, u, v, N, C, c0, std::min(C, c0 + width), stream);
    });
    return;
  }
  parallel_segments(N, C, parallel, stream, [&](std::int64_t n, std::int64_t c0, std::int64_t count) {
    const std::int64_t at = (n * C + c0) * S;
    apply_grad_segment(dx + at, dy + at, x + at, mask ? mask + at : nullptr, mean + c0, k + c0, u + c0, v + c0, count,
                       S, stream);
  });
}

// Per-channel closing arithmetic, in double, in cloned functions of their
// own, built with -fno-math-errno -fno-trapping-math, so the loops run in
// vector lanes (vsqrtpd, vdivpd): as scalar code the square roots and
// divisions took a quarter of a 64x512 training forward.

// Σ(x − shift) and Σ(x − shift)² over m values → mean and biased variance, in place.
BNORM_MULTIVERSION
void mean_var_from_shifted_sums(double* sum_to_mean, double* sumsq_to_var, const float* shift, double m,
                                std::int64_t C) {
  for (std::int64_t c = 0; c < C; ++c) {
    const double mean_shifted = sum_to_mean[c] / m;
    const double raw_var = sumsq_to_var[c] / m - mean_shifted * mean_shifted;
    sum_to_mean[c] = shift[c] + mean_shifted;
    sumsq_to_var[c] = raw_var > 0.0 ? raw_var : 0.0;  // rounding can go below 0
  }
}

// From a double mean and variance: the float statistics the layer keeps, the
// mean's float remainder, and normalize's scale and offset. Restrict
// pointers: eleven arrays are too many for GCC's run-time overlap checks.
BNORM_MULTIVERSION
void normalize_coefficients(float* __restrict mean, float* __restrict mean_lo, float* __restrict var,
                            float* __restrict inv_std, float* __restrict scale, float* __restrict offset,
                            const double* __restrict mean_d, const double* __restrict var_d,
                            const float* __restrict gamma, const float* __restrict beta, float eps, std::int64_t C) {
  for (std::int64_t c = 0; c < C; ++c) {
    mean[c] = static_cast<float>(mean_d[c]);
    mean_lo[c] = static_cast<float>(mean_d[c] - static_cast<double>(mean[c]));
    var[c] = static_cast<float>(var_d[c]);
    inv_std[c] = static_cast<float>(1.0 / std::sqrt(var_d[c] + static_cast<double>(eps)));
  }
  // Separate loops: a test on gamma or beta inside the one above kept it scalar.
  for (std::int64_t c = 0; c < C; ++c) scale[c] = gamma ? gamma[c] * inv_std[c] : inv_std[c];
  for (std::int64_t c = 0; c < C; ++c) offset[c] = beta ? beta[c] : 0.0f;
}

// scale = gamma / sqrt(var + eps) and offset = beta from given statistics.
BNORM_MULTIVERSION
void inference_coefficients(float* __restrict scale, float* __restrict offset, const float* __restrict var,
                            const float* __restrict gamma, const float* __restrict beta, float eps, std::int64_t C) {
  for (std::int64_t c = 0; c < C; ++c)
    scale[c] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var[c]) + eps));
  for (std::int64_t c = 0; c < C; ++c) scale[c] = gamma ? gamma[c] * scale[c] : scale[c];
  for (std::int64_t c = 0; c < C; ++c) offset[c] = beta ? beta[c] : 0.0f;
}

// The backward's per-channel coefficients (see backward), in double.
BNORM_MULTIVERSION
void grad_coefficients(float* __restrict k, float* __restrict u, float* __restrict v, float* __restrict dgamma,
                       float* __restrict dbeta, const double* __restrict sum_dy, const double* __restrict sum_dy_xc,
                       const float* __restrict inv_std, const float* __restrict gamma, double m, std::int64_t C) {
  for (std::int64_t c = 0; c < C; ++c) {
    const double is = inv_std[c];
    const double sum_dy_xhat = sum_dy_xc[c] * is;
    if (dbeta) dbeta[c] = static_cast<float>(sum_dy[c]);
    if (dgamma) dgamma[c] = static_cast<float>(sum_dy_xhat);
    const double kc = (gamma ? gamma[c] : 1.0f) * is;
    k[c] = static_cast<float>(kc);
    u[c] = static_cast<float>(-kc * is * sum_dy_xhat / m);
    v[c] = static_cast<float>(-kc * sum_dy[c] / m);
  }
}

BNORM_MULTIVERSION
void update_running(float* __restrict running_mean, float* __restrict running_var, const float* __restrict mean,
                    const float* __restrict var, double f, double var_scale, std::int64_t C) {
  for (std::int64_t c = 0; c < C; ++c) {
    running_mean[c] = static_cast<float>((1.0 - f) * running_mean[c] + f * mean[c]);
    running_var[c] = static_cast<float>((1.0 - f) * running_var[c] + f * var[c] * var_scale);
  }
}

// The three entry points, each with an optional ReLU after the batch norm.

// The caller's scratch (batchnorm_work_doubles(C) doubles) as per-channel
// arrays (C each): two of doubles, then up to four of floats.
inline float* scratch_floats(double* work, std::int64_t C, std::int64_t which) {
  return reinterpret_cast<float*>(work + 2 * C) + which * C;
}

// A forward's: the shifted sums (then the mean and variance), the shift, and
// normalize's coefficients with the float mean's remainder.
struct ForwardScratch {
  double* sum;
  double* sumsq;
  float* shift;
  float* scale;
  float* offset;
  float* mean_lo;
  ForwardScratch(double* work, std::int64_t C)
      : sum(work),
        sumsq(work + C),
        shift(scratch_floats(work, C, 0)),
        scale(scratch_floats(work, C, 1)),
        offset(scratch_floats(work, C, 2)),
        mean_lo(scratch_floats(work, C, 3)) {}
};

// A backward's: the gradient sums and dx's coefficients k, u, v (see backward).
struct BackwardScratch {
  double* sum_dy;
  double* sum_dy_xc;
  float* k;
  float* u;
  float* v;
  BackwardScratch(double* work, std::int64_t C)
      : sum_dy(work),
        sum_dy_xc(work + C),
        k(scratch_floats(work, C, 0)),
        u(scratch_floats(work, C, 1)),
        v(scratch_floats(work, C, 2)) {}
};

void forward_train(float* y, std::uint8_t* mask, bool relu, float* mean, float* var, float* inv_std, const float* x,
                   const float* gamma, const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S,
                   double* work) {
  const ForwardScratch w(work, C);
  double *sum = w.sum, *sumsq = w.sumsq;
  float *shift = w.shift, *scale = w.scale, *offset = w.offset, *mean_lo = w.mean_lo;
  // One sample of each channel as its shift: close to the mean in practice.
  for (std::int64_t c = 0; c < C; ++c) shift[c] = x[c * S];
  const double m = static_cast<double>(N * S);
  // Channels c0..c0+count-1 from their sums to normalize's coefficients.
  const auto group_coefficients = [&](std::int64_t c0, std::int64_t count) {
    mean_var_from_shifted_sums(sum + c0, sumsq + c0, shift + c0, m, count);
    normalize_coefficients(mean + c0, mean_lo + c0, var + c0, inv_std + c0, scale + c0, offset + c0, sum + c0,
                           sumsq + c0, gamma ? gamma + c0 : nullptr, beta ? beta + c0 : nullptr, eps, count);
  };
  // A group's statistics, then its normalization while its values are still
  // in the cache: x comes from memory once.
  const bool parallel = N * C * S >= kParallelMin, stream = streams(N, C, S, 2);
  if (S == 1) {  // the group is a block of columns
    const std::int64_t width = row_block_width(N * std::int64_t{sizeof(float)}, C, parallel);
    parallel_blocks(C, width, parallel, stream, [&](std::int64_t c0) {
      const std::int64_t c1 = std::min(C, c0 + width), count = c1 - c0;
      moments_row_block(sum, sumsq, shift, x, N, C, c0, c1);
      group_coefficients(c0, count);
      normalize_rows(y, mask, relu, x, mean, mean_lo, scale, offset, N, C, c0, c1, stream);
    });
    return;
  }
  const std::int64_t group = channels_per_group(N * S * sizeof(float), C, parallel);
  parallel_blocks(C, group, parallel, stream, [&](std::int64_t c0) {
    const std::int64_t count = std::min(C - c0, group);
    group_sums(sum + c0, sumsq + c0, N, S, count, [&](Lanes* a, Lanes* b, double* sa, double* sb, std::int64_t n) {
      block_moments(a, b, sa, sb, x + (n * C + c0) * S, count, S, shift + c0, prefetch_ahead(n, N, C, S, count));
    });
    group_coefficients(c0, count);
    // Last example first: what the sums read last is what the cache still
    // holds when a group (or one channel) is larger than it.
    for (std::int64_t n = N; n-- > 0;) {
      const std::int64_t at = (n * C + c0) * S;
      normalize_segment(y + at, mask ? mask + at : nullptr, relu, x + at, mean + c0, mean_lo + c0, scale + c0,
                        offset + c0, count, S, stream);
    }
  });
}

void forward_inference(float* y, bool relu, const float* x, const float* mean, const float* var, const float* gamma,
                       const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S, double* work) {
  const ForwardScratch w(work, C);
  float *scale = w.scale, *offset = w.offset, *no_remainder = w.mean_lo;  // a given float mean is exact as it stands
  std::fill(no_remainder, no_remainder + C, 0.0f);
  inference_coefficients(scale, offset, var, gamma, beta, eps, C);
  normalize(y, nullptr, relu, x, mean, no_remainder, scale, offset, N, C, S);
}

void backward(float* dx, float* dgamma, float* dbeta, const float* dy, const std::uint8_t* mask, const float* x,
              const float* mean, const float* inv_std, const float* gamma, std::int64_t N, std::int64_t C,
              std::int64_t S, double* work) {
  const BackwardScratch w(work, C);
  double *sum_dy = w.sum_dy, *sum_dy_xc = w.sum_dy_xc;
  float *k = w.k, *u = w.u, *v = w.v;
  const double m = static_cast<double>(N * S);
  // Pass 1: Σ dy and Σ dy·(x − mean) together; Σ dy·x̂ = inv_std · Σ dy·(x − mean).
  // Pass 2: dx = gamma·inv_std · (dy − mean(dy) − x̂ · mean(dy·x̂))
  //            = k·dy + (x − mean)·u + v, with k = gamma·inv_std,
  //              u = −k·inv_std·mean(dy·x̂), v = −k·mean(dy).
  const auto group_coefficients = [&](std::int64_t c0, std::int64_t count) {
    grad_coefficients(k + c0, u + c0, v + c0, dgamma ? dgamma + c0 : nullptr, dbeta ? dbeta + c0 : nullptr, sum_dy + c0,
                      sum_dy_xc + c0, inv_std + c0, gamma ? gamma + c0 : nullptr, m, count);
  };
  // Both passes over one group of channels at a time, as in forward_train.
  const bool parallel = N * C * S >= kParallelMin, stream = streams(N, C, S, 3);
  const std::int64_t bytes_per_channel = N * S * (2 * sizeof(float) + (mask ? 1 : 0));
  if (S == 1) {
    const std::int64_t width = row_block_width(bytes_per_channel, C, parallel);
    parallel_blocks(C, width, parallel, stream, [&](std::int64_t c0) {
      const std::int64_t c1 = std::min(C, c0 + width), count = c1 - c0;
      grad_sums_row_block(sum_dy, sum_dy_xc, dy, x, mask, mean, N, C, c0, c1);
      group_coefficients(c0, count);
      apply_grad_rows(dx, dy, x, mask, mean, k, u, v, N, C, c0, c1, stream);
    });
    return;
  }
  const std::int64_t group = channels_per_group(bytes_per_channel, C, parallel);
  parallel_blocks(C, group, parallel, stream, [&](std::int64_t c0) {
    const std::int64_t count = std::min(C - c0, group);
    group_sums(sum_dy + c0, sum_dy_xc + c0, N, S, count,
               [&](Lanes* a, Lanes* b, double* sa, double* sb, std::int64_t n) {
                 const std::int64_t at = (n * C + c0) * S;
                 block_grad_sums(a, b, sa, sb, dy + at, x + at, mask ? mask + at : nullptr, count, S, mean + c0,
                                 prefetch_ahead(n, N, C, S, count));
               });
    group_coefficients(c0, count);
    for (std::int64_t n = N; n-- > 0;) {  // last example first, as in forward_train
      const std::int64_t at = (n * C + c0) * S;
      apply_grad_segment(dx + at, dy + at, x + at, mask ? mask + at : nullptr, mean + c0, k + c0, u + c0, v + c0, count,
                         S, stream);
    }
  });
}

}  // namespace

void batchnorm_forward_train(float* y, float* mean, float* var, float* inv_std, const float* x, const float* gamma,
                             const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S,
                             double* work) {
  forward_train(y, nullptr, false, mean, var, inv_std, x, gamma, beta, eps, N, C, S, work);
}

void batchnorm_forward_inference(float* y, const float* x, const float* mean, const float* var, const float* gamma,
                                 const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S,
                                 double* work) {
  forward_inference(y, false, x, mean, var, gamma, beta, eps, N, C, S, work);
}

void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* mean,
                        const float* inv_std, const float* gamma, std::int64_t N, std::int64_t C, std::int64_t S,
                        double* work) {
  backward(dx, dgamma, dbeta, dy, nullptr, x, mean, inv_std, gamma, N, C, S, work);
}

void batchnorm_relu_forward_train(float* y, std::uint8_t* mask, float* mean, float* var, float* inv_std, const float* x,
                                  const float* gamma, const float* beta, float eps, std::int64_t N, std::int64_t C,
                                  std::int64_t S, double* work) {
  forward_train(y, mask, true, mean, var, inv_std, x, gamma, beta, eps, N, C, S, work);
}

void batchnorm_relu_forward_inference(float* y, const float* x, const float* mean, const float* var, const float* gamma,
                                      const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S,
                                      double* work) {
  forward_inference(y, true, x, mean, var, gamma, beta, eps, N, C, S, work);
}

void batchnorm_relu_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const std::uint8_t* mask,
                             const float* x, const float* mean, const float* inv_std, const float* gamma,
                             std::int64_t N, std::int64_t C, std::int64_t S, double* work) {
  backward(dx, dgamma, dbeta, dy, mask, x, mean, inv_std, gamma, N, C, S, work);
}

void batchnorm_update_running(float* running_mean, float* running_var, const float* mean, const float* var, double f,
                              double var_scale, std::int64_t C) {
  update_running(running_mean, running_var, mean, var, f, var_scale, C);
}

// ---- Stages for a batch spread over several processes -------------------
// The same loops as above, cut where the statistics or gradient sums must be
// combined across processes. Nothing above calls these.

void batchnorm_channel_moments(double* mean, double* m2, const float* x, std::int64_t N, std::int64_t C, std::int64_t S,
                               double* work) {
  if (N * S == 0) {
    std::fill(mean, mean + C, 0.0);
    std::fill(m2, m2 + C, 0.0);
    return;
  }
  const ForwardScratch w(work, C);
  double *sum = w.sum, *sumsq = w.sumsq;
  float* shift = w.shift;
  for (std::int64_t c = 0; c < C; ++c) shift[c] = x[c * S];
  channel_moments(sum, sumsq, shift, x, N, C, S);
  // With d = x - shift: mean = shift + Σd/m and M2 = Σd² - (Σd)²/m.
  const double m = static_cast<double>(N * S);
  for (std::int64_t c = 0; c < C; ++c) {
    mean[c] = shift[c] + sum[c] / m;
    m2[c] = std::max(sumsq[c] - sum[c] * sum[c] / m, 0.0);
  }
}

void batchnorm_normalize_with(float* y, std::uint8_t* relu_mask, bool relu, float* mean_out, float* var_out,
                              float* inv_std, const float* x, const double* mean, const double* var, const float* gamma,
                              const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S,
                              double* work) {
  const ForwardScratch w(work, C);
  float *scale = w.scale, *offset = w.offset, *mean_lo = w.mean_lo;
  normalize_coefficients(mean_out, mean_lo, var_out, inv_std, scale, offset, mean, var, gamma, beta, eps, C);
  if (N * S > 0) normalize(y, relu_mask, relu, x, mean_out, mean_lo, scale, offset, N, C, S);
}

void batchnorm_grad_sums(double* sum_dy, double* sum_dy_xc, const float* dy, const std::uint8_t* relu_mask,
                         const float* x, const float* mean, std::int64_t N, std::int64_t C, std::int64_t S) {
  if (N * S == 0) {
    std::fill(sum_dy, sum_dy + C, 0.0);
    std::fill(sum_dy_xc, sum_dy_xc + C, 0.0);
  } else if (S == 1) {
    grad_sums_rows(sum_dy, sum_dy_xc, dy, x, relu_mask, mean, N, C);
  } else {
    block_sums(sum_dy, sum_dy_xc, N, C, S,
               [&](Lanes* a, Lanes* b, double* sa, double* sb, std::int64_t n, std::int64_t c0, std::int64_t count) {
                 const std::int64_t at = (n * C + c0) * S;
                 block_grad_sums(a, b, sa, sb, dy + at, x + at, relu_mask ? relu_mask + at : nullptr, count, S,
                                 mean + c0, prefetch_ahead(n, N, C, S, count));
               });
  }
}

void batchnorm_apply_grad(float* dx, const float* dy, const std::uint8_t* relu_mask, const float* x, const float* mean,
                          const float* inv_std, const float* gamma, const double* sum_dy, const double* sum_dy_xc,
                          double m, std::int64_t N, std::int64_t C, std::int64_t S, double* work) {
  if (N * S == 0) return;
  const BackwardScratch w(work, C);
  float *k = w.k, *u = w.u, *v = w.v;
  grad_coefficients(k, u, v, nullptr, nullptr, sum_dy, sum_dy_xc, inv_std, gamma, m, C);  // as in backward
  apply_grad(dx, dy, x, relu_mask, mean, k, u, v, N, C, S);
}

#else  // !BNORM_BN_VECTORIZED: the plain formulas, in float

void batchnorm_forward_train(float* y, float* mean, float* var, float* inv_std, const float* x, const float* gamma,
                             const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S, double*) {
  reference::batchnorm_forward_train(y, nullptr, false, mean, var, inv_std, x, gamma, beta, eps, N, C, S);
}

void batchnorm_forward_inference(float* y, const float* x, const float* mean, const float* var, const float* gamma,
                                 const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S,
                                 double*) {
  reference::batchnorm_forward_inference(y, false, x, mean, var, gamma, beta, eps, N, C, S);
}

void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* mean,
                        const float* inv_std, const float* gamma, std::int64_t N, std::int64_t C, std::int64_t S,
                        double*) {
  reference::batchnorm_backward(dx, dgamma, dbeta, dy, nullptr, x, mean, inv_std, gamma, N, C, S);
}

void batchnorm_relu_forward_train(float* y, std::uint8_t* mask, float* mean, float* var, float* inv_std, const float* x,
                                  const float* gamma, const float* beta, float eps, std::int64_t N, std::int64_t C,
                                  std::int64_t S, double*) {
  reference::batchnorm_forward_train(y, mask, true, mean, var, inv_std, x, gamma, beta, eps, N, C, S);
}

void batchnorm_relu_forward_inference(float* y, const float* x, const float* mean, const float* var, const float* gamma,
                                      const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S,
                                      double*) {
  reference::batchnorm_forward_inference(y, true, x, mean, var, gamma, beta, eps, N, C, S);
}

void batchnorm_relu_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const std::uint8_t* mask,
                             const float* x, const float* mean, const float* inv_std, const float* gamma,
                             std::int64_t N, std::int64_t C, std::int64_t S, double*) {
  reference::batchnorm_backward(dx, dgamma, dbeta, dy, mask, x, mean, inv_std, gamma, N, C, S);
}

void batchnorm_update_running(float* running_mean, float* running_var, const float* mean, const float* var, double f,
                              double var_scale, std::int64_t C) {
  reference::batchnorm_update_running(running_mean, running_var, mean, var, f, var_scale, C);
}

void batchnorm_channel_moments(double* mean, double* m2, const float* x, std::int64_t N, std::int64_t C, std::int64_t S,
                               double*) {
  reference::batchnorm_channel_moments(mean, m2, x, N, C, S);
}

void batchnorm_normalize_with(float* y, std::uint8_t* relu_mask, bool relu, float* mean_out, float* var_out,
                              float* inv_std, const float* x, const double* mean, const double* var, const float* gamma,
                              const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S, double*) {
  reference::batchnorm_normalize_with(y, relu_mask, relu, mean_out, var_out, inv_std, x, mean, var, gamma, beta, eps,
                                      N, C, S);
}

void batchnorm_grad_sums(double* sum_dy, double* sum_dy_xc, const float* dy, const std::uint8_t* relu_mask,
                         const float* x, const float* mean, std::int64_t N, std::int64_t C, std::int64_t S) {
  reference::batchnorm_grad_sums(sum_dy, sum_dy_xc, dy, relu_mask, x, mean, N, C, S);
}

void batchnorm_apply_grad(float* dx, const float* dy, const std::uint8_t* relu_mask, const float* x, const float* mean,
                          const float* inv_std, const float* gamma, const double* sum_dy, const double* sum_dy_xc,
                          double m, std::int64_t N, std::int64_t C, std::int64_t S, double*) {
  reference::batchnorm_apply_grad(dx, dy, relu_mask, x, mean, inv_std, gamma, sum_dy, sum_dy_xc, m, N, C, S);
}

#endif  // BNORM_BN_VECTORIZED

}  // namespace bnorm::kernels

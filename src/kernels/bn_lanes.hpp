#pragma once
// What the vectorized batch-norm files share: batchnorm.cpp (the entry points
// and the per-channel coefficients), batchnorm_rows.cpp (the (N, C) layout)
// and batchnorm_planes.cpp (the (N, C, S) layout, S > 1). Their terms:
//   lanes    eight floats computed side by side, one Lanes value
//   row      the C values of one example of an (N, C) input
//   run      the S contiguous values of one channel of one example (S > 1)
//   segment  consecutive runs of one example: channels c0..c0+count-1
//   block    the channels (or columns, for S == 1) that one call or one
//            thread takes at a time
//   group    a block that a fused training pass takes through both of its
//            passes, sized by the group budget (batchnorm_tuning)
//
// The vectorized paths store around the caches and fence with SSE
// instructions, which every x86-64 has (a 32-bit x86 need not); elsewhere
// BNORM_BN_VECTORIZED is 0 and the entry points run the plain reference
// (batchnorm_reference.cpp).
#if defined(__x86_64__)
#define BNORM_BN_VECTORIZED 1
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>

#include "bnorm/kernels/batchnorm.hpp"
#include "multiversion.hpp"

namespace bnorm::kernels::vectorized {

// These stay fixed on every machine: kRowBlock and kRunBlock set where float
// sums merge into double, and kLanes how a run's values spread over the float
// lanes, so the results' bits depend on them; kLanes, kRowChunk, kSumChunk,
// kRowWidth and kChannelBlockMax are also register and stack-array shapes (a block's
// coefficients and lanes, 4-16 KB, sit in any L1d); and kParallelMin and
// kParallelMinFused are the cost of waking threads, not of memory.
constexpr std::int64_t kLanes = 8;        // independent float accumulators: one AVX2 register
constexpr std::int64_t kRowBlock = 16;    // rows summed in float before merging into double (S == 1)
constexpr std::int64_t kRowWidth = 256;   // most columns in one block (S == 1)
constexpr int kRowChunk = 8;              // lane groups per tile: 64 columns, 256 contiguous bytes (S == 1)
constexpr int kSumChunk = 4;              // lane groups summed at a time (S == 1): 8 sums and 4 shifts in registers
constexpr std::int64_t kRunBlock = 1024;  // values of a run summed in float before merging (S > 1)
constexpr std::int64_t kChannelBlockMax = 256;  // channels a thread owns at most (S > 1): 16 KB of lanes
// Rows per tile of the elementwise (N, C) passes: changes no bits. 64 rather
// than 16 (kRowBlock, which it used to share): each tile reloads its columns'
// coefficients and restarts its walk down the rows; 64x512 forward+backward
// on one thread 0.0229-0.0248 -> 0.0215-0.0223 ms (Zen 2, 2026-12-05).
constexpr std::int64_t kRowTile = 64;

// Below these many values a parallel region costs more than it saves: waking
// a second thread and meeting it at the barrier takes 0.6-0.9 us while the
// threads still spin, and far more when another process holds that core.
// A single pass (inference's normalize, or one of the synchronized BN's
// stages) over 64x512 takes about 5 us on one core; two threads made it
// 0.005-0.013 ms, with the machine's mood. A fused training pass (sums, then
// the second pass, in one region) does two to three times the work per
// value: at 64x512 forward+backward took 0.017 ms on two threads against
// 0.025 on one in a quiet minute (0.037-0.044 in a busy one, when oneDNN's
// two threads slowed alike), on the AVX2 EPYC of 2026-11-29.
constexpr std::int64_t kParallelMin = std::int64_t{1} << 18;       // single passes
constexpr std::int64_t kParallelMinFused = std::int64_t{1} << 15;  // fused training passes

// One thread's share of `total` channels or columns, rounded up to whole
// units of `unit`: the most a thread takes when they are dealt out evenly.
inline std::int64_t share_in_units(std::int64_t total, std::int64_t threads, std::int64_t unit) {
  return ((total + threads - 1) / threads + unit - 1) / unit * unit;
}

// Channels whose runs together fill whole cache lines: 4 for runs of 196
// values (784 bytes, 12.25 lines), 1 for runs of 3136. Groups and the
// threads' shares of C (S > 1) come in multiples of it, so that each
// example's stretch of a group starts and ends on a line boundary wherever
// the example does. A line split between two groups is read twice and, in a
// streaming pass, written with plain stores (until_line), which read it
// from memory first: twice per example per group. On a Zen 2 EPYC
// (2026-12-05, 2 threads, bench/bn_pair_onednn, 7 rounds each),
// 128x256x14x14 forward+backward against oneDNN's nChw8c took, by channels
// per group: 3 0.99x, 5 1.12x, 11 (the rule before this one) 1.17x, 8
// 1.29-1.30x, 4 1.31-1.41x.
inline std::int64_t channels_per_line(std::int64_t run_bytes) {
  constexpr std::int64_t line = 64;
  return line / std::gcd(std::max<std::int64_t>(run_bytes, 1), line);
}

// Channels per group: as many as fit the group budget (batchnorm_tuning),
// in whole channels_per_line units (at least one), and no more than a
// thread's share of C, so every thread has work. (An earlier rule made the
// groups of a pass from memory cover twice the prefetch distance of each
// example, 11 channels for 128x256x14x14; it gained over 2 because its
// groups split fewer lines, and whole lines gain more.)
inline std::int64_t channels_per_group(std::int64_t bytes_per_channel, std::int64_t run_bytes, std::int64_t C,
                                       bool parallel) {
  const std::int64_t threads = parallel ? omp_get_max_threads() : 1;
  const std::int64_t unit = channels_per_line(run_bytes);
  const std::int64_t fit = batchnorm_tuning().group_bytes / std::max<std::int64_t>(bytes_per_channel, 1);
  const std::int64_t units = std::max<std::int64_t>(fit / unit, 1);
  return std::clamp<std::int64_t>(std::min(units * unit, share_in_units(C, threads, unit)), 1, kChannelBlockMax);
}

// A thread's first channel of `threads` (S > 1): the same number of
// channels_per_line units each (±1).
inline std::int64_t first_channel_of(std::int64_t t, std::int64_t threads, std::int64_t C, std::int64_t run_bytes) {
  const std::int64_t unit = channels_per_line(run_bytes), units = (C + unit - 1) / unit;
  return std::min(C, units * t / threads * unit);
}

// How far ahead (in values) the sums over a group's stretch of example n ask
// for data: the same stretch of a later example, at least the tuning's
// prefetch distance on; 0 near the end of the batch.
inline std::int64_t prefetch_ahead(std::int64_t n, std::int64_t N, std::int64_t C, std::int64_t S, std::int64_t count) {
  const std::int64_t stretch = count * S * std::int64_t{sizeof(float)};
  const std::int64_t examples = (batchnorm_tuning().prefetch_bytes + stretch - 1) / stretch;
  return n + examples < N ? examples * C * S : 0;
}

// How far ahead (in values) a single streaming pass (inference's normalize,
// the stand-alone closing pass of a backward) asks for its input: the
// tuning's prefetch distance along the thread's share, which lies in one
// piece. The hardware prefetchers alone left reads short of what the memory
// gives: on the Zen 2 EPYC (2026-12-05, 2 threads, bench/bn_passes, builds
// alternated) inference took 0.85-1.00 ms without and 0.66-0.79 with 4 KiB
// on 32x64x56x56, 0.92-0.99 and 0.67-0.72 on 128x256x14x14, in the minutes
// when the host was fast; when it was slow (1.15-1.26 ms) both were alike.
inline std::int64_t streamed_read_ahead() { return batchnorm_tuning().prefetch_bytes / std::int64_t{sizeof(float)}; }

// Columns per block in the fused (N, C) passes: whole groups of 64 (the
// register path), as many as fit the group budget, from 64 up to kRowWidth, and
// no more than a thread's share of C, so every thread has work.
inline std::int64_t row_block_width(std::int64_t bytes_per_column, std::int64_t C, bool parallel) {
  constexpr std::int64_t unit = kRowChunk * kLanes;
  const std::int64_t threads = parallel ? omp_get_max_threads() : 1;
  const std::int64_t fit = batchnorm_tuning().group_bytes / std::max<std::int64_t>(bytes_per_column, 1);
  return std::clamp<std::int64_t>(std::min(fit / unit * unit, share_in_units(C, threads, unit)), unit, kRowWidth);
}

// Eight float lanes as one value (GCC/Clang vector extension): one ymm
// register in the AVX2 and AVX-512 copies, two xmm in the baseline one.
// Every copy adds the same values in the same lane order, so all give
// identical bits; an auto-vectorized scalar loop gave GCC room to shuffle
// lanes and ran at a third of the speed. The width is that of AVX2, not
// AVX-512: GCC keeps a vector wider than the copy's registers in memory, so
// with sixteen lanes the AVX2 copy spilled every value to the stack, and on
// the AVX2-only EPYC of 2026-11-29 128x256x14x14 forward+backward took
// 12.6 ms where eight lanes take 5.0.
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));
typedef std::int32_t LaneBits __attribute__((vector_size(kLanes * sizeof(std::int32_t))));
static_assert(kLanes == 8, "the mask shuffles below name eight lanes");
// For moving a ReLU mask's eight bytes in and out of lanes without a trip
// through memory (which GCC's generic conversions took, byte by byte).
typedef std::uint8_t LaneBytes __attribute__((vector_size(kLanes)));
typedef std::uint8_t LaneBitsBytes __attribute__((vector_size(kLanes * sizeof(std::int32_t))));
typedef std::int64_t LaneWords __attribute__((vector_size(kLanes * sizeof(std::int32_t))));

// Loads through memcpy (unaligned-safe). A macro rather than a function: a
// function returning Lanes by value has a different ABI in each copy.
#define BNORM_LOAD_LANES(var, ptr) \
  Lanes var;                       \
  std::memcpy(&var, (ptr), sizeof var)

// Eight lanes stored around the caches to p (half a cache line): two SSE
// streaming stores, which every x86-64 copy of the kernels can use.
__attribute__((always_inline)) inline void stream_lanes(float* p, const Lanes& v) {
  _mm_stream_ps(p, __builtin_shufflevector(v, v, 0, 1, 2, 3));
  _mm_stream_ps(p + 4, __builtin_shufflevector(v, v, 4, 5, 6, 7));
}

// Eight lanes to p: streamed (p is then within a line the pass writes whole) or stored plainly.
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

// Eight normalized values to y: with relu, max(0, v) as the plain loops
// compute it, and the mask bytes when mask is given.
__attribute__((always_inline)) inline void store_normalized(float* y, std::uint8_t* mask, bool relu, const Lanes& value,
                                                            bool stream) {
  Lanes v = value;  // by reference: clang refuses a 64-byte vector argument in the baseline copy
  if (relu) {
    const LaneBits positive = v > 0.0f;
    v = reinterpret_cast<Lanes>(reinterpret_cast<LaneBits>(v) & positive);
    // Each lane's low byte (all ones or 0) gathered by one shuffle, then 1 or 0.
    if (mask) {
      const LaneBitsBytes all = reinterpret_cast<LaneBitsBytes>(positive);
      const LaneBytes bytes = __builtin_shufflevector(all, all, 0, 4, 8, 12, 16, 20, 24, 28) & 1;
      std::memcpy(mask, &bytes, sizeof bytes);
    }
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
  // The eight bytes broadcast, lane l given the 32-bit word holding byte l,
  // that byte's bit 0 shifted to the sign and spread over the lane.
  std::int64_t bytes;
  std::memcpy(&bytes, mask, sizeof bytes);
  const LaneWords broadcast = {bytes, bytes, bytes, bytes};
  const LaneBits halves = reinterpret_cast<LaneBits>(broadcast);
  const LaneBits words = __builtin_shufflevector(halves, halves, 0, 0, 0, 0, 1, 1, 1, 1);
  const LaneBits to_sign = {31, 23, 15, 7, 31, 23, 15, 7};
  const LaneBits keep = (words << to_sign) >> 31;
  g = reinterpret_cast<Lanes>(reinterpret_cast<LaneBits>(g) & keep);
}

inline double lane_sum(const Lanes& v) {
  double sum = 0.0;
  for (std::int64_t l = 0; l < kLanes; ++l) sum += v[l];
  return sum;
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

// A training forward's arguments, and a backward's, as the entry points take them.
struct ForwardTrain {
  float* y;
  std::uint8_t* mask;  // with relu, may be nullptr
  bool relu;
  float* mean;
  float* var;
  float* inv_std;
  const float* x;
  const float* gamma;
  const float* beta;
  float eps;
  std::int64_t N, C, S;
};

struct Backward {
  float* dx;
  float* dgamma;
  float* dbeta;
  const float* dy;
  const std::uint8_t* mask;  // the fused ReLU's, or nullptr
  const float* x;
  const float* mean;
  const float* inv_std;
  const float* gamma;
  std::int64_t N, C, S;
};

// Bytes a backward reads per channel: x and dy, and the fused ReLU's mask.
inline std::int64_t backward_bytes_per_channel(const Backward& a) {
  return a.N * a.S * (2 * sizeof(float) + (a.mask ? 1 : 0));
}

// The step between a group's two passes, channels c0..c0+count-1
// (batchnorm.cpp): a forward's shifted sums to the statistics and
// normalize's coefficients; a backward's gradient sums to dgamma, dbeta and
// dx's coefficients.
void forward_group_coefficients(const ForwardTrain& a, const ForwardScratch& w, std::int64_t c0, std::int64_t count);
void backward_group_coefficients(const Backward& a, const BackwardScratch& w, std::int64_t c0, std::int64_t count);

// Each layout's passes: rows_* in batchnorm_rows.cpp (S == 1), planes_* in
// batchnorm_planes.cpp (S > 1). parallel: split across the threads; stream:
// write the output with streaming stores (see streams).
//
// The training passes, group by group.
void rows_forward_train(const ForwardTrain& a, const ForwardScratch& w, bool parallel, bool stream);
void planes_forward_train(const ForwardTrain& a, const ForwardScratch& w, bool parallel, bool stream);
void rows_backward(const Backward& a, const BackwardScratch& w, bool parallel, bool stream);
void planes_backward(const Backward& a, const BackwardScratch& w, bool parallel, bool stream);

// Per-channel Σ (x - shift) and Σ (x - shift)^2, in double.
void rows_channel_moments(double* sum, double* sumsq, const float* shift, const float* x, std::int64_t N,
                          std::int64_t C);
void planes_channel_moments(double* sum, double* sumsq, const float* shift, const float* x, std::int64_t N,
                            std::int64_t C, std::int64_t S);

// Per-channel Σ dy and Σ dy * (x - mean), in double (dy masked when mask is given).
void rows_grad_sums(double* sum_dy, double* sum_dy_xc, const float* dy, const float* x, const std::uint8_t* mask,
                    const float* mean, std::int64_t N, std::int64_t C);
void planes_grad_sums(double* sum_dy, double* sum_dy_xc, const float* dy, const float* x, const std::uint8_t* mask,
                      const float* mean, std::int64_t N, std::int64_t C, std::int64_t S);

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
void rows_normalize(float* y, std::uint8_t* mask, bool relu, const float* x, const float* mean_hi, const float* mean_lo,
                    const float* scale, const float* offset, std::int64_t N, std::int64_t C, bool parallel,
                    bool stream);
void planes_normalize(float* y, std::uint8_t* mask, bool relu, const float* x, const float* mean_hi,
                      const float* mean_lo, const float* scale, const float* offset, std::int64_t N, std::int64_t C,
                      std::int64_t S, bool parallel, bool stream);

// dx = k*dy + (x - mean)*u + v, the backward's closing pass with given
// per-channel coefficients; with a mask, dy is taken as 0 where it is 0.
void rows_apply_grad(float* dx, const float* dy, const float* x, const std::uint8_t* mask, const float* mean,
                     const float* k, const float* u, const float* v, std::int64_t N, std::int64_t C, bool parallel,
                     bool stream);
void planes_apply_grad(float* dx, const float* dy, const float* x, const std::uint8_t* mask, const float* mean,
                       const float* k, const float* u, const float* v, std::int64_t N, std::int64_t C, std::int64_t S,
                       bool parallel, bool stream);

}  // namespace bnorm::kernels::vectorized

#else
#define BNORM_BN_VECTORIZED 0
#endif

// The batch-norm passes over an (N, C, S) input with S > 1: each (n, c) pair
// is a contiguous run of S values; the threads split the channels (or, for a
// pass with given coefficients, the (example, channel) pairs) and vectorize
// within runs. Terms and shared pieces: bn_lanes.hpp.
#include "bn_lanes.hpp"

#if BNORM_BN_VECTORIZED
namespace bnorm::kernels::vectorized {
namespace {

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
// (N, C, S) data with S > 1, fed example by example: add(n, add_run_block)
// for n = 0, 1, ..., N - 1, where add_run_block(lanes_a, lanes_b, sums_a,
// sums_b, n) adds the group's runs of example n. Float lanes merge into the
// double sums every kRunBlock values of a channel; that schedule depends on N
// and S only, so a channel's sums do not depend on the group it falls in, and
// neither the thread count nor the group size changes the results.
class GroupSums {
 public:
  void start(double* sum_a, double* sum_b, std::int64_t count) {
    sum_a_ = sum_a;
    sum_b_ = sum_b;
    count_ = count;
    since_merge_ = 0;
    for (std::int64_t r = 0; r < count; ++r) {
      sum_a[r] = sum_b[r] = 0.0;
      a_[r] = b_[r] = Lanes{};
    }
  }
  template <class AddRunBlock>
  void add(std::int64_t n, std::int64_t N, std::int64_t S, AddRunBlock&& add_run_block) {
    add_run_block(a_, b_, sum_a_, sum_b_, n);
    since_merge_ += S;
    if (since_merge_ >= kRunBlock || n + 1 == N) {
      for (std::int64_t r = 0; r < count_; ++r) {
        sum_a_[r] += lane_sum(a_[r]);
        sum_b_[r] += lane_sum(b_[r]);
        a_[r] = b_[r] = Lanes{};
      }
      since_merge_ = 0;
    }
  }

 private:
  Lanes a_[kChannelBlockMax], b_[kChannelBlockMax];
  double* sum_a_ = nullptr;
  double* sum_b_ = nullptr;
  std::int64_t count_ = 0, since_merge_ = 0;
};

// The sums of one whole group, examples in order.
template <class AddRunBlock>
void group_sums(double* sum_a, double* sum_b, std::int64_t N, std::int64_t S, std::int64_t count,
                AddRunBlock add_run_block) {
  GroupSums sums;
  sums.start(sum_a, sum_b, count);
  for (std::int64_t n = 0; n < N; ++n) sums.add(n, N, S, add_run_block);
}

// A fused training pass over (N, C, S) data, group by group, each thread
// taking a contiguous share of the groups, with the two passes of
// consecutive groups overlapped: the sums of group g + 1 (which read memory)
// go example by example between the second-pass pieces of group g (which
// read the cache and write the output), so that memory sees reads and
// writes together. One after the other, a thread only read and then only
// wrote, and 64x64x56x56's training forward took about the sum of a
// read-only pass and a write-only one. Overlapped, forward+backward took
// 8.3 ms where it took 8.8 (5 alternating runs each, AVX2 EPYC, 2026-11-29;
// 32x64x56x56: 3.55 against 3.75).
//   sum_runs(lanes_a, lanes_b, sums_a, sums_b, n, c0, count): add_run_block of GroupSums;
//   between(c0, count): the sums to the coefficients of the second pass;
//   second(n, c0, count): the second pass over example n of the group, called
//     last example first, so a group larger than the cache starts with what
//     the sums read last.
template <class SumRuns, class Between, class Second>
void overlapped_groups(std::int64_t N, std::int64_t C, std::int64_t S, std::int64_t group, bool parallel, bool stream,
                       double* sum_a, double* sum_b, SumRuns sum_runs, Between between, Second second) {
#pragma omp parallel if (parallel)
  {
    // Each thread its own contiguous channels, in groups from the first of
    // them: the same number of whole-line units per thread (±1). Whole
    // groups dealt out over all of C left one thread up to a group more
    // (2 threads, 64 channels in groups of 10: 30 and 34).
    const std::int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    const std::int64_t run_bytes = S * std::int64_t{sizeof(float)};
    const std::int64_t first = first_channel_of(t, threads, C, run_bytes);
    const std::int64_t last = first_channel_of(t + 1, threads, C, run_bytes);
    const auto count_at = [&](std::int64_t c0) { return std::min(last - c0, group); };
    GroupSums sums;  // 16 KB of lanes on this thread's stack
    const auto sums_of = [&](std::int64_t c0, std::int64_t n) {
      const std::int64_t count = count_at(c0);
      sums.add(n, N, S, [&](Lanes* a, Lanes* b, double* sa, double* sb, std::int64_t m) {
        sum_runs(a, b, sa, sb, m, c0, count);
      });
    };
    if (first < last) {
      sums.start(sum_a + first, sum_b + first, count_at(first));
      for (std::int64_t n = 0; n < N; ++n) sums_of(first, n);
      between(first, count_at(first));
    }
    for (std::int64_t c0 = first; c0 < last; c0 += group) {
      const std::int64_t c1 = c0 + group;
      const bool next = c1 < last;
      if (next) sums.start(sum_a + c1, sum_b + c1, count_at(c1));
      for (std::int64_t i = 0; i < N; ++i) {
        if (next) sums_of(c1, i);
        second(N - 1 - i, c0, count_at(c0));
      }
      if (next) between(c1, count_at(c1));
    }
    if (stream) _mm_sfence();  // as in parallel_blocks
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
  const std::int64_t unit = channels_per_line(S * std::int64_t{sizeof(float)});
  const std::int64_t block = std::clamp<std::int64_t>(share_in_units(C, threads, unit), 1, kChannelBlockMax);
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t c0 = 0; c0 < C; c0 += block) {
    const std::int64_t count = std::min(C - c0, block);
    group_sums(sum_a + c0, sum_b + c0, N, S, count, [&](Lanes* a, Lanes* b, double* sa, double* sb, std::int64_t n) {
      add_run_block(a, b, sa, sb, n, c0, count);
    });
  }
}

// plain(from, to, r) over values [from, to) of consecutive runs of S values,
// a piece per run: the values before the first whole cache line (up to 15)
// span several runs when S is short.
template <class Plain>
__attribute__((always_inline)) inline void plain_runs(const Plain& plain, std::int64_t from, std::int64_t to,
                                                      std::int64_t S) {
  while (from < to) {
    const std::int64_t r = from / S, end = std::min(to, (r + 1) * S);
    plain(from, end, r);
    from = end;
  }
}

// normalize_segment for one combination of its flags, fixed at compile time
// so that the inner loops test none of them: `count` runs of S > 1 values,
// run r with channel r's coefficients (mean_lo may be null: no remainder);
// with kStream, whole cache lines are written with streaming stores and x
// is asked for `ahead` values on (streamed_read_ahead; 0 where x is in the
// cache already).
template <bool kRelu, bool kMask, bool kStream>
__attribute__((always_inline)) inline void normalize_segment_as(float* y, std::uint8_t* mask, const float* x,
                                                                const float* mean_hi, const float* mean_lo,
                                                                const float* scale, const float* offset,
                                                                std::int64_t count, std::int64_t S,
                                                                std::int64_t ahead) {
  // Values [from, to) of the segment, all in run r, one at a time.
  const auto plain = [&](std::int64_t from, std::int64_t to, std::int64_t r) {
    const float hi = mean_hi[r], lo = mean_lo ? mean_lo[r] : 0.0f, a = scale[r], b = offset[r];
    for (std::int64_t i = from; i < to; ++i) {
      const float v = ((x[i] - hi) - lo) * a + b;
      if (!kRelu) {
        y[i] = v;
      } else {
        y[i] = v > 0.0f ? v : 0.0f;
        if (kMask) mask[i] = v > 0.0f;
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
  // (S >= kLanes: at most one end per lane-width). Every line but the segment's
  // first and last is then whole, and no run has a head or tail of its own.
  const std::int64_t total = count * S;
  std::int64_t i = std::min(total, until_line(y));
  plain_runs(plain, 0, i, S);
  LaneBits lane;
  lane_numbers(lane);
  for (std::int64_t r = 0; r < count; ++r) {
    const std::int64_t end = (r + 1) * S;
    const float hi = mean_hi[r], lo = mean_lo ? mean_lo[r] : 0.0f, a = scale[r], b = offset[r];
    for (; i + kLanes <= end; i += kLanes) {
      if (kStream) __builtin_prefetch(x + i + ahead);
      BNORM_LOAD_LANES(v, x + i);
      store_normalized(y + i, kMask ? mask + i : nullptr, kRelu, ((v - hi) - lo) * a + b, kStream);
    }
    if (i < end && i + kLanes <= total) {
      BNORM_LOAD_LANES(v, x + i);
      Lanes out = ((v - hi) - lo) * a + b;
      blend(out, ((v - mean_hi[r + 1]) - (mean_lo ? mean_lo[r + 1] : 0.0f)) * scale[r + 1] + offset[r + 1],
            lane >= static_cast<std::int32_t>(end - i));
      store_normalized(y + i, kMask ? mask + i : nullptr, kRelu, out, kStream);
      i += kLanes;
    }
  }
  plain(i, total, count - 1);
}

BNORM_MULTIVERSION
void normalize_segment(float* y, std::uint8_t* mask, bool relu, const float* x, const float* mean_hi,
                       const float* mean_lo, const float* scale, const float* offset, std::int64_t count,
                       std::int64_t S, bool stream, std::int64_t ahead) {
#define BNORM_NORMALIZE_AS(relu_, mask_, stream_) \
  normalize_segment_as<relu_, mask_, stream_>(y, mask, x, mean_hi, mean_lo, scale, offset, count, S, ahead)
  if (!relu)
    stream ? BNORM_NORMALIZE_AS(false, false, true) : BNORM_NORMALIZE_AS(false, false, false);
  else if (!mask)
    stream ? BNORM_NORMALIZE_AS(true, false, true) : BNORM_NORMALIZE_AS(true, false, false);
  else
    stream ? BNORM_NORMALIZE_AS(true, true, true) : BNORM_NORMALIZE_AS(true, true, false);
#undef BNORM_NORMALIZE_AS
}

// dx = k*dy + (x - mean)*u + v, the backward's closing pass (coefficients per
// channel), over `count` channels of one example as in normalize_segment_as;
// with kMask, dy is taken as 0 where the mask is 0.
template <bool kMask, bool kStream>
__attribute__((always_inline)) inline void apply_grad_segment_as(float* dx, const float* dy, const float* x,
                                                                 const std::uint8_t* mask, const float* mean,
                                                                 const float* k, const float* u, const float* v,
                                                                 std::int64_t count, std::int64_t S,
                                                                 std::int64_t ahead) {
  const auto plain = [&](std::int64_t from, std::int64_t to, std::int64_t r) {
    const float mu = mean[r], kc = k[r], uc = u[r], vc = v[r];
    for (std::int64_t i = from; i < to; ++i) {
      const float d = dy[i];  // loaded unconditionally, so the select needs no branch
      dx[i] = kc * (!kMask || mask[i] ? d : 0.0f) + (x[i] - mu) * uc + vc;
    }
  };
  if (S < kLanes) {
    for (std::int64_t r = 0; r < count; ++r) plain(r * S, (r + 1) * S, r);
    return;
  }
  // By lane-widths across the runs, as in normalize_segment_as.
  const std::int64_t total = count * S;
  std::int64_t i = std::min(total, until_line(dx));
  plain_runs(plain, 0, i, S);
  LaneBits lane;
  lane_numbers(lane);
  for (std::int64_t r = 0; r < count; ++r) {
    const std::int64_t end = (r + 1) * S;
    const float mu = mean[r], kc = k[r], uc = u[r], vc = v[r];
    for (; i + kLanes <= end; i += kLanes) {
      if (kStream) {
        __builtin_prefetch(dy + i + ahead);
        __builtin_prefetch(x + i + ahead);
      }
      BNORM_LOAD_LANES(g, dy + i);
      BNORM_LOAD_LANES(xv, x + i);
      if (kMask) keep_where_mask(g, mask + i);
      store_lanes(dx + i, kc * g + (xv - mu) * uc + vc, kStream);
    }
    if (i < end && i + kLanes <= total) {
      BNORM_LOAD_LANES(g, dy + i);
      BNORM_LOAD_LANES(xv, x + i);
      if (kMask) keep_where_mask(g, mask + i);
      Lanes out = kc * g + (xv - mu) * uc + vc;
      blend(out, k[r + 1] * g + (xv - mean[r + 1]) * u[r + 1] + v[r + 1], lane >= static_cast<std::int32_t>(end - i));
      store_lanes(dx + i, out, kStream);
      i += kLanes;
    }
  }
  plain(i, total, count - 1);
}

BNORM_MULTIVERSION
void apply_grad_segment(float* dx, const float* dy, const float* x, const std::uint8_t* mask, const float* mean,
                        const float* k, const float* u, const float* v, std::int64_t count, std::int64_t S, bool stream,
                        std::int64_t ahead) {
  if (mask)
    stream ? apply_grad_segment_as<true, true>(dx, dy, x, mask, mean, k, u, v, count, S, ahead)
           : apply_grad_segment_as<true, false>(dx, dy, x, mask, mean, k, u, v, count, S, ahead);
  else
    stream ? apply_grad_segment_as<false, true>(dx, dy, x, mask, mean, k, u, v, count, S, ahead)
           : apply_grad_segment_as<false, false>(dx, dy, x, mask, mean, k, u, v, count, S, ahead);
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

}  // namespace

void planes_channel_moments(double* sum, double* sumsq, const float* shift, const float* x, std::int64_t N,
                            std::int64_t C, std::int64_t S) {
  block_sums(sum, sumsq, N, C, S,
             [&](Lanes* a, Lanes* b, double* sa, double* sb, std::int64_t n, std::int64_t c0, std::int64_t count) {
               const float* xn = x + (n * C + c0) * S;
               block_moments(a, b, sa, sb, xn, count, S, shift + c0, prefetch_ahead(n, N, C, S, count));
             });
}

void planes_grad_sums(double* sum_dy, double* sum_dy_xc, const float* dy, const float* x, const std::uint8_t* mask,
                      const float* mean, std::int64_t N, std::int64_t C, std::int64_t S) {
  block_sums(sum_dy, sum_dy_xc, N, C, S,
             [&](Lanes* a, Lanes* b, double* sa, double* sb, std::int64_t n, std::int64_t c0, std::int64_t count) {
               const std::int64_t at = (n * C + c0) * S;
               block_grad_sums(a, b, sa, sb, dy + at, x + at, mask ? mask + at : nullptr, count, S, mean + c0,
                               prefetch_ahead(n, N, C, S, count));
             });
}

void planes_normalize(float* y, std::uint8_t* mask, bool relu, const float* x, const float* mean_hi,
                      const float* mean_lo, const float* scale, const float* offset, std::int64_t N, std::int64_t C,
                      std::int64_t S, bool parallel, bool stream) {
  parallel_segments(N, C, parallel, stream, [&](std::int64_t n, std::int64_t c0, std::int64_t count) {
    const std::int64_t at = (n * C + c0) * S;
    normalize_segment(y + at, mask ? mask + at : nullptr, relu, x + at, mean_hi + c0, mean_lo ? mean_lo + c0 : nullptr,
                      scale + c0, offset + c0, count, S, stream, streamed_read_ahead());
  });
}

void planes_apply_grad(float* dx, const float* dy, const float* x, const std::uint8_t* mask, const float* mean,
                       const float* k, const float* u, const float* v, std::int64_t N, std::int64_t C, std::int64_t S,
                       bool parallel, bool stream) {
  parallel_segments(N, C, parallel, stream, [&](std::int64_t n, std::int64_t c0, std::int64_t count) {
    const std::int64_t at = (n * C + c0) * S;
    apply_grad_segment(dx + at, dy + at, x + at, mask ? mask + at : nullptr, mean + c0, k + c0, u + c0, v + c0, count,
                       S, stream, streamed_read_ahead());
  });
}

// Each group's sums, its coefficients, then its second pass while its values
// are still in the cache (overlapped with the next group's sums): x comes
// from memory once. Groups keep the whole budget although two are in flight
// at a time: with half of it, 128x256x14x14's backward (one channel a group
// instead of two) took 4.3 ms where whole groups take 2.6.
void planes_forward_train(const ForwardTrain& a, const ForwardScratch& w, bool parallel, bool stream) {
  const std::int64_t N = a.N, C = a.C, S = a.S;
  const std::int64_t group = channels_per_group(N * S * sizeof(float), S * sizeof(float), C, parallel);
  overlapped_groups(
      N, C, S, group, parallel, stream, w.sum, w.sumsq,
      [&](Lanes* lanes_a, Lanes* lanes_b, double* sa, double* sb, std::int64_t n, std::int64_t c0, std::int64_t count) {
        block_moments(lanes_a, lanes_b, sa, sb, a.x + (n * C + c0) * S, count, S, w.shift + c0,
                      prefetch_ahead(n, N, C, S, count));
      },
      [&](std::int64_t c0, std::int64_t count) { forward_group_coefficients(a, w, c0, count); },
      [&](std::int64_t n, std::int64_t c0, std::int64_t count) {
        const std::int64_t at = (n * C + c0) * S;
        normalize_segment(a.y + at, a.mask ? a.mask + at : nullptr, a.relu, a.x + at, a.mean + c0, w.mean_lo + c0,
                          w.scale + c0, w.offset + c0, count, S, stream, 0);
      });
}

void planes_backward(const Backward& a, const BackwardScratch& w, bool parallel, bool stream) {
  const std::int64_t N = a.N, C = a.C, S = a.S;
  const std::int64_t group = channels_per_group(backward_bytes_per_channel(a), S * sizeof(float), C, parallel);
  overlapped_groups(
      N, C, S, group, parallel, stream, w.sum_dy, w.sum_dy_xc,
      [&](Lanes* lanes_a, Lanes* lanes_b, double* sa, double* sb, std::int64_t n, std::int64_t c0, std::int64_t count) {
        const std::int64_t at = (n * C + c0) * S;
        block_grad_sums(lanes_a, lanes_b, sa, sb, a.dy + at, a.x + at, a.mask ? a.mask + at : nullptr, count, S,
                        a.mean + c0, prefetch_ahead(n, N, C, S, count));
      },
      [&](std::int64_t c0, std::int64_t count) { backward_group_coefficients(a, w, c0, count); },
      [&](std::int64_t n, std::int64_t c0, std::int64_t count) {
        const std::int64_t at = (n * C + c0) * S;
        apply_grad_segment(a.dx + at, a.dy + at, a.x + at, a.mask ? a.mask + at : nullptr, a.mean + c0, w.k + c0,
                           w.u + c0, w.v + c0, count, S, stream, 0);
      });
}

}  // namespace bnorm::kernels::vectorized
#endif  // BNORM_BN_VECTORIZED

// bnorm's matrix products through OpenBLAS and through oneDNN's dnnl_sgemm,
// timed in one process, taking turns, for the products of the default
// networks at batch 64. Both run inside bnorm's own slicing
// (src/kernels/gemm_slices.hpp, the code gemm.cpp runs), so each library
// multiplies one slice on one OpenMP thread, as in training. A round times 7 (5
// above a GFLOP) calls of one library, then as many of the other (the order flips every round); a
// round's ratio compares two medians taken moments apart, and the median of
// the rounds' ratios holds still while the shared machine's speed drifts.
// It cannot hold still where the machine has more runnable threads than
// cores: a parallel region then waits a scheduler time slice (about 12 ms)
// for its second thread, both libraries alike, and the ratio reads 1.00.
// Below 2 threads that cannot happen, so read those rows first.
//
// It also counts, by interposing malloc and its relatives, the allocations
// each library makes per call once warm (the library may allocate no memory
// per training step), and the threads in the process after the runs.
//
// Build (needs libdnnl-dev and libopenblas-dev):
//   g++ -std=c++20 -O2 -fopenmp -Wall -Wextra -Isrc/kernels -I/usr/include/x86_64-linux-gnu/openblas-pthread
//       bench/gemm_pair.cpp -lopenblas -ldnnl -o build/gemm_pair
// Run: build/gemm_pair [rounds] [threads...]   (default 15 rounds, 1 and 2 threads)
#define BNORM_GEMM_WITH_OPENBLAS 1
#define BNORM_GEMM_WITH_ONEDNN 1
#include <dirent.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "count_allocations.hpp"
#include "gemm_slices.hpp"
#include "median_timing.hpp"

namespace {

namespace gd = bnorm::kernels::gemm_detail;

struct Shape {
  const char* name;
  bool trans_a, trans_b;
  std::int64_t M, N, K;
  float beta;
  // per_example: the conv layers' way, 64 products (one per example) spread
  // over the threads, each on one thread; otherwise one product, sliced.
  bool per_example;
};

constexpr std::int64_t kBatch = 64;

// The default MLP (784-256-256-10) and CNN (conv3x3:32, pool, conv3x3:64,
// pool, fc:10 on 1x28x28) at batch 64, with the arguments their layers pass.
const std::vector<Shape> kShapes = {
    {"mlp fc1 fwd x*W^T 64x256x784", false, true, 64, 256, 784, 0, false},
    {"mlp fc1 dW dy^T*x 256x784x64", true, false, 256, 784, 64, 0, false},
    {"mlp fc2 fwd 64x256x256", false, true, 64, 256, 256, 0, false},
    {"mlp fc2 dW 256x256x64", true, false, 256, 256, 64, 0, false},
    {"mlp fc2 dx dy*W 64x256x256", false, false, 64, 256, 256, 0, false},
    {"mlp fc3 fwd 64x10x256", false, true, 64, 10, 256, 0, false},
    {"mlp fc3 dW 10x256x64", true, false, 10, 256, 64, 0, false},
    {"mlp fc3 dx 64x256x10", false, false, 64, 256, 10, 0, false},
    {"cnn conv1 fwd W*col 32x784x9 (x64)", false, false, 32, 784, 9, 0, true},
    {"cnn conv1 dW+=dy*col^T 32x9x784 (x64)", false, true, 32, 9, 784, 1, true},
    {"cnn conv2 fwd 64x196x288 (x64)", false, false, 64, 196, 288, 0, true},
    {"cnn conv2 dW+= 64x288x196 (x64)", false, true, 64, 288, 196, 1, true},
    {"cnn conv2 dcol=W^T*dy 288x196x64 (x64)", true, false, 288, 196, 64, 0, true},
    {"cnn fc fwd 64x10x3136", false, true, 64, 10, 3136, 0, false},
    {"cnn fc dW 10x3136x64", true, false, 10, 3136, 64, 0, false},
    {"cnn fc dx 64x3136x10", false, false, 64, 3136, 10, 0, false},
    {"square 1024^3", false, false, 1024, 1024, 1024, 0, false},
};

struct Buffers {
  std::vector<float> a, b, c;  // per_example: one set per example, side by side
};

template <class Block>
void run_shape(const Shape& s, Buffers& buf, Block block) {
  const std::int64_t lda = s.trans_a ? s.M : s.K, ldb = s.trans_b ? s.K : s.N;
  if (!s.per_example) {
    gd::run_sliced(
        gd::GemmCall{s.trans_a, s.trans_b, s.M, s.N, s.K, buf.a.data(), lda, buf.b.data(), ldb, s.beta, buf.c.data()},
        block);
    return;
  }
  const std::int64_t sa = s.M * s.K, sb = s.K * s.N, sc = s.M * s.N;
  // conv2d.cpp's weight-gradient products all add into one thread's buffer;
  // here each example has its own C, which moves the same data.
  const bool shared_a = !s.trans_a && s.beta == 0 && !s.trans_b;  // forward: W is shared
#pragma omp parallel for schedule(static)
  for (std::int64_t n = 0; n < kBatch; ++n)
    gd::run_sliced(gd::GemmCall{s.trans_a, s.trans_b, s.M, s.N, s.K, buf.a.data() + (shared_a ? 0 : n * sa), lda,
                                buf.b.data() + n * sb, ldb, s.beta, buf.c.data() + n * sc},
                   block);
}

int count_threads() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/task")) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++n;
    closedir(d);
  }
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 15;
  std::vector<int> thread_counts;
  for (int i = 2; i < argc; ++i) thread_counts.push_back(std::atoi(argv[i]));
  if (thread_counts.empty()) thread_counts = {1, 2};
  if (rounds < 1) return 2;
  openblas_set_num_threads(1);  // as gemm.cpp does before its first product
  // OpenBLAS's pthread build starts its own (then idle) threads when loaded.
  const int threads_at_start = count_threads();

  std::mt19937 gen(1);
  std::normal_distribution<float> normal;
  std::vector<Buffers> bufs(kShapes.size());
  for (std::size_t i = 0; i < kShapes.size(); ++i) {
    const Shape& s = kShapes[i];
    const std::int64_t copies = s.per_example ? kBatch : 1;
    bufs[i].a.resize(static_cast<std::size_t>(copies * s.M * s.K));
    bufs[i].b.resize(static_cast<std::size_t>(copies * s.K * s.N));
    bufs[i].c.assign(static_cast<std::size_t>(copies * s.M * s.N), 0.0f);
    for (float& v : bufs[i].a) v = normal(gen);
    for (float& v : bufs[i].b) v = normal(gen);
  }

  std::printf("%-40s %3s %11s %11s %8s %6s %6s %9s %9s %8s\n", "shape", "thr", "OpenBLAS_ms", "oneDNN_ms", "ratio",
              "min", "max", "BLAS_GF/s", "DNNL_GF/s", "maxrel");
  for (int threads : thread_counts) {
    omp_set_num_threads(threads);
    for (std::size_t i = 0; i < kShapes.size(); ++i) {
      const Shape& s = kShapes[i];
      Buffers& buf = bufs[i];
      // Agreement: both from the same start (beta = 1 adds to C).
      std::fill(buf.c.begin(), buf.c.end(), 0.0f);
      run_shape(s, buf, gd::openblas_block);
      const std::vector<float> ref = buf.c;
      std::fill(buf.c.begin(), buf.c.end(), 0.0f);
      run_shape(s, buf, gd::onednn_block);
      double maxrel = 0;
      for (std::size_t k = 0; k < ref.size(); ++k)
        maxrel = std::max(maxrel, std::abs(double(ref[k]) - buf.c[k]) / (std::abs(double(ref[k])) + 1.0));

      const double flops = 2.0 * s.M * s.N * s.K * (s.per_example ? kBatch : 1);
      const int calls = flops > 1e9 ? 5 : 7;
      std::vector<double> tb, td, ratio;
      for (int r = 0; r < rounds; ++r) {
        double b = 0, d = 0;
        if (r % 2 == 0) {
          b = median_ms([&] { run_shape(s, buf, gd::openblas_block); }, calls);
          d = median_ms([&] { run_shape(s, buf, gd::onednn_block); }, calls);
        } else {
          d = median_ms([&] { run_shape(s, buf, gd::onednn_block); }, calls);
          b = median_ms([&] { run_shape(s, buf, gd::openblas_block); }, calls);
        }
        tb.push_back(b);
        td.push_back(d);
        ratio.push_back(b / d);  // > 1: oneDNN faster
      }
      std::printf("%-40s %3d %11.4f %11.4f %7.3fx %6.2f %6.2f %9.1f %9.1f %8.1e\n", s.name, threads, median(tb),
                  median(td), median(ratio), *std::min_element(ratio.begin(), ratio.end()),
                  *std::max_element(ratio.begin(), ratio.end()), flops / median(tb) / 1e6, flops / median(td) / 1e6,
                  maxrel);
      std::fflush(stdout);
    }
  }

  // Allocations per call once warm, each library on every shape, at the last
  // thread count.
  std::printf("\nallocations (malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign) per warm call:\n");
  for (std::size_t i = 0; i < kShapes.size(); ++i) {
    const Shape& s = kShapes[i];
    long counts[2];
    std::size_t largest[2];
    for (int lib = 0; lib < 2; ++lib) {
      const auto call = [&] {
        if (lib == 0)
          run_shape(s, bufs[i], gd::openblas_block);
        else
          run_shape(s, bufs[i], gd::onednn_block);
      };
      call();
      g_allocs = 0;
      g_largest = 0;
      g_counting = true;
      for (int k = 0; k < 10; ++k) call();
      g_counting = false;
      counts[lib] = g_allocs.load();
      largest[lib] = g_largest.load();
    }
    std::printf("  %-40s OpenBLAS %6.1f (largest %8zu B)  oneDNN %6.1f (largest %8zu B)\n", s.name, counts[0] / 10.0,
                largest[0], counts[1] / 10.0, largest[1]);
  }
  std::printf("threads in the process: %d before the first product, %d after the runs (OpenMP threads up to %d)\n",
              threads_at_start, count_threads(), *std::max_element(thread_counts.begin(), thread_counts.end()));
  return 0;
}

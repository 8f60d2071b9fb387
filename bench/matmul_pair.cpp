// The Linear layer's three products on the default MLP (784-256-256-10, batch
// 64): OpenBLAS as bnorm runs it (src/kernels/gemm_slices.hpp: sliced over
// bnorm's OpenMP threads, one single-threaded call per slice) against oneDNN's
// matmul primitive (created once per shape, user-mode scratchpad allocated
// once, run on omp_get_max_threads() threads by oneDNN itself, arguments
// passed through the C API as a fixed array). Timed in one process, taking
// turns, the median of the rounds' ratios as in bench/gemm_pair.cpp; and the
// allocations each makes per warm call (malloc and friends interposed).
//
// Build (needs libdnnl-dev and libopenblas-dev):
//   g++ -std=c++20 -O2 -fopenmp -Wall -Wextra -Isrc/kernels -I/usr/include/x86_64-linux-gnu/openblas-pthread
//       bench/matmul_pair.cpp -lopenblas -ldnnl -o build/matmul_pair
// Run: OMP_WAIT_POLICY=passive build/matmul_pair [rounds] [threads...]   (default 15 rounds, 1 and 2 threads)
#define BNORM_GEMM_WITH_OPENBLAS 1
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <string>
#include <vector>

#include "count_allocations.hpp"
#include "gemm_slices.hpp"
#include "median_timing.hpp"

namespace {

namespace gd = bnorm::kernels::gemm_detail;
using dnnl::memory;

// C (M, N) = op(A) · op(B), as the Linear layer calls gemm_abt / gemm_ab / gemm_atb.
struct Shape {
  const char* name;
  bool trans_a, trans_b;
  std::int64_t M, N, K;
};

const Shape kShapes[] = {
    {"fc1 fwd x*W^T 64x256x784", false, true, 64, 256, 784}, {"fc1 dW dy^T*x 256x784x64", true, false, 256, 784, 64},
    {"fc2 fwd 64x256x256", false, true, 64, 256, 256},       {"fc2 dW 256x256x64", true, false, 256, 256, 64},
    {"fc2 dx dy*W 64x256x256", false, false, 64, 256, 256},  {"fc3 fwd 64x10x256", false, true, 64, 10, 256},
    {"fc3 dW 10x256x64", true, false, 10, 256, 64},          {"fc3 dx dy*W 64x256x10", false, false, 64, 256, 10},
};

// A (M, K) stored row-major as (M, K), or as (K, M) when transposed: the same
// buffer seen through strides, so no copy.
memory::desc operand(std::int64_t rows, std::int64_t cols, bool transposed) {
  return transposed ? memory::desc({rows, cols}, memory::data_type::f32, memory::dims{1, rows})
                    : memory::desc({rows, cols}, memory::data_type::f32, memory::dims{cols, 1});
}

struct Matmul {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  dnnl::primitive prim;
  memory a, b, c, scratch;
  std::vector<dnnl_exec_arg_t> args;

  Matmul(const Shape& s, float* pa, float* pb, float* pc) {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::matmul::primitive_desc pd(
        dnnl::matmul::desc(operand(s.M, s.K, s.trans_a), operand(s.K, s.N, s.trans_b), operand(s.M, s.N, false)), attr,
        engine);
    prim = dnnl::matmul(pd);
    a = memory(pd.src_desc(), engine, pa);
    b = memory(pd.weights_desc(), engine, pb);
    c = memory(pd.dst_desc(), engine, pc);
    args = {{DNNL_ARG_SRC, a.get()}, {DNNL_ARG_WEIGHTS, b.get()}, {DNNL_ARG_DST, c.get()}};
    if (pd.scratchpad_desc().get_size() > 0) {
      scratch = memory(pd.scratchpad_desc(), engine);
      args.push_back({DNNL_ARG_SCRATCHPAD, scratch.get()});
    }
    std::printf("  oneDNN matmul for %s: %s\n", s.name, pd.impl_info_str());
  }
  void run() {
    dnnl_primitive_execute(prim.get(), stream.get(), static_cast<int>(args.size()), args.data());
    stream.wait();
  }
};

template <class F>
double allocations_per_call(F&& call) {
  call();
  g_allocs = 0;
  g_counting = true;
  for (int k = 0; k < 10; ++k) call();
  g_counting = false;
  return g_allocs.load() / 10.0;
}

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 15;
  std::vector<int> thread_counts;
  for (int i = 2; i < argc; ++i) thread_counts.push_back(std::atoi(argv[i]));
  if (thread_counts.empty()) thread_counts = {1, 2};
  if (rounds < 1) return 2;
  openblas_set_num_threads(1);  // as gemm.cpp does before its first product
  std::printf("load average at start: %s\n", load_average().c_str());
  std::mt19937 gen(1);
  std::normal_distribution<float> normal;
  std::printf("%-28s %3s %11s %11s %8s %6s %6s %8s %8s %8s\n", "shape", "thr", "OpenBLAS_ms", "matmul_ms", "ratio",
              "min", "max", "maxrel", "BLAS_al", "DNNL_al");
  for (int threads : thread_counts) {
    omp_set_num_threads(threads);
    for (const Shape& s : kShapes) {
      std::vector<float> a(s.M * s.K), b(s.K * s.N), c_blas(s.M * s.N), c_dnnl(s.M * s.N);
      for (float& v : a) v = normal(gen);
      for (float& v : b) v = normal(gen);
      const std::int64_t lda = s.trans_a ? s.M : s.K, ldb = s.trans_b ? s.K : s.N;
      const gd::GemmCall call{s.trans_a, s.trans_b, s.M, s.N, s.K, a.data(), lda, b.data(), ldb, 0.0f, c_blas.data()};
      Matmul mm(s, a.data(), b.data(), c_dnnl.data());  // made for this thread count
      const auto blas = [&] { gd::run_sliced(call, gd::openblas_block); };
      const auto dnnl = [&] { mm.run(); };
      blas();
      dnnl();
      double maxrel = 0;
      for (std::size_t k = 0; k < c_blas.size(); ++k)
        maxrel = std::max(maxrel, std::abs(double(c_blas[k]) - c_dnnl[k]) / (std::abs(double(c_blas[k])) + 1.0));
      std::vector<double> tb, td, ratio;
      for (int r = 0; r < rounds; ++r) {
        double x = 0, y = 0;
        if (r % 2 == 0) {
          x = median_ms(blas, 9);
          y = median_ms(dnnl, 9);
        } else {
          y = median_ms(dnnl, 9);
          x = median_ms(blas, 9);
        }
        tb.push_back(x);
        td.push_back(y);
        ratio.push_back(x / y);  // > 1: the matmul primitive faster
      }
      std::printf("%-28s %3d %11.4f %11.4f %7.3fx %6.2f %6.2f %8.1e %8.1f %8.1f\n", s.name, threads, median(tb),
                  median(td), median(ratio), *std::min_element(ratio.begin(), ratio.end()),
                  *std::max_element(ratio.begin(), ratio.end()), maxrel, allocations_per_call(blas),
                  allocations_per_call(dnnl));
      std::fflush(stdout);
    }
  }
  std::printf("load average at end: %s\n", load_average().c_str());
  return 0;
}

// Conv2d's im2col + GEMM path against another of its paths (Winograd's
// F(2x2, 3x3), or oneDNN's primitives in builds with BNORM_CONV=onednn), timed
// in one process, taking turns, on the default CNN's convolutions at batch 64
// (the layer itself, set_path switching it, so the times include everything a
// training step runs: the transforms, oneDNN's reorders to and from its
// blocked layouts, the im2col copies, the bias sum).
//
// A round times 7 calls of one path, then 7 of the other (the order flips
// every round); its ratio compares two medians taken moments apart, and the
// median of the rounds' ratios holds still while the shared machine's speed
// drifts (as in bench/gemm_pair.cpp). Run with OMP_WAIT_POLICY=passive on a
// shared machine: spinning threads make the timings depend on the load.
//
// Run: build/bench/conv_pair winograd|onednn [rounds] [threads...]
//      (default 21 rounds, 1 and 2 threads)
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "bnorm/kernels/gemm.hpp"
#include "bnorm/nn/conv2d.hpp"
#include "bnorm/rng.hpp"
#include "bnorm/tensor.hpp"
#include "median_timing.hpp"

namespace {

using bnorm::Conv2d;
using Path = Conv2d::ConvPath;

struct Layer {
  const char* name;
  std::int64_t C, H, W, O;
};

constexpr std::int64_t kBatch = 64;
// expand_named_arch("cnn"): conv3x3:32 on 1x28x28, then conv3x3:64 on 32x14x14, no bias (a BN follows).
const Layer kLayers[] = {{"conv1 1x28x28->32", 1, 28, 28, 32}, {"conv2 32x14x14->64", 32, 14, 14, 64}};

enum class Pass { forward, backward_weights, backward_both };
const char* pass_name(Pass p) {
  return p == Pass::forward ? "forward" : p == Pass::backward_weights ? "bwd weights" : "bwd data+weights";
}

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

struct Bench {
  Conv2d conv;
  std::vector<float> params, grads;
  bnorm::Tensor x, y, dy, dx;

  explicit Bench(const Layer& l) : conv(l.C, l.O, 3, 3, 1, 1, false) {
    params.resize(static_cast<std::size_t>(l.O * l.C * 9));
    grads.resize(params.size());
    conv.bind_parameters(params, grads);
    bnorm::Rng rng(1);
    conv.init_parameters(rng);
    x = bnorm::Tensor({kBatch, l.C, l.H, l.W});
    for (std::int64_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(rng.normal());
    dy = bnorm::Tensor({kBatch, l.O, l.H, l.W});
    for (std::int64_t i = 0; i < dy.size(); ++i) dy[i] = static_cast<float>(rng.normal());
  }

  double time_ms(Path path, Pass pass, int calls) {
    conv.set_path(path);  // drops oneDNN's primitives: made again by the warm-up forward
    conv.forward(y, x, bnorm::Mode::train);
    return median_ms(
        [&] {
          if (pass == Pass::forward)
            conv.forward(y, x, bnorm::Mode::train);
          else
            conv.backward(pass == Pass::backward_both ? &dx : nullptr, dy);
        },
        calls);
  }
};

}  // namespace

int main(int argc, char** argv) {
  const std::string other = argc > 1 ? argv[1] : "";
  if (other != "winograd" && other != "onednn") {
    std::fprintf(stderr, "usage: conv_pair winograd|onednn [rounds] [threads...]\n");
    return 2;
  }
  if (other == "onednn" && !Conv2d::onednn_built()) {
    std::fprintf(stderr, "conv_pair: this build has no oneDNN convolutions (configure with -DBNORM_CONV=onednn)\n");
    return 2;
  }
  const Path path = other == "onednn" ? Path::onednn : Path::winograd;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 21;
  std::vector<int> thread_counts;
  for (int i = 3; i < argc; ++i) thread_counts.push_back(std::atoi(argv[i]));
  if (thread_counts.empty()) thread_counts = {1, 2};
  if (rounds < 1) return 2;
  std::printf("load average at start: %s; batch %lld, %d rounds of 7 calls each way\n", load_average().c_str(),
              static_cast<long long>(kBatch), rounds);
  std::printf("%-20s %-17s %3s %10s %10s %8s %6s %6s\n", "layer", "pass", "thr", "im2col_ms", (other + "_ms").c_str(),
              "ratio", "min", "max");
  for (int threads : thread_counts) {
    bnorm::kernels::set_threads(threads);
    for (const Layer& l : kLayers) {
      Bench b(l);
      for (Pass pass : {Pass::forward, Pass::backward_weights, Pass::backward_both}) {
        std::vector<double> ti, td, ratio;
        for (int r = 0; r < rounds; ++r) {
          double i = 0, d = 0;
          if (r % 2 == 0) {
            i = b.time_ms(Path::im2col, pass, 7);
            d = b.time_ms(path, pass, 7);
          } else {
            d = b.time_ms(path, pass, 7);
            i = b.time_ms(Path::im2col, pass, 7);
          }
          ti.push_back(i);
          td.push_back(d);
          ratio.push_back(i / d);  // > 1: the other path faster
        }
        std::printf("%-20s %-17s %3d %10.3f %10.3f %7.3fx %6.2f %6.2f\n", l.name, pass_name(pass), threads, median(ti),
                    median(td), median(ratio), *std::min_element(ratio.begin(), ratio.end()),
                    *std::max_element(ratio.begin(), ratio.end()));
        std::fflush(stdout);
      }
    }
  }
  std::printf("load average at end: %s\n", load_average().c_str());
  return 0;
}

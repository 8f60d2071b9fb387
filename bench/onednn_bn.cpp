// oneDNN peer of `bnorm bench bn`: median times of oneDNN's batch
// normalization on one shape and memory layout, printed as one JSON object.
// Built and run by bench/compare_bn.py against Debian's libdnnl-dev (2.6).
//
//   onednn_bn SHAPE LAYOUT [ITERATIONS]
//   SHAPE: NxC or NxCxHxW; an (N, C) shape runs as (N, C, 1, 1)
//   LAYOUT: plain (nchw), nChw8c (oneDNN's blocked layout for AVX2) or
//   nChw16c (for AVX-512); bench/compare_bn.py runs all three and takes the best
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "onednn_peer.hpp"

namespace {

using namespace dnnl;

template <class F>
double median_ms(int iterations, F&& body) {
  body();
  std::vector<double> ms;
  for (int i = 0; i < iterations; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    body();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s NxC|NxCxHxW plain|nChw8c|nChw16c [iterations]\n", argv[0]);
    return 2;
  }
  const std::string shape_text = argv[1], layout = argv[2];
  const int iterations = argc > 3 ? std::atoi(argv[3]) : 50;
  const memory::dims dims = parse_bn_shape(shape_text);
  const std::unordered_map<std::string, memory::format_tag> layouts{{"plain", memory::format_tag::nchw},
                                                                    {"nChw8c", memory::format_tag::nChw8c},
                                                                    {"nChw16c", memory::format_tag::nChw16c}};
  if (dims.size() != 4 || !layouts.count(layout)) {
    std::fprintf(stderr, "bad shape or layout\n");
    return 2;
  }
  std::mt19937 gen(1);
  OnednnBatchNorm bn(dims, layouts.at(layout), gen);
  const double t_fwd = median_ms(iterations, [&] { bn.forward(); });
  const double t_both = median_ms(iterations, [&] { bn.forward_backward(); });
  const double t_inf = median_ms(iterations, [&] { bn.inference(); });
  std::printf(
      "{\"shape\": \"%s\", \"layout\": \"%s\", \"fwd_train_ms\": %.5f, \"fwdbwd_train_ms\": %.5f, "
      "\"infer_ms\": %.5f, \"impl\": \"%s\"}\n",
      shape_text.c_str(), layout == "plain" ? (dims[2] * dims[3] == 1 ? "nc" : "nchw") : layout.c_str(), t_fwd, t_both,
      t_inf, bn.fwd_pd.impl_info_str());
  return 0;
}

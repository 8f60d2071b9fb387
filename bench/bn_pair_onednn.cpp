// bnorm's batch-norm kernels and oneDNN's, timed in one process, taking turns:
// `rounds` times, 11 calls of bnorm then 11 of oneDNN (nChw16c), for training
// forward+backward and for inference. Each round's ratio compares medians
// taken seconds apart on the same machine state, so the median of the rounds'
// ratios holds still where runs of separate programs (bench/compare) drift
// with the shared machine's speed.
//
// Build (after cmake --build build), with libdnnl-dev installed:
//   g++ -std=c++20 -O2 -fopenmp -Iinclude bench/bn_pair_onednn.cpp build/libbnorm.a -ldnnl -o build/bn_pair_onednn
// Run: OMP_NUM_THREADS=2 build/bn_pair_onednn 32x64x56x56 [rounds]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <random>
#include <vector>

#include "bnorm/kernels/batchnorm.hpp"
#include "bnorm/tensor.hpp"
#include "onednn_peer.hpp"

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class F>
double median_ms_of_calls(F&& call) {
  std::vector<double> ms;
  for (int i = 0; i < 11; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    call();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return median(ms);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s NxC|NxCxHxW [rounds]\n", argv[0]);
    return 2;
  }
  dnnl::memory::dims dims;
  try {
    dims = parse_bn_shape(argv[1]);
  } catch (const std::exception&) {  // a part that is not a number: reported below
    dims.clear();
  }
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 40;
  if (dims.size() != 4 || rounds < 1 ||
      std::any_of(dims.begin(), dims.end(), [](dnnl::memory::dim d) { return d < 1; })) {
    std::fprintf(stderr, "bad shape or rounds\n");
    return 2;
  }
  const long N = dims[0], C = dims[1], S = dims[2] * dims[3], total = N * C * S;

  std::mt19937 gen(1);
  // oneDNN's blocked layout for the widest vectors this CPU has (by its features).
  const auto layout =
      __builtin_cpu_supports("avx512f") ? dnnl::memory::format_tag::nChw16c : dnnl::memory::format_tag::nChw8c;
  OnednnBatchNorm onednn(dims, layout, gen);

  // bnorm on the same values (the layouts differ; the values need only be alike).
  bnorm::Tensor x(bnorm::Shape{total}), y(bnorm::Shape{total}), dy(bnorm::Shape{total}), dx(bnorm::Shape{total});
  std::copy_n(OnednnBatchNorm::data(onednn.src), total, x.data());
  std::copy_n(OnednnBatchNorm::data(onednn.diff_dst), total, dy.data());
  std::vector<float> gamma(OnednnBatchNorm::data(onednn.scale), OnednnBatchNorm::data(onednn.scale) + C);
  std::vector<float> beta(OnednnBatchNorm::data(onednn.shift), OnednnBatchNorm::data(onednn.shift) + C);
  std::vector<float> b_mean(C), b_var(C), inv_std(C), dgamma(C), dbeta(C);
  std::vector<double> work(bnorm::kernels::batchnorm_work_doubles(C));
  const float eps = OnednnBatchNorm::kEps;

  const auto bnorm_fwdbwd = [&] {
    bnorm::kernels::batchnorm_forward_train(y.data(), b_mean.data(), b_var.data(), inv_std.data(), x.data(),
                                            gamma.data(), beta.data(), eps, N, C, S, work.data());
    bnorm::kernels::batchnorm_backward(dx.data(), dgamma.data(), dbeta.data(), dy.data(), x.data(), b_mean.data(),
                                       inv_std.data(), gamma.data(), N, C, S, work.data());
  };
  const auto bnorm_infer = [&] {
    bnorm::kernels::batchnorm_forward_inference(y.data(), x.data(), b_mean.data(), b_var.data(), gamma.data(),
                                                beta.data(), eps, N, C, S, work.data());
  };
  const auto onednn_fwdbwd = [&] { onednn.forward_backward(); };
  const auto onednn_infer = [&] { onednn.inference(); };
  bnorm_fwdbwd();  // statistics for inference, and a first touch of every buffer
  onednn_fwdbwd();

  std::vector<double> b_fb, d_fb, b_inf, d_inf, r_fb, r_inf;
  for (int r = 0; r < rounds; ++r) {
    b_fb.push_back(median_ms_of_calls(bnorm_fwdbwd));
    d_fb.push_back(median_ms_of_calls(onednn_fwdbwd));
    b_inf.push_back(median_ms_of_calls(bnorm_infer));
    d_inf.push_back(median_ms_of_calls(onednn_infer));
    r_fb.push_back(d_fb.back() / b_fb.back());
    r_inf.push_back(d_inf.back() / b_inf.back());
  }
  std::printf(
      "%s, %d rounds: forward+backward bnorm %.4f ms, oneDNN %.4f ms, speed-up %.3fx (rounds %.2f-%.2f); "
      "inference bnorm %.4f ms, oneDNN %.4f ms, speed-up %.3fx (rounds %.2f-%.2f)\n",
      argv[1], rounds, median(b_fb), median(d_fb), median(r_fb), *std::min_element(r_fb.begin(), r_fb.end()),
      *std::max_element(r_fb.begin(), r_fb.end()), median(b_inf), median(d_inf), median(r_inf),
      *std::min_element(r_inf.begin(), r_inf.end()), *std::max_element(r_inf.begin(), r_inf.end()));
  return 0;
}

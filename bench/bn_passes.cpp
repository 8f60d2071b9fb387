// Each batch-norm pass of bnorm alone on one (N, C, S) shape, with the
// bandwidth it moves: the statistics pass (x read), the fused training
// forward (x read, y written), inference (x read, y written), the gradient
// sums (x and dy read) and the fused backward (x and dy read, dx written).
// Read one pass against another: the sums alone show what the memory gives
// to reads only, inference what it gives to reads and writes together, and
// a fused pass near the sum of the two single-direction times shows it is
// not overlapping them. For an A/B of two builds, alternate the two programs
// several times and compare medians: the shared machine drifts by tens of
// percent within minutes.
//
// Build (after cmake --build build):
//   g++ -std=c++20 -O2 -fopenmp -Iinclude bench/bn_passes.cpp build/libbnorm.a -lopenblas -o build/bn_passes
// Run: OMP_NUM_THREADS=2 build/bn_passes 64 64 3136 [rounds]
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "bnorm/kernels/batchnorm.hpp"
#include "bnorm/tensor.hpp"
#include "median_timing.hpp"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s N C S [rounds]\n", argv[0]);
    return 2;
  }
  const std::int64_t N = std::atoll(argv[1]), C = std::atoll(argv[2]), S = std::atoll(argv[3]);
  const int rounds = argc > 4 ? std::atoi(argv[4]) : 3;
  if (N < 2 || C < 1 || S < 1 || rounds < 1) {
    std::fprintf(stderr, "N >= 2, C >= 1, S >= 1 and rounds >= 1\n");
    return 2;
  }
  namespace k = bnorm::kernels;
  const std::int64_t total = N * C * S;
  bnorm::Tensor x(bnorm::Shape{total}), y(bnorm::Shape{total}), dy(bnorm::Shape{total}), dx(bnorm::Shape{total});
  for (std::int64_t i = 0; i < total; ++i) {
    x[i] = static_cast<float>(i % 977) * 0.01f;
    dy[i] = static_cast<float>(i % 313) * 0.01f - 1.5f;
  }
  std::vector<float> gamma(C, 1.0f), beta(C, 0.0f), mean(C), var(C), inv_std(C), dgamma(C), dbeta(C);
  std::vector<double> work(k::batchnorm_work_doubles(C)), sum_a(C), sum_b(C);
  const double mb = static_cast<double>(total) * sizeof(float) / 1e6;  // one tensor, MB
  constexpr int kCalls = 21;
  const auto timed = [&](auto&& call) {
    for (int i = 0; i < 3; ++i) call();  // warm: pages mapped, caches as in a loop
    return median_ms(call, kCalls);
  };
  for (int r = 0; r < rounds; ++r) {
    const double sums =
        timed([&] { k::batchnorm_channel_moments(sum_a.data(), sum_b.data(), x.data(), N, C, S, work.data()); });
    const double forward = timed([&] {
      k::batchnorm_forward_train(y.data(), mean.data(), var.data(), inv_std.data(), x.data(), gamma.data(), beta.data(),
                                 1e-5f, N, C, S, work.data());
    });
    const double inference = timed([&] {
      k::batchnorm_forward_inference(y.data(), x.data(), mean.data(), var.data(), gamma.data(), beta.data(), 1e-5f, N,
                                     C, S, work.data());
    });
    const double grad_sums = timed([&] {
      k::batchnorm_grad_sums(sum_a.data(), sum_b.data(), dy.data(), nullptr, x.data(), mean.data(), N, C, S);
    });
    const double backward = timed([&] {
      k::batchnorm_backward(dx.data(), dgamma.data(), dbeta.data(), dy.data(), x.data(), mean.data(), inv_std.data(),
                            gamma.data(), N, C, S, work.data());
    });
    std::printf(
        "%lldx%lldx%lld: sums %.3f ms (%.1f GB/s) | forward %.3f ms (%.1f) | inference %.3f ms (%.1f) | "
        "grad sums %.3f ms (%.1f) | backward %.3f ms (%.1f); GB/s of the fewest tensors each must move\n",
        static_cast<long long>(N), static_cast<long long>(C), static_cast<long long>(S), sums, mb / sums, forward,
        2 * mb / forward, inference, 2 * mb / inference, grad_sums, 2 * mb / grad_sums, backward, 3 * mb / backward);
  }
}

// Google Benchmark suite for bnorm's kernels: the batch-norm passes on the
// shapes of bench/compare_bn.py, and the convolution and GEMM paths of the
// default networks. Run: build/bench/bench_kernels [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <vector>

#include "bnorm/kernels/batchnorm.hpp"
#include "bnorm/kernels/conv.hpp"
#include "bnorm/kernels/gemm.hpp"
#include "bnorm/rng.hpp"

namespace {

using bnorm::Rng;

// The kernels' scratch, grown once and kept, as the layer keeps it.
double* scratch(std::int64_t C) {
  static std::vector<double> work;
  const auto n = static_cast<std::size_t>(bnorm::kernels::batchnorm_work_doubles(C));
  if (work.size() < n) work.resize(n);
  return work.data();
}

std::vector<float> random_values(std::int64_t n, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = static_cast<float>(rng.normal());
  return v;
}

// Arguments: N, C, S (S = H*W; 1 for an (N, C) input).
void BM_BatchNormForwardTrain(benchmark::State& state) {
  const std::int64_t N = state.range(0), C = state.range(1), S = state.range(2);
  const auto x = random_values(N * C * S, 1);
  std::vector<float> y(x.size()), mean(C), var(C), inv_std(C), gamma(C, 1.0f), beta(C, 0.0f);
  for (auto _ : state) {
    bnorm::kernels::batchnorm_forward_train(y.data(), mean.data(), var.data(), inv_std.data(), x.data(), gamma.data(),
                                            beta.data(), 1e-5f, N, C, S, scratch(C));
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * 3 * N * C * S * 4);  // x twice, y once
}

void BM_BatchNormBackward(benchmark::State& state) {
  const std::int64_t N = state.range(0), C = state.range(1), S = state.range(2);
  const auto x = random_values(N * C * S, 1), dy = random_values(N * C * S, 2);
  std::vector<float> y(x.size()), dx(x.size()), mean(C), var(C), inv_std(C), gamma(C, 1.0f), beta(C, 0.0f), dgamma(C),
      dbeta(C);
  bnorm::kernels::batchnorm_forward_train(y.data(), mean.data(), var.data(), inv_std.data(), x.data(), gamma.data(),
                                          beta.data(), 1e-5f, N, C, S, scratch(C));
  for (auto _ : state) {
    bnorm::kernels::batchnorm_backward(dx.data(), dgamma.data(), dbeta.data(), dy.data(), x.data(), mean.data(),
                                       inv_std.data(), gamma.data(), N, C, S, scratch(C));
    benchmark::DoNotOptimize(dx.data());
  }
  state.SetBytesProcessed(state.iterations() * 5 * N * C * S * 4);  // x, dy twice; dx once
}

void BM_BatchNormInference(benchmark::State& state) {
  const std::int64_t N = state.range(0), C = state.range(1), S = state.range(2);
  const auto x = random_values(N * C * S, 1);
  std::vector<float> y(x.size()), mean(C, 0.1f), var(C, 2.0f), gamma(C, 1.0f), beta(C, 0.0f);
  for (auto _ : state) {
    bnorm::kernels::batchnorm_forward_inference(y.data(), x.data(), mean.data(), var.data(), gamma.data(), beta.data(),
                                                1e-5f, N, C, S, scratch(C));
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * 2 * N * C * S * 4);
}

void bn_shapes(benchmark::internal::Benchmark* b) {
  b->Args({256, 4096, 1})
      ->Args({64, 512, 1})
      ->Args({64, 256, 1})
      ->Args({32, 64, 56 * 56})
      ->Args({128, 256, 14 * 14})
      ->Args({64, 32, 28 * 28})
      ->Args({64, 64, 14 * 14})
      ->Unit(benchmark::kMicrosecond);
}
BENCHMARK(BM_BatchNormForwardTrain)->Apply(bn_shapes);
BENCHMARK(BM_BatchNormBackward)->Apply(bn_shapes);
BENCHMARK(BM_BatchNormInference)->Apply(bn_shapes);

// The default CNN's second convolution as bnorm runs it: for each of a batch
// of 64 (32, 14, 14) inputs, im2col then one GEMM (64 × 288) · (288 × 196),
// examples split across threads.
void BM_Conv2Im2colGemm(benchmark::State& state) {
  const bnorm::kernels::ConvGeometry g{32, 14, 14, 3, 3, 1, 1};
  const std::int64_t N = 64, P = g.out_h() * g.out_w(), CKK = g.patch(), O = 64;
  const auto x = random_values(N * 32 * 14 * 14, 3), w = random_values(O * CKK, 4);
  std::vector<float> col(static_cast<std::size_t>(CKK * N * P)), y(static_cast<std::size_t>(O * N * P));
  for (auto _ : state) {
#pragma omp parallel for schedule(static)
    for (std::int64_t n = 0; n < N; ++n) {
      bnorm::kernels::im2col(col.data() + n * CKK * P, x.data() + n * 32 * 196, 1, g);
      bnorm::kernels::gemm_ab(y.data() + n * O * P, w.data(), col.data() + n * CKK * P, O, P, CKK);
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * 2 * O * N * P * CKK);  // FLOPs
}
BENCHMARK(BM_Conv2Im2colGemm)->Unit(benchmark::kMillisecond);

// im2col of a batch of 64 for the default CNN's two convolutions (3x3,
// padding 1). Arguments: C, H = W.
void BM_Im2col(benchmark::State& state) {
  const std::int64_t C = state.range(0), H = state.range(1), N = 64;
  const bnorm::kernels::ConvGeometry g{C, H, H, 3, 3, 1, 1};
  const auto x = random_values(N * C * H * H, 6);
  std::vector<float> col(static_cast<std::size_t>(N * g.patch() * g.out_h() * g.out_w()));
  for (auto _ : state) {
    bnorm::kernels::im2col(col.data(), x.data(), N, g);
    benchmark::DoNotOptimize(col.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(col.size() * sizeof(float)));
}
BENCHMARK(BM_Im2col)->Args({1, 28})->Args({32, 14})->Unit(benchmark::kMicrosecond);

// 2x2 max pooling, stride 2, of the default CNN's two pooling layers.
// Arguments: planes (N·C), H = W.
void BM_MaxPool2x2(benchmark::State& state) {
  const std::int64_t planes = state.range(0), H = state.range(1), OH = H / 2;
  const auto x = random_values(planes * H * H, 5);
  std::vector<float> y(static_cast<std::size_t>(planes * OH * OH));
  std::vector<std::int32_t> argmax(y.size());
  for (auto _ : state) {
    bnorm::kernels::maxpool_forward(y.data(), argmax.data(), x.data(), planes, H, H, 2, 2);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(x.size() * sizeof(float)));
}
BENCHMARK(BM_MaxPool2x2)->Args({64 * 32, 28})->Args({64 * 64, 14})->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();

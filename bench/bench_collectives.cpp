// The collectives of one data-parallel training step, timed alone:
//   mpirun -np K build/bench/bench_collectives [gradient_floats] [bn_channels...]
// Defaults: the default MLP (784-256-256-10 with BN before ReLU): 269,834
// gradient floats and two BN layers of 256 channels. Per step the trainer
// makes one gradient all-reduce and, per BN layer, one allgather of 1 + 2C
// doubles (forward) and one sum of 2C doubles (backward). Rank 0 prints the
// median over 200 repetitions of each and of a whole step's set.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "bnorm/dist/mpi.hpp"

namespace {

double median_us(const std::function<void()>& f, int reps) {
  std::vector<double> t;
  for (int i = 0; i < 10; ++i) f();  // warm-up
  for (int i = 0; i < reps; ++i) {
    const auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count());
  }
  std::nth_element(t.begin(), t.begin() + reps / 2, t.end());
  return t[static_cast<std::size_t>(reps / 2)];
}

}  // namespace

int main(int argc, char** argv) {
  bnorm::dist::MpiSession mpi(&argc, &argv);
  bnorm::DataParallel& world = mpi.world();
  const std::size_t floats = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 269834;
  std::vector<std::size_t> channels;
  for (int i = 2; i < argc; ++i) channels.push_back(std::strtoull(argv[i], nullptr, 10));
  if (channels.empty()) channels = {256, 256};
  const int K = world.size();
  constexpr int kReps = 200;

  std::vector<float> grads(floats, 1.0f);
  auto gradient = [&] { world.allreduce_sum(std::span<float>(grads)); };
  auto bn_forward = [&] {
    for (std::size_t c : channels) {
      std::vector<double> in(1 + 2 * c, 1.0), out(in.size() * static_cast<std::size_t>(K));
      world.allgather(std::span<double>(out), std::span<const double>(in));
    }
  };
  auto bn_backward = [&] {
    for (std::size_t c : channels) {
      std::vector<double> sums(2 * c, 1.0);
      world.allreduce_sum(std::span<double>(sums));
    }
  };
  const double g = median_us(gradient, kReps), f = median_us(bn_forward, kReps), b = median_us(bn_backward, kReps);
  const double step = median_us(
      [&] {
        bn_forward();
        bn_backward();
        gradient();
      },
      kReps);
  if (world.rank() == 0) {
    std::printf("K = %d: gradient all-reduce of %zu floats (%.2f MB): %.1f us\n", K, floats, floats * 4 / 1e6, g);
    std::printf("        BN forward allgathers (%zu layers): %.1f us; BN backward sums: %.1f us\n", channels.size(), f,
                b);
    std::printf("        one step's collectives together: %.1f us\n", step);
  }
  return 0;
}

// One training step of a model (forward and backward, no optimizer, no data
// loading), timed alone: what `bnorm train` spends per example inside
// Model, without the trainer around it. Compare builds by running them in
// turn, several rounds: on a shared host the same build moves by 10 % or
// more between minutes.
//
// Run: build/bench/train_step [threads] [steps] [arch]   (defaults: 2, 300, cnn)
// Prints the mean forward, backward and total microseconds per example over
// the steps after 20 warm-up steps, batch 64, inputs drawn once from N(0, 1).
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bnorm/nn/arch.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/nn/layer_factory.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/rng.hpp"

int main(int argc, char** argv) {
  using namespace bnorm;
  using Clock = std::chrono::steady_clock;
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int steps = argc > 2 ? std::atoi(argv[2]) : 300;
  const std::string arch = argc > 3 ? argv[3] : "cnn";
  if (threads < 1 || steps < 1) {
    std::fprintf(stderr, "usage: train_step [threads >= 1] [steps >= 1] [arch]\n");
    return 2;
  }
  omp_set_num_threads(threads);
  constexpr std::int64_t kBatch = 64, kWarmup = 20;
  const Shape example = arch == "mlp" ? Shape{784} : Shape{1, 28, 28};
  Model model = Model::from_architecture(parse_arch(arch, example, BnPlacement::before, BatchNormOptions{}));
  model.set_fusion(true);
  Shape batch_shape{kBatch};
  batch_shape.insert(batch_shape.end(), example.begin(), example.end());
  Tensor x(batch_shape);
  Rng rng(1);
  for (float& v : x.span()) v = static_cast<float>(rng.normal());
  Tensor dlogits(Shape{kBatch, model.output_shape()[0]});
  for (float& v : dlogits.span()) v = 0.01f;
  double forward_s = 0, backward_s = 0;
  for (std::int64_t step = 0; step < steps + kWarmup; ++step) {
    const auto t0 = Clock::now();
    model.forward(x, Mode::train);
    const auto t1 = Clock::now();
    model.backward(dlogits);
    const auto t2 = Clock::now();
    if (step < kWarmup) continue;
    forward_s += std::chrono::duration<double>(t1 - t0).count();
    backward_s += std::chrono::duration<double>(t2 - t1).count();
  }
  const double per_example = 1e6 / static_cast<double>(steps * kBatch);
  std::printf("%s, %d threads, batch %lld, %d steps: forward %.1f, backward %.1f, total %.1f us per example\n",
              arch.c_str(), threads, static_cast<long long>(kBatch), steps, forward_s * per_example,
              backward_s * per_example, (forward_s + backward_s) * per_example);
  return 0;
}

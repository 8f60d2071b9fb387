#pragma once
// Training runs instrumented for the experiments: a plain SGD/Adam loop over
// mini-batches (the Trainer's steps, with the loss logged every few steps, the
// test set evaluated every few hundred, hooks between backward and update, and
// divergence recorded instead of thrown), plus the statistics the experiments
// read off a model.
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "bnorm/io/dataset.hpp"
#include "bnorm/nn/layer_factory.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/train/optimizer.hpp"

namespace bnorm::exp {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Two hidden blocks of 256 units, the project's default MLP, as --arch tokens.
inline constexpr const char* kMlpArch = "fc:256,bn,relu,fc:256,bn,relu,fc:10";

struct RunConfig {
  std::string name;  // the run's label in CSV files and plots
  std::string arch = kMlpArch;
  BnPlacement placement = BnPlacement::before;
  BatchNormOptions bn;
  std::string optimizer = "sgd";
  float lr = 0.01f;
  float momentum = 0.9f;
  std::int64_t batch_size = 64;
  std::int64_t steps = 1000;
  std::int64_t log_every = 20;    // mean training loss over this many steps
  std::int64_t eval_every = 100;  // test loss and accuracy (running statistics); 0 = only at the end
  std::uint64_t seed = 0;
};

struct CurvePoint {
  std::int64_t step;
  double train_loss;  // mean over the last log_every steps
};
struct EvalPoint {
  std::int64_t step;
  double test_loss, test_accuracy;
};

struct RunResult {
  std::string name;
  std::vector<CurvePoint> curve;
  std::vector<EvalPoint> evals;
  std::int64_t diverged_at = -1;  // first step with a non-finite loss or gradient; -1 = never
  std::int64_t steps_done = 0;
  double final_test_accuracy = kNaN;  // NaN when the run diverged
  double final_test_loss = kNaN;
  double seconds = 0.0;

  bool diverged() const { return diverged_at >= 0; }
  double best_test_accuracy() const;
  // First evaluated step whose test accuracy reached threshold; -1 = never.
  std::int64_t steps_to_accuracy(double threshold) const;
};

// Builds the run's model for one example of shape input (e.g. {784}) and
// initializes it from the run's seed.
Model build_model(const RunConfig& config, const Shape& input);

// Called after each step's backward and before the update, with the step
// number (1-based); gradients() then holds this step's gradient.
using StepHook = std::function<void(std::int64_t step)>;

// Trains for config.steps mini-batches (reshuffling every epoch). A
// non-finite loss or gradient ends the run there, recorded in diverged_at.
RunResult train_run(Model& model, const RunConfig& config, const Dataset& train, const Dataset& test,
                    const InputNormalization& norm, const StepHook& hook = {});

// Per channel of a (N, C) or (N, C, H, W) tensor: mean and standard deviation
// (biased) over the N (and H·W) values, accumulated in double.
struct ChannelStats {
  std::vector<double> mean, std;
};
ChannelStats channel_stats(const Tensor& t);

// Indices of the model's BatchNorm layers, in order.
std::vector<std::size_t> batchnorm_layers(const Model& model);
// The input of layer i after the last forward (x itself for i = 0).
const Tensor& layer_input(const Model& model, std::size_t i, const Tensor& x);

// Replaces every BatchNorm layer's running mean and variance with the exact
// mean and (biased, population) variance of its input over all of data, in
// eval mode, layer by layer: each layer sees the inputs produced with the
// population statistics already set in the layers before it: the library's
// exact recalibration (train/recalibrate.hpp) with the biased variance.
void recompute_population_statistics(Model& model, const Dataset& data, const InputNormalization& norm,
                                     std::int64_t batch_size = 500);

// The inputs as they were before standardization: pixel/scale (scale 255
// gives [0, 1], scale 1 the raw 0..255 bytes).
InputNormalization unstandardized_inputs(float scale);

}  // namespace bnorm::exp

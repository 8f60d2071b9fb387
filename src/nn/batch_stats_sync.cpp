// Combining batch statistics across processes, and the model-wide helpers
// that point every BatchNorm layer at a BatchStatsSync.
#include "bnorm/nn/batch_stats_sync.hpp"

#include <vector>

#include "bnorm/error.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/nn/model.hpp"

namespace bnorm {

double merge_moments(std::span<double> mean, std::span<double> m2, std::span<const MomentsView> parts) {
  const std::size_t C = mean.size();
  if (m2.size() != C) throw Error("merge_moments: mean and m2 differ in length");
  for (const MomentsView& p : parts)
    if (p.mean.size() != C || p.m2.size() != C || !(p.count >= 0))
      throw Error("merge_moments: a part has " + std::to_string(p.mean.size()) + " channels, expected " +
                  std::to_string(C));
  double n = 0;
  for (std::size_t c = 0; c < C; ++c) mean[c] = m2[c] = 0.0;
  for (const MomentsView& p : parts) {
    if (p.count == 0) continue;
    const double total = n + p.count;
    const double weight = p.count / total;  // nb / n
    const double cross = n * weight;        // na * nb / n
    for (std::size_t c = 0; c < C; ++c) {
      const double delta = p.mean[c] - mean[c];
      mean[c] += delta * weight;
      m2[c] += p.m2[c] + delta * delta * cross;
    }
    n = total;
  }
  return n;
}

namespace {

std::vector<BatchNorm*> batchnorm_layers(Model& model) {
  std::vector<BatchNorm*> found;
  for (std::size_t i = 0; i < model.num_layers(); ++i)
    if (auto* bn = dynamic_cast<BatchNorm*>(&model.layer(i))) found.push_back(bn);
  return found;
}

}  // namespace

int attach_batch_stats_sync(Model& model, BatchStatsSync* sync) {
  const std::vector<BatchNorm*> layers = batchnorm_layers(model);
  // A frozen layer normalizes with its running statistics, which every
  // process holds alike: it has nothing to exchange.
  for (BatchNorm* bn : layers) bn->set_stats_sync(bn->options().freeze == BnFreeze::none ? sync : nullptr);
  return static_cast<int>(layers.size());
}

void join_step_without_examples(Model& model) {
  std::vector<BatchNorm*> layers = batchnorm_layers(model);
  std::erase_if(layers, [](const BatchNorm* bn) { return bn->stats_sync() == nullptr; });
  // Empty (0, C) inputs and outputs; the layers keep a pointer to x until backward.
  std::vector<Tensor> x(layers.size()), y(layers.size()), dx(layers.size());
  for (std::size_t i = 0; i < layers.size(); ++i) {
    x[i].resize({0, layers[i]->num_features()});
    layers[i]->forward(y[i], x[i], Mode::train);
  }
  for (std::size_t i = layers.size(); i-- > 0;) layers[i]->backward(&dx[i], y[i]);
}

}  // namespace bnorm

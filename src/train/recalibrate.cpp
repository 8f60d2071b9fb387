#include "bnorm/train/recalibrate.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "bnorm/error.hpp"
#include "bnorm/kernels/batchnorm.hpp"
#include "bnorm/nn/batch_stats_sync.hpp"
#include "bnorm/nn/batchnorm.hpp"

namespace bnorm {
namespace {

std::vector<std::size_t> tracked_batchnorm_layers(Model& model) {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < model.num_layers(); ++i)
    if (auto* bn = dynamic_cast<BatchNorm*>(&model.layer(i)); bn && bn->options().track_running_stats) out.push_back(i);
  return out;
}

// The batches recalibration reads: consecutive runs of batch_size examples
// from the start, so that the result does not depend on a seed. Under
// several processes each reads its share of those examples in the same way.
struct Batches {
  std::int64_t count, batch_size, examples;
  std::int64_t begin = 0, end = 0;  // this process's examples
  std::vector<std::int64_t> idx;

  Batches(const Dataset& data, const RecalibrationOptions& o) : batch_size(o.batch_size) {
    const std::int64_t available = (data.count + batch_size - 1) / batch_size;
    count = o.max_batches > 0 ? std::min(o.max_batches, available) : available;
    examples = std::min(data.count, count * batch_size);
    end = examples;
  }
  // Narrows this process's examples to its share of all of them.
  void take_share(int rank, int ranks) {
    const Share share = share_of(examples, rank, ranks);
    begin = share.begin;
    end = share.begin + share.count;
  }
  std::int64_t local_count() const { return (end - begin + batch_size - 1) / batch_size; }
  // Fills x with batch b of this process's examples and returns it.
  const Tensor& load(Tensor& x, std::int64_t b, const Dataset& data, const InputNormalization& norm,
                     const Shape& example_shape) {
    const std::int64_t first = begin + b * batch_size, n = std::min(batch_size, end - first);
    idx.resize(static_cast<std::size_t>(n));
    std::iota(idx.begin(), idx.end(), first);
    norm.apply(x, data, example_shape, idx);
    return x;
  }
};

// Every process's (count, mean, M2) of one layer merged in rank order: the
// same bits on each.
double merge_across_processes(DataParallel& dist, std::vector<double>& mean, std::vector<double>& m2, double count) {
  const std::size_t C = mean.size(), width = 1 + 2 * C;
  std::vector<double> local(width), all(width * static_cast<std::size_t>(dist.size()));
  local[0] = count;
  std::copy(mean.begin(), mean.end(), local.begin() + 1);
  std::copy(m2.begin(), m2.end(), local.begin() + 1 + static_cast<std::ptrdiff_t>(C));
  dist.allgather(all, local);
  std::vector<MomentsView> parts;
  for (std::size_t r = 0; r < static_cast<std::size_t>(dist.size()); ++r) {
    const double* p = all.data() + r * width;
    parts.push_back({p[0], {p + 1, C}, {p + 1 + C, C}});
  }
  return merge_moments(mean, m2, parts);
}

double relative_change(float old_value, float new_value, double floor) {
  return std::abs(static_cast<double>(old_value) - new_value) /
         std::max(std::abs(static_cast<double>(new_value)), floor);
}

// One pass over the data per BN layer: per batch, the kernels' per-channel
// (mean, M2) in double, folded into the running total with Chan's formula.
void recalibrate_exact(Model& model, const std::vector<std::size_t>& layers, Batches& batches, const Dataset& data,
                       const InputNormalization& norm, bool biased_variance, DataParallel* dist) {
  Tensor x;
  for (const std::size_t i : layers) {
    auto& bn = dynamic_cast<BatchNorm&>(model.layer(i));
    const auto C = static_cast<std::size_t>(bn.num_features());
    std::vector<double> mean(C, 0.0), m2(C, 0.0), batch_mean(C), batch_m2(C), merged_mean(C), merged_m2(C);
    std::vector<double> work(static_cast<std::size_t>(kernels::batchnorm_work_doubles(bn.num_features())));
    double count = 0.0;
    for (std::int64_t b = 0; b < batches.local_count(); ++b) {
      const Tensor& in = batches.load(x, b, data, norm, model.input_shape());
      // The whole network runs, but only the layers before i matter here,
      // and their statistics are already final.
      model.forward(in, Mode::eval);
      const Tensor& t = i == 0 ? in : model.layer_output(i - 1);
      const std::int64_t N = t.dim(0), S = t.size() / std::max<std::int64_t>(1, N * bn.num_features());
      kernels::batchnorm_channel_moments(batch_mean.data(), batch_m2.data(), t.data(), N, bn.num_features(), S,
                                         work.data());
      const MomentsView parts[] = {{count, mean, m2}, {static_cast<double>(N * S), batch_mean, batch_m2}};
      count = merge_moments(merged_mean, merged_m2, parts);
      mean.swap(merged_mean);
      m2.swap(merged_m2);
    }
    if (dist) count = merge_across_processes(*dist, mean, m2, count);
    if (count < 2)
      throw Error("recalibration: layer " + std::to_string(i) + " sees " +
                  std::to_string(static_cast<long long>(count)) + " value(s) per channel; a variance needs at least 2");
    const double divisor = biased_variance || !bn.options().unbiased_running_var ? count : count - 1;
    for (std::size_t c = 0; c < C; ++c) {
      bn.running_mean()[c] = static_cast<float>(mean[c]);
      bn.running_var()[c] = static_cast<float>(m2[c] / divisor);
    }
  }
}

// torch.optim.swa_utils.update_bn: with momentum None the layer's own
// training-mode update is the cumulative average, so the layer does the work.
// Freezing and Batch Renormalization are lifted meanwhile (a frozen layer
// would not measure anything; renorm would correct towards the statistics
// being rebuilt) and everything is put back afterwards.
std::int64_t recalibrate_batch_average(Model& model, const std::vector<std::size_t>& layers, Batches& batches,
                                       const Dataset& data, const InputNormalization& norm) {
  std::vector<BatchNormOptions> saved;
  for (const std::size_t i : layers) {
    auto& bn = dynamic_cast<BatchNorm&>(model.layer(i));
    saved.push_back(bn.options());
    bn.reset_running_stats();
    bn.set_momentum(std::nullopt);
    bn.set_freeze(BnFreeze::none);
    bn.set_renorm({});
  }
  const auto restore = [&] {
    for (std::size_t k = 0; k < layers.size(); ++k) {
      auto& bn = dynamic_cast<BatchNorm&>(model.layer(layers[k]));
      bn.set_momentum(saved[k].momentum);
      bn.set_freeze(saved[k].freeze);
      bn.set_renorm(saved[k].renorm);
    }
  };
  Tensor x;
  std::int64_t used = 0;
  try {
    for (std::int64_t b = 0; b < batches.local_count(); ++b) {
      const Tensor& in = batches.load(x, b, data, norm, model.input_shape());
      // A last batch of one example has no spread to normalize with (the
      // layer refuses it in training mode, as PyTorch does); it is left out.
      if (in.dim(0) < 2) break;
      model.forward(in, Mode::train);
      ++used;
    }
  } catch (...) {
    restore();
    throw;
  }
  restore();
  return used;
}

}  // namespace

const char* recalibration_mode_name(RecalibrationMode mode) {
  return mode == RecalibrationMode::exact ? "exact" : "batch-average";
}

RecalibrationMode parse_recalibration_mode(const std::string& text) {
  if (text == "exact") return RecalibrationMode::exact;
  if (text == "batch-average") return RecalibrationMode::batch_average;
  throw Error("recalibration mode must be exact or batch-average, got '" + text + "'");
}

RecalibrationReport recalibrate_batchnorm(Model& model, const Dataset& data, const InputNormalization& norm,
                                          const RecalibrationOptions& options) {
  if (options.batch_size < 1) throw Error("recalibration: the batch size must be at least 1");
  if (options.max_batches < 0) throw Error("recalibration: the number of batches must be >= 0 (0 = all)");
  if (options.dist && options.mode != RecalibrationMode::exact)
    throw Error("recalibration: batch-average works in one process only; several processes recalibrate with exact");
  if (options.mode == RecalibrationMode::batch_average && options.batch_size < 2)
    throw Error("recalibration: batch-average normalizes with batch statistics and needs batches of at least 2");
  if (data.count < 2) throw Error("recalibration needs at least 2 examples");
  if (data.features != numel(model.input_shape()))
    throw Error("recalibration: the model takes " + std::to_string(numel(model.input_shape())) +
                " inputs but the examples have " + std::to_string(data.features) + " values");
  const std::vector<std::size_t> layers = tracked_batchnorm_layers(model);
  RecalibrationReport report;
  std::vector<std::vector<float>> old_mean, old_var;
  for (const std::size_t i : layers) {
    auto& bn = dynamic_cast<BatchNorm&>(model.layer(i));
    old_mean.emplace_back(bn.running_mean().begin(), bn.running_mean().end());
    old_var.emplace_back(bn.running_var().begin(), bn.running_var().end());
  }
  Batches batches(data, options);
  report.batches = batches.count;
  report.examples = batches.examples;
  if (options.dist) batches.take_share(options.dist->rank(), options.dist->size());
  if (options.mode == RecalibrationMode::exact) {
    recalibrate_exact(model, layers, batches, data, norm, options.biased_variance, options.dist);
  } else {
    report.batches = recalibrate_batch_average(model, layers, batches, data, norm);
    report.examples = std::min(batches.examples, report.batches * options.batch_size);
  }
  for (std::size_t k = 0; k < layers.size(); ++k) {
    auto& bn = dynamic_cast<BatchNorm&>(model.layer(layers[k]));
    BatchNormDrift d;
    d.layer = layers[k];
    d.channels = bn.num_features();
    const double eps = bn.options().eps;
    for (std::size_t c = 0; c < old_mean[k].size(); ++c) {
      // A mean near 0 would make any change look huge: below the channel's
      // standard deviation the change is measured in standard deviations.
      const double sd = std::sqrt(static_cast<double>(bn.running_var()[c]) + eps);
      d.mean = std::max(d.mean, relative_change(old_mean[k][c], bn.running_mean()[c], sd));
      d.var = std::max(d.var, relative_change(old_var[k][c], bn.running_var()[c], eps));
    }
    report.layers.push_back(d);
  }
  return report;
}

}  // namespace bnorm

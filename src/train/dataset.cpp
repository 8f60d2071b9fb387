#include "bnorm/train/dataset.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "bnorm/error.hpp"
#include "bnorm/rng.hpp"

namespace bnorm {
namespace {

// A border pixel that is almost always 0 has a tiny std; dividing by it would
// turn the rare non-zero value into a huge input.
constexpr float kMinPixelStd = 1e-3f;

// Values per entry of mean/std for a mode: 0 for "none", 1 for "global",
// features for "pixel"/"feature", the channel count for "channel".
std::int64_t normalization_width(const std::string& mode, const Shape& example_shape) {
  const std::int64_t features = numel(example_shape);
  if (mode == "none") return 0;
  if (mode == "global") return 1;
  if (mode == "pixel" || mode == "feature") return features;
  if (mode == "channel") {
    if (example_shape.size() != 3)
      throw Error("input normalization 'channel' needs (C, H, W) examples, these are " + shape_str(example_shape));
    return example_shape[0];
  }
  throw Error("unknown input normalization '" + mode + "' (expected pixel, global, feature, channel or none)");
}

template <class T>
void keep_rows(std::vector<T>& v, std::span<const std::int64_t> indices, std::int64_t width) {
  std::vector<T> out;
  out.reserve(indices.size() * static_cast<std::size_t>(width));
  for (const std::int64_t i : indices) out.insert(out.end(), v.begin() + i * width, v.begin() + (i + 1) * width);
  v = std::move(out);
}

}  // namespace

const char* task_name(Task task) { return task == Task::classify ? "classify" : "regress"; }

void Dataset::truncate(std::int64_t n) {
  if (n < 0 || n >= count) return;
  count = n;
  if (!bytes.empty()) bytes.resize(static_cast<std::size_t>(n * features));
  if (!values.empty()) values.resize(static_cast<std::size_t>(n * features));
  if (task == Task::classify)
    labels.resize(static_cast<std::size_t>(n));
  else
    targets.resize(static_cast<std::size_t>(n * target_dims));
}

Dataset Dataset::subset(std::span<const std::int64_t> indices) const {
  Dataset d = *this;
  for (const std::int64_t i : indices)
    if (i < 0 || i >= count) throw Error("dataset subset: index " + std::to_string(i) + " is out of range");
  d.count = static_cast<std::int64_t>(indices.size());
  if (!d.bytes.empty()) keep_rows(d.bytes, indices, features);
  if (!d.values.empty()) keep_rows(d.values, indices, features);
  if (task == Task::classify)
    keep_rows(d.labels, indices, 1);
  else
    keep_rows(d.targets, indices, target_dims);
  return d;
}

void Dataset::validate(const std::string& name) const {
  const auto rows = static_cast<std::size_t>(count);
  if (count < 0 || features != numel(example_shape) || features < 1)
    fail_file(name, "examples of shape " + shape_str(example_shape) + " hold no values");
  const std::size_t stored = bytes.empty() ? values.size() : bytes.size();
  if ((!bytes.empty() && !values.empty()) || stored != rows * static_cast<std::size_t>(features))
    fail_file(name, "holds " + std::to_string(stored) + " feature values for " + std::to_string(count) +
                        " examples of " + std::to_string(features));
  for (std::size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i]))
      fail_file(name, "example " + std::to_string(i / static_cast<std::size_t>(features)) + ", feature " +
                          std::to_string(i % static_cast<std::size_t>(features)) + " is not finite");
  if (task == Task::classify) {
    if (labels.size() != rows)
      fail_file(name, "holds " + std::to_string(labels.size()) + " labels for " + std::to_string(count) + " examples");
    if (num_classes < 1) fail_file(name, "has no classes");
    for (std::size_t i = 0; i < rows; ++i)
      if (labels[i] < 0 || labels[i] >= num_classes)
        fail_file(name, "label " + std::to_string(labels[i]) + " at index " + std::to_string(i) +
                            " is not a class 0.." + std::to_string(num_classes - 1));
  } else {
    if (target_dims < 1 || targets.size() != rows * static_cast<std::size_t>(target_dims))
      fail_file(name, "holds " + std::to_string(targets.size()) + " target values for " + std::to_string(count) +
                          " examples");
    for (std::size_t i = 0; i < targets.size(); ++i)
      if (!std::isfinite(targets[i]))
        fail_file(name, "the target of example " + std::to_string(i / static_cast<std::size_t>(target_dims)) +
                            " is not finite");
  }
}

ValidationSplit split_validation(const Dataset& data, double fraction, std::uint64_t seed) {
  if (!(fraction > 0.0 && fraction < 1.0)) throw Error("the validation fraction must be between 0 and 1");
  const auto held = static_cast<std::int64_t>(std::llround(fraction * static_cast<double>(data.count)));
  if (held < 1 || data.count - held < 2)
    throw Error("a validation fraction of " + std::to_string(fraction) + " of " + std::to_string(data.count) +
                " examples leaves " + std::to_string(held) + " for validation and " +
                std::to_string(data.count - held) + " for training; each needs at least 1 and 2");
  // Its own stream, so the split does not shift with the shuffles drawn from seed.
  Rng rng(seed ^ 0x51A7C0DE5EEDull);
  std::vector<std::int64_t> perm(static_cast<std::size_t>(data.count));
  std::iota(perm.begin(), perm.end(), 0);
  for (std::size_t i = perm.size(); i > 1; --i) std::swap(perm[i - 1], perm[rng.below(i)]);
  std::vector<std::int64_t> val(perm.begin(), perm.begin() + held), train(perm.begin() + held, perm.end());
  std::sort(val.begin(), val.end());
  std::sort(train.begin(), train.end());
  ValidationSplit s;
  s.train = data.subset(train);
  s.validation = data.subset(val);
  s.validation_indices = std::move(val);
  return s;
}

InputNormalization InputNormalization::fit(const Dataset& train, const std::string& mode) {
  InputNormalization n;
  n.mode = mode;
  n.divisor = train.has_bytes() ? 255.0f : 1.0f;
  const std::int64_t width = normalization_width(mode, train.example_shape);
  if (width == 0) return n;
  if (train.count == 0) throw Error("cannot fit input normalization on an empty training set");
  const std::int64_t F = train.features, per_entry = F / width;
  const auto entry = [&](std::int64_t f) { return width == 1 ? 0 : width == F ? f : f / per_entry; };
  const double values_per_entry = static_cast<double>(train.count) * static_cast<double>(F / width);
  std::vector<double> mean(static_cast<std::size_t>(width)), var(static_cast<std::size_t>(width));
  if (train.has_bytes()) {
    // Sums of bytes are exact in 64-bit integers; no cancellation.
    std::vector<std::uint64_t> sum(mean.size(), 0), sumsq(mean.size(), 0);
    for (std::int64_t i = 0; i < train.count; ++i) {
      const std::uint8_t* row = train.bytes.data() + i * F;
      for (std::int64_t f = 0; f < F; ++f) {
        const auto k = static_cast<std::size_t>(entry(f));
        sum[k] += row[f];
        sumsq[k] += std::uint64_t{row[f]} * row[f];
      }
    }
    for (std::size_t k = 0; k < mean.size(); ++k) {
      mean[k] = static_cast<double>(sum[k]) / values_per_entry / 255.0;
      var[k] = static_cast<double>(sumsq[k]) / values_per_entry / (255.0 * 255.0) - mean[k] * mean[k];
    }
  } else {
    // Two passes in double: a column of values near 1e6 keeps its spread.
    for (std::int64_t i = 0; i < train.count; ++i)
      for (std::int64_t f = 0; f < F; ++f) mean[static_cast<std::size_t>(entry(f))] += train.values[i * F + f];
    for (double& m : mean) m /= values_per_entry;
    for (std::int64_t i = 0; i < train.count; ++i)
      for (std::int64_t f = 0; f < F; ++f) {
        const auto k = static_cast<std::size_t>(entry(f));
        const double d = train.values[i * F + f] - mean[k];
        var[k] += d * d;
      }
    for (double& v : var) v /= values_per_entry;
  }
  for (std::size_t k = 0; k < mean.size(); ++k) {
    n.mean.push_back(static_cast<float>(mean[k]));
    float sd = static_cast<float>(std::sqrt(std::max(var[k], 0.0)));
    // A constant column carries no information; std 1 passes it on centered
    // instead of dividing by zero. Pixels keep their historical floor.
    if (mode == "pixel")
      sd = std::max(kMinPixelStd, sd);
    else if (!(sd > 0.0f))
      sd = 1.0f;
    n.std.push_back(sd);
  }
  return n;
}

void InputNormalization::validate(std::int64_t features) const {
  if (!(divisor > 0.0f) || !std::isfinite(divisor)) throw Error("input normalization: divisor must be > 0");
  const std::size_t width = mean.size();
  std::string needs;  // how many means and stds the mode needs
  if (mode == "none")
    needs = "0";
  else if (mode == "global")
    needs = "1";
  else if (mode == "pixel" || mode == "feature")
    needs = std::to_string(features);
  else if (mode == "channel")
    needs = "a channel count dividing " + std::to_string(features) + " of";
  else
    throw Error("input normalization: unknown mode '" + mode + "'");
  const bool fits = mode == "channel" ? width > 0 && features % static_cast<std::int64_t>(width) == 0
                                      : needs == std::to_string(width);
  if (!fits || std.size() != width)
    throw Error("input normalization: mode '" + mode + "' needs " + needs + " means and stds for " +
                std::to_string(features) + " features, got " + std::to_string(mean.size()) + " and " +
                std::to_string(std.size()));
  for (std::size_t k = 0; k < width; ++k)
    if (!std::isfinite(mean[k]) || !std::isfinite(std[k]) || !(std[k] > 0.0f))
      throw Error("input normalization: entry " + std::to_string(k) + " is not finite or has std <= 0");
}

// One formula for every source (IDX bytes, float tables, text rows), the same
// one the PyTorch check script uses, so all of them agree to the last bit.
template <class Raw>
void InputNormalization::normalize_row(float* out, const Raw* raw, std::int64_t features) const {
  const std::int64_t width = static_cast<std::int64_t>(mean.size());
  if (width == 0) {
    for (std::int64_t f = 0; f < features; ++f) out[f] = static_cast<float>(raw[f]) / divisor;
  } else if (width == 1 || width == features) {
    const bool global = width == 1;
    for (std::int64_t f = 0; f < features; ++f) {
      const float mu = global ? mean[0] : mean[f], sd = global ? std[0] : std[f];
      out[f] = (static_cast<float>(raw[f]) / divisor - mu) / sd;
    }
  } else {
    const std::int64_t per_channel = features / width;
    for (std::int64_t c = 0; c < width; ++c)
      for (std::int64_t s = c * per_channel; s < (c + 1) * per_channel; ++s)
        out[s] = (static_cast<float>(raw[s]) / divisor - mean[c]) / std[c];
  }
}

void InputNormalization::apply(Tensor& out, const Dataset& data, const Shape& example_shape,
                               std::span<const std::int64_t> indices) const {
  const auto n = static_cast<std::int64_t>(indices.size());
  const std::int64_t features = numel(example_shape);
  out.resize_batch(n, example_shape);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t row = indices[static_cast<std::size_t>(i)] * features;
    if (data.has_bytes())
      normalize_row(out.data() + i * features, data.bytes.data() + row, features);
    else
      normalize_row(out.data() + i * features, data.values.data() + row, features);
  }
}

void InputNormalization::apply_row(float* out, const float* raw, std::int64_t features) const {
  normalize_row(out, raw, features);
}

TargetNormalization TargetNormalization::fit(const Dataset& train) {
  TargetNormalization t;
  if (train.task != Task::regress) return t;
  if (train.count == 0) throw Error("cannot fit target normalization on an empty training set");
  const std::int64_t T = train.target_dims;
  for (std::int64_t j = 0; j < T; ++j) {
    double mean = 0.0, var = 0.0;
    for (std::int64_t i = 0; i < train.count; ++i) mean += train.targets[i * T + j];
    mean /= static_cast<double>(train.count);
    for (std::int64_t i = 0; i < train.count; ++i) {
      const double d = train.targets[i * T + j] - mean;
      var += d * d;
    }
    const float sd = static_cast<float>(std::sqrt(var / static_cast<double>(train.count)));
    t.mean.push_back(static_cast<float>(mean));
    t.std.push_back(sd > 0.0f ? sd : 1.0f);  // a constant target: predicted as that constant
  }
  return t;
}

void TargetNormalization::validate(std::int64_t target_dims) const {
  if (static_cast<std::int64_t>(mean.size()) != target_dims || std.size() != mean.size())
    throw Error("target normalization: needs " + std::to_string(target_dims) + " means and stds, has " +
                std::to_string(mean.size()) + " and " + std::to_string(std.size()));
  for (std::size_t k = 0; k < mean.size(); ++k)
    if (!std::isfinite(mean[k]) || !std::isfinite(std[k]) || !(std[k] > 0.0f))
      throw Error("target normalization: entry " + std::to_string(k) + " is not finite or has std <= 0");
}

}  // namespace bnorm

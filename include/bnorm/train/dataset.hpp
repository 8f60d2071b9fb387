#pragma once
// A dataset as the trainer sees it: N examples of one shape ((F) for a table,
// (C, H, W) for images) and a target per example, either a class index or one
// or more real numbers. Readers (IDX, CSV, NPY in io/) produce it; nothing
// here knows about files.
//
// Features are kept either as bytes (IDX images: 47 MB for Fashion-MNIST's
// training set instead of 188 MB as floats) or as floats; each mini-batch is
// normalized on the fly into the model's input tensor, so a training step
// allocates nothing.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "bnorm/tensor.hpp"

namespace bnorm {

enum class Task { classify, regress };
const char* task_name(Task task);  // "classify", "regress"

struct Dataset {
  std::int64_t count = 0;
  Shape example_shape;        // one example's shape, e.g. {30} or {1, 28, 28}
  std::int64_t features = 0;  // numel(example_shape)
  // Exactly one of the two holds count * features values, row-major.
  std::vector<std::uint8_t> bytes;  // raw bytes 0..255 (images), scaled by the normalization
  std::vector<float> values;        // float features

  Task task = Task::classify;
  // classify: labels[i] in [0, num_classes); class_names[k] names class k as
  // the data wrote it ("setosa", or "3" for an integer label).
  std::vector<std::int32_t> labels;
  std::int64_t num_classes = 0;
  std::vector<std::string> class_names;
  // regress: targets (count, target_dims) in the data's own units.
  std::vector<float> targets;
  std::int64_t target_dims = 0;
  std::vector<std::string> target_names;   // column names where the data had them
  std::vector<std::string> feature_names;  // likewise (CSV headers)

  bool has_bytes() const { return !bytes.empty() || (count == 0 && values.empty()); }
  // Values a model's last layer produces for it: num_classes or target_dims.
  std::int64_t outputs() const { return task == Task::classify ? num_classes : target_dims; }

  void truncate(std::int64_t n);  // keep the first n examples
  // The examples at these indices, in that order (for a validation split).
  Dataset subset(std::span<const std::int64_t> indices) const;
  // Throws Error unless the sizes agree, labels are in range and float
  // features and targets are finite.
  void validate(const std::string& name) const;
};

// Splits off a seeded random fraction as validation: a Fisher-Yates
// permutation of 0..count-1 drawn from seed, its first round(fraction * count)
// indices (sorted) are the validation set, the rest (sorted) the training set.
struct ValidationSplit {
  Dataset train, validation;
  std::vector<std::int64_t> validation_indices;
};
ValidationSplit split_validation(const Dataset& data, double fraction, std::uint64_t seed);

// Inputs are normalized with the training set's statistics:
//   x = (raw / divisor - mean) / std
// divisor is 255 for image bytes (so raw/divisor is in [0, 1]) and 1 for
// float features. Modes:
//   "global":  one mean and std over every value (torchvision's usual choice)
//   "pixel":   a mean and std per feature position; a std below 1e-3 (a
//              border pixel that is nearly always 0) is raised to 1e-3
//   "feature": the same rule as pixel, for tables: each column standardized
//   "channel": a mean and std per channel of (C, H, W) features
//   "none":    x = raw / divisor
struct InputNormalization {
  std::string mode = "none";
  std::vector<float> mean;  // 1, features or channels values (none for "none")
  std::vector<float> std;   // same length
  float divisor = 1.0f;

  static InputNormalization fit(const Dataset& train, const std::string& mode);
  // Throws Error unless mean/std fit the mode and examples of this many values.
  void validate(std::int64_t features) const;
  // Writes the examples at indices into out, shaped (n, example_shape...);
  // example_shape is the model's (e.g. {784} for an MLP on 28x28 images).
  void apply(Tensor& out, const Dataset& data, const Shape& example_shape, std::span<const std::int64_t> indices) const;
  // One example's raw values (as the data holds them: 0..255 for images).
  void apply_row(float* out, const float* raw, std::int64_t features) const;

 private:
  template <class Raw>
  void normalize_row(float* out, const Raw* raw, std::int64_t features) const;
};

// Regression targets are standardized with the training set's statistics,
// t = (y - mean) / std per target; predictions are given back as y = t * std + mean.
struct TargetNormalization {
  std::vector<float> mean, std;  // target_dims values each; empty for classification

  static TargetNormalization fit(const Dataset& train);
  void validate(std::int64_t target_dims) const;
};

// Everything between a dataset's raw values and the model: stored in the
// model file next to the weights, so eval and predict see what training saw.
struct Preprocessing {
  InputNormalization input;
  TargetNormalization target;

  Preprocessing() = default;
  Preprocessing(InputNormalization in) : input(std::move(in)) {}  // NOLINT: a classifier needs only this
  Preprocessing(InputNormalization in, TargetNormalization t) : input(std::move(in)), target(std::move(t)) {}
};

}  // namespace bnorm

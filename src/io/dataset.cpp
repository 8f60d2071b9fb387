#include "bnorm/io/dataset.hpp"

#include <cmath>
#include <filesystem>

#include "bnorm/error.hpp"
#include "bnorm/io/idx.hpp"

namespace bnorm {
namespace {

// Prefer the gzipped name that Debian ships; accept an unpacked copy.
std::string find_file(const std::string& dir, const std::string& stem) {
  const std::filesystem::path base(dir);
  for (const std::string& name : {stem + ".gz", stem}) {
    const auto p = base / name;
    if (std::filesystem::exists(p)) return p.string();
  }
  fail_file((base / (stem + ".gz")).string(),
            "not found (install Debian's dataset-fashion-mnist, or pass --data DIR with the IDX files)");
}

constexpr float kMinPixelStd = 1e-3f;

}  // namespace

void ImageDataset::truncate(std::int64_t n) {
  if (n < 0 || n >= count) return;
  count = n;
  pixels.resize(static_cast<std::size_t>(n * features));
  labels.resize(static_cast<std::size_t>(n));
}

ImageDataset load_image_dataset(const std::string& images_path, const std::string& labels_path) {
  IdxArray images = read_idx(images_path);
  if (images.type_code != 0x08 || images.dims.size() != 3)
    fail_file(images_path, "expected unsigned-byte images (count, rows, cols), got " +
                               std::to_string(images.dims.size()) + " dimensions");
  IdxArray labels = read_idx(labels_path);
  if (labels.type_code != 0x08 || labels.dims.size() != 1)
    fail_file(labels_path, "expected unsigned-byte labels (count), got " + std::to_string(labels.dims.size()) +
                               " dimensions");
  if (images.dims[0] != labels.dims[0])
    fail_file(labels_path, "holds " + std::to_string(labels.dims[0]) + " labels but " + images_path + " holds " +
                               std::to_string(images.dims[0]) + " images");
  for (std::size_t i = 0; i < labels.bytes.size(); ++i)
    if (labels.bytes[i] >= kNumClasses)
      fail_file(labels_path, "label " + std::to_string(labels.bytes[i]) + " at index " + std::to_string(i) +
                                 " is not a class 0.." + std::to_string(kNumClasses - 1));
  ImageDataset d;
  d.count = images.dims[0];
  d.rows = images.dims[1];
  d.cols = images.dims[2];
  d.features = d.rows * d.cols;
  d.pixels = std::move(images.bytes);
  d.labels = std::move(labels.bytes);
  return d;
}

ImageDataset load_fashion_mnist(const std::string& dir, Split split) {
  const std::string prefix = split == Split::train ? "train" : "t10k";
  // Looked up one after the other so a user missing both hears of the images first.
  const std::string images = find_file(dir, prefix + "-images-idx3-ubyte");
  const std::string labels = find_file(dir, prefix + "-labels-idx1-ubyte");
  return load_image_dataset(images, labels);
}

InputNormalization InputNormalization::fit(const ImageDataset& train, const std::string& mode) {
  InputNormalization n;
  n.mode = mode;
  const std::int64_t F = train.features;
  const std::size_t width = mode == "global" ? 1 : mode == "pixel" ? static_cast<std::size_t>(F) : 0;
  if (width == 0) throw Error("unknown input normalization '" + mode + "' (expected global or pixel)");
  if (train.count == 0) throw Error("cannot fit input normalization on an empty training set");
  // Sums of pixel values are exact in 64-bit integers; no cancellation.
  std::vector<std::uint64_t> sum(width, 0), sumsq(width, 0);
  for (std::int64_t i = 0; i < train.count; ++i) {
    const std::uint8_t* row = train.pixels.data() + i * F;
    for (std::int64_t f = 0; f < F; ++f) {
      const std::size_t k = width == 1 ? 0 : static_cast<std::size_t>(f);
      sum[k] += row[f];
      sumsq[k] += std::uint64_t{row[f]} * row[f];
    }
  }
  const double per = static_cast<double>(train.count) * (width == 1 ? static_cast<double>(F) : 1.0);
  for (std::size_t k = 0; k < width; ++k) {
    const double mean = static_cast<double>(sum[k]) / per / 255.0;
    const double var = static_cast<double>(sumsq[k]) / per / (255.0 * 255.0) - mean * mean;
    n.mean.push_back(static_cast<float>(mean));
    n.std.push_back(std::max(kMinPixelStd, static_cast<float>(std::sqrt(std::max(var, 0.0)))));
  }
  return n;
}

void InputNormalization::validate(std::int64_t features) const {
  const std::size_t width = mode == "global" ? 1 : mode == "pixel" ? static_cast<std::size_t>(features) : 0;
  if (width == 0) throw Error("input normalization: unknown mode '" + mode + "'");
  if (mean.size() != width || std.size() != width)
    throw Error("input normalization: mode '" + mode + "' needs " + std::to_string(width) +
                " means and stds for " + std::to_string(features) + " features, got " +
                std::to_string(mean.size()) + " and " + std::to_string(std.size()));
  for (std::size_t k = 0; k < width; ++k)
    if (!std::isfinite(mean[k]) || !std::isfinite(std[k]) || !(std[k] > 0.0f))
      throw Error("input normalization: entry " + std::to_string(k) + " is not finite or has std <= 0");
}

// One formula for every source of pixels (IDX bytes, text rows), the same one
// the PyTorch check script uses, so all three agree to the last bit.
template <class Pixel>
void InputNormalization::normalize_row(float* out, const Pixel* raw, std::int64_t features) const {
  const bool global = mean.size() == 1;
  for (std::int64_t f = 0; f < features; ++f) {
    const float mu = global ? mean[0] : mean[f], sd = global ? std[0] : std[f];
    out[f] = (static_cast<float>(raw[f]) / 255.0f - mu) / sd;
  }
}

void InputNormalization::apply(Tensor& out, const std::uint8_t* pixels, const Shape& example_shape,
                               std::span<const std::int64_t> indices) const {
  const auto n = static_cast<std::int64_t>(indices.size());
  const std::int64_t features = numel(example_shape);
  out.resize_batch(n, example_shape);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint8_t* row = pixels + indices[static_cast<std::size_t>(i)] * features;
    normalize_row(out.data() + i * features, row, features);
  }
}

void InputNormalization::apply_row(float* out, const float* raw, std::int64_t features) const {
  normalize_row(out, raw, features);
}

}  // namespace bnorm

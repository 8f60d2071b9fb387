#include "bnorm/io/dataset.hpp"

#include <algorithm>
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

}  // namespace

Dataset load_image_dataset(const std::string& images_path, const std::string& labels_path) {
  IdxArray images = read_idx(images_path);
  if (images.type_code != 0x08 || images.dims.size() != 3)
    fail_file(images_path, "expected unsigned-byte images (count, rows, cols), got " +
                               std::to_string(images.dims.size()) + " dimensions");
  IdxArray labels = read_idx(labels_path);
  if (labels.type_code != 0x08 || labels.dims.size() != 1)
    fail_file(labels_path,
              "expected unsigned-byte labels (count), got " + std::to_string(labels.dims.size()) + " dimensions");
  if (images.dims[0] != labels.dims[0])
    fail_file(labels_path, "holds " + std::to_string(labels.dims[0]) + " labels but " + images_path + " holds " +
                               std::to_string(images.dims[0]) + " images");
  Dataset d;
  d.count = images.dims[0];
  d.example_shape = {1, images.dims[1], images.dims[2]};
  d.features = images.dims[1] * images.dims[2];
  d.bytes = std::move(images.bytes);
  d.task = Task::classify;
  d.labels.assign(labels.bytes.begin(), labels.bytes.end());
  // A class count from the data, but never fewer than MNIST's ten: a file
  // that happens to lack the last class still trains a ten-way classifier.
  const std::uint8_t max_label = labels.bytes.empty() ? 0 : *std::max_element(labels.bytes.begin(), labels.bytes.end());
  d.num_classes = std::max<std::int64_t>(kFashionMnistClasses, max_label + 1);
  for (std::int64_t k = 0; k < d.num_classes; ++k) d.class_names.push_back(std::to_string(k));
  return d;
}

Dataset load_fashion_mnist(const std::string& dir, IdxSplit split) {
  const std::string prefix = split == IdxSplit::train ? "train" : "t10k";
  // Looked up one after the other so a user missing both hears of the images first.
  const std::string images = find_file(dir, prefix + "-images-idx3-ubyte");
  const std::string labels = find_file(dir, prefix + "-labels-idx1-ubyte");
  return load_image_dataset(images, labels);
}

}  // namespace bnorm

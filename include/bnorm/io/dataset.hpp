#pragma once
// Labelled image datasets kept as bytes (47 MB for Fashion-MNIST's training
// set instead of 188 MB as floats); each mini-batch is normalized on the fly.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "bnorm/tensor.hpp"

namespace bnorm {

inline constexpr const char* kDefaultDataDir = "/usr/share/datasets/fashion-mnist";
inline constexpr std::int64_t kNumClasses = 10;

struct ImageDataset {
  std::int64_t count = 0;
  std::int64_t rows = 0, cols = 0;       // image size
  std::int64_t features = 0;             // rows * cols
  std::vector<std::uint8_t> pixels;      // (count, features)
  std::vector<std::uint8_t> labels;      // (count)

  void truncate(std::int64_t n);  // keep the first n examples
};

enum class Split { train, test };
// Reads <dir>/train-images-idx3-ubyte.gz etc. (the .gz may be absent: the plain
// file is tried too). Labels must be < kNumClasses, counts must agree.
ImageDataset load_fashion_mnist(const std::string& dir, Split split);
ImageDataset load_image_dataset(const std::string& images_path, const std::string& labels_path);

// Inputs are normalized with the training set's statistics:
//   x = (pixel / 255 - mean) / std
// "global": one mean and std over every pixel (torchvision's usual choice);
// "pixel":  a mean and std per pixel position; a std below 1e-3 (a border
//           pixel that is nearly always 0) is raised to 1e-3 so it cannot blow up.
struct InputNormalization {
  std::string mode = "pixel";
  std::vector<float> mean;  // 1 or features
  std::vector<float> std;   // same length

  static InputNormalization fit(const ImageDataset& train, const std::string& mode);
  void validate(std::int64_t features) const;  // throws Error
  // Writes rows (indices) of pixels, each numel(example_shape) bytes, into
  // out (n, example_shape...): (n, 784) for an MLP, (n, 1, 28, 28) for a CNN.
  void apply(Tensor& out, const std::uint8_t* pixels, const Shape& example_shape,
             std::span<const std::int64_t> indices) const;
  // One raw row already scaled like pixels (0..255), e.g. from a text file.
  void apply_row(float* out, const float* raw, std::int64_t features) const;

 private:
  template <class Pixel>
  void normalize_row(float* out, const Pixel* raw, std::int64_t features) const;
};

}  // namespace bnorm

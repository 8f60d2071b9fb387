#pragma once
// Datasets from files: Fashion-MNIST-style IDX image files, kept as bytes
// (normalized per batch). CSV and NPY tables are in io/table_dataset.hpp.
#include <string>

#include "bnorm/train/dataset.hpp"

namespace bnorm {

inline constexpr const char* kDefaultDataDir = "/usr/share/datasets/fashion-mnist";
inline constexpr std::int64_t kFashionMnistClasses = 10;

enum class IdxSplit { train, test };
// Reads <dir>/train-images-idx3-ubyte.gz etc. (the .gz may be absent: the
// plain file is tried too).
Dataset load_fashion_mnist(const std::string& dir, IdxSplit split);
// Images (count, rows, cols) of unsigned bytes and labels (count) of unsigned
// bytes: a classification set of (1, rows, cols) examples whose classes are
// 0..max label (at least 10, Fashion-MNIST's and MNIST's count), named by number.
Dataset load_image_dataset(const std::string& images_path, const std::string& labels_path);

}  // namespace bnorm

#pragma once
// NumPy .npy files (np.save): a magic string, a version, a Python dict literal
// describing dtype, order and shape, then the raw C-order data. Only the
// little-endian numeric dtypes a dataset is made of are read; the header is
// parsed strictly and checked against the file's size before anything is
// allocated for the data.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace bnorm {

enum class NpyDType { f32, f64, u8, i32, i64 };

struct NpyArray {
  NpyDType dtype = NpyDType::f32;
  std::vector<std::int64_t> shape;  // C order
  std::vector<unsigned char> data;  // numel * itemsize bytes, little-endian as in the file
  std::int64_t numel() const;
  bool is_integer() const;                     // u8, i32, i64
  std::vector<float> to_float() const;         // f64 rounded to float; finiteness is the caller's to check
  std::vector<std::int64_t> to_int64() const;  // integer dtypes only; throws Error otherwise
};

const char* npy_dtype_name(NpyDType dtype);  // "float32", "float64", "uint8", "int32", "int64"
std::size_t npy_itemsize(NpyDType dtype);

// Throws Error("<name>: <problem>") for anything but a well-formed file.
NpyArray parse_npy(std::span<const unsigned char> bytes, const std::string& name);
// Reads path (plain, or gzipped as by `gzip x.npy`) and parses it.
NpyArray read_npy(const std::string& path);

// A little-endian, C-order float32 array in NPY format 1.0 (2.0 only if the
// header would not fit 1.0's 16-bit length), written atomically.
void write_npy_f32(const std::string& path, std::span<const std::int64_t> shape, std::span<const float> values);

}  // namespace bnorm

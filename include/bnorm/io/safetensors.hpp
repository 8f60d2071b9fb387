#pragma once
// The safetensors format: an 8-byte little-endian header length, a JSON header
// {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
// {string: string}}, then the raw little-endian tensor bytes.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "bnorm/tensor.hpp"

namespace bnorm {

struct SafeTensor {
  std::string dtype;  // "F32" or "I64" (the only ones bnorm reads)
  Shape shape;
  std::vector<std::uint8_t> bytes;  // little-endian, numel * element size

  std::vector<float> to_f32() const;   // dtype must be F32
  std::int64_t to_i64_scalar() const;  // dtype I64 with one element
};

struct SafetensorsFile {
  std::map<std::string, std::string> metadata;
  std::vector<std::pair<std::string, SafeTensor>> tensors;  // in file order

  const SafeTensor* find(const std::string& name) const;
  const SafeTensor& at(const std::string& name, const std::string& path) const;  // throws Error
};

// Serializes (header padded to 8 bytes) and writes atomically.
void write_safetensors(const std::string& path, const SafetensorsFile& file);
std::string serialize_safetensors(const SafetensorsFile& file);

// Validates everything before using it: header length within the file, JSON
// syntax, known dtypes, shapes whose byte size matches the offsets, offsets
// inside the data section, no overlaps, no gaps, no duplicate names.
SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& path);
SafetensorsFile read_safetensors(const std::string& path);

SafeTensor make_f32_tensor(const Shape& shape, const float* data);
SafeTensor make_i64_tensor(const Shape& shape, const std::int64_t* data);

}  // namespace bnorm

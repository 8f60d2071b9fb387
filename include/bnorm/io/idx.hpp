#pragma once
// IDX files (the MNIST family's format), gzipped or not: a big-endian header
// of two zero bytes, a type code, the number of dimensions, one 32-bit size
// per dimension, then the data. Everything is validated before it is trusted.
#include <cstdint>
#include <string>
#include <vector>

namespace bnorm {

struct IdxArray {
  std::uint8_t type_code = 0;  // 0x08 unsigned byte, 0x0D float32 (big-endian on disk)
  std::vector<std::int64_t> dims;
  std::vector<std::uint8_t> bytes;  // unsigned-byte data
  std::vector<float> floats;        // float32 data, already host order
};

// Reads a whole file; a gzip stream is recognised by its magic bytes. The
// decompressed size is capped (max_bytes), so a small hostile file cannot make
// us allocate gigabytes. Throws Error("<path>: <problem>").
std::vector<std::uint8_t> read_file_maybe_gzip(const std::string& path,
                                               std::uint64_t max_bytes = std::uint64_t{1} << 32);

// The in-memory half of read_file_maybe_gzip: bytes that start with gzip's
// magic are decompressed (under the same cap), others returned as they are.
std::vector<std::uint8_t> maybe_gunzip(std::vector<std::uint8_t> bytes, const std::string& name,
                                       std::uint64_t max_bytes = std::uint64_t{1} << 32);

IdxArray parse_idx(const std::vector<std::uint8_t>& file, const std::string& path);
IdxArray read_idx(const std::string& path);

}  // namespace bnorm

#pragma once
// A whole file read into memory, refused before allocating when it is larger
// than the caller's limit: a reader's first defence against a hostile or
// mistaken path. Bytes is std::string or std::vector<std::uint8_t>.
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "bnorm/error.hpp"

namespace bnorm::io_detail {

template <class Bytes>
Bytes read_bounded(const std::string& path, std::uint64_t max_bytes) {
  // A directory opens as a stream on Linux and reports a size of 2^63 - 1.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail_file(path, "is a directory, not a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_file(path, "cannot open (" + std::string(std::strerror(errno)) + ")");
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) fail_file(path, "cannot determine the file size (is it a directory?)");
  if (static_cast<std::uint64_t>(size) > max_bytes)
    fail_file(path, "file is " + std::to_string(size) + " bytes, over the limit of " + std::to_string(max_bytes));
  in.seekg(0);
  Bytes data(static_cast<std::size_t>(size), 0);
  if (size > 0 && !in.read(reinterpret_cast<char*>(data.data()), size)) fail_file(path, "read failed");
  return data;
}

}  // namespace bnorm::io_detail

#pragma once
#include <string>
#include <string_view>

namespace bnorm {

// Writes data to path so that a crash at any moment leaves either the old file
// or the complete new one: a temporary file in the same directory, fsync,
// rename over path, fsync of the directory. Throws Error on any failure, and
// then the old file is untouched.
void write_file_atomically(const std::string& path, std::string_view data);

}  // namespace bnorm

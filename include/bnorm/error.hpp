#pragma once
// One exception type for every user-facing failure: bad files, bad flags, bad
// shapes. The CLI prints what() and exits non-zero; nothing else catches it.
#include <stdexcept>
#include <string>

namespace bnorm {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An error about a file names the file first, so a user with several inputs
// knows which one to fix.
[[noreturn]] inline void fail_file(const std::string& path, const std::string& problem) {
  throw Error(path + ": " + problem);
}

}  // namespace bnorm

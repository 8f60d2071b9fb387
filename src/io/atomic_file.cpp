#include "bnorm/io/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "bnorm/error.hpp"

namespace bnorm {
namespace {

std::string errno_text() { return std::strerror(errno); }

// Removes the temporary file unless the rename took it over.
struct TempFile {
  std::string path;
  int fd = -1;
  bool committed = false;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!committed && !path.empty()) ::unlink(path.c_str());
  }
};

}  // namespace

void write_file_atomically(const std::string& path, std::string_view data) {
  const std::filesystem::path target(path);
  const std::filesystem::path dir = target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
  TempFile tmp;
  // Hidden name beside the target: same file system, so rename is atomic.
  std::string name = ".";
  name += target.filename().string();
  name += ".tmp-XXXXXX";
  std::string pattern = (dir / name).string();
  tmp.fd = ::mkstemp(pattern.data());
  if (tmp.fd < 0) fail_file(path, "cannot create a temporary file in " + dir.string() + ": " + errno_text());
  tmp.path = pattern;

  const char* p = data.data();
  std::size_t left = data.size();
  while (left > 0) {
    const ssize_t n = ::write(tmp.fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_file(path, "write failed: " + errno_text());
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  // mkstemp creates 0600; a model file is an ordinary document.
  ::fchmod(tmp.fd, 0644);
  if (::fsync(tmp.fd) != 0) fail_file(path, "fsync failed: " + errno_text());
  if (::close(tmp.fd) != 0) {
    tmp.fd = -1;
    fail_file(path, "close failed: " + errno_text());
  }
  tmp.fd = -1;
  if (::rename(tmp.path.c_str(), path.c_str()) != 0) fail_file(path, "rename failed: " + errno_text());
  tmp.committed = true;
  // The rename itself must reach the disk, or a crash could bring back the old name.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace bnorm

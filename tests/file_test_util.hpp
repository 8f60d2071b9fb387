#pragma once
// Helpers for the tests of file readers: a scratch directory per test, files
// written byte for byte (plain or gzipped), and an assertion that a call fails
// with bnorm::Error naming the file and the problem.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <system_error>
#include <typeinfo>

#include "bnorm/error.hpp"

namespace bnorm::test {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    const std::string test = info ? info->name() : "none";
    path_ = fs::temp_directory_path() /
            ("bnorm_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + test);
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

inline void write_file(const std::string& path, const std::string& bytes) {
  // A new file each time: truncating an existing one makes ext4 flush it on
  // close (auto_da_alloc), which costs milliseconds per call.
  std::error_code ec;
  fs::remove(path, ec);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  ASSERT_TRUE(out) << "cannot write test file " << path;
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out) << "cannot write test file " << path;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Passes when fn throws bnorm::Error whose message starts with "<path>: " and
// contains fragment; otherwise says what happened instead.
inline ::testing::AssertionResult throws_error(const std::function<void()>& fn, const std::string& path,
                                        const std::string& fragment) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.rfind(path + ": ", 0) != 0)
      return ::testing::AssertionFailure() << "message does not start with \"" << path << ": \"\n  actual: " << msg;
    if (msg.find(fragment) == std::string::npos)
      return ::testing::AssertionFailure() << "message lacks \"" << fragment << "\"\n  actual: " << msg;
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a " << typeid(e).name() << " instead of bnorm::Error: " << e.what()
                                         << "\n  expected: " << path << ": ..." << fragment;
  } catch (...) {
    return ::testing::AssertionFailure() << "threw something that is not a std::exception";
  }
  return ::testing::AssertionFailure() << "did not throw; expected " << path << ": ..." << fragment;
}

#define EXPECT_FILE_ERROR(call, path, fragment) EXPECT_TRUE(::bnorm::test::throws_error([&] { (void)(call); }, (path), (fragment)))

// Either succeeds or throws bnorm::Error: never another exception type.
inline ::testing::AssertionResult succeeds_or_throws_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error&) {
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a " << typeid(e).name() << " instead of bnorm::Error: " << e.what();
  }
  return ::testing::AssertionSuccess();
}

// An in-memory gzip stream (deflate with a gzip wrapper).
inline std::string gzip_bytes(const std::string& raw) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, static_cast<uLong>(raw.size())) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  z.avail_in = static_cast<uInt>(raw.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// A gzip file written through zlib's file interface, as gzip(1) would.
inline void write_gzip_file(const std::string& path, const std::string& raw) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, raw.data(), static_cast<unsigned>(raw.size())), static_cast<int>(raw.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

}  // namespace bnorm::test

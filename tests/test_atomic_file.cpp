// Atomic writes: a file is replaced whole or not at all, and no temporary file
// is left behind, whether the write succeeds or fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "bnorm/error.hpp"
#include "bnorm/io/atomic_file.hpp"
#include "bnorm/io/model_file.hpp"
#include "test_util.hpp"

namespace bnorm {
namespace {

namespace fs = std::filesystem;

using test::perturbed_mlp;
using test::read_file;
using test::TempDir;
using test::write_file;

InputNormalization make_norm() { return InputNormalization{"global", {0.5f}, {0.25f}}; }

std::vector<std::string> temp_leftovers(const fs::path& dir) {
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 1 && name[0] == '.' && name.find(".tmp-") != std::string::npos) found.push_back(name);
  }
  return found;
}

// ===========================================================================
// Atomic writes

TEST(AtomicFile, ReplacesAnExistingFileCompletely) {
  TempDir dir;
  const std::string path = dir.file("data.bin");
  write_file(path, std::string(10000, 'o'));
  write_file_atomically(path, "new");
  EXPECT_EQ(read_file(path), "new");
  write_file_atomically(path, "");
  EXPECT_EQ(read_file(path), "");
  EXPECT_TRUE(temp_leftovers(dir.path()).empty());
  // An ordinary document, not mkstemp's 0600.
  const auto perms = fs::status(path).permissions();
  EXPECT_NE(perms & fs::perms::others_read, fs::perms::none);
}

TEST(AtomicFile, MissingDirectoryThrowsAndLeavesNothing) {
  TempDir dir;
  const std::string path = dir.file("nope/data.bin");
  EXPECT_FILE_ERROR(write_file_atomically(path, "x"), path, "cannot create a temporary file");
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(dir.file("nope")));
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(AtomicFile, FailedRenameLeavesNoTemporaryFile) {
  TempDir dir;
  const std::string target = dir.file("a-directory");
  fs::create_directory(target);
  fs::create_directory(dir.file("a-directory/keep"));  // non-empty: rename over it must fail
  EXPECT_FILE_ERROR(write_file_atomically(target, "x"), target, "rename failed");
  EXPECT_TRUE(fs::is_directory(target));
  EXPECT_TRUE(temp_leftovers(dir.path()).empty());
}

TEST(AtomicFile, FailedSaveLeavesEarlierModelUnchanged) {
  TempDir dir;
  Model model = perturbed_mlp();
  const std::string good = dir.file("good.safetensors");
  save_model(good, model, make_norm(), nlohmann::json::object());
  const std::string before = read_file(good);
  ASSERT_FALSE(before.empty());
  model.parameters()[0] += 1.0f;
  const std::string bad = dir.file("missing-dir/m.safetensors");
  EXPECT_FILE_ERROR(save_model(bad, model, make_norm(), nlohmann::json::object()), bad,
                    "cannot create a temporary file");
  EXPECT_EQ(read_file(good), before);
  EXPECT_FALSE(fs::exists(bad));
  // Overwriting the good file itself works and leaves no temporary behind.
  save_model(good, model, make_norm(), nlohmann::json::object());
  EXPECT_NE(read_file(good), before);
  EXPECT_EQ(load_model(good).model.parameters()[0], model.parameters()[0]);
  EXPECT_TRUE(temp_leftovers(dir.path()).empty());
}

TEST(AtomicFile, NoTemporaryFilesAfterSuccess) {
  TempDir dir;
  for (int i = 0; i < 5; ++i) {
    std::string name = "f";
    name += std::to_string(i);  // (not "f" + ...: GCC 12 warns falsely with -Wrestrict)
    write_file_atomically(dir.file(name), std::string(static_cast<std::size_t>(1000 * i), 'z'));
  }
  EXPECT_TRUE(temp_leftovers(dir.path()).empty());
  std::size_t files = 0;
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    (void)entry;
    ++files;
  }
  EXPECT_EQ(files, 5u);
  // A relative path (no directory part) writes into the current directory.
  const fs::path old = fs::current_path();
  fs::current_path(dir.path());
  write_file_atomically("relative.bin", "rel");
  fs::current_path(old);
  EXPECT_EQ(read_file(dir.file("relative.bin")), "rel");
  EXPECT_TRUE(temp_leftovers(dir.path()).empty());
}

}  // namespace
}  // namespace bnorm

// IDX files (plain and gzipped) and the IDX image/label datasets built from
// them: malformed inputs, each with the error it must produce. Every case
// checks that the call throws bnorm::Error, that the message starts with the
// file's path, and that it names the right problem.
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
#include "bnorm/io/dataset.hpp"
#include "bnorm/io/idx.hpp"
#include "test_util.hpp"

namespace bnorm {
namespace {

namespace fs = std::filesystem;

using test::gzip_bytes;
using test::read_file;
using test::TempDir;
using test::write_file;
using test::write_gzip_file;

// --- IDX -------------------------------------------------------------------

std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

std::string idx_file(std::uint8_t type, const std::vector<std::uint32_t>& dims, const std::string& data) {
  std::string s{'\0', '\0', static_cast<char>(type), static_cast<char>(dims.size())};
  for (std::uint32_t d : dims) s += be32(d);
  return s + data;
}

std::string idx_u8(const std::vector<std::uint32_t>& dims, const std::vector<std::uint8_t>& values) {
  return idx_file(0x08, dims, std::string(values.begin(), values.end()));
}

std::string idx_f32(const std::vector<std::uint32_t>& dims, const std::vector<float>& values) {
  std::string data;
  for (float v : values) data += be32(std::bit_cast<std::uint32_t>(v));
  return idx_file(0x0D, dims, data);
}

std::vector<std::uint8_t> iota_bytes(std::size_t n, std::uint8_t start = 0) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>(start + i * 7);
  return v;
}

// ===========================================================================
// IDX

TEST(Idx, MissingFile) {
  TempDir dir;
  const std::string path = dir.file("absent-idx3-ubyte");
  EXPECT_FILE_ERROR(read_idx(path), path, "cannot open");
  EXPECT_FILE_ERROR(load_image_dataset(path, path), path, "cannot open");
}

TEST(Idx, DirectoryInsteadOfFile) {
  TempDir dir;
  const std::string path = dir.file("subdir");
  fs::create_directory(path);
  // Linux opens a directory as a stream that reports 2^63 - 1 bytes; the
  // reader must say what the path is instead.
  EXPECT_FILE_ERROR(read_idx(path), path, "is a directory");
}

TEST(Idx, EmptyFile) {
  TempDir dir;
  const std::string path = dir.file("empty");
  write_file(path, "");
  EXPECT_FILE_ERROR(read_idx(path), path, "too short for an IDX header (0 bytes)");
}

TEST(Idx, WrongMagic) {
  TempDir dir;
  const std::string path = dir.file("bad-magic");
  std::string bytes = idx_u8({2, 2}, {1, 2, 3, 4});
  bytes[0] = 1;
  write_file(path, bytes);
  EXPECT_FILE_ERROR(read_idx(path), path, "magic");
  bytes[0] = 0;
  bytes[1] = 8;
  write_file(path, bytes);
  EXPECT_FILE_ERROR(read_idx(path), path, "magic");
  write_file(path, "hello, this is a text file\n");
  EXPECT_FILE_ERROR(read_idx(path), path, "magic");
}

TEST(Idx, UnsupportedTypeCode) {
  TempDir dir;
  const std::string path = dir.file("int16");
  write_file(path, idx_file(0x0B, {2}, std::string(4, '\0')));
  EXPECT_FILE_ERROR(read_idx(path), path, "unsupported IDX data type 0x0b");
  write_file(path, idx_file(0xFF, {1}, "x"));
  EXPECT_FILE_ERROR(read_idx(path), path, "unsupported IDX data type 0xff");
}

TEST(Idx, DimensionCountOutOfRange) {
  TempDir dir;
  const std::string path = dir.file("ndim");
  write_file(path, std::string{'\0', '\0', '\x08', '\0'} + "data");
  EXPECT_FILE_ERROR(read_idx(path), path, "declares 0 dimensions");
  write_file(path, idx_u8(std::vector<std::uint32_t>(9, 1), {7}));
  EXPECT_FILE_ERROR(read_idx(path), path, "declares 9 dimensions");
  write_file(path, idx_u8(std::vector<std::uint32_t>(5, 1), {7}));
  EXPECT_FILE_ERROR(read_idx(path), path, "declares 5 dimensions");
  write_file(path, std::string{'\0', '\0', '\x08', '\xff'});
  EXPECT_FILE_ERROR(read_idx(path), path, "declares 255 dimensions");
}

TEST(Idx, HeaderTruncated) {
  TempDir dir;
  const std::string path = dir.file("short-header");
  // Declares 3 dimensions (16-byte header) but holds only the first size.
  write_file(path, std::string{'\0', '\0', '\x08', '\x03'} + be32(2));
  EXPECT_FILE_ERROR(read_idx(path), path, "truncated IDX header");
}

TEST(Idx, EveryTruncationThrows) {
  TempDir dir;
  const std::string path = dir.file("cut");
  const std::string u8 = idx_u8({2, 3, 4}, iota_bytes(24));  // 16-byte header + 24 bytes
  ASSERT_EQ(u8.size(), 40u);
  write_file(path, u8);
  EXPECT_EQ(read_idx(path).bytes.size(), 24u);
  for (std::size_t n = 0; n < u8.size(); ++n) {
    SCOPED_TRACE("u8 file cut to " + std::to_string(n) + " bytes");
    write_file(path, u8.substr(0, n));
    const char* fragment = n < 4 ? "too short" : n < 16 ? "truncated IDX header" : "(truncated)";
    EXPECT_FILE_ERROR(read_idx(path), path, fragment);
  }
  const std::string f32 = idx_f32({3}, {1.0f, -2.5f, 3.25f});  // 8-byte header + 12 bytes
  for (std::size_t n = 0; n < f32.size(); ++n) {
    SCOPED_TRACE("f32 file cut to " + std::to_string(n) + " bytes");
    write_file(path, f32.substr(0, n));
    const char* fragment = n < 4 ? "too short" : n < 8 ? "truncated IDX header" : "(truncated)";
    EXPECT_FILE_ERROR(read_idx(path), path, fragment);
  }
}

TEST(Idx, TrailingBytes) {
  TempDir dir;
  const std::string path = dir.file("trailing");
  write_file(path, idx_u8({2, 2}, {1, 2, 3, 4}) + "X");
  EXPECT_FILE_ERROR(read_idx(path), path, "(trailing data)");
}

TEST(Idx, ZeroDimension) {
  TempDir dir;
  const std::string path = dir.file("zero");
  write_file(path, idx_u8({3, 0, 2}, {}));
  EXPECT_FILE_ERROR(read_idx(path), path, "dimension 1 is 0");
}

TEST(Idx, DimensionProductOverflowFailsWithoutAllocating) {
  TempDir dir;
  const std::string path = dir.file("overflow");
  write_file(path, idx_u8({0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, {}));
  EXPECT_FILE_ERROR(read_idx(path), path, "overflow");
  // Float data: 2^64 - 2^33 elements fit 64 bits, their bytes do not.
  write_file(path, idx_file(0x0D, {0xFFFFFFFF, 0xFFFFFFFF}, ""));
  EXPECT_FILE_ERROR(read_idx(path), path, "overflow");
  // Fits 64 bits but is far larger than the file: refused before any allocation.
  write_file(path, idx_u8({0xFFFFFFFF, 0xFFFFFFFF}, {1, 2, 3}));
  EXPECT_FILE_ERROR(read_idx(path), path, "(truncated)");
}

TEST(Idx, FloatValuesAndNonFinite) {
  TempDir dir;
  const std::string path = dir.file("floats");
  write_file(path, idx_f32({2, 2}, {1.0f, -2.5f, 0.125f, 3e10f}));
  const IdxArray a = read_idx(path);
  EXPECT_EQ(a.type_code, 0x0D);
  EXPECT_EQ(a.dims, (std::vector<std::int64_t>{2, 2}));
  EXPECT_EQ(a.floats, (std::vector<float>{1.0f, -2.5f, 0.125f, 3e10f}));

  write_file(path, idx_f32({3}, {1.0f, std::numeric_limits<float>::quiet_NaN(), 2.0f}));
  EXPECT_FILE_ERROR(read_idx(path), path, "non-finite value at element 1");
  write_file(path, idx_f32({3}, {1.0f, 2.0f, -std::numeric_limits<float>::infinity()}));
  EXPECT_FILE_ERROR(read_idx(path), path, "non-finite value at element 2");
}

// --- gzip ------------------------------------------------------------------

TEST(Gzip, ValidStreamReadsLikeThePlainFile) {
  TempDir dir;
  const std::string raw = idx_u8({4, 5}, iota_bytes(20));
  const std::string path = dir.file("a.gz");
  write_file(path, gzip_bytes(raw));
  const auto bytes = read_file_maybe_gzip(path);
  EXPECT_EQ(std::string(bytes.begin(), bytes.end()), raw);
  EXPECT_EQ(read_idx(path).bytes, iota_bytes(20));
}

TEST(Gzip, TruncatedAtEveryOffset) {
  TempDir dir;
  const std::string path = dir.file("cut.gz");
  const std::string packed = gzip_bytes(idx_u8({10, 10}, iota_bytes(100, 3)));
  ASSERT_GT(packed.size(), 20u);
  for (std::size_t n = 0; n < packed.size(); ++n) {
    SCOPED_TRACE("gzip file cut to " + std::to_string(n) + " bytes");
    write_file(path, packed.substr(0, n));
    // Under 2 bytes there is no gzip magic left: it is read as a (too short) IDX file.
    EXPECT_FILE_ERROR(read_idx(path), path, n < 2 ? "too short" : "gzip stream is truncated");
  }
}

TEST(Gzip, CorruptBody) {
  TempDir dir;
  const std::string path = dir.file("corrupt.gz");
  const std::string packed = gzip_bytes(idx_u8({10, 10}, iota_bytes(100, 3)));
  // Byte 10 starts the deflate data: 0xff declares the reserved block type 3.
  std::string bad = packed;
  bad[10] = '\xff';
  write_file(path, bad);
  EXPECT_FILE_ERROR(read_idx(path), path, "corrupt gzip data");
  // A wrong CRC-32 in the trailer.
  bad = packed;
  bad[bad.size() - 8] = static_cast<char>(bad[bad.size() - 8] ^ 0x55);
  write_file(path, bad);
  EXPECT_FILE_ERROR(read_idx(path), path, "corrupt gzip data");
  // A wrong uncompressed length in the trailer.
  bad = packed;
  bad[bad.size() - 4] = static_cast<char>(bad[bad.size() - 4] ^ 0x01);
  write_file(path, bad);
  EXPECT_FILE_ERROR(read_idx(path), path, "corrupt gzip data");
  // Magic bytes followed by garbage.
  write_file(path, std::string("\x1f\x8b") + std::string(40, '\x07'));
  EXPECT_FILE_ERROR(read_idx(path), path, "corrupt gzip data");
}

TEST(Gzip, TrailingGarbageAfterTheStream) {
  // Regression: bytes after the gzip stream were once ignored, so "<valid
  // gzip>junk" loaded. Plain IDX and safetensors refuse trailing bytes; so does gzip.
  TempDir dir;
  const std::string path = dir.file("junk.gz");
  write_file(path, gzip_bytes(idx_u8({2}, {1, 2})) + "junk");
  EXPECT_FILE_ERROR(read_idx(path), path, "gzip");
}

TEST(Gzip, ConcatenatedMembersReadAsOneStream) {
  // `cat a.gz b.gz` is a valid gzip file whose content is a followed by b.
  TempDir dir;
  const std::string path = dir.file("two.gz");
  const std::string whole = idx_u8({4}, {1, 2, 3, 4});
  write_file(path, gzip_bytes(whole.substr(0, 5)) + gzip_bytes(whole.substr(5)));
  const IdxArray a = read_idx(path);
  EXPECT_EQ(a.bytes, (std::vector<std::uint8_t>{1, 2, 3, 4}));
}

TEST(Gzip, BombGuard) {
  TempDir dir;
  const std::string path = dir.file("bomb.gz");
  const std::string packed = gzip_bytes(std::string(4 << 20, '\0'));  // 4 MiB of zeros
  ASSERT_LT(packed.size(), 10000u);
  write_file(path, packed);
  EXPECT_FILE_ERROR(read_file_maybe_gzip(path, 100000), path, "decompressed data exceeds the limit of 100000 bytes");
  // A limit the data fits exactly is fine.
  EXPECT_EQ(read_file_maybe_gzip(path, 4 << 20).size(), std::size_t{4} << 20);
  EXPECT_FILE_ERROR(read_file_maybe_gzip(path, (4 << 20) - 1), path, "exceeds the limit");
  // A plain file over the limit is refused before it is read.
  const std::string plain = dir.file("plain");
  write_file(plain, std::string(5000, 'x'));
  EXPECT_FILE_ERROR(read_file_maybe_gzip(plain, 4096), plain, "over the limit of 4096");
}

// --- datasets --------------------------------------------------------------

struct DatasetFiles {
  std::string images, labels;
};

DatasetFiles write_dataset(const TempDir& dir, const std::string& images, const std::string& labels) {
  DatasetFiles f{dir.file("images-idx3-ubyte"), dir.file("labels-idx1-ubyte")};
  write_file(f.images, images);
  write_file(f.labels, labels);
  return f;
}

TEST(Dataset, LoadsGzippedAndPlainFiles) {
  TempDir dir;
  const auto pixels = iota_bytes(3 * 2 * 2, 11);
  const std::vector<std::uint8_t> labels{9, 0, 4};
  const std::string images_path = dir.file("images.gz"), labels_path = dir.file("labels");
  write_gzip_file(images_path, idx_u8({3, 2, 2}, pixels));
  write_file(labels_path, idx_u8({3}, labels));
  const Dataset d = load_image_dataset(images_path, labels_path);
  EXPECT_EQ(d.count, 3);
  EXPECT_EQ(d.features, 4);
  EXPECT_EQ(d.bytes, pixels);
  EXPECT_EQ(d.labels, std::vector<std::int32_t>(labels.begin(), labels.end()));
  EXPECT_EQ(d.example_shape, (Shape{1, 2, 2}));
  EXPECT_EQ(d.num_classes, 10);

  // The Fashion-MNIST layout: the .gz name first, the plain name as a fallback.
  fs::create_directory(dir.path() / "fm");
  write_gzip_file(dir.file("fm/train-images-idx3-ubyte.gz"), idx_u8({3, 2, 2}, pixels));
  write_file(dir.file("fm/train-labels-idx1-ubyte"), idx_u8({3}, labels));
  const Dataset train = load_fashion_mnist(dir.file("fm"), IdxSplit::train);
  EXPECT_EQ(train.count, 3);
  EXPECT_EQ(train.bytes, pixels);
  EXPECT_EQ(train.labels, std::vector<std::int32_t>(labels.begin(), labels.end()));
  // The test labels are absent: the message names the file it looked for.
  write_file(dir.file("fm/t10k-images-idx3-ubyte"), idx_u8({3, 2, 2}, pixels));
  const std::string missing = (dir.path() / "fm" / "t10k-labels-idx1-ubyte.gz").string();
  EXPECT_FILE_ERROR(load_fashion_mnist(dir.file("fm"), IdxSplit::test), missing, "not found");
}

// Labels past Fashion-MNIST's ten are more classes, not an error.
TEST(Dataset, ClassCountFromTheLabels) {
  TempDir dir;
  const auto f = write_dataset(dir, idx_u8({3, 2, 2}, iota_bytes(12)), idx_u8({3}, {0, 11, 3}));
  const Dataset d = load_image_dataset(f.images, f.labels);
  EXPECT_EQ(d.num_classes, 12);
  EXPECT_EQ(d.class_names.back(), "11");
  d.validate(f.images);
}

TEST(Dataset, CountMismatch) {
  TempDir dir;
  const auto f = write_dataset(dir, idx_u8({3, 2, 2}, iota_bytes(12)), idx_u8({2}, {0, 1}));
  EXPECT_FILE_ERROR(load_image_dataset(f.images, f.labels), f.labels,
                    "holds 2 labels but " + f.images + " holds 3 images");
}

TEST(Dataset, ImagesWithTwoDimensions) {
  TempDir dir;
  const auto f = write_dataset(dir, idx_u8({3, 4}, iota_bytes(12)), idx_u8({3}, {0, 1, 2}));
  EXPECT_FILE_ERROR(load_image_dataset(f.images, f.labels), f.images, "got 2 dimensions");
}

TEST(Dataset, FloatImagesRefused) {
  TempDir dir;
  const auto f = write_dataset(dir, idx_f32({1, 2, 2}, {0.0f, 1.0f, 2.0f, 3.0f}), idx_u8({1}, {0}));
  EXPECT_FILE_ERROR(load_image_dataset(f.images, f.labels), f.images, "expected unsigned-byte images");
}

TEST(Dataset, LabelsWithTwoDimensions) {
  TempDir dir;
  const auto f = write_dataset(dir, idx_u8({2, 2, 2}, iota_bytes(8)), idx_u8({2, 1}, {0, 1}));
  EXPECT_FILE_ERROR(load_image_dataset(f.images, f.labels), f.labels, "got 2 dimensions");
}

TEST(Dataset, BadFilesNamedInsideTheDataset) {
  TempDir dir;
  auto f = write_dataset(dir, idx_u8({2, 2, 2}, iota_bytes(8)).substr(0, 20), idx_u8({2}, {0, 1}));
  EXPECT_FILE_ERROR(load_image_dataset(f.images, f.labels), f.images, "(truncated)");
  f = write_dataset(dir, idx_u8({2, 2, 2}, iota_bytes(8)), "");
  EXPECT_FILE_ERROR(load_image_dataset(f.images, f.labels), f.labels, "too short");
}

}  // namespace
}  // namespace bnorm

// Malformed inputs, each with the error it must produce: IDX files (plain and
// gzipped), safetensors, bnorm model files, and atomic writes. Every case checks
// that the call throws bnorm::Error, that the message starts with the file's
// path, and that it names the right problem, so the wrong error fails the test.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <typeinfo>
#include <vector>

#include <nlohmann/json.hpp>

#include "bnorm/error.hpp"
#include "bnorm/io/atomic_file.hpp"
#include "bnorm/io/dataset.hpp"
#include "bnorm/io/idx.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/io/safetensors.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/nn/layer_factory.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/rng.hpp"
#include "file_test_util.hpp"

namespace bnorm {
namespace {

namespace fs = std::filesystem;
using test::gzip_bytes;
using test::read_file;
using test::succeeds_or_throws_error;
using test::throws_error;
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


// --- safetensors -----------------------------------------------------------

std::string le64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>(v >> (8 * i));
  return s;
}

// A safetensors file from a literal header and data section.
std::string st_file(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

// The header of one tensor entry.
std::string st_entry(const std::string& dtype, const std::string& shape, const std::string& offsets) {
  return R"({"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":)" + offsets + "}";
}

std::function<void()> parse_st(const std::string& bytes, const std::string& path) {
  return [bytes, path] { parse_safetensors(bytes, path); };
}

// --- models ----------------------------------------------------------------

Model make_model() {
  MlpSpec spec;
  spec.widths = {6, 5, 3};
  Model model(Shape{6}, build_mlp_layers(spec));
  Rng rng(1234);
  model.init_parameters(rng);
  // Make every parameter and running statistic differ from its initial value.
  for (float& p : model.parameters()) p += static_cast<float>(0.1 * rng.normal());
  Tensor x(Shape{8, 6});
  for (std::int64_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(rng.normal());
  model.forward(x, Mode::train);
  model.forward(x, Mode::train);
  return model;
}

InputNormalization make_norm() { return InputNormalization{"global", {0.5f}, {0.25f}}; }

SafeTensor* find_tensor(SafetensorsFile& file, const std::string& name) {
  for (auto& [n, t] : file.tensors)
    if (n == name) return &t;
  return nullptr;
}

// Loads a good model file, changes it, and writes it under a new name.
std::string model_variant(const TempDir& dir, const std::string& good, const std::string& name,
                          const std::function<void(SafetensorsFile&)>& change) {
  SafetensorsFile file = read_safetensors(good);
  change(file);
  const std::string path = dir.file(name);
  write_safetensors(path, file);
  return path;
}

std::vector<std::string> temp_leftovers(const fs::path& dir) {
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 1 && name[0] == '.' && name.find(".tmp-") != std::string::npos) found.push_back(name);
  }
  return found;
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
  // What fails first depends on the file system; it must be an Error naming the path.
  EXPECT_FILE_ERROR(read_idx(path), path, "");
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
  EXPECT_FILE_ERROR(load_image_dataset(f.images, f.labels), f.labels, "holds 2 labels but " + f.images + " holds 3 images");
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

// ===========================================================================
// safetensors

TEST(Safetensors, ShorterThanTheLengthField) {
  for (std::size_t n = 0; n < 8; ++n)
    EXPECT_TRUE(throws_error(parse_st(std::string(n, '\x01'), "m.st"), "m.st", "shorter than the 8-byte header length"));
}

TEST(Safetensors, HeaderLengthPastTheEnd) {
  EXPECT_TRUE(throws_error(parse_st(le64(100) + "{}", "m.st"), "m.st", "header length 100 runs past the end"));
  EXPECT_TRUE(throws_error(parse_st(le64(3), "m.st"), "m.st", "runs past the end"));
  EXPECT_TRUE(throws_error(parse_st(le64(std::uint64_t{1} << 63) + "{}", "m.st"), "m.st", "runs past the end"));
  EXPECT_TRUE(throws_error(parse_st(le64(~std::uint64_t{0}) + "{}", "m.st"), "m.st", "runs past the end"));
}

TEST(Safetensors, HeaderLengthImplausiblyLarge) {
  // Within the file, but over the 100 MiB a bnorm header could ever need.
  const std::uint64_t len = (std::uint64_t{100} << 20) + 1;
  const std::string bytes = le64(len) + std::string(len, ' ');
  EXPECT_TRUE(throws_error([&] { parse_safetensors(bytes, "m.st"); }, "m.st", "is implausibly large"));
}

TEST(Safetensors, HeaderNotJson) {
  EXPECT_TRUE(throws_error(parse_st(st_file("{not json", ""), "m.st"), "m.st", "header is not valid JSON"));
  EXPECT_TRUE(throws_error(parse_st(st_file("", ""), "m.st"), "m.st", "header is not valid JSON"));
  EXPECT_TRUE(throws_error(parse_st(st_file(std::string("{\0}", 3), ""), "m.st"), "m.st", "header is not valid JSON"));
}

TEST(Safetensors, HeaderNotAnObject) {
  EXPECT_TRUE(throws_error(parse_st(st_file("[1, 2]", ""), "m.st"), "m.st", "header is not a JSON object"));
  EXPECT_TRUE(throws_error(parse_st(st_file("null", ""), "m.st"), "m.st", "header is not a JSON object"));
  EXPECT_TRUE(throws_error(parse_st(st_file("\"text\"", ""), "m.st"), "m.st", "header is not a JSON object"));
}

TEST(Safetensors, DeeplyNestedHeaderDoesNotCrash) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_TRUE(throws_error(parse_st(st_file(deep, ""), "m.st"), "m.st", "header is not a JSON object"));
  const std::string deep_obj = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  EXPECT_TRUE(throws_error(parse_st(st_file(deep_obj, ""), "m.st"), "m.st", "needs dtype, shape and data_offsets"));
}

TEST(Safetensors, EntryMissingFields) {
  const char* bad[] = {
      R"({"a":{"shape":[1],"data_offsets":[0,4]}})",
      R"({"a":{"dtype":"F32","data_offsets":[0,4]}})",
      R"({"a":{"dtype":"F32","shape":[1]}})",
      R"({"a":5})",
      R"({"a":[1,2,3]})",
  };
  for (const char* header : bad) {
    SCOPED_TRACE(header);
    EXPECT_TRUE(throws_error(parse_st(st_file(header, std::string(4, '\0')), "m.st"), "m.st",
                             "tensor 'a': needs dtype, shape and data_offsets"));
  }
}

TEST(Safetensors, UnknownOrBadDtype) {
  const std::string data(4, '\0');
  EXPECT_TRUE(throws_error(parse_st(st_file("{\"a\":" + st_entry("F16", "[2]", "[0,4]") + "}", data), "m.st"), "m.st",
                           "dtype F16 is not supported"));
  EXPECT_TRUE(throws_error(parse_st(st_file(R"({"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", data), "m.st"),
                           "m.st", "dtype is not a string"));
}

TEST(Safetensors, BadShape) {
  const std::string data(8, '\0');
  for (const char* shape : {"[-1]", "[2.5]", "[\"2\"]", "[null]", "[2, -2]"}) {
    SCOPED_TRACE(shape);
    EXPECT_TRUE(throws_error(parse_st(st_file("{\"a\":" + st_entry("F32", shape, "[0,8]") + "}", data), "m.st"), "m.st",
                             "shape entries must be non-negative integers"));
  }
  for (const char* shape : {"2", "{}", "[1,1,1,1,1,1,1,1,1]"}) {
    SCOPED_TRACE(shape);
    EXPECT_TRUE(throws_error(parse_st(st_file("{\"a\":" + st_entry("F32", shape, "[0,8]") + "}", data), "m.st"), "m.st",
                             "shape must be a list of at most 8 sizes"));
  }
  for (const char* shape : {"[1099511627777]", "[1048576,1048576,1048576]", "[18446744073709551615]"}) {
    SCOPED_TRACE(shape);
    EXPECT_TRUE(throws_error(parse_st(st_file("{\"a\":" + st_entry("F32", shape, "[0,8]") + "}", data), "m.st"), "m.st",
                             "shape is too large"));
  }
}

TEST(Safetensors, BadDataOffsets) {
  const std::string data(16, '\0');
  auto one = [&](const std::string& offsets) { return st_file("{\"a\":" + st_entry("F32", "[1]", offsets) + "}", data); };
  EXPECT_TRUE(throws_error(parse_st(one("[8,4]"), "m.st"), "m.st", "data_offsets [8, 4]"));
  EXPECT_TRUE(throws_error(parse_st(one("[12,20]"), "m.st"), "m.st", "outside the data section of 16 bytes"));
  EXPECT_TRUE(throws_error(parse_st(one("[0,18446744073709551615]"), "m.st"), "m.st", "outside the data section"));
  for (const char* offsets : {"[-1,3]", "[0]", "[0,4,8]", "[0.5,4]", "\"0,4\"", "[0,null]"}) {
    SCOPED_TRACE(offsets);
    EXPECT_TRUE(throws_error(parse_st(one(offsets), "m.st"), "m.st", "data_offsets must be two non-negative integers"));
  }
}

TEST(Safetensors, ByteSizeNotMatchingShape) {
  const std::string data(12, '\0');
  EXPECT_TRUE(throws_error(parse_st(st_file("{\"a\":" + st_entry("F32", "[2,2]", "[0,12]") + "}", data), "m.st"), "m.st",
                           "shape (2, 2) needs 16 bytes but data_offsets span 12"));
  EXPECT_TRUE(throws_error(parse_st(st_file("{\"a\":" + st_entry("I64", "[]", "[0,4]") + "}", data.substr(0, 4)), "m.st"),
                           "m.st", "needs 8 bytes but data_offsets span 4"));
}

TEST(Safetensors, OverlappingTensors) {
  const std::string header = "{\"a\":" + st_entry("F32", "[2]", "[0,8]") + ",\"b\":" + st_entry("F32", "[2]", "[4,12]") + "}";
  EXPECT_TRUE(throws_error(parse_st(st_file(header, std::string(12, '\0')), "m.st"), "m.st", "overlaps"));
  const std::string same = "{\"a\":" + st_entry("F32", "[2]", "[0,8]") + ",\"b\":" + st_entry("F32", "[2]", "[0,8]") + "}";
  EXPECT_TRUE(throws_error(parse_st(st_file(same, std::string(8, '\0')), "m.st"), "m.st", "overlaps"));
}

TEST(Safetensors, GapBetweenTensors) {
  const std::string header = "{\"a\":" + st_entry("F32", "[1]", "[0,4]") + ",\"b\":" + st_entry("F32", "[1]", "[8,12]") + "}";
  EXPECT_TRUE(throws_error(parse_st(st_file(header, std::string(12, '\0')), "m.st"), "m.st", "bytes 4..8 belong to no tensor"));
  const std::string first = "{\"a\":" + st_entry("F32", "[1]", "[4,8]") + "}";
  EXPECT_TRUE(throws_error(parse_st(st_file(first, std::string(8, '\0')), "m.st"), "m.st", "bytes 0..4 belong to no tensor"));
}

TEST(Safetensors, TrailingBytes) {
  const std::string header = "{\"a\":" + st_entry("F32", "[1]", "[0,4]") + "}";
  EXPECT_TRUE(throws_error(parse_st(st_file(header, std::string(6, '\0')), "m.st"), "m.st",
                           "2 bytes after the last tensor belong to no tensor"));
  EXPECT_TRUE(throws_error(parse_st(st_file("{}", "xyz"), "m.st"), "m.st", "3 bytes after the last tensor"));
}

TEST(Safetensors, DuplicateName) {
  const std::string header = "{\"a\":" + st_entry("F32", "[1]", "[0,4]") + ",\"a\":" + st_entry("F32", "[1]", "[4,8]") + "}";
  EXPECT_TRUE(throws_error(parse_st(st_file(header, std::string(8, '\0')), "m.st"), "m.st", "names 'a' twice"));
  const std::string meta = R"({"__metadata__":{"k":"v"},"__metadata__":{"k":"w"}})";
  EXPECT_TRUE(throws_error(parse_st(st_file(meta, ""), "m.st"), "m.st", "names '__metadata__' twice"));
}

TEST(Safetensors, BadMetadata) {
  EXPECT_TRUE(throws_error(parse_st(st_file(R"({"__metadata__":{"k":1}})", ""), "m.st"), "m.st",
                           "__metadata__ value of 'k' is not a string"));
  EXPECT_TRUE(throws_error(parse_st(st_file(R"({"__metadata__":{"k":{"x":"y"}}})", ""), "m.st"), "m.st",
                           "__metadata__ value of 'k' is not a string"));
  EXPECT_TRUE(throws_error(parse_st(st_file(R"({"__metadata__":["k"]})", ""), "m.st"), "m.st",
                           "__metadata__ is not an object"));
}

SafetensorsFile sample_file() {
  SafetensorsFile f;
  f.metadata["format"] = "test";
  f.metadata["note"] = "quotes \" and\nnewlines, unicode \xc3\xa9";
  const float w[6] = {1.5f, -2.0f, 0.0f, -0.0f, 3.4e38f, 1e-45f};
  f.tensors.emplace_back("layer.weight", make_f32_tensor({2, 3}, w));
  const std::int64_t steps = -7;
  f.tensors.emplace_back("steps", make_i64_tensor({}, &steps));
  f.tensors.emplace_back("empty", make_f32_tensor({0, 4}, nullptr));
  const float b[1] = {42.0f};
  f.tensors.emplace_back("bias", make_f32_tensor({1}, b));
  return f;
}

TEST(Safetensors, RoundTrip) {
  TempDir dir;
  const std::string path = dir.file("round.safetensors");
  const SafetensorsFile original = sample_file();
  write_safetensors(path, original);
  const std::string bytes = read_file(path);
  EXPECT_EQ(bytes, serialize_safetensors(original));
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ((8 + header_len) % 8, 0u) << "the data section should start 8-byte aligned";

  const SafetensorsFile back = read_safetensors(path);
  EXPECT_EQ(back.metadata, original.metadata);
  ASSERT_EQ(back.tensors.size(), original.tensors.size());
  for (std::size_t i = 0; i < back.tensors.size(); ++i) {
    SCOPED_TRACE(original.tensors[i].first);
    EXPECT_EQ(back.tensors[i].first, original.tensors[i].first);  // file order kept
    EXPECT_EQ(back.tensors[i].second.dtype, original.tensors[i].second.dtype);
    EXPECT_EQ(back.tensors[i].second.shape, original.tensors[i].second.shape);
    EXPECT_EQ(back.tensors[i].second.bytes, original.tensors[i].second.bytes);
  }
  const auto w = back.at("layer.weight", path).to_f32();
  ASSERT_EQ(w.size(), 6u);
  EXPECT_EQ(std::bit_cast<std::uint32_t>(w[3]), std::bit_cast<std::uint32_t>(-0.0f));
  EXPECT_EQ(w[5], 1e-45f);
  EXPECT_EQ(back.at("steps", path).to_i64_scalar(), -7);
  EXPECT_EQ(back.at("steps", path).shape, Shape{});
  EXPECT_THROW(back.at("steps", path).to_f32(), Error);
  EXPECT_THROW(back.at("layer.weight", path).to_i64_scalar(), Error);
  EXPECT_EQ(back.find("nope"), nullptr);
  EXPECT_FILE_ERROR(back.at("nope", path), path, "missing tensor 'nope'");
}

TEST(Safetensors, EveryTruncationThrows) {
  const std::string bytes = serialize_safetensors(sample_file());
  EXPECT_NO_THROW(parse_safetensors(bytes, "m.st"));
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    SCOPED_TRACE("cut to " + std::to_string(n) + " bytes");
    EXPECT_TRUE(throws_error(parse_st(bytes.substr(0, n), "m.st"), "m.st", ""));
  }
}

TEST(Safetensors, ReadMissingFile) {
  TempDir dir;
  const std::string path = dir.file("absent.safetensors");
  EXPECT_FILE_ERROR(read_safetensors(path), path, "cannot open");
  EXPECT_FILE_ERROR(read_safetensors(dir.path().string()), dir.path().string(), "");
}

// ===========================================================================
// Model files

struct ModelFixture : ::testing::Test {
  TempDir dir;
  Model model = make_model();
  std::string good = dir.file("good.safetensors");

  void SetUp() override { save_model(good, model, make_norm(), nlohmann::json{{"epochs", 3}}); }

  std::string variant(const std::string& name, const std::function<void(SafetensorsFile&)>& change) {
    return model_variant(dir, good, name, change);
  }
  std::string with_metadata(const std::string& name, const std::string& key, const std::string& value) {
    return variant(name, [&](SafetensorsFile& f) { f.metadata[key] = value; });
  }
  std::string with_architecture(const std::string& name, const std::function<void(nlohmann::json&)>& change) {
    nlohmann::json arch = model.architecture();
    change(arch);
    return with_metadata(name, "architecture", arch.dump());
  }
};

TEST_F(ModelFixture, SaveLoadIsExact) {
  LoadedModel loaded = load_model(good);
  const auto a = model.parameters();
  const auto b = loaded.model.parameters();
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  EXPECT_EQ(loaded.model.architecture(), model.architecture());

  auto sa = model.state_dict();
  auto sb = loaded.model.state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  for (std::size_t i = 0; i < sa.size(); ++i) {
    SCOPED_TRACE(sa[i].name);
    EXPECT_EQ(sa[i].name, sb[i].name);
    EXPECT_EQ(sa[i].shape, sb[i].shape);
    ASSERT_EQ(sa[i].dtype, sb[i].dtype);
    const std::size_t bytes = static_cast<std::size_t>(numel(sa[i].shape)) * (sa[i].dtype == StateEntry::DType::f32 ? 4 : 8);
    EXPECT_EQ(std::memcmp(sa[i].data, sb[i].data, bytes), 0);
  }
  // Running statistics really were trained (not the defaults 0 and 1).
  auto& bn = dynamic_cast<BatchNorm&>(loaded.model.layer(1));
  EXPECT_EQ(bn.num_batches_tracked(), 2);
  EXPECT_NE(bn.running_mean()[0], 0.0f);
  EXPECT_NE(bn.running_var()[0], 1.0f);
  auto& bn0 = dynamic_cast<BatchNorm&>(model.layer(1));
  for (std::size_t c = 0; c < 5; ++c) {
    EXPECT_EQ(bn.running_mean()[c], bn0.running_mean()[c]);
    EXPECT_EQ(bn.running_var()[c], bn0.running_var()[c]);
  }

  EXPECT_EQ(loaded.input_normalization.mode, "global");
  EXPECT_EQ(loaded.input_normalization.mean, std::vector<float>{0.5f});
  EXPECT_EQ(loaded.input_normalization.std, std::vector<float>{0.25f});
  EXPECT_EQ(loaded.training, (nlohmann::json{{"epochs", 3}}));

  // Same logits in eval mode.
  Tensor x(Shape{2, 6});
  for (std::int64_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i) * 0.1f - 0.5f;
  const Tensor ya = model.forward(x, Mode::eval);
  const Tensor& yb = loaded.model.forward(x, Mode::eval);
  ASSERT_EQ(ya.shape(), yb.shape());
  for (std::int64_t i = 0; i < ya.size(); ++i) EXPECT_EQ(ya[i], yb[i]);
}

TEST_F(ModelFixture, WrongFormat) {
  const auto p = with_metadata("format.safetensors", "format", "something-else");
  EXPECT_FILE_ERROR(load_model(p), p, "not a bnorm model");
  const auto q = variant("noformat.safetensors", [](SafetensorsFile& f) { f.metadata.erase("format"); });
  EXPECT_FILE_ERROR(load_model(q), q, "not a bnorm model");
  // A safetensors file with no metadata at all (e.g. a plain PyTorch export).
  const auto r = variant("nometa.safetensors", [](SafetensorsFile& f) { f.metadata.clear(); });
  EXPECT_FILE_ERROR(load_model(r), r, "not a bnorm model");
}

TEST_F(ModelFixture, WrongVersion) {
  const auto p = with_metadata("version.safetensors", "version", "2");
  EXPECT_FILE_ERROR(load_model(p), p, "model format version 2 is not supported");
  const auto q = variant("noversion.safetensors", [](SafetensorsFile& f) { f.metadata.erase("version"); });
  EXPECT_FILE_ERROR(load_model(q), q, "version (none) is not supported");
}

TEST_F(ModelFixture, ArchitectureNotJson) {
  const auto p = with_metadata("arch.safetensors", "architecture", "{layers: [");
  EXPECT_FILE_ERROR(load_model(p), p, "metadata \"architecture\" is not valid JSON");
  const auto q = variant("noarch.safetensors", [](SafetensorsFile& f) { f.metadata.erase("architecture"); });
  EXPECT_FILE_ERROR(load_model(q), q, "metadata lacks \"architecture\"");
  const auto r = with_metadata("archarray.safetensors", "architecture", "[1,2]");
  EXPECT_FILE_ERROR(load_model(r), r, "bad architecture: architecture must be an object");
}

TEST_F(ModelFixture, ArchitectureUnknownLayerType) {
  const auto p = with_architecture("conv.safetensors", [](nlohmann::json& a) { a["layers"][2]["type"] = "conv9"; });
  EXPECT_FILE_ERROR(load_model(p), p, "unknown activation 'conv9'");
  const auto q = with_architecture("notype.safetensors", [](nlohmann::json& a) { a["layers"][2].erase("type"); });
  EXPECT_FILE_ERROR(load_model(q), q, "lacks \"type\"");
  const auto r = with_architecture("numtype.safetensors", [](nlohmann::json& a) { a["layers"][2]["type"] = 7; });
  EXPECT_FILE_ERROR(load_model(r), r, "\"type\" has the wrong type");
}

TEST_F(ModelFixture, ArchitectureLayersDoNotChain) {
  const auto p = with_architecture("chain.safetensors", [](nlohmann::json& a) { a["layers"][3]["in_features"] = 4; });
  EXPECT_FILE_ERROR(load_model(p), p, "layer 3 (linear)");
  const auto q = with_architecture("input.safetensors", [](nlohmann::json& a) { a["input_shape"] = {7}; });
  EXPECT_FILE_ERROR(load_model(q), q, "layer 0 (linear)");
  const auto r = with_architecture("bnwidth.safetensors", [](nlohmann::json& a) { a["layers"][1]["num_features"] = 6; });
  EXPECT_FILE_ERROR(load_model(r), r, "layer 1 (batchnorm)");
}

TEST_F(ModelFixture, ArchitectureTooLargeIsRefusedNotAllocated) {
  // Regression: a few-KB file declaring Linear(16777216 -> 16777216), 2^48
  // parameters, once made the loader allocate before checking anything. The
  // architecture's state is now bounded by the bytes the file holds.
  nlohmann::json arch = {{"input_shape", {1 << 24}},
                         {"layers", {{{"type", "linear"}, {"in_features", 1 << 24}, {"out_features", 1 << 24}, {"bias", true}}}}};
  const auto p = with_metadata("huge.safetensors", "architecture", arch.dump());
  EXPECT_FILE_ERROR(load_model(p), p, "");
}

TEST_F(ModelFixture, ArchitectureNumbersOutOfRangeAreRefusedNotCast) {
  // Regression (fuzz_architecture, fuzz/corpus/fuzz_architecture/regression_huge_integer.json):
  // an integer too long for int64 parses as a double, and get<int64_t>() cast
  // it, undefined behaviour that UBSan reported. Fields now go through
  // json_number, which refuses what the target type cannot hold.
  const auto p = with_architecture("hugeint.safetensors", [](nlohmann::json& a) {
    a["layers"][0]["in_features"] = nlohmann::json::parse("3333333333333330000000000004741327996562045");
  });
  EXPECT_FILE_ERROR(load_model(p), p, "\"in_features\" has the wrong type or is out of range");
  const auto q = with_architecture("fraction.safetensors", [](nlohmann::json& a) { a["layers"][0]["in_features"] = 6.5; });
  EXPECT_FILE_ERROR(load_model(q), q, "\"in_features\" has the wrong type or is out of range");
  const auto r = with_architecture("hugeeps.safetensors", [](nlohmann::json& a) { a["layers"][1]["eps"] = 1e300; });
  EXPECT_FILE_ERROR(load_model(r), r, "\"eps\" has the wrong type or is out of range");
  const auto s = with_architecture("hugemom.safetensors", [](nlohmann::json& a) { a["layers"][1]["momentum"] = -1e300; });
  EXPECT_FILE_ERROR(load_model(s), s, "\"momentum\" has the wrong type or is out of range");
  const auto t = with_metadata("hugemean.safetensors", "input_normalization", R"({"mode":"global","mean":[1e300],"std":[1]})");
  EXPECT_FILE_ERROR(load_model(t), t, "within float range");
}

TEST_F(ModelFixture, MissingTensor) {
  const auto p = variant("missing.safetensors", [](SafetensorsFile& f) {
    std::erase_if(f.tensors, [](const auto& e) { return e.first == "1.running_var"; });
  });
  EXPECT_FILE_ERROR(load_model(p), p, "missing tensor '1.running_var'");
}

TEST_F(ModelFixture, ExtraTensor) {
  const auto p = variant("extra.safetensors", [](SafetensorsFile& f) {
    const float v = 1.0f;
    f.tensors.emplace_back("9.weight", make_f32_tensor({1}, &v));
  });
  EXPECT_FILE_ERROR(load_model(p), p, "unexpected tensor '9.weight'");
}

TEST_F(ModelFixture, WrongShape) {
  const auto p = variant("shape.safetensors", [](SafetensorsFile& f) {
    const float v[4] = {0, 0, 0, 0};
    *find_tensor(f, "3.bias") = make_f32_tensor({4}, v);
  });
  EXPECT_FILE_ERROR(load_model(p), p, "tensor '3.bias' has shape (4), the architecture needs (3)");
  // Same element count, transposed.
  const auto q = variant("transposed.safetensors", [](SafetensorsFile& f) {
    SafeTensor& t = *find_tensor(f, "0.weight");
    t.shape = {6, 5};
  });
  EXPECT_FILE_ERROR(load_model(q), q, "tensor '0.weight' has shape (6, 5), the architecture needs (5, 6)");
}

TEST_F(ModelFixture, WrongDtype) {
  const auto p = variant("dtype.safetensors", [](SafetensorsFile& f) {
    std::vector<std::int64_t> v(30, 1);
    *find_tensor(f, "0.weight") = make_i64_tensor({5, 6}, v.data());
  });
  EXPECT_FILE_ERROR(load_model(p), p, "tensor '0.weight' has dtype I64, expected F32");
  const auto q = variant("dtype2.safetensors", [](SafetensorsFile& f) {
    const float v = 2.0f;
    *find_tensor(f, "1.num_batches_tracked") = make_f32_tensor({}, &v);
  });
  EXPECT_FILE_ERROR(load_model(q), q, "tensor '1.num_batches_tracked' has dtype F32, expected I64");
}

TEST_F(ModelFixture, NonFiniteWeight) {
  const auto p = variant("nan.safetensors", [](SafetensorsFile& f) {
    SafeTensor& t = *find_tensor(f, "3.weight");
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(t.bytes.data() + 4 * 7, &nan, 4);
  });
  EXPECT_FILE_ERROR(load_model(p), p, "tensor '3.weight' holds a non-finite value at index 7");
  const auto q = variant("inf.safetensors", [](SafetensorsFile& f) {
    SafeTensor& t = *find_tensor(f, "1.running_mean");
    const float inf = std::numeric_limits<float>::infinity();
    std::memcpy(t.bytes.data(), &inf, 4);
  });
  EXPECT_FILE_ERROR(load_model(q), q, "tensor '1.running_mean' holds a non-finite value at index 0");
}

TEST_F(ModelFixture, NegativeRunningVar) {
  const auto p = variant("negvar.safetensors", [](SafetensorsFile& f) {
    SafeTensor& t = *find_tensor(f, "1.running_var");
    const float v = -0.5f;
    std::memcpy(t.bytes.data() + 4 * 2, &v, 4);
  });
  EXPECT_FILE_ERROR(load_model(p), p, "tensor '1.running_var' holds a negative variance at index 2");
  const auto q = variant("negcount.safetensors", [](SafetensorsFile& f) {
    const std::int64_t v = -1;
    *find_tensor(f, "1.num_batches_tracked") = make_i64_tensor({}, &v);
  });
  EXPECT_FILE_ERROR(load_model(q), q, "tensor '1.num_batches_tracked' is negative");
}

TEST_F(ModelFixture, BadInputNormalization) {
  const auto p = with_metadata("pixel.safetensors", "input_normalization",
                               R"({"mode":"pixel","mean":[0.5],"std":[0.25]})");
  EXPECT_FILE_ERROR(load_model(p), p, "mode 'pixel' needs 6 means and stds for 6 features, got 1 and 1");
  const auto q = with_metadata("std0.safetensors", "input_normalization", R"({"mode":"global","mean":[0.5],"std":[0]})");
  EXPECT_FILE_ERROR(load_model(q), q, "std <= 0");
  const auto r = with_metadata("stdneg.safetensors", "input_normalization", R"({"mode":"global","mean":[0.5],"std":[-1]})");
  EXPECT_FILE_ERROR(load_model(r), r, "std <= 0");
  const auto s = with_metadata("mode.safetensors", "input_normalization", R"({"mode":"median","mean":[0.5],"std":[1]})");
  EXPECT_FILE_ERROR(load_model(s), s, "unknown mode 'median'");
  const auto t = with_metadata("types.safetensors", "input_normalization", R"({"mode":"global","mean":"0.5","std":[1]})");
  EXPECT_FILE_ERROR(load_model(t), t, "needs a string \"mode\" and number lists");
  const auto u = with_metadata("notjson.safetensors", "input_normalization", "mean=0.5");
  EXPECT_FILE_ERROR(load_model(u), u, "metadata \"input_normalization\" is not valid JSON");
  const auto v = variant("nonorm.safetensors", [](SafetensorsFile& f) { f.metadata.erase("input_normalization"); });
  EXPECT_FILE_ERROR(load_model(v), v, "metadata lacks \"input_normalization\"");
  const auto w = with_metadata("lengths.safetensors", "input_normalization", R"({"mode":"global","mean":[0.5],"std":[1,2]})");
  EXPECT_FILE_ERROR(load_model(w), w, "got 1 and 2");
}

TEST_F(ModelFixture, EveryTruncationThrows) {
  const std::string bytes = read_file(good);
  const std::string path = dir.file("cut.safetensors");
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    SCOPED_TRACE("cut to " + std::to_string(n) + " bytes");
    write_file(path, bytes.substr(0, n));
    EXPECT_FILE_ERROR(load_model(path), path, "");
  }
}

TEST_F(ModelFixture, RandomHeaderDamageNeverEscapesAsAnotherException) {
  const std::string bytes = read_file(good);
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  const std::string path = dir.file("damaged.safetensors");
  const std::string alphabet = "\"{}[],:0123456789-.eE \\ntfu";
  std::mt19937_64 gen(7);
  for (int trial = 0; trial < 2000; ++trial) {
    std::string bad = bytes;
    const int edits = 1 + static_cast<int>(gen() % 3);
    for (int e = 0; e < edits; ++e)
      bad[8 + gen() % header_len] = alphabet[gen() % alphabet.size()];
    write_file(path, bad);
    EXPECT_TRUE(succeeds_or_throws_error([&] { load_model(path); })) << "trial " << trial;
  }
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
  Model model = make_model();
  const std::string good = dir.file("good.safetensors");
  save_model(good, model, make_norm(), nlohmann::json::object());
  const std::string before = read_file(good);
  ASSERT_FALSE(before.empty());
  model.parameters()[0] += 1.0f;
  const std::string bad = dir.file("missing-dir/m.safetensors");
  EXPECT_FILE_ERROR(save_model(bad, model, make_norm(), nlohmann::json::object()), bad, "cannot create a temporary file");
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

// The safetensors reader and writer: malformed files, each with the error it
// must produce (naming the file and the problem), and an exact round trip.
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
#include "bnorm/io/safetensors.hpp"
#include "test_util.hpp"

namespace bnorm {
namespace {

namespace fs = std::filesystem;

using test::read_file;
using test::TempDir;
using test::throws_error;
using test::write_file;

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

// ===========================================================================
// safetensors

TEST(Safetensors, ShorterThanTheLengthField) {
  for (std::size_t n = 0; n < 8; ++n)
    EXPECT_TRUE(
        throws_error(parse_st(std::string(n, '\x01'), "m.st"), "m.st", "shorter than the 8-byte header length"));
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
  auto one = [&](const std::string& offsets) {
    return st_file("{\"a\":" + st_entry("F32", "[1]", offsets) + "}", data);
  };
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
  EXPECT_TRUE(throws_error(parse_st(st_file("{\"a\":" + st_entry("F32", "[2,2]", "[0,12]") + "}", data), "m.st"),
                           "m.st", "shape (2, 2) needs 16 bytes but data_offsets span 12"));
  EXPECT_TRUE(
      throws_error(parse_st(st_file("{\"a\":" + st_entry("I64", "[]", "[0,4]") + "}", data.substr(0, 4)), "m.st"),
                   "m.st", "needs 8 bytes but data_offsets span 4"));
}

TEST(Safetensors, OverlappingTensors) {
  const std::string header =
      "{\"a\":" + st_entry("F32", "[2]", "[0,8]") + ",\"b\":" + st_entry("F32", "[2]", "[4,12]") + "}";
  EXPECT_TRUE(throws_error(parse_st(st_file(header, std::string(12, '\0')), "m.st"), "m.st", "overlaps"));
  const std::string same =
      "{\"a\":" + st_entry("F32", "[2]", "[0,8]") + ",\"b\":" + st_entry("F32", "[2]", "[0,8]") + "}";
  EXPECT_TRUE(throws_error(parse_st(st_file(same, std::string(8, '\0')), "m.st"), "m.st", "overlaps"));
}

TEST(Safetensors, GapBetweenTensors) {
  const std::string header =
      "{\"a\":" + st_entry("F32", "[1]", "[0,4]") + ",\"b\":" + st_entry("F32", "[1]", "[8,12]") + "}";
  EXPECT_TRUE(
      throws_error(parse_st(st_file(header, std::string(12, '\0')), "m.st"), "m.st", "bytes 4..8 belong to no tensor"));
  const std::string first = "{\"a\":" + st_entry("F32", "[1]", "[4,8]") + "}";
  EXPECT_TRUE(
      throws_error(parse_st(st_file(first, std::string(8, '\0')), "m.st"), "m.st", "bytes 0..4 belong to no tensor"));
}

TEST(Safetensors, TrailingBytes) {
  const std::string header = "{\"a\":" + st_entry("F32", "[1]", "[0,4]") + "}";
  EXPECT_TRUE(throws_error(parse_st(st_file(header, std::string(6, '\0')), "m.st"), "m.st",
                           "2 bytes after the last tensor belong to no tensor"));
  EXPECT_TRUE(throws_error(parse_st(st_file("{}", "xyz"), "m.st"), "m.st", "3 bytes after the last tensor"));
}

TEST(Safetensors, DuplicateName) {
  const std::string header =
      "{\"a\":" + st_entry("F32", "[1]", "[0,4]") + ",\"a\":" + st_entry("F32", "[1]", "[4,8]") + "}";
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

}  // namespace
}  // namespace bnorm

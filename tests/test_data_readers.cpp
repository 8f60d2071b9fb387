// The CSV and .npy readers: good files give the values, shapes and line
// numbers written into them; every malformed file is refused with bnorm::Error
// naming the file and the problem (and for CSV the line and column), so a
// wrong message or a silent acceptance fails the test.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "bnorm/error.hpp"
#include "bnorm/io/csv.hpp"
#include "bnorm/io/npy.hpp"
#include "test_util.hpp"

namespace bnorm {
namespace {

using test::read_file;
using test::TempDir;
using test::throws_error;
using test::write_file;
using test::write_gzip_file;

// --- .npy fixtures ---------------------------------------------------------

static_assert(std::endian::native == std::endian::little, "the fixtures copy host-order values as little-endian");

template <class T>
std::string le_bytes(const std::vector<T>& values) {
  std::string s(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(s.data(), values.data(), s.size());
  return s;
}

std::string npy_dict(const std::string& descr, const std::string& shape, const std::string& fortran = "False") {
  return "{'descr': '" + descr + "', 'fortran_order': " + fortran + ", 'shape': " + shape + ", }";
}

// A .npy file around a literal header dict, padded as NumPy pads it.
std::string npy_file(const std::string& dict, const std::string& data, int major = 1) {
  const std::size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  header.append(63 - (prefix + header.size()) % 64, ' ');
  header += '\n';
  std::string s = "\x93NUMPY";
  s += static_cast<char>(major);
  s += '\0';
  for (std::size_t i = 0; i < prefix - 8; ++i) s += static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  return s + header + data;
}

NpyArray parse(const std::string& bytes, const std::string& name = "a.npy") {
  return parse_npy(std::span(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()), name);
}

#define EXPECT_NPY_ERROR(bytes, fragment) EXPECT_FILE_ERROR(parse(bytes), "a.npy", fragment)

const std::vector<float> kSix = {1.5f, -2.0f, 0.25f, 3e10f, -0.0f, 7.0f};

// --- .npy: good files -------------------------------------------------------

TEST(NpyReader, ReadsFloat32Matrix) {
  const NpyArray a = parse(npy_file(npy_dict("<f4", "(2, 3)"), le_bytes(kSix)));
  EXPECT_EQ(a.dtype, NpyDType::f32);
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(a.numel(), 6);
  EXPECT_EQ(a.data.size(), 24u);
  EXPECT_FALSE(a.is_integer());
  EXPECT_EQ(a.to_float(), kSix);
  EXPECT_STREQ(npy_dtype_name(a.dtype), "float32");
  EXPECT_THROW(a.to_int64(), Error);
}

TEST(NpyReader, ReadsEachDtype) {
  const NpyArray f64 = parse(npy_file(npy_dict("<f8", "(3,)"), le_bytes(std::vector<double>{0.1, -1e300, 2.5})));
  EXPECT_EQ(f64.dtype, NpyDType::f64);
  const std::vector<float> f = f64.to_float();
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0], 0.1f);
  EXPECT_TRUE(std::isinf(f[1]) && f[1] < 0) << "a double beyond float's range becomes -inf, got " << f[1];
  EXPECT_EQ(f[2], 2.5f);

  for (const char* descr : {"|u1", "<u1"}) {
    const NpyArray u8 = parse(npy_file(npy_dict(descr, "(4,)"), std::string("\x00\x07\x80\xff", 4)));
    EXPECT_EQ(u8.dtype, NpyDType::u8) << descr;
    EXPECT_TRUE(u8.is_integer());
    EXPECT_EQ(u8.to_int64(), (std::vector<std::int64_t>{0, 7, 128, 255}));
    EXPECT_EQ(u8.to_float(), (std::vector<float>{0, 7, 128, 255}));
  }

  const NpyArray i32 =
      parse(npy_file(npy_dict("<i4", "(2, 2)"), le_bytes(std::vector<std::int32_t>{-1, 2, INT32_MIN, 9})));
  EXPECT_EQ(i32.dtype, NpyDType::i32);
  EXPECT_EQ(i32.to_int64(), (std::vector<std::int64_t>{-1, 2, INT32_MIN, 9}));
  EXPECT_EQ(i32.to_float(), (std::vector<float>{-1, 2, static_cast<float>(INT32_MIN), 9}));

  const std::vector<std::int64_t> big = {-5, 1797, std::int64_t{1} << 40};
  const NpyArray i64 = parse(npy_file(npy_dict("<i8", "(3,)"), le_bytes(big)));
  EXPECT_EQ(i64.dtype, NpyDType::i64);
  EXPECT_STREQ(npy_dtype_name(i64.dtype), "int64");
  EXPECT_EQ(i64.to_int64(), big);
}

TEST(NpyReader, ReadsVersions2And3) {
  for (int major : {2, 3}) {
    const NpyArray a = parse(npy_file(npy_dict("<f4", "(1, 2, 3)"), le_bytes(kSix), major));
    EXPECT_EQ(a.shape, (std::vector<std::int64_t>{1, 2, 3})) << "version " << major;
    EXPECT_EQ(a.to_float(), kSix) << "version " << major;
  }
}

TEST(NpyReader, HeaderToleratesWhitespaceKeyOrderAndQuotes) {
  const std::string data = le_bytes(kSix);
  for (const std::string& dict : {
           std::string("{ 'shape' : ( 6 , ) ,'fortran_order':False,\t\"descr\":'<f4'}"),
           std::string("{'descr':'<f4','fortran_order':False,'shape':(6,)}"),
           std::string("{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }"),  // Python 2 NumPy
       }) {
    const NpyArray a = parse(npy_file(dict, data));
    EXPECT_EQ(a.numel(), 6) << dict;
    EXPECT_EQ(a.to_float(), kSix) << dict;
  }
}

TEST(NpyReader, ReadsZeroSizedArray) {
  const NpyArray a = parse(npy_file(npy_dict("<f4", "(0, 3)"), ""));
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{0, 3}));
  EXPECT_EQ(a.numel(), 0);
  EXPECT_TRUE(a.to_float().empty());
  EXPECT_EQ(parse(npy_file(npy_dict("<f4", "(3000000000, 0, 5)"), "")).numel(), 0);
}

TEST(NpyReader, ReadsPlainAndGzippedFiles) {
  TempDir dir;
  const std::string bytes = npy_file(npy_dict("<f4", "(6,)"), le_bytes(kSix));
  write_file(dir.file("x.npy"), bytes);
  write_gzip_file(dir.file("x.npy.gz"), bytes);
  EXPECT_EQ(read_npy(dir.file("x.npy")).to_float(), kSix);
  EXPECT_EQ(read_npy(dir.file("x.npy.gz")).to_float(), kSix);
  EXPECT_FILE_ERROR(read_npy(dir.file("missing.npy")), dir.file("missing.npy"), "cannot open");
  write_file(dir.file("short.npy"), bytes.substr(0, bytes.size() - 1));
  EXPECT_FILE_ERROR(read_npy(dir.file("short.npy")), dir.file("short.npy"), "needs 24 (truncated)");
}

// --- .npy: refusals ----------------------------------------------------------

TEST(NpyReader, RefusesBadMagicAndVersion) {
  EXPECT_NPY_ERROR("", "not a NumPy .npy file");
  EXPECT_NPY_ERROR("PK\x03\x04 a zip archive", "not a NumPy .npy file");
  EXPECT_NPY_ERROR("\x93NUMPX\x01", "not a NumPy .npy file");
  EXPECT_NPY_ERROR("\x93NUMPY", "no format version");
  EXPECT_NPY_ERROR(std::string("\x93NUMPY\x01\x00\x05", 9), "no header length");
  std::string v4 = npy_file(npy_dict("<f4", "(6,)"), le_bytes(kSix));
  v4[6] = 4;
  EXPECT_NPY_ERROR(v4, "unsupported .npy format version 4.0 (bnorm reads 1.0, 2.0 and 3.0)");
  std::string v11 = npy_file(npy_dict("<f4", "(6,)"), le_bytes(kSix));
  v11[7] = 1;
  EXPECT_NPY_ERROR(v11, "unsupported .npy format version 1.1");
  v4[6] = 0;
  EXPECT_NPY_ERROR(v4, "unsupported .npy format version 0.0");
}

TEST(NpyReader, RefusesUnsupportedDtypes) {
  EXPECT_NPY_ERROR(npy_file(npy_dict(">f4", "(6,)"), le_bytes(kSix)),
                   "big-endian dtype '>f4' is not supported: save with arr.astype('<f4')");
  EXPECT_NPY_ERROR(npy_file(npy_dict(">i8", "(3,)"), std::string(24, '\0')), "arr.astype('<i8')");
  for (const char* descr : {"<f2", "|b1", "<i2", "<u4", "<c8", "|O", "<U5", "|i1", "f4"}) {
    EXPECT_NPY_ERROR(npy_file(npy_dict(descr, "(1,)"), std::string(8, '\0')),
                     "unsupported dtype '" + std::string(descr) +
                         "' (bnorm reads '<f4' float32, '<f8' float64, '|u1' uint8, '<i4' int32, '<i8' int64)");
  }
  EXPECT_NPY_ERROR(npy_file("{'descr': [('x', '<f4')], 'fortran_order': False, 'shape': (1,), }", "abcd"),
                   "structured dtypes");
}

TEST(NpyReader, RefusesFortranOrder) {
  EXPECT_NPY_ERROR(npy_file(npy_dict("<f4", "(2, 3)", "True"), le_bytes(kSix)), "np.ascontiguousarray");
}

TEST(NpyReader, RefusesMalformedHeaderDict) {
  const std::string data = le_bytes(kSix);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"'descr': '<f4', 'fortran_order': False, 'shape': (6,)}", "expected '{'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (6,)", "expected ',' or '}'"},
      {"{'descr': '<f4' 'fortran_order': False, 'shape': (6,)}", "expected ',' or '}'"},
      {"{'descr': '<f4', 'fortran_order': False}", "no 'shape' key"},
      {"{'shape': (6,), 'fortran_order': False}", "no 'descr' key"},
      {"{'descr': '<f4', 'shape': (6,)}", "no 'fortran_order' key"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (6,)}", "key 'descr' appears twice"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'extra': 1}", "unexpected key 'extra'"},
      {"{'descr': '<f4', 'fortran_order': false, 'shape': (6,)}", "expected True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (6)}", "shape (n) must be written (n,)"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-6,)}", "negative dimension"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2 3)}", "expected ',' or ')' in the shape"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [6]}", "expected '('"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (6.0,)}", "expected ',' or ')' in the shape"},
      {"{'descr' '<f4', 'fortran_order': False, 'shape': (6,)}", "expected ':'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (6,)} x", "unexpected text after the closing '}'"},
      {"{descr: '<f4', 'fortran_order': False, 'shape': (6,)}", "expected a quoted string"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'x", "unterminated string"},
      {"{'descr': '<f\\x34', 'fortran_order': False, 'shape': (6,)}", "escape sequence"},
      {"", "expected '{'"},
  };
  for (const auto& [dict, fragment] : cases) {
    EXPECT_TRUE(throws_error([&] { parse(npy_file(dict, data)); }, "a.npy", "malformed .npy header: " + fragment))
        << dict;
  }
}

TEST(NpyReader, RefusesHeaderLengthPastTheEnd) {
  std::string bytes = npy_file(npy_dict("<f4", "(6,)"), le_bytes(kSix));
  bytes[8] = static_cast<char>(0xFF);
  bytes[9] = 0x00;
  EXPECT_NPY_ERROR(bytes,
                   "header length 255 points past the end of the file (" + std::to_string(bytes.size()) + " bytes)");
  std::string v2 = npy_file(npy_dict("<f4", "(6,)"), le_bytes(kSix), 2);
  v2[11] = static_cast<char>(0x80);  // over 2 GiB in version 2's 32-bit length
  const std::size_t v2_header = v2.size() - 12 - 24;
  EXPECT_NPY_ERROR(v2, "header length " + std::to_string(0x80000000u + v2_header) + " points past the end");
}

TEST(NpyReader, RefusesShapeOverflow) {
  EXPECT_NPY_ERROR(npy_file(npy_dict("<f4", "(4611686018427387904, 4)"), ""),
                   "shape (4611686018427387904, 4) of float32 overflows a 64-bit size");
  EXPECT_NPY_ERROR(npy_file(npy_dict("<f8", "(3037000500, 3037000500)"), ""), "overflows a 64-bit size");
  EXPECT_NPY_ERROR(npy_file(npy_dict("<f4", "(4611686018427387904, 0, 4)"), ""), "overflows a 64-bit size");
  EXPECT_NPY_ERROR(npy_file(npy_dict("<f4", "(99999999999999999999,)"), ""), "dimension too large");
}

TEST(NpyReader, RefusesTruncatedBody) {
  EXPECT_NPY_ERROR(npy_file(npy_dict("<f4", "(2, 3)"), le_bytes(kSix).substr(0, 20)),
                   "holds 20 bytes of data but shape (2, 3) of float32 needs 24 (truncated)");
  EXPECT_NPY_ERROR(npy_file(npy_dict("<i8", "(1797,)"), ""),
                   "holds 0 bytes of data but shape (1797,) of int64 needs 14376");
}

TEST(NpyReader, RefusesTrailingBytes) {
  EXPECT_NPY_ERROR(npy_file(npy_dict("<f4", "(2, 3)"), le_bytes(kSix) + "x"),
                   "holds 25 bytes of data but shape (2, 3) of float32 needs only 24 (trailing bytes");
}

TEST(NpyReader, RefusesZeroDimensionalArray) {
  EXPECT_NPY_ERROR(npy_file(npy_dict("<f4", "()"), le_bytes(std::vector<float>{1.0f})),
                   "0-d array (shape ()): bnorm needs at least one dimension");
}

// --- .npy: writing ------------------------------------------------------------

TEST(NpyWriter, RoundTripsThroughReader) {
  TempDir dir;
  const std::string path = dir.file("w.npy");
  const std::vector<std::int64_t> shape = {3, 1, 2};
  write_npy_f32(path, shape, kSix);
  const NpyArray a = read_npy(path);
  EXPECT_EQ(a.dtype, NpyDType::f32);
  EXPECT_EQ(a.shape, shape);
  EXPECT_EQ(a.to_float(), kSix);

  // NumPy's own layout: version 1.0, data aligned to 64 bytes, header ends in '\n'.
  const std::string bytes = read_file(path);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const std::size_t header_end = bytes.size() - 4 * kSix.size();
  EXPECT_EQ(header_end % 64, 0u);
  EXPECT_EQ(bytes[header_end - 1], '\n');
  EXPECT_NE(bytes.find("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 1, 2), }"), std::string::npos);

  const std::vector<std::int64_t> one_d = {6};
  write_npy_f32(path, one_d, kSix);
  EXPECT_NE(read_file(path).find("'shape': (6,)"), std::string::npos);
  EXPECT_EQ(read_npy(path).shape, one_d);
}

TEST(NpyWriter, RefusesInconsistentShapes) {
  TempDir dir;
  const std::string path = dir.file("w.npy");
  const std::vector<std::int64_t> wrong = {4, 2}, none = {}, negative = {-1, 6};
  EXPECT_FILE_ERROR(write_npy_f32(path, wrong, kSix), path, "shape (4, 2) has 8 elements but 6 values were given");
  EXPECT_FILE_ERROR(write_npy_f32(path, none, kSix), path, "0-d");
  EXPECT_FILE_ERROR(write_npy_f32(path, negative, kSix), path, "negative dimension");
  EXPECT_FALSE(std::filesystem::exists(path));
}

// NumPy itself reads what bnorm writes, and bnorm reads what NumPy writes
// (np.save, and format version 2.0 through np.lib.format).
TEST(NpyWriter, InteroperatesWithNumpy) {
  if (std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 has no numpy";
  TempDir dir;
  const std::vector<std::int64_t> shape = {2, 3};
  write_npy_f32(dir.file("bnorm.npy"), shape, kSix);
  const std::string script =
      "import numpy as np, sys\n"
      "d = sys.argv[1]\n"
      "a = np.load(d + '/bnorm.npy')\n"
      "assert a.dtype == np.float32 and a.shape == (2, 3), (a.dtype, a.shape)\n"
      "assert a.ravel().tolist() == np.array([1.5, -2.0, 0.25, 3e10, -0.0, 7.0], np.float32).tolist(), a\n"
      "np.save(d + '/f8.npy', np.arange(12, dtype=np.float64).reshape(3, 4) / 4)\n"
      "np.save(d + '/u1.npy', np.arange(250, 256, dtype=np.uint8))\n"
      "np.save(d + '/i8.npy', np.array([-3, 1 << 40], dtype=np.int64))\n"
      "np.save(d + '/i4.npy', np.array([[-7], [8]], dtype=np.int32))\n"
      "with open(d + '/v2.npy', 'wb') as f:\n"
      "    np.lib.format.write_array(f, np.ones((2, 2), np.float32), version=(2, 0))\n";
  write_file(dir.file("check.py"), script);
  ASSERT_EQ(std::system(("/usr/bin/python3 " + dir.file("check.py") + " " + dir.path().string()).c_str()), 0)
      << "NumPy refused bnorm's file, or could not write its own";

  const NpyArray f8 = read_npy(dir.file("f8.npy"));
  EXPECT_EQ(f8.dtype, NpyDType::f64);
  EXPECT_EQ(f8.shape, (std::vector<std::int64_t>{3, 4}));
  EXPECT_EQ(f8.to_float()[5], 1.25f);
  EXPECT_EQ(read_npy(dir.file("u1.npy")).to_int64(), (std::vector<std::int64_t>{250, 251, 252, 253, 254, 255}));
  EXPECT_EQ(read_npy(dir.file("i8.npy")).to_int64(), (std::vector<std::int64_t>{-3, std::int64_t{1} << 40}));
  EXPECT_EQ(read_npy(dir.file("i4.npy")).to_int64(), (std::vector<std::int64_t>{-7, 8}));
  const NpyArray v2 = read_npy(dir.file("v2.npy"));
  EXPECT_EQ(v2.shape, (std::vector<std::int64_t>{2, 2}));
  EXPECT_EQ(v2.to_float(), (std::vector<float>{1, 1, 1, 1}));
  EXPECT_EQ(read_file(dir.file("v2.npy"))[6], 2) << "the fixture should be version 2.0";
}

// --- CSV: good files -----------------------------------------------------------

#define EXPECT_CSV_ERROR(text, fragment) EXPECT_FILE_ERROR(parse_csv(text, "t.csv"), "t.csv", fragment)

TEST(CsvReader, ReadsTable) {
  const CsvTable t = parse_csv("sepal_length,species\n5.1,setosa\n4.9,virginica\n", "t.csv");
  EXPECT_EQ(t.header, (std::vector<std::string>{"sepal_length", "species"}));
  EXPECT_EQ(t.rows, 2);
  EXPECT_EQ(t.cols(), 2);
  EXPECT_EQ(t.cells, (std::vector<std::string>{"5.1", "setosa", "4.9", "virginica"}));
  EXPECT_EQ(t.line, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(t.cell(1, 1), "virginica");
  EXPECT_EQ(t.column("species"), 1);
  EXPECT_EQ(t.column("petal_width"), -1);
  EXPECT_DOUBLE_EQ(csv_number(t, 0, 0, "t.csv"), 5.1);
  EXPECT_THROW(t.cell(2, 0), Error);
  EXPECT_THROW(t.cell(0, -1), Error);
}

TEST(CsvReader, HandlesQuotesAndKeepsLineNumbers) {
  const std::string text =
      "name,\"note, with comma\",x\n"
      "\"a \"\"b\"\"\",\"two\nlines\",1\n"
      "  \"c\"  ,d,2\n"
      "e,\"\",3\n";
  EXPECT_CSV_ERROR(text, "line 5, column 2 ('note, with comma'): empty cell");
  const CsvTable t = parse_csv(text.substr(0, text.rfind("e,")) + "\"three\n\nline\",f,3\n", "t.csv");
  EXPECT_EQ(t.header[1], "note, with comma");
  ASSERT_EQ(t.rows, 3);
  EXPECT_EQ(t.cell(0, 0), "a \"b\"");
  EXPECT_EQ(t.cell(0, 1), "two\nlines");
  EXPECT_EQ(t.cell(1, 0), "c");
  EXPECT_EQ(t.cell(2, 0), "three\n\nline");
  EXPECT_EQ(t.line, (std::vector<std::int64_t>{2, 4, 5}));
  // A row after the multi-line ones reports the line it is really on.
  EXPECT_CSV_ERROR(text.substr(0, text.rfind("e,")) + "\"x\ny\",1,2\n1,2\n", "line 7 has 2 fields, the header has 3");
}

TEST(CsvReader, AcceptsCrlfBomBlankLinesAndSpaces) {
  const CsvTable t = parse_csv("\xEF\xBB\xBF a , b\r\n\r\n 1 ,\t2 \r\n   \r\n3,4\r\n\r\n\n", "t.csv");
  EXPECT_EQ(t.header, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(t.cells, (std::vector<std::string>{"1", "2", "3", "4"}));
  EXPECT_EQ(t.line, (std::vector<std::int64_t>{3, 5}));

  const CsvTable no_newline = parse_csv("\n\nx\n7", "t.csv");
  EXPECT_EQ(no_newline.header, std::vector<std::string>{"x"});
  EXPECT_EQ(no_newline.cells, std::vector<std::string>{"7"});
  EXPECT_EQ(no_newline.line, std::vector<std::int64_t>{4});
}

TEST(CsvReader, ReadsPlainAndGzippedFiles) {
  TempDir dir;
  const std::string text = "f1,f2,label\n0.5,1,cat\n-2,3e2,dog\n";
  write_file(dir.file("d.csv"), text);
  write_gzip_file(dir.file("d.csv.gz"), text);
  for (const char* file : {"d.csv", "d.csv.gz"}) {
    const CsvTable t = read_csv(dir.file(file));
    EXPECT_EQ(t.rows, 2) << file;
    EXPECT_EQ(t.cell(1, 2), "dog") << file;
    EXPECT_DOUBLE_EQ(csv_number(t, 1, 1, file), 300.0) << file;
  }
  EXPECT_FILE_ERROR(read_csv(dir.file("missing.csv")), dir.file("missing.csv"), "cannot open");
  write_file(dir.file("ragged.csv"), "a,b\n1,2\n3\n");
  EXPECT_FILE_ERROR(read_csv(dir.file("ragged.csv")), dir.file("ragged.csv"), "line 3 has 1 fields, the header has 2");
}

TEST(CsvReader, ParsesNumbers) {
  const CsvTable t = parse_csv("v\n+7\n-2.5e3\n.5\n5.\n1e-400\n0\n", "t.csv");
  const std::vector<double> expected = {7.0, -2500.0, 0.5, 5.0, 0.0, 0.0};
  for (std::int64_t r = 0; r < t.rows; ++r)
    EXPECT_EQ(csv_number(t, r, 0, "t.csv"), expected[static_cast<std::size_t>(r)]) << t.cell(r, 0);
}

TEST(CsvReader, RefusesNonNumbersNamingLineAndColumn) {
  const CsvTable t = parse_csv("a,b\n1,2\n3,abc\n4,1.2.3\n5,0x10\n6,\"3 4\"\n7,+-1\n8,+\n", "t.csv");
  EXPECT_FILE_ERROR(csv_number(t, 1, 1, "t.csv"), "t.csv", "line 3, column 2 ('b'): 'abc' is not a number");
  for (std::int64_t r = 2; r < t.rows; ++r)
    EXPECT_FILE_ERROR(csv_number(t, r, 1, "t.csv"), "t.csv",
                      "line " + std::to_string(r + 2) + ", column 2 ('b'): '" + t.cell(r, 1) + "' is not a number");
}

TEST(CsvReader, RefusesNonFiniteNumbers) {
  const CsvTable t = parse_csv("x\nnan\nNaN\n-inf\nInfinity\nINF\n+inf\n1e999\n", "t.csv");
  for (std::int64_t r = 0; r < t.rows; ++r)
    EXPECT_FILE_ERROR(csv_number(t, r, 0, "t.csv"), "t.csv",
                      "line " + std::to_string(r + 2) + ", column 1 ('x'): non-finite value '" + t.cell(r, 0) + "'");
}

TEST(CsvReader, TellsIntegerLiterals) {
  for (const char* s : {"3", "-2", "+7", "007", "0"}) EXPECT_TRUE(csv_is_integer(s)) << s;
  for (const char* s : {"3.0", "1e3", "", "+", "-", "3 ", "abc", "--1", "0x1"}) EXPECT_FALSE(csv_is_integer(s)) << s;
}

// --- CSV: refusals ---------------------------------------------------------------

TEST(CsvReader, RefusesEmptyFile) {
  for (const char* text : {"", "\n\n  \n", "\xEF\xBB\xBF", "\r\n"}) EXPECT_CSV_ERROR(text, "empty file");
}

TEST(CsvReader, RefusesHeaderOnly) {
  EXPECT_CSV_ERROR("a,b\n", "line 1: header only, no data rows");
  EXPECT_CSV_ERROR("\n\na,b\n\n\n", "line 3: header only, no data rows");
}

TEST(CsvReader, RefusesBadColumnNames) {
  EXPECT_CSV_ERROR("a,,c\n1,2,3\n", "line 1, column 2: empty column name in the header");
  EXPECT_CSV_ERROR("a,b,\"  \"\n1,2,3\n", "line 1, column 3: empty column name in the header");
  EXPECT_CSV_ERROR("a,b, a\n1,2,3\n", "line 1, column 3: duplicate column name 'a' (also column 1)");
}

TEST(CsvReader, RefusesRaggedRows) {
  const std::string header = "a,b,c,d,e\n";
  const std::string row = "1,2,3,4,5\n";
  EXPECT_CSV_ERROR(header + row + row + "\n" + row + row + row + "1,2,3,4\n", "line 8 has 4 fields, the header has 5");
  EXPECT_CSV_ERROR(header + row + row + row + row + row + "1,2,3,4\n", "line 7 has 4 fields, the header has 5");
  EXPECT_CSV_ERROR(header + "1,2,3,4,5,6\n", "line 2 has 6 fields, the header has 5");
}

TEST(CsvReader, RefusesEmptyCells) {
  EXPECT_CSV_ERROR("sepal_length,sepal_width,petal_width\n1,2,3\n4,5,6\n\n7,8, \n",
                   "line 5, column 3 ('petal_width'): empty cell");
  EXPECT_CSV_ERROR("a,b\n,1\n", "line 2, column 1 ('a'): empty cell");
}

TEST(CsvReader, RefusesUnterminatedQuote) {
  EXPECT_CSV_ERROR("a,b\n1,2\n3,\"four\n5,6\n", "line 3, column 2: unterminated quoted field");
  EXPECT_CSV_ERROR("\"a,b\n", "line 1, column 1: unterminated quoted field");
}

TEST(CsvReader, RefusesTextAfterClosingQuote) {
  EXPECT_CSV_ERROR("a,b\n1,\"2\"x\n", "line 2, column 2: unexpected 'x' after a closing quote");
}

TEST(CsvReader, RefusesNulBytes) {
  EXPECT_CSV_ERROR(std::string("a,b\n1,2\n3\0,4\n", 13), "line 3: NUL byte");
  // UTF-16 text is full of NULs.
  EXPECT_CSV_ERROR(std::string("a\0,\0b\0\n\0", 8), "line 1: NUL byte (binary data, or UTF-16 text?");
}

// --- the datasets of scripts/sklearn_datasets.py ---------------------------------

// The script's output is what users will feed bnorm first: every file must go
// through the readers, with the shapes and labels the script promises.
TEST(SklearnDatasets, LoadThroughTheReaders) {
  TempDir dir;
  const std::string script = std::string(BNORM_FIXTURE_DIR) + "/../../scripts/sklearn_datasets.py";
  const int status = std::system(("/usr/bin/python3 " + script + " " + dir.path().string() + " >/dev/null").c_str());
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << "no python3-sklearn";
  ASSERT_EQ(WEXITSTATUS(status), 0);

  const auto check_csv = [&](const std::string& file, std::int64_t rows, std::int64_t features,
                             const std::string& label, std::size_t label_values) {
    const std::string path = dir.file(file);
    const CsvTable t = read_csv(path);
    EXPECT_EQ(t.rows, rows) << file;
    EXPECT_EQ(t.cols(), features + 1) << file;
    EXPECT_EQ(t.column(label), features) << file;
    std::set<std::string> labels;
    for (std::int64_t r = 0; r < t.rows && t.cols() == features + 1; ++r) {
      for (std::int64_t c = 0; c < features; ++c) (void)csv_number(t, r, c, path);
      labels.insert(t.cell(r, features));
    }
    EXPECT_EQ(labels.size(), label_values) << file;
    return labels;
  };
  EXPECT_EQ(check_csv("breast_cancer.csv", 569, 30, "diagnosis", 2), (std::set<std::string>{"benign", "malignant"}));
  EXPECT_EQ(check_csv("iris.csv", 150, 4, "species", 3), (std::set<std::string>{"setosa", "versicolor", "virginica"}));
  const CsvTable iris = read_csv(dir.file("iris.csv"));
  EXPECT_EQ(iris.header[0], "sepal_length");
  EXPECT_EQ(iris.header[3], "petal_width");
  if (std::filesystem::exists(dir.file("diabetes.csv"))) {
    const CsvTable d = read_csv(dir.file("diabetes.csv"));
    EXPECT_EQ(d.rows, 442);
    EXPECT_EQ(d.column("progression"), 10);
    for (std::int64_t r = 0; r < d.rows; ++r) EXPECT_GT(csv_number(d, r, 10, "diabetes.csv"), 0.0);
  }

  const NpyArray x = read_npy(dir.file("digits_X.npy"));
  const NpyArray y = read_npy(dir.file("digits_y.npy"));
  EXPECT_EQ(x.dtype, NpyDType::f32);
  EXPECT_EQ(x.shape, (std::vector<std::int64_t>{1797, 1, 8, 8}));
  EXPECT_EQ(y.dtype, NpyDType::i64);
  EXPECT_EQ(y.shape, std::vector<std::int64_t>{1797});
  const std::vector<std::int64_t> labels = y.to_int64();
  EXPECT_EQ(std::set<std::int64_t>(labels.begin(), labels.end()).size(), 10u);
  for (float v : x.to_float()) ASSERT_TRUE(v >= 0.0f && v <= 16.0f) << v;
}

}  // namespace
}  // namespace bnorm

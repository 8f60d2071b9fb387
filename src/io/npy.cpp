#include "bnorm/io/npy.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <type_traits>

#include "bnorm/error.hpp"
#include "bnorm/io/atomic_file.hpp"
#include "bnorm/io/idx.hpp"

namespace bnorm {
namespace {

// read_npy hands the file's own buffer to NpyArray::data instead of copying it.
static_assert(std::is_same_v<std::uint8_t, unsigned char>);

constexpr unsigned char kMagic[] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
constexpr std::size_t kMagicSize = sizeof kMagic;

// np.save of a large array writes a header of a few hundred bytes; anything
// over this is not a file we want, however the version field reads.
constexpr std::size_t kMaxHeader = std::size_t{1} << 20;

struct Descr {
  std::string_view text;
  NpyDType dtype;
};
// '|u1' is what NumPy writes for bytes; '<u1' is the same thing spelled with
// an order, which other writers use.
constexpr Descr kDescrs[] = {{"<f4", NpyDType::f32}, {"<f8", NpyDType::f64}, {"|u1", NpyDType::u8},
                             {"<u1", NpyDType::u8},  {"<i4", NpyDType::i32}, {"<i8", NpyDType::i64}};
constexpr const char* kAccepted = "'<f4' float32, '<f8' float64, '|u1' uint8, '<i4' int32, '<i8' int64";

// Python's repr of a shape tuple, so messages and written headers look like NumPy's.
std::string shape_text(std::span<const std::int64_t> shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

template <class U>
U load_le(const unsigned char* p) {
  U v = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i) v |= static_cast<U>(static_cast<U>(p[i]) << (8 * i));
  return v;
}

// The header is a Python dict literal. It is not evaluated, only read: three
// keys, string / bool / tuple-of-int values, whitespace anywhere between tokens.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& name) : text_(text), name_(name) {}

  void parse(std::string& descr, bool& fortran, std::vector<std::int64_t>& shape) {
    bool seen_descr = false, seen_fortran = false, seen_shape = false;
    skip_space();
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') break;
      const std::string key = string_literal();
      skip_space();
      expect(':');
      skip_space();
      if (key == "descr") {
        once(seen_descr, key);
        if (peek() == '[')
          fail_file(name_,
                    "structured dtypes (a list in 'descr') are not supported; bnorm reads " + std::string(kAccepted));
        descr = string_literal();
      } else if (key == "fortran_order") {
        once(seen_fortran, key);
        fortran = boolean();
      } else if (key == "shape") {
        once(seen_shape, key);
        shape = tuple();
      } else {
        malformed("unexpected key '" + key + "' (a .npy header has 'descr', 'fortran_order' and 'shape')");
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
      } else if (peek() != '}') {
        malformed("expected ',' or '}'");
      }
    }
    ++pos_;
    skip_space();
    if (pos_ != text_.size()) malformed("unexpected text after the closing '}'");
    if (!seen_descr) malformed("no 'descr' key");
    if (!seen_fortran) malformed("no 'fortran_order' key");
    if (!seen_shape) malformed("no 'shape' key");
  }

 private:
  std::string_view text_;
  const std::string& name_;
  std::size_t pos_ = 0;

  [[noreturn]] void malformed(const std::string& what) const {
    // The header may be binary junk; show a printable excerpt only.
    std::string shown;
    for (char c : text_.substr(0, 120)) shown += (c >= 0x20 && c < 0x7f) ? c : '?';
    if (text_.size() > 120) shown += "...";
    fail_file(name_,
              "malformed .npy header: " + what + " at character " + std::to_string(pos_) + " of \"" + shown + "\"");
  }
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }
  void expect(char c) {
    if (peek() != c) malformed(std::string("expected '") + c + "'");
    ++pos_;
  }
  void once(bool& seen, const std::string& key) {
    if (seen) malformed("key '" + key + "' appears twice");
    seen = true;
  }
  std::string string_literal() {
    const char quote = peek();
    if (quote != '\'' && quote != '"') malformed("expected a quoted string");
    const std::size_t end = text_.find(quote, pos_ + 1);
    if (end == std::string_view::npos) malformed("unterminated string");
    std::string s(text_.substr(pos_ + 1, end - pos_ - 1));
    if (s.find('\\') != std::string::npos) malformed("escape sequence in a string");
    pos_ = end + 1;
    return s;
  }
  bool boolean() {
    for (const auto& [word, value] : {std::pair{std::string_view("True"), true}, {std::string_view("False"), false}}) {
      if (text_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        return value;
      }
    }
    malformed("expected True or False");
  }
  std::int64_t dimension() {
    if (peek() == '-') malformed("negative dimension");
    if (peek() < '0' || peek() > '9') malformed("expected a dimension (a non-negative integer)");
    std::int64_t v = 0;
    while (peek() >= '0' && peek() <= '9') {
      const int digit = peek() - '0';
      if (v > (std::numeric_limits<std::int64_t>::max() - digit) / 10) malformed("dimension too large");
      v = v * 10 + digit;
      ++pos_;
    }
    if (peek() == 'L') ++pos_;  // Python 2's long literal, as old NumPy wrote shapes
    return v;
  }
  std::vector<std::int64_t> tuple() {
    expect('(');
    std::vector<std::int64_t> dims;
    bool trailing_comma = false;
    skip_space();
    while (peek() != ')') {
      dims.push_back(dimension());
      skip_space();
      trailing_comma = peek() == ',';
      if (trailing_comma) {
        ++pos_;
        skip_space();
      } else if (peek() != ')') {
        malformed("expected ',' or ')' in the shape");
      }
    }
    // (5) is a parenthesised int in Python, not a tuple: NumPy would refuse it.
    if (dims.size() == 1 && !trailing_comma) malformed("shape (n) must be written (n,)");
    ++pos_;
    return dims;
  }
};

// Everything but the data: validates the preamble and header against the
// file's size, and returns where the data starts.
NpyArray parse_header(std::span<const unsigned char> bytes, const std::string& name, std::size_t& data_offset) {
  if (bytes.size() < kMagicSize || std::memcmp(bytes.data(), kMagic, kMagicSize) != 0)
    fail_file(name, "not a NumPy .npy file (the magic string \\x93NUMPY is missing)");
  if (bytes.size() < kMagicSize + 2) fail_file(name, "truncated .npy file: no format version");
  const unsigned major = bytes[6], minor = bytes[7];
  if (minor != 0 || major < 1 || major > 3)
    fail_file(name, "unsupported .npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                        " (bnorm reads 1.0, 2.0 and 3.0)");
  const std::size_t prefix = major == 1 ? 10 : 12;
  if (bytes.size() < prefix) fail_file(name, "truncated .npy file: no header length");
  const std::uint64_t header_len = major == 1 ? load_le<std::uint16_t>(&bytes[8]) : load_le<std::uint32_t>(&bytes[8]);
  if (header_len > bytes.size() - prefix)
    fail_file(name, "header length " + std::to_string(header_len) + " points past the end of the file (" +
                        std::to_string(bytes.size()) + " bytes)");
  if (header_len > kMaxHeader)
    fail_file(name,
              "header length " + std::to_string(header_len) + " is over the limit of " + std::to_string(kMaxHeader));

  const std::string_view text(reinterpret_cast<const char*>(&bytes[prefix]), static_cast<std::size_t>(header_len));
  std::string descr;
  bool fortran = false;
  NpyArray a;
  HeaderParser(text, name).parse(descr, fortran, a.shape);

  std::optional<NpyDType> dtype;
  for (const Descr& d : kDescrs)
    if (d.text == descr) dtype = d.dtype;
  if (!dtype) {
    if (!descr.empty() && descr[0] == '>')
      fail_file(name,
                "big-endian dtype '" + descr + "' is not supported: save with arr.astype('<" + descr.substr(1) + "')");
    fail_file(name, "unsupported dtype '" + descr + "' (bnorm reads " + kAccepted + ")");
  }
  a.dtype = *dtype;
  if (fortran)
    fail_file(name, "fortran_order is True (column-major data is not supported): save np.ascontiguousarray(arr)");
  if (a.shape.empty()) fail_file(name, "0-d array (shape ()): bnorm needs at least one dimension");

  // The nonzero dimensions' product must fit an int64 even when a zero makes
  // the array empty, so numel() cannot overflow on the way to that zero.
  std::uint64_t needed = npy_itemsize(a.dtype);
  for (std::int64_t d : a.shape) {
    if (d == 0) continue;
    const auto u = static_cast<std::uint64_t>(d);
    if (needed > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) / u)
      fail_file(name, "shape " + shape_text(a.shape) + " of " + npy_dtype_name(a.dtype) + " overflows a 64-bit size");
    needed *= u;
  }
  if (std::find(a.shape.begin(), a.shape.end(), 0) != a.shape.end()) needed = 0;
  data_offset = prefix + static_cast<std::size_t>(header_len);
  const std::uint64_t held = bytes.size() - data_offset;
  if (held != needed) {
    const std::string what = "holds " + std::to_string(held) + " bytes of data but shape " + shape_text(a.shape) +
                             " of " + npy_dtype_name(a.dtype) + " needs ";
    if (held < needed) fail_file(name, what + std::to_string(needed) + " (truncated)");
    fail_file(name, what + "only " + std::to_string(needed) +
                        " (trailing bytes: the header does not describe the whole file)");
  }
  return a;
}

}  // namespace

const char* npy_dtype_name(NpyDType dtype) {
  switch (dtype) {
    case NpyDType::f32:
      return "float32";
    case NpyDType::f64:
      return "float64";
    case NpyDType::u8:
      return "uint8";
    case NpyDType::i32:
      return "int32";
    case NpyDType::i64:
      return "int64";
  }
  return "unknown";
}

std::size_t npy_itemsize(NpyDType dtype) {
  switch (dtype) {
    case NpyDType::u8:
      return 1;
    case NpyDType::f32:
    case NpyDType::i32:
      return 4;
    case NpyDType::f64:
    case NpyDType::i64:
      return 8;
  }
  return 1;
}

std::int64_t NpyArray::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

bool NpyArray::is_integer() const { return dtype == NpyDType::u8 || dtype == NpyDType::i32 || dtype == NpyDType::i64; }

std::vector<float> NpyArray::to_float() const {
  const std::size_t n = data.size() / npy_itemsize(dtype);
  std::vector<float> out(n);
  const unsigned char* p = data.data();
  for (std::size_t i = 0; i < n; ++i) {
    switch (dtype) {
      case NpyDType::f32:
        out[i] = std::bit_cast<float>(load_le<std::uint32_t>(p + 4 * i));
        break;
      case NpyDType::f64: {
        const double v = std::bit_cast<double>(load_le<std::uint64_t>(p + 8 * i));
        // A finite double beyond float's range becomes an infinity the caller
        // refuses, rather than relying on an out-of-range conversion.
        constexpr float inf = std::numeric_limits<float>::infinity();
        out[i] = std::isfinite(v) && std::fabs(v) > std::numeric_limits<float>::max() ? (v > 0 ? inf : -inf)
                                                                                      : static_cast<float>(v);
        break;
      }
      case NpyDType::u8:
        out[i] = p[i];
        break;
      case NpyDType::i32:
        out[i] = static_cast<float>(static_cast<std::int32_t>(load_le<std::uint32_t>(p + 4 * i)));
        break;
      case NpyDType::i64:
        out[i] = static_cast<float>(static_cast<std::int64_t>(load_le<std::uint64_t>(p + 8 * i)));
        break;
    }
  }
  return out;
}

std::vector<std::int64_t> NpyArray::to_int64() const {
  if (!is_integer())
    throw Error(std::string("a ") + npy_dtype_name(dtype) +
                " array has no integer values (uint8, int32 or int64 needed)");
  const std::size_t n = data.size() / npy_itemsize(dtype);
  std::vector<std::int64_t> out(n);
  const unsigned char* p = data.data();
  for (std::size_t i = 0; i < n; ++i) {
    if (dtype == NpyDType::u8)
      out[i] = p[i];
    else if (dtype == NpyDType::i32)
      out[i] = static_cast<std::int32_t>(load_le<std::uint32_t>(p + 4 * i));
    else
      out[i] = static_cast<std::int64_t>(load_le<std::uint64_t>(p + 8 * i));
  }
  return out;
}

NpyArray parse_npy(std::span<const unsigned char> bytes, const std::string& name) {
  std::size_t offset = 0;
  NpyArray a = parse_header(bytes, name, offset);
  a.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(offset), bytes.end());
  return a;
}

NpyArray read_npy(const std::string& path) {
  // 16 GiB; the buffer read is the file's own size (or the gzip stream's
  // output, grown as it inflates), and it becomes the array's data in place.
  std::vector<std::uint8_t> bytes = read_file_maybe_gzip(path, std::uint64_t{1} << 34);
  std::size_t offset = 0;
  NpyArray a = parse_header(bytes, path, offset);
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(offset));
  a.data = std::move(bytes);
  return a;
}

void write_npy_f32(const std::string& path, std::span<const std::int64_t> shape, std::span<const float> values) {
  if (shape.empty()) fail_file(path, "cannot write a 0-d array: give at least one dimension");
  std::uint64_t n = 1;
  for (std::int64_t d : shape) {
    if (d < 0) fail_file(path, "negative dimension in shape " + shape_text(shape));
    if (d != 0 && n > std::numeric_limits<std::uint64_t>::max() / static_cast<std::uint64_t>(d))
      fail_file(path, "shape " + shape_text(shape) + " overflows");
    n *= static_cast<std::uint64_t>(d);
  }
  if (n != values.size())
    fail_file(path, "shape " + shape_text(shape) + " has " + std::to_string(n) + " elements but " +
                        std::to_string(values.size()) + " values were given");

  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_text(shape) + ", }";
  // NumPy pads the header with spaces and a newline so the data starts on a
  // 64-byte boundary; a reader can then map the data aligned.
  const auto padded = [&](std::size_t prefix) { return (prefix + dict.size() + 1 + 63) / 64 * 64; };
  const bool v1 = padded(10) - 10 <= 0xFFFF;
  const std::size_t prefix = v1 ? 10 : 12;
  const std::size_t total = padded(prefix);
  dict.append(total - prefix - dict.size() - 1, ' ');
  dict += '\n';

  std::string out(reinterpret_cast<const char*>(kMagic), kMagicSize);
  out += static_cast<char>(v1 ? 1 : 2);
  out += '\0';
  const std::size_t len = dict.size();
  for (std::size_t i = 0; i < prefix - 8; ++i) out += static_cast<char>((len >> (8 * i)) & 0xFF);
  out += dict;
  out.reserve(out.size() + 4 * values.size());
  for (float v : values) {
    const auto bits = std::bit_cast<std::uint32_t>(v);
    for (int i = 0; i < 4; ++i) out += static_cast<char>((bits >> (8 * i)) & 0xFF);
  }
  write_file_atomically(path, out);
}

}  // namespace bnorm

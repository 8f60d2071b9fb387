#include "bnorm/io/idx.hpp"

#include <zlib.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "bnorm/error.hpp"
#include "read_bounded.hpp"

namespace bnorm {
namespace {

constexpr std::uint8_t kUnsignedByte = 0x08;
constexpr std::uint8_t kFloat32 = 0x0D;

std::vector<std::uint8_t> gunzip(const std::vector<std::uint8_t>& packed, const std::string& path,
                                 std::uint64_t max_bytes) {
  z_stream z{};
  if (inflateInit2(&z, 15 + 16) != Z_OK) fail_file(path, "cannot initialise zlib");
  z.next_in = const_cast<Bytef*>(packed.data());
  z.avail_in = static_cast<uInt>(packed.size());
  std::vector<std::uint8_t> out;
  std::uint8_t chunk[1 << 16];
  int rc = Z_OK;
  while (true) {
    if (rc == Z_STREAM_END) {
      // gzip allows several members back to back (cat a.gz b.gz); anything
      // else after a member is damage, refused like trailing bytes elsewhere.
      if (z.avail_in == 0) break;
      if (z.avail_in < 2 || z.next_in[0] != 0x1f || z.next_in[1] != 0x8b) {
        inflateEnd(&z);
        fail_file(path, std::to_string(z.avail_in) + " bytes of trailing data after the gzip stream");
      }
      inflateReset(&z);
    }
    z.next_out = chunk;
    z.avail_out = sizeof chunk;
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      const std::string why = rc == Z_BUF_ERROR
                                  ? "gzip stream is truncated"
                                  : "corrupt gzip data (" + std::string(z.msg ? z.msg : "zlib error") + ")";
      inflateEnd(&z);
      fail_file(path, why);
    }
    const std::size_t produced = sizeof chunk - z.avail_out;
    if (out.size() + produced > max_bytes) {
      inflateEnd(&z);
      fail_file(path, "decompressed data exceeds the limit of " + std::to_string(max_bytes) + " bytes");
    }
    out.insert(out.end(), chunk, chunk + produced);
  }
  inflateEnd(&z);
  return out;
}

std::uint32_t read_be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

}  // namespace

std::vector<std::uint8_t> read_file_maybe_gzip(const std::string& path, std::uint64_t max_bytes) {
  // The compressed file itself is bounded by the same limit; zlib's ratio
  // cannot exceed about 1032:1, so the decompressed cap does the real work.
  return maybe_gunzip(io_detail::read_bounded<std::vector<std::uint8_t>>(path, max_bytes), path, max_bytes);
}

std::vector<std::uint8_t> maybe_gunzip(std::vector<std::uint8_t> bytes, const std::string& name,
                                       std::uint64_t max_bytes) {
  if (bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b) return gunzip(bytes, name, max_bytes);
  return bytes;
}

IdxArray parse_idx(const std::vector<std::uint8_t>& file, const std::string& path) {
  if (file.size() < 4) fail_file(path, "too short for an IDX header (" + std::to_string(file.size()) + " bytes)");
  if (file[0] != 0 || file[1] != 0) fail_file(path, "not an IDX file: the magic number must start with two zero bytes");
  IdxArray a;
  a.type_code = file[2];
  if (a.type_code != kUnsignedByte && a.type_code != kFloat32)
    fail_file(path, "unsupported IDX data type 0x" + std::string(1, "0123456789abcdef"[a.type_code >> 4]) +
                        std::string(1, "0123456789abcdef"[a.type_code & 15]) +
                        " (bnorm reads 0x08 unsigned byte and 0x0d float)");
  const std::size_t ndim = file[3];
  if (ndim < 1 || ndim > 4)
    fail_file(path, "IDX header declares " + std::to_string(ndim) + " dimensions (expected 1 to 4)");
  const std::size_t header = 4 + 4 * ndim;
  if (file.size() < header) fail_file(path, "truncated IDX header: needs " + std::to_string(header) + " bytes");
  const std::size_t elem = a.type_code == kFloat32 ? 4 : 1;
  std::uint64_t count = 1;
  for (std::size_t i = 0; i < ndim; ++i) {
    const std::uint32_t d = read_be32(&file[4 + 4 * i]);
    if (d == 0) fail_file(path, "IDX dimension " + std::to_string(i) + " is 0");
    if (count > std::numeric_limits<std::uint64_t>::max() / d / elem) fail_file(path, "IDX dimensions overflow");
    count *= d;
    a.dims.push_back(d);
  }
  const std::uint64_t expected = count * elem;
  const std::uint64_t actual = file.size() - header;
  if (actual != expected)
    fail_file(path, "IDX header promises " + std::to_string(expected) + " data bytes but the file holds " +
                        std::to_string(actual) + (actual < expected ? " (truncated)" : " (trailing data)"));
  const std::uint8_t* data = file.data() + header;
  if (a.type_code == kUnsignedByte) {
    a.bytes.assign(data, data + count);
  } else {
    a.floats.resize(static_cast<std::size_t>(count));
    for (std::uint64_t i = 0; i < count; ++i) {
      const std::uint32_t bits = read_be32(data + 4 * i);
      const float v = std::bit_cast<float>(bits);
      if (!std::isfinite(v)) fail_file(path, "non-finite value at element " + std::to_string(i));
      a.floats[i] = v;
    }
  }
  return a;
}

IdxArray read_idx(const std::string& path) { return parse_idx(read_file_maybe_gzip(path), path); }

}  // namespace bnorm

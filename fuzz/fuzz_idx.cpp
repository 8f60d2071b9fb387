// libFuzzer target: arbitrary bytes as an IDX file, gzipped or not, through
// the same path read_idx takes after reading the file. Only bnorm::Error may
// escape. The decompression cap is lowered so a bomb is refused quickly
// instead of tripping libFuzzer's memory limit.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "bnorm/error.hpp"
#include "bnorm/io/idx.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto raw = bnorm::maybe_gunzip(std::vector<std::uint8_t>(data, data + size), "fuzz.idx", 64u << 20);
    const bnorm::IdxArray a = bnorm::parse_idx(raw, "fuzz.idx");
    (void)a.dims.size();
  } catch (const bnorm::Error&) {
  }
  return 0;
}

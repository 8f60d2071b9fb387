// libFuzzer target: arbitrary bytes as a .npy file, gzipped or not, through
// the path read_npy takes, then the data converted as a dataset loader would.
// Only bnorm::Error may escape.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "bnorm/error.hpp"
#include "bnorm/io/idx.hpp"
#include "bnorm/io/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto raw = bnorm::maybe_gunzip(std::vector<std::uint8_t>(data, data + size), "fuzz.npy", 64u << 20);
    const bnorm::NpyArray a = bnorm::parse_npy(raw, "fuzz.npy");
    if (static_cast<std::int64_t>(a.to_float().size()) != a.numel()) __builtin_trap();
    if (a.is_integer()) (void)a.to_int64();
  } catch (const bnorm::Error&) {
  }
  return 0;
}

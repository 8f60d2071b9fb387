// libFuzzer target: arbitrary bytes as a CSV file, gzipped or not, through
// the path read_csv takes, then every cell through csv_number and
// csv_is_integer as a dataset loader would. Only bnorm::Error may escape.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "bnorm/error.hpp"
#include "bnorm/io/csv.hpp"
#include "bnorm/io/idx.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto raw = bnorm::maybe_gunzip(std::vector<std::uint8_t>(data, data + size), "fuzz.csv", 64u << 20);
    const bnorm::CsvTable t =
        bnorm::parse_csv(std::string_view(reinterpret_cast<const char*>(raw.data()), raw.size()), "fuzz.csv");
    for (std::int64_t r = 0; r < t.rows; ++r) {
      for (std::int64_t c = 0; c < t.cols(); ++c) {
        // Each cell on its own: one refused cell must not hide the others.
        try {
          (void)bnorm::csv_number(t, r, c, "fuzz.csv");
        } catch (const bnorm::Error&) {
        }
        (void)bnorm::csv_is_integer(t.cell(r, c));
      }
    }
  } catch (const bnorm::Error&) {
  }
  return 0;
}

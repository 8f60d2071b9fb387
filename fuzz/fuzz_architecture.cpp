// libFuzzer target: arbitrary text as the "architecture" JSON of a model file.
// Invalid JSON is skipped (the JSON parser is not ours to fuzz); a parsed
// document must build a model or throw bnorm::Error. The state cap mirrors
// what load_model passes for a file of a few MB, so a fuzzed width cannot ask
// for gigabytes.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "bnorm/error.hpp"
#include "bnorm/nn/model.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  try {
    bnorm::Model m = bnorm::Model::from_architecture(j, std::int64_t{32} << 20);
    (void)m.output_shape();
    (void)m.architecture().dump();
  } catch (const bnorm::Error&) {
  }
  return 0;
}

// libFuzzer target: arbitrary bytes as a model file. The loader must either
// return a model or throw bnorm::Error; anything else (a crash, a sanitizer
// report, another exception type, a huge allocation) is a finding.
#include <cstddef>
#include <cstdint>
#include <string>

#include "bnorm/error.hpp"
#include "bnorm/io/model_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    bnorm::LoadedModel m = bnorm::load_model_from_bytes(bytes, "fuzz.safetensors");
    (void)m.model.num_layers();
  } catch (const bnorm::Error&) {
  }
  return 0;
}

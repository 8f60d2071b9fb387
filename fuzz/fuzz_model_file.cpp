// libFuzzer target: arbitrary bytes as a model file and as a checkpoint (the
// same safetensors reader and model checks, plus the checkpoint's own). Each
// loader must either return or throw bnorm::Error; anything else (a crash, a
// sanitizer report, another exception type, a huge allocation) is a finding.
#include <cstddef>
#include <cstdint>
#include <string>

#include "bnorm/error.hpp"
#include "bnorm/io/checkpoint.hpp"
#include "bnorm/io/model_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    bnorm::LoadedModel m = bnorm::load_model_from_bytes(bytes, "fuzz.safetensors");
    (void)m.model.num_layers();
  } catch (const bnorm::Error&) {
  }
  try {
    bnorm::Checkpoint c = bnorm::load_checkpoint_from_bytes(bytes, "fuzz.ckpt");
    (void)c.position.order.size();
  } catch (const bnorm::Error&) {
  }
  return 0;
}

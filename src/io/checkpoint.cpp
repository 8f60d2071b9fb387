#include "bnorm/io/checkpoint.hpp"

#include <cstring>
#include <fstream>

#include "bnorm/error.hpp"
#include "bnorm/io/safetensors.hpp"
#include "bnorm/json_number.hpp"
#include "metadata.hpp"

namespace bnorm {
namespace {

constexpr const char* kOptimizerPrefix = "optimizer.";
constexpr const char* kOrderTensor = "trainer.order";

// A metadata field as T, or an Error naming the file (the caller's catch
// turns nlohmann's own exceptions into the same).
template <class T>
T number_at(const nlohmann::json& j, const char* key, const std::string& path) {
  if (const auto v = json_number<T>(j.at(key))) return *v;
  fail_file(path, std::string("checkpoint metadata \"") + key + "\" has the wrong type or is out of range");
}

nlohmann::json metadata_json(const SafetensorsFile& file, const std::string& key, const std::string& path) {
  return io_detail::metadata_json(file, key, path, "checkpoint metadata");
}

Checkpoint parse_checkpoint(const SafetensorsFile& file, const std::string& path) {
  io_detail::check_format_and_version(file, kCheckpointFormat, kCheckpointFormatVersion, "checkpoint", path);

  // The model part is checked by the model loader itself: same rules, one place.
  SafetensorsFile model_part;
  model_part.metadata = file.metadata;
  model_part.metadata["format"] = kModelFormat;
  model_part.metadata["version"] = kModelFormatVersion;
  std::map<std::string, const SafeTensor*> optimizer_tensors;
  const SafeTensor* order = nullptr;
  for (const auto& [name, t] : file.tensors) {
    if (name.rfind(kOptimizerPrefix, 0) == 0)
      optimizer_tensors[name.substr(std::strlen(kOptimizerPrefix))] = &t;
    else if (name == kOrderTensor)
      order = &t;
    else
      model_part.tensors.emplace_back(name, t);
  }
  Checkpoint c{load_model_from_safetensors(model_part, path), {}, {}, {}, {}};

  try {
    c.config = metadata_json(file, "config", path);
    if (!c.config.is_object()) fail_file(path, "checkpoint metadata \"config\" is not an object");
    const nlohmann::json opt = metadata_json(file, "optimizer", path);
    c.optimizer_name = opt.at("name").get<std::string>();
    c.optimizer_state.steps = number_at<std::int64_t>(opt, "steps", path);
    const auto names = opt.at("buffers").get<std::vector<std::string>>();
    if (names.size() != optimizer_tensors.size())
      fail_file(path, "checkpoint lists " + std::to_string(names.size()) + " optimizer buffers but holds " +
                          std::to_string(optimizer_tensors.size()));
    for (const std::string& n : names) {
      const auto it = optimizer_tensors.find(n);
      if (it == optimizer_tensors.end()) fail_file(path, "missing tensor '" + std::string(kOptimizerPrefix) + n + "'");
      if (it->second->dtype != "F32" || it->second->shape.size() != 1)
        fail_file(path, "tensor '" + std::string(kOptimizerPrefix) + n + "' must be a 1-D F32 tensor");
      c.optimizer_state.buffers.emplace_back(n, it->second->to_f32());
    }
    try {
      c.position = position_from_json(metadata_json(file, "position", path));
    } catch (const Error& e) {
      if (std::string(e.what()).rfind(path + ":", 0) == 0) throw;
      fail_file(path, std::string("checkpoint metadata is incomplete or mistyped: ") + e.what());
    }
  } catch (const nlohmann::json::exception& e) {
    fail_file(path, std::string("checkpoint metadata is incomplete or mistyped: ") + e.what());
  }
  if (!order) fail_file(path, "missing tensor '" + std::string(kOrderTensor) + "'");
  if (order->dtype != "I64" || order->shape.size() != 1)
    fail_file(path, "tensor '" + std::string(kOrderTensor) + "' must be a 1-D I64 tensor");
  c.position.order.resize(order->bytes.size() / 8);
  if (!c.position.order.empty()) std::memcpy(c.position.order.data(), order->bytes.data(), order->bytes.size());
  return c;
}

}  // namespace

void save_checkpoint(const std::string& path, Model& model, const Preprocessing& prep, const nlohmann::json& training,
                     const nlohmann::json& config, const Optimizer& optimizer, const TrainPosition& position,
                     const ModelTask& task) {
  SafetensorsFile file = model_to_safetensors(model, prep, training, task);
  file.metadata["format"] = kCheckpointFormat;
  file.metadata["version"] = kCheckpointFormatVersion;
  file.metadata["config"] = config.dump();
  const OptimizerState state = optimizer.export_state();
  nlohmann::json names = nlohmann::json::array();
  for (const auto& [name, values] : state.buffers) {
    names.push_back(name);
    file.tensors.emplace_back(kOptimizerPrefix + name,
                              make_f32_tensor(Shape{static_cast<std::int64_t>(values.size())}, values.data()));
  }
  file.metadata["optimizer"] =
      nlohmann::json{{"name", optimizer.name()}, {"steps", state.steps}, {"buffers", names}}.dump();
  file.metadata["position"] = position_to_json(position).dump();
  file.tensors.emplace_back(
      kOrderTensor, make_i64_tensor(Shape{static_cast<std::int64_t>(position.order.size())}, position.order.data()));
  write_safetensors(path, file);
}

Checkpoint load_checkpoint(const std::string& path) { return parse_checkpoint(read_safetensors(path), path); }

Checkpoint load_checkpoint_from_bytes(const std::string& bytes, const std::string& name) {
  return parse_checkpoint(parse_safetensors(bytes, name), name);
}

}  // namespace bnorm

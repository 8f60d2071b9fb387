#include "bnorm/io/model_file.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <set>

#include "bnorm/error.hpp"
#include "bnorm/io/safetensors.hpp"
#include "bnorm/json_number.hpp"
#include "metadata.hpp"

namespace bnorm {
namespace {

using io_detail::metadata_json;

bool json_floats(const nlohmann::json& list, std::vector<float>& out) {
  if (!list.is_array()) return false;
  for (const auto& v : list) {
    const auto f = json_number<float>(v);  // get<float> would be UB for 1e300
    if (!f) return false;
    out.push_back(*f);
  }
  return true;
}

bool json_strings(const nlohmann::json& j, const char* key, std::vector<std::string>& out) {
  if (!j.contains(key)) return true;
  if (!j.at(key).is_array()) return false;
  for (const auto& v : j.at(key)) {
    if (!v.is_string()) return false;
    out.push_back(v.get<std::string>());
  }
  return true;
}

InputNormalization parse_input_normalization(const nlohmann::json& j, std::int64_t features, const std::string& path) {
  InputNormalization n;
  if (!j.is_object() || !j.contains("mode") || !j.at("mode").is_string() || !j.contains("mean") || !j.contains("std") ||
      !json_floats(j.at("mean"), n.mean) || !json_floats(j.at("std"), n.std))
    fail_file(path,
              "metadata \"input_normalization\" needs a string \"mode\" and number lists \"mean\" and \"std\" "
              "(each value within float range)");
  n.mode = j.at("mode").get<std::string>();
  // Files from before tables existed normalized image bytes only.
  n.divisor = n.mode == "pixel" || n.mode == "global" ? 255.0f : 1.0f;
  if (j.contains("divisor")) {
    const auto d = json_number<float>(j.at("divisor"));
    if (!d) fail_file(path, "metadata \"input_normalization\" has a \"divisor\" that is not a number in float range");
    n.divisor = *d;
  }
  try {
    n.validate(features);
  } catch (const Error& e) {
    fail_file(path, e.what());
  }
  return n;
}

ModelTask parse_task(const SafetensorsFile& file, std::int64_t outputs, const std::string& path) {
  ModelTask task;
  if (!file.metadata.count("task")) return task;
  const nlohmann::json j = metadata_json(file, "task", path);
  if (!j.is_object() || !j.contains("kind") || !j.at("kind").is_string() ||
      (j.at("kind") != "classify" && j.at("kind") != "regress"))
    fail_file(path, "metadata \"task\" needs \"kind\": \"classify\" or \"regress\"");
  task.kind = j.at("kind") == "classify" ? Task::classify : Task::regress;
  if (!json_strings(j, "class_names", task.class_names) || !json_strings(j, "target_names", task.target_names) ||
      !json_strings(j, "feature_names", task.feature_names))
    fail_file(path, "metadata \"task\": class_names, target_names and feature_names must be lists of strings");
  if (j.contains("integer_labels")) {
    if (!j.at("integer_labels").is_boolean())
      fail_file(path, "metadata \"task\": integer_labels must be true or false");
    task.integer_labels = j.at("integer_labels").get<bool>();
  }
  if (j.contains("target_column")) {
    if (!j.at("target_column").is_string()) fail_file(path, "metadata \"task\": target_column must be a string");
    task.target_column = j.at("target_column").get<std::string>();
  }
  const auto names = task.kind == Task::classify ? task.class_names.size() : task.target_names.size();
  if (names != 0 && static_cast<std::int64_t>(names) != outputs)
    fail_file(path, "metadata \"task\" names " + std::to_string(names) + " outputs but the model has " +
                        std::to_string(outputs));
  return task;
}

TargetNormalization parse_target_normalization(const SafetensorsFile& file, const ModelTask& task, std::int64_t outputs,
                                               const std::string& path) {
  TargetNormalization t;
  if (task.kind != Task::regress) return t;
  const nlohmann::json j = metadata_json(file, "target_normalization", path);
  if (!j.is_object() || !j.contains("mean") || !j.contains("std") || !json_floats(j.at("mean"), t.mean) ||
      !json_floats(j.at("std"), t.std))
    fail_file(path, "metadata \"target_normalization\" needs number lists \"mean\" and \"std\"");
  try {
    t.validate(outputs);
  } catch (const Error& e) {
    fail_file(path, e.what());
  }
  return t;
}

}  // namespace

ModelTask ModelTask::of(const Dataset& data) {
  ModelTask t;
  t.kind = data.task;
  t.class_names = data.class_names;
  t.integer_labels = !data.class_names.empty() &&
                     std::all_of(data.class_names.begin(), data.class_names.end(), [](const std::string& n) {
                       std::int64_t v = 0;
                       const auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), v);
                       return ec == std::errc() && end == n.data() + n.size();
                     });
  t.target_names = data.target_names;
  t.feature_names = data.feature_names;
  return t;
}

void save_model(const std::string& path, Model& model, const Preprocessing& prep, const nlohmann::json& training,
                const ModelTask& task) {
  write_safetensors(path, model_to_safetensors(model, prep, training, task));
}

SafetensorsFile model_to_safetensors(Model& model, const Preprocessing& prep, const nlohmann::json& training,
                                     const ModelTask& task) {
  const InputNormalization& norm = prep.input;
  SafetensorsFile file;
  file.metadata["format"] = kModelFormat;
  file.metadata["version"] = kModelFormatVersion;
  file.metadata["architecture"] = model.architecture().dump();
  file.metadata["input_normalization"] =
      nlohmann::json{{"mode", norm.mode}, {"divisor", norm.divisor}, {"mean", norm.mean}, {"std", norm.std}}.dump();
  nlohmann::json task_json = {{"kind", task_name(task.kind)}};
  if (!task.class_names.empty()) task_json["class_names"] = task.class_names;
  if (task.integer_labels) task_json["integer_labels"] = true;
  if (!task.target_names.empty()) task_json["target_names"] = task.target_names;
  if (!task.feature_names.empty()) task_json["feature_names"] = task.feature_names;
  if (!task.target_column.empty()) task_json["target_column"] = task.target_column;
  file.metadata["task"] = task_json.dump();
  if (task.kind == Task::regress)
    file.metadata["target_normalization"] = nlohmann::json{{"mean", prep.target.mean}, {"std", prep.target.std}}.dump();
  file.metadata["training"] = training.dump();
  for (const StateEntry& e : model.state_dict()) {
    if (e.dtype == StateEntry::DType::f32) {
      const auto* v = static_cast<const float*>(e.data);
      for (std::int64_t i = 0; i < numel(e.shape); ++i)
        if (!std::isfinite(v[i]))
          throw Error("refusing to save a model whose tensor '" + e.name + "' holds a non-finite value");
      file.tensors.emplace_back(e.name, make_f32_tensor(e.shape, v));
    } else {
      file.tensors.emplace_back(e.name, make_i64_tensor(e.shape, static_cast<const std::int64_t*>(e.data)));
    }
  }
  return file;
}

LoadedModel load_model(const std::string& path) { return load_model_from_safetensors(read_safetensors(path), path); }

LoadedModel load_model_from_bytes(const std::string& bytes, const std::string& name) {
  return load_model_from_safetensors(parse_safetensors(bytes, name), name);
}

LoadedModel load_model_from_safetensors(const SafetensorsFile& file, const std::string& path) {
  io_detail::check_format_and_version(file, kModelFormat, kModelFormatVersion, "model", path);

  // Every byte of the model's state must be in the file, so the file's size
  // bounds what the architecture may allocate. The slack lets a slightly
  // inconsistent file reach the precise error (missing tensor, wrong width)
  // instead of this coarse one, while a few-KB file still cannot ask for GiBs.
  constexpr std::int64_t kSlackBytes = 16 << 20;
  std::int64_t file_tensor_bytes = kSlackBytes;
  for (const auto& [name, t] : file.tensors) file_tensor_bytes += static_cast<std::int64_t>(t.bytes.size());
  Model model = [&] {
    try {
      return Model::from_architecture(metadata_json(file, "architecture", path), file_tensor_bytes);
    } catch (const Error& e) {
      const std::string what = e.what();
      if (what.rfind(path + ":", 0) == 0) throw;
      fail_file(path, "bad architecture: " + what);
    }
  }();

  std::set<std::string> expected;
  for (const StateEntry& e : model.state_dict()) {
    expected.insert(e.name);
    const SafeTensor& t = file.at(e.name, path);
    const std::string want_dtype = e.dtype == StateEntry::DType::f32 ? "F32" : "I64";
    if (t.dtype != want_dtype)
      fail_file(path, "tensor '" + e.name + "' has dtype " + t.dtype + ", expected " + want_dtype);
    if (t.shape != e.shape)
      fail_file(path, "tensor '" + e.name + "' has shape " + shape_str(t.shape) + ", the architecture needs " +
                          shape_str(e.shape));
    std::memcpy(e.data, t.bytes.data(), t.bytes.size());
    if (e.dtype == StateEntry::DType::f32) {
      const auto* v = static_cast<const float*>(e.data);
      const std::int64_t n = numel(e.shape);
      const bool is_var = e.name.size() >= 11 && e.name.ends_with("running_var");
      for (std::int64_t i = 0; i < n; ++i) {
        if (!std::isfinite(v[i]))
          fail_file(path, "tensor '" + e.name + "' holds a non-finite value at index " + std::to_string(i));
        if (is_var && v[i] < 0.0f)
          fail_file(path, "tensor '" + e.name + "' holds a negative variance at index " + std::to_string(i));
      }
    } else if (*static_cast<const std::int64_t*>(e.data) < 0) {
      fail_file(path, "tensor '" + e.name + "' is negative");
    }
  }
  for (const auto& [name, t] : file.tensors)
    if (!expected.count(name)) fail_file(path, "unexpected tensor '" + name + "' (not part of the architecture)");

  const InputNormalization norm =
      parse_input_normalization(metadata_json(file, "input_normalization", path), numel(model.input_shape()), path);
  const std::int64_t outputs = numel(model.output_shape());
  ModelTask task = parse_task(file, outputs, path);
  TargetNormalization target = parse_target_normalization(file, task, outputs, path);
  nlohmann::json training = nlohmann::json::object();
  if (file.metadata.count("training")) training = metadata_json(file, "training", path);
  return {std::move(model), norm, std::move(target), std::move(task), std::move(training)};
}

}  // namespace bnorm

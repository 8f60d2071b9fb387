#pragma once
// A trained model on disk: safetensors whose tensor names and shapes are the
// state_dict of the equivalent torch.nn.Sequential, so PyTorch can load it.
// __metadata__ carries what a state_dict lacks:
//   format "bnorm-model", version "1",
//   architecture         JSON: Model::architecture()
//   input_normalization  JSON: {"mode", "divisor", "mean", "std"} (divisor absent:
//                        255 for the image modes pixel/global, as files before it)
//   task                 JSON: {"kind": "classify"|"regress", "class_names",
//                        "integer_labels", "target_names", "feature_names",
//                        "target_column"}; absent: a classifier without names
//   target_normalization JSON: {"mean", "std"} (regression only)
//   training             JSON: how it was trained (informational)
#include <nlohmann/json.hpp>
#include <string>

#include "bnorm/io/safetensors.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/train/dataset.hpp"

namespace bnorm {

inline constexpr const char* kModelFormat = "bnorm-model";
inline constexpr const char* kModelFormatVersion = "1";

// What the model predicts, as its training data named it, so that predict
// can answer in the data's own terms ("setosa", a price in dollars).
struct ModelTask {
  Task kind = Task::classify;
  std::vector<std::string> class_names;    // classify: one per output, or empty
  bool integer_labels = false;             // the class names are integers as the data wrote them
  std::vector<std::string> target_names;   // regress: one per output, or empty
  std::vector<std::string> feature_names;  // CSV: the columns the model reads, in order
  std::string target_column;               // CSV: where the targets were

  static ModelTask of(const Dataset& data);  // names and kind from a training set
};

struct LoadedModel {
  Model model;
  InputNormalization input_normalization;
  TargetNormalization target_normalization;  // regression only
  ModelTask task;
  nlohmann::json training;

  Preprocessing preprocessing() const { return {input_normalization, target_normalization}; }
};

// Refuses (Error) a model holding a non-finite value: the loader would refuse
// the file, and a failed run must not replace the last good one.
void save_model(const std::string& path, Model& model, const Preprocessing& prep, const nlohmann::json& training,
                const ModelTask& task = {});
// What save_model writes, before writing (a checkpoint adds to it).
SafetensorsFile model_to_safetensors(Model& model, const Preprocessing& prep, const nlohmann::json& training,
                                     const ModelTask& task = {});
// Refuses a file that is not exactly a bnorm model of a known version: every
// tensor of the rebuilt model present with the right dtype and shape, nothing
// extra, finite values, running variances >= 0.
LoadedModel load_model(const std::string& path);
// The same checks on a file's bytes already in memory; name is what errors
// call it. load_model reads the file and calls this (so does the fuzzer).
LoadedModel load_model_from_bytes(const std::string& bytes, const std::string& name);
// The same checks on a parsed file (a checkpoint reuses them for its model part).
LoadedModel load_model_from_safetensors(const SafetensorsFile& file, const std::string& name);

}  // namespace bnorm

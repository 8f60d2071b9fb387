#pragma once
// A trained model on disk: safetensors whose tensor names and shapes are the
// state_dict of the equivalent torch.nn.Sequential, so PyTorch can load it.
// __metadata__ carries what a state_dict lacks:
//   format "bnorm-model", version "1",
//   architecture         JSON: Model::architecture()
//   input_normalization  JSON: {"mode", "mean", "std"}
//   training             JSON: how it was trained (informational)
#include <string>

#include <nlohmann/json.hpp>

#include "bnorm/io/dataset.hpp"
#include "bnorm/io/safetensors.hpp"
#include "bnorm/nn/model.hpp"

namespace bnorm {

inline constexpr const char* kModelFormat = "bnorm-model";
inline constexpr const char* kModelFormatVersion = "1";

struct LoadedModel {
  Model model;
  InputNormalization input_normalization;
  nlohmann::json training;
};

// Refuses (Error) a model holding a non-finite value: the loader would refuse
// the file, and a failed run must not replace the last good one.
void save_model(const std::string& path, Model& model, const InputNormalization& norm,
                const nlohmann::json& training);
// What save_model writes, before writing (a checkpoint adds to it).
SafetensorsFile model_to_safetensors(Model& model, const InputNormalization& norm, const nlohmann::json& training);
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

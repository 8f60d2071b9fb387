#pragma once
// A training checkpoint: a model file (same tensors, same checks) plus what a
// resumed run needs to continue bit for bit. It is a safetensors file with
//   the model's state_dict tensors, as in a model file;
//   "optimizer.<buffer>" F32 tensors (SGD velocity; Adam m and v);
//   "trainer.order" I64: the current epoch's permutation of the training set;
// and __metadata__ with format "bnorm-checkpoint", version "1",
// architecture, input_normalization and training as in a model file, and
//   config     JSON: the full training configuration (the caller's; opaque here)
//   optimizer  JSON: {"name", "steps", "buffers": [names]}
//   position   JSON: TrainPosition except order, as position_to_json writes it
//              (train/checkpoint_state.hpp owns that schema).
// Written with write_file_atomically like a model file.
#include <nlohmann/json.hpp>
#include <string>

#include "bnorm/io/model_file.hpp"
#include "bnorm/train/checkpoint_state.hpp"
#include "bnorm/train/optimizer.hpp"

namespace bnorm {

inline constexpr const char* kCheckpointFormat = "bnorm-checkpoint";
inline constexpr const char* kCheckpointFormatVersion = "1";

struct Checkpoint {
  LoadedModel model;  // validated exactly as load_model validates a model file
  nlohmann::json config;
  std::string optimizer_name;
  OptimizerState optimizer_state;  // not yet checked against an optimizer: import_state does that
  TrainPosition position;          // checked against the data by Trainer::fit
};

void save_checkpoint(const std::string& path, Model& model, const Preprocessing& prep, const nlohmann::json& training,
                     const nlohmann::json& config, const Optimizer& optimizer, const TrainPosition& position,
                     const ModelTask& task = {});
// Throws Error naming the file for anything that is not a complete,
// consistent checkpoint of a known version.
Checkpoint load_checkpoint(const std::string& path);
Checkpoint load_checkpoint_from_bytes(const std::string& bytes, const std::string& name);

}  // namespace bnorm

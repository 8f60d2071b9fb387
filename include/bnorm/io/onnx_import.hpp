#pragma once
// An ONNX graph as a bnorm model: the sequential graphs torch.onnx.export
// writes for an nn.Sequential of Linear, Conv2d, BatchNorm1d/2d, ReLU, Tanh,
// Sigmoid, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten and Dropout
// (opsets 9 to 15), and the graphs `bnorm export` writes. Weights and
// running statistics come from the initializers. Anything a bnorm model
// cannot hold is refused, naming the node, its op type and what is wrong.
//
// Built only with ONNX (CMake option BNORM_ONNX); the header names no ONNX
// type, so the CLI compiles either way.
#include <string>
#include <vector>

#include "bnorm/io/model_file.hpp"

namespace bnorm {

struct OnnxImportOptions {
  // The outputs are class scores: predict prints labels and eval measures
  // accuracy. Otherwise the model's outputs are raw values (stored as a
  // regression with the identity target normalization), which predict
  // writes as they are.
  bool classify = false;
};

struct OnnxImport {
  LoadedModel model;
  // What the import changed on the way, one line each, for the user to read:
  // the momentum conversion, a BN taken as affine=false, a bias dropped.
  std::vector<std::string> notes;
};

// Converts the serialized ModelProto in bytes; name is what errors call it.
// Throws Error for bytes that are not an ONNX model or a graph bnorm cannot
// represent.
OnnxImport onnx_import_bytes(const std::string& bytes, const std::string& name, const OnnxImportOptions& options);

// Reads onnx_path, converts it and writes model_path atomically: on any
// failure nothing is written. Returns the notes.
std::vector<std::string> import_onnx(const std::string& onnx_path, const std::string& model_path,
                                     const OnnxImportOptions& options);

}  // namespace bnorm

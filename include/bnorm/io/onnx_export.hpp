#pragma once
// A bnorm model as an ONNX graph, for serving it with any ONNX runtime. The
// graph takes what `bnorm predict` takes, raw values (0..255 for images) of
// shape (N, model input shape...), and gives what it gives: logits, or for a
// regression model predictions in the targets' units. So the input and target
// normalization stored in the model file become nodes of the graph.
//
// Built only with ONNX (CMake option BNORM_ONNX); the header names no ONNX
// type, so the CLI compiles either way.
#include <string>

#include "bnorm/io/model_file.hpp"

namespace bnorm {

struct OnnxExportOptions {
  bool fold_bn = false;  // merge each BN after a Linear/Conv2d into it first (nn/fold.hpp)
  int opset = 15;        // ONNX operator set, 9..15
};

inline constexpr int kOnnxMinOpset = 9;
inline constexpr int kOnnxMaxOpset = 15;

// The serialized ModelProto, already accepted by onnx::checker. name is what
// errors call the result. Throws Error for a model ONNX cannot express here
// (a batch norm without running statistics normalizes with each batch's own)
// or an opset out of range.
std::string onnx_model_bytes(LoadedModel& loaded, const OnnxExportOptions& options, const std::string& name);

// Loads model_path, converts it and writes onnx_path atomically: on any
// failure nothing is written.
void export_onnx(const std::string& model_path, const std::string& onnx_path, const OnnxExportOptions& options);

}  // namespace bnorm

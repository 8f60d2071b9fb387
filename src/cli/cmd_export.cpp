// bnorm export: a model as an ONNX graph, to serve with any ONNX runtime.
#include <cstdio>
#include <memory>

#include "bnorm/error.hpp"
#include "bnorm/io/onnx_export.hpp"
#include "commands.hpp"

namespace bnorm::cli {
namespace {

struct ExportOptions {
  std::string model;
  std::string onnx;
  OnnxExportOptions onnx_options;
};

void run_export(const ExportOptions& o) {
#ifdef BNORM_HAVE_ONNX
  export_onnx(o.model, o.onnx, o.onnx_options);
  std::printf("exported %s to %s (ONNX opset %d%s)\n", o.model.c_str(), o.onnx.c_str(), o.onnx_options.opset,
              o.onnx_options.fold_bn ? ", batch norms folded" : "");
#else
  (void)o;
  throw Error(
      "export: this bnorm was built without ONNX, so it cannot write .onnx files; install libonnx-dev "
      "(Debian) and rebuild with scripts/setup.sh");
#endif
}

}  // namespace

Runner add_export_command(CLI::App& app) {
  auto o = std::make_shared<ExportOptions>();
  CLI::App* cmd =
      app.add_subcommand("export", "Write a model as ONNX: raw inputs in, the same outputs as 'bnorm predict' out");
  cmd->add_option("--model", o->model, "Model file written by 'bnorm train' or 'bnorm fold'")->required();
  cmd->add_option("--onnx", o->onnx, "ONNX file to write")->required();
  cmd->add_flag("--fold-bn", o->onnx_options.fold_bn,
                "Fold each batch norm that follows a Linear or Conv2d into its weights first");
  cmd->add_option("--opset", o->onnx_options.opset, "ONNX operator set version")
      ->capture_default_str()
      ->check(CLI::Range(kOnnxMinOpset, kOnnxMaxOpset));
  return [o] { run_export(*o); };
}

}  // namespace bnorm::cli

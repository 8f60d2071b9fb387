// bnorm import: an ONNX graph (torch.onnx.export of an nn.Sequential, or
// bnorm export's own) as a bnorm model file.
#include <cstdio>
#include <memory>

#include "bnorm/error.hpp"
#include "bnorm/io/onnx_import.hpp"
#include "commands.hpp"

namespace bnorm::cli {
namespace {

struct ImportOptions {
  std::string onnx;
  std::string out;
  OnnxImportOptions import_options;
};

void run_import(const ImportOptions& o) {
#ifdef BNORM_HAVE_ONNX
  for (const std::string& note : import_onnx(o.onnx, o.out, o.import_options)) std::printf("%s\n", note.c_str());
  std::printf("imported %s to %s (%s)\n", o.onnx.c_str(), o.out.c_str(),
              o.import_options.classify ? "outputs are class scores" : "raw outputs");
#else
  (void)o;
  throw Error(
      "import: this bnorm was built without ONNX, so it cannot read .onnx files; install libonnx-dev "
      "(Debian) and rebuild with scripts/setup.sh");
#endif
}

}  // namespace

Runner add_import_command(CLI::App& app) {
  auto o = std::make_shared<ImportOptions>();
  CLI::App* cmd = app.add_subcommand(
      "import",
      "Read an ONNX model of a sequential network (e.g. torch.onnx.export of an nn.Sequential) as a bnorm model");
  cmd->add_option("--onnx", o->onnx, "ONNX file to read")->required();
  cmd->add_option("--out", o->out, "Model file to write (as 'bnorm train' writes)")->required();
  cmd->add_flag("--classify", o->import_options.classify,
                "The outputs are class scores: predict prints labels, eval measures accuracy (default: raw "
                "outputs, written as they are)");
  return [o] { run_import(*o); };
}

}  // namespace bnorm::cli

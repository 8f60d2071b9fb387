// bnorm fold: a model for inference with each Linear/Conv → BN pair merged.
#include <cstdio>
#include <memory>

#include "bnorm/io/model_file.hpp"
#include "bnorm/nn/fold.hpp"
#include "commands.hpp"

namespace bnorm::cli {
namespace {

struct FoldOptions {
  std::string model;
  std::string out;
};

void run_fold(const FoldOptions& o) {
  LoadedModel loaded = load_model(o.model);
  Model folded = fold_batchnorm(loaded.model);
  nlohmann::json training = loaded.training;
  training["folded_from"] = o.model;
  save_model(o.out, folded, loaded.input_normalization, training);
  std::printf("folded %zu layers into %zu; saved %s\n", loaded.model.num_layers(), folded.num_layers(), o.out.c_str());
}

}  // namespace

Runner add_fold_command(CLI::App& app) {
  auto o = std::make_shared<FoldOptions>();
  CLI::App* cmd = app.add_subcommand(
      "fold",
      "Fold each batch norm that follows a Linear or Conv2d into its weights: same eval outputs, faster inference");
  cmd->add_option("--model", o->model, "Model file written by 'bnorm train'")->required();
  cmd->add_option("--out", o->out, "Folded model file to write")->required();
  return [o] { run_fold(*o); };
}

}  // namespace bnorm::cli

#include "data_source.hpp"

#include "bnorm/error.hpp"
#include "bnorm/io/dataset.hpp"
#include "bnorm/io/table_dataset.hpp"

namespace bnorm::cli {
namespace {

bool is_npy(const std::string& path) { return path.ends_with(".npy"); }

std::optional<Task> forced_task(const std::string& task) {
  if (task == "classify") return Task::classify;
  if (task == "regress") return Task::regress;
  return std::nullopt;
}

// A table (CSV, or NPY features with their targets) as options say.
TableData load_table(const std::string& features, const std::string& targets, const DataFlags& f, const ModelTask* like,
                     const char* targets_flag) {
  TableOptions options;
  options.target = f.target;
  options.task = forced_task(f.task);
  options.like = like;
  if (is_npy(features)) {
    if (targets.empty())
      throw Error(features + ": NumPy features need their targets too: pass " + targets_flag + " y.npy");
    if (!f.target.empty())
      throw Error("--target names a CSV column; NumPy targets come from " + std::string(targets_flag));
    return load_npy_dataset(features, targets, options);
  }
  if (!targets.empty())
    throw Error(std::string(targets_flag) +
                " applies to NumPy features; a CSV file holds its targets in a column (--target)");
  return load_csv_dataset(features, options);
}

}  // namespace

std::string DataFlags::kind() const {
  if (!tables()) return "idx";
  return is_npy(train) ? "npy" : "csv";
}

void add_training_data_flags(CLI::App* cmd, DataFlags& f) {
  f.data = kDefaultDataDir;
  auto* data = cmd->add_option("--data", f.data, "Directory with the IDX files (train-images-idx3-ubyte.gz, ...)")
                   ->capture_default_str();
  auto* train = cmd->add_option("--train", f.train,
                                "Training data instead of --data: a CSV file (plain or .gz) with a header row, or a "
                                "NumPy .npy array of features (N, ...) with --train-targets");
  cmd->add_option("--test", f.test, "Test data in the same form as --train (default: hold out --val-fraction)");
  cmd->add_option("--train-targets", f.train_targets,
                  "NumPy targets for --train X.npy: integers classify, floats regress");
  cmd->add_option("--test-targets", f.test_targets, "NumPy targets for --test X.npy");
  cmd->add_option("--target", f.target, "CSV: the target column's name (default: the last column)");
  cmd->add_option("--task", f.task,
                  "auto: classify integer or text targets, regress other numbers; or force classify or regress")
      ->check(CLI::IsMember({"auto", "classify", "regress"}))
      ->capture_default_str();
  cmd->add_option("--val-fraction", f.val_fraction,
                  "Without --test: hold out this seeded random fraction of --train as the test set (default 0.2)");
  data->excludes(train);
}

void add_test_data_flags(CLI::App* cmd, DataFlags& f) {
  f.data = kDefaultDataDir;
  auto* data = cmd->add_option("--data", f.data, "Directory with the t10k IDX files")->capture_default_str();
  auto* test =
      cmd->add_option("--test", f.test,
                      "Test data instead of --data, as the model was trained: CSV (the target column the model "
                      "was trained on, or --target), or NumPy X.npy with --test-targets");
  cmd->add_option("--test-targets", f.test_targets, "NumPy targets for --test X.npy");
  cmd->add_option("--target", f.target, "CSV: the target column (default: the one the model was trained on)");
  data->excludes(test);
}

TrainingData load_training_data(const DataFlags& f, std::uint64_t seed) {
  TrainingData out;
  const bool explicit_fraction = f.val_fraction >= 0.0;
  if (!f.tables()) {
    for (const auto& [value, flag] : {std::pair{f.test, "--test"},
                                      {f.train_targets, "--train-targets"},
                                      {f.test_targets, "--test-targets"},
                                      {f.target, "--target"}})
      if (!value.empty()) throw Error(std::string(flag) + " applies to --train CSV or NumPy data, not IDX --data");
    if (explicit_fraction) throw Error("--val-fraction applies to --train data; IDX --data has its own test set");
    if (f.task == "regress") throw Error("--task regress: IDX image labels are classes");
    out.train = load_fashion_mnist(f.data, IdxSplit::train);
    out.test = load_fashion_mnist(f.data, IdxSplit::test);
    out.task = ModelTask::of(out.train);
    out.task_rule = "IDX labels are classes";
    return out;
  }
  TableData train = load_table(f.train, f.train_targets, f, nullptr, "--train-targets");
  out.task = ModelTask::of(train.data);
  out.task.target_column = train.target_column;
  out.task_rule = train.task_rule;
  if (!f.test.empty()) {
    if (explicit_fraction)
      throw Error("--val-fraction holds out part of --train when there is no --test; drop one of them");
    out.test = load_table(f.test, f.test_targets, f, &out.task, "--test-targets").data;
    out.train = std::move(train.data);
    return out;
  }
  if (!f.test_targets.empty()) throw Error("--test-targets needs --test");
  const double fraction = explicit_fraction ? f.val_fraction : 0.2;
  if (fraction == 0.0) {
    out.train = std::move(train.data);
    return out;
  }
  ValidationSplit split = split_validation(train.data, fraction, seed);
  out.validation = {{"fraction", fraction},
                    {"seed", seed},
                    {"examples", split.validation.count},
                    {"of", train.data.count},
                    {"rule",
                     "Fisher-Yates permutation of the rows from the seed's split stream; its first "
                     "round(fraction * rows) rows, in file order, are the test set"}};
  if (split.train.task == Task::classify)
    for (std::int64_t k = 0; k < split.train.num_classes; ++k)
      if (std::find(split.train.labels.begin(), split.train.labels.end(), k) == split.train.labels.end())
        throw Error(f.train + ": class '" + split.train.class_names[static_cast<std::size_t>(k)] +
                    "' has no example left for training after holding out --val-fraction " + std::to_string(fraction));
  out.train = std::move(split.train);
  out.test = std::move(split.validation);
  return out;
}

Dataset load_test_data(const DataFlags& f, const ModelTask& model_task) {
  if (f.test.empty()) {
    if (!f.test_targets.empty() || !f.target.empty()) throw Error("--test-targets and --target apply to --test data");
    return load_fashion_mnist(f.data, IdxSplit::test);
  }
  DataFlags flags = f;
  flags.task = task_name(model_task.kind);
  return load_table(f.test, f.test_targets, flags, &model_task, "--test-targets").data;
}

}  // namespace bnorm::cli

#pragma once
// Datasets from tables: CSV (a header row naming the columns, one of them the
// target) and NumPy .npy arrays (features X of shape (N, ...) and targets y).
// Every refusal names the file, and for CSV the line and column.
#include <optional>
#include <string>
#include <vector>

#include "bnorm/io/model_file.hpp"
#include "bnorm/train/dataset.hpp"

namespace bnorm {

struct TableOptions {
  // CSV: the target column's name; empty takes the last column (or, with
  // like, the column the model was trained on).
  std::string target;
  // Forced task; otherwise classify for integer or string targets and
  // regress for other numbers.
  std::optional<Task> task;
  // A test set follows what a model was trained on: the same feature columns
  // (by name, in any order), the same task and the training set's classes (a
  // label never seen in training is refused).
  const ModelTask* like = nullptr;
};

struct TableData {
  Dataset data;
  std::string target_column;  // CSV
  std::string task_rule;      // why this task, for the user: "target 'species' holds strings"
};

TableData load_csv_dataset(const std::string& path, const TableOptions& options = {});
TableData load_npy_dataset(const std::string& x_path, const std::string& y_path, const TableOptions& options = {});

// Features alone, for prediction. CSV: the model's feature columns by name
// (others, such as the target, are ignored); a model without names takes
// every column. NPY: an array (N, ...) whose example has `features` values.
Dataset load_csv_features(const std::string& path, const std::vector<std::string>& feature_names,
                          std::int64_t features);
Dataset load_npy_features(const std::string& path, std::int64_t features);

}  // namespace bnorm

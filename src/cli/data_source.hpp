#pragma once
// Where `bnorm train` and `bnorm eval` take their data from: Fashion-MNIST's
// IDX files (--data DIR, the default), a CSV table, or NumPy arrays. The
// flags are declared once here for both commands.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bnorm/io/model_file.hpp"
#include "bnorm/train/dataset.hpp"

namespace bnorm::cli {

struct DataFlags {
  std::string data;           // IDX directory
  std::string train;          // CSV or NPY features
  std::string test;           // likewise; eval's only input besides --data
  std::string train_targets;  // NPY targets
  std::string test_targets;
  std::string target;  // CSV target column
  std::string task = "auto";
  double val_fraction = -1.0;  // below 0: the default (0.2 for tables without --test)

  bool tables() const { return !train.empty(); }
  // IDX, csv or npy: what the user pointed at.
  std::string kind() const;
};

void add_training_data_flags(CLI::App* cmd, DataFlags& flags);
void add_test_data_flags(CLI::App* cmd, DataFlags& flags);

struct TrainingData {
  Dataset train, test;
  ModelTask task;                       // names and target column, for the model file
  std::string task_rule;                // why classify or regress
  nlohmann::json validation = nullptr;  // the held-out split, when one was made
};

// Loads the training and test sets. Without a test file, a table's
// training set gives up val_fraction of its examples (seeded) as the test set.
TrainingData load_training_data(const DataFlags& flags, std::uint64_t seed);
// A test set for a trained model: its classes and feature columns.
Dataset load_test_data(const DataFlags& flags, const ModelTask& model_task);

}  // namespace bnorm::cli

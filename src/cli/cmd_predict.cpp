#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>

#include "bnorm/error.hpp"
#include "bnorm/io/idx.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/io/npy.hpp"
#include "bnorm/io/table_dataset.hpp"
#include "commands.hpp"

namespace bnorm::cli {
namespace {

constexpr const char* kClassNames[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                       "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

struct PredictOptions {
  std::string model;
  std::string input;
  std::string output;
  std::int64_t limit = 0;
  bool batch_stats = false;
  bool json = false;
  int threads = 0;
};

// Rows of raw pixel values (0..255, as in the IDX files), one example per
// line, separated by spaces, tabs or commas; blank lines and '#' comments skipped.
std::vector<std::vector<float>> read_text_rows(const std::vector<std::uint8_t>& bytes, const std::string& path,
                                               std::int64_t features) {
  std::vector<std::vector<float>> rows;
  std::string text(bytes.begin(), bytes.end());
  std::size_t pos = 0;
  std::int64_t line_no = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    for (char& c : line)
      if (c == ',' || c == '\t' || c == '\r') c = ' ';
    const auto first = line.find_first_not_of(' ');
    if (first == std::string::npos || line[first] == '#') continue;
    std::vector<float> row;
    const char* p = line.c_str();
    while (true) {
      while (*p == ' ') ++p;
      if (!*p) break;
      char* next = nullptr;
      const float v = std::strtof(p, &next);
      if (next == p)
        fail_file(path, "line " + std::to_string(line_no) + ": '" + std::string(p).substr(0, 20) + "' is not a number");
      if (!std::isfinite(v)) fail_file(path, "line " + std::to_string(line_no) + ": non-finite value");
      row.push_back(v);
      // A line of millions of numbers is refused as soon as it is too long,
      // not after it has all been stored.
      if (static_cast<std::int64_t>(row.size()) > features)
        fail_file(path, "line " + std::to_string(line_no) + ": more than the " + std::to_string(features) +
                            " values an example has");
      p = next;
    }
    if (static_cast<std::int64_t>(row.size()) != features)
      fail_file(path, "line " + std::to_string(line_no) + ": expected " + std::to_string(features) + " values, got " +
                          std::to_string(row.size()));
    rows.push_back(std::move(row));
  }
  if (rows.empty()) fail_file(path, "holds no examples");
  return rows;
}

// A CSV table (the model's feature columns, by name), a NumPy array, an IDX
// file of unsigned-byte images (count, rows, cols) or text rows.
std::vector<std::vector<float>> read_examples(const std::string& path, const LoadedModel& loaded) {
  const std::int64_t features = numel(loaded.model.input_shape());
  if (path.ends_with(".csv") || path.ends_with(".csv.gz") || path.ends_with(".npy")) {
    const Dataset d = path.ends_with(".npy") ? load_npy_features(path, features)
                                             : load_csv_features(path, loaded.task.feature_names, features);
    if (d.count == 0) fail_file(path, "holds no examples");
    std::vector<std::vector<float>> rows(static_cast<std::size_t>(d.count));
    for (std::int64_t n = 0; n < d.count; ++n)
      rows[static_cast<std::size_t>(n)].assign(d.values.begin() + n * features, d.values.begin() + (n + 1) * features);
    return rows;
  }
  const auto bytes = read_file_maybe_gzip(path, std::uint64_t{1} << 32);
  if (bytes.size() >= 4 && bytes[0] == 0 && bytes[1] == 0) {
    const IdxArray a = parse_idx(bytes, path);
    if (a.dims.empty()) fail_file(path, "IDX file has no dimensions");
    std::int64_t per = 1;
    for (std::size_t i = 1; i < a.dims.size(); ++i) per *= a.dims[i];
    if (per != features)
      fail_file(path,
                "examples have " + std::to_string(per) + " values but the model takes " + std::to_string(features));
    std::vector<std::vector<float>> rows(static_cast<std::size_t>(a.dims[0]));
    for (std::int64_t n = 0; n < a.dims[0]; ++n) {
      auto& row = rows[static_cast<std::size_t>(n)];
      row.resize(static_cast<std::size_t>(features));
      for (std::int64_t f = 0; f < features; ++f) {
        const auto i = static_cast<std::size_t>(n * features + f);
        row[static_cast<std::size_t>(f)] = a.type_code == 0x08 ? static_cast<float>(a.bytes[i]) : a.floats[i];
      }
    }
    return rows;
  }
  return read_text_rows(bytes, path, features);
}

void run_predict(const PredictOptions& o) {
  apply_threads(o.threads);
  if (o.limit < 0) throw Error("--limit must be >= 0");
  LoadedModel loaded = load_model(o.model);
  const std::int64_t features = numel(loaded.model.input_shape());
  auto rows = read_examples(o.input, loaded);
  if (o.limit > 0 && static_cast<std::int64_t>(rows.size()) > o.limit) rows.resize(static_cast<std::size_t>(o.limit));

  const Mode mode = o.batch_stats ? Mode::eval_batch_stats : Mode::eval;
  if (o.batch_stats)
    std::fprintf(stderr,
                 "bnorm: warning: --batch-stats is wrong on purpose. Each example is normalized with the statistics "
                 "of a batch of one: its mean is the value itself and its variance 0, so every normalized value is 0, "
                 "each batch-norm layer outputs just beta, and the prediction no longer depends on the input. "
                 "This is why a trained network uses running statistics at test time.\n");
  // One example at a time: the test-time case that running statistics exist for.
  Shape one{1};
  one.insert(one.end(), loaded.model.input_shape().begin(), loaded.model.input_shape().end());
  Tensor x(one);
  const ModelTask& task = loaded.task;
  const std::int64_t outputs = numel(loaded.model.output_shape());
  std::vector<float> all_outputs;  // for --output
  for (std::size_t n = 0; n < rows.size(); ++n) {
    loaded.input_normalization.apply_row(x.data(), rows[n].data(), features);
    const Tensor& out = loaded.model.forward(x, mode);
    std::vector<float> v(out.data(), out.data() + out.size());
    if (task.kind == Task::regress) {
      // Back to the targets' own units.
      for (std::size_t t = 0; t < v.size(); ++t)
        v[t] = v[t] * loaded.target_normalization.std[t] + loaded.target_normalization.mean[t];
      if (!o.output.empty()) all_outputs.insert(all_outputs.end(), v.begin(), v.end());
      if (o.json) {
        std::printf("%s\n", nlohmann::json{{"index", n}, {"prediction", v}}.dump().c_str());
      } else {
        std::printf("%zu:", n);
        for (const float p : v) std::printf(" %.6g", static_cast<double>(p));
        std::printf("\n");
      }
      continue;
    }
    if (!o.output.empty()) all_outputs.insert(all_outputs.end(), v.begin(), v.end());
    std::int64_t label = 0;
    for (std::int64_t k = 1; k < out.size(); ++k)
      if (out[k] > out[label]) label = k;
    // The label as the training data wrote it: "setosa", or the integer.
    const std::string name =
        task.class_names.empty() ? std::to_string(label) : task.class_names[static_cast<std::size_t>(label)];
    if (o.json) {
      nlohmann::json line = {{"index", n}, {"logits", v}};
      if (task.class_names.empty() || task.integer_labels)
        line["label"] = task.class_names.empty() ? label : std::stoll(name);
      else
        line["label"] = name;
      std::printf("%s\n", line.dump().c_str());
    } else {
      // Fashion-MNIST's own labels are digits; its class names make them readable.
      const bool fashion = outputs == 10 && features == 784 && (task.class_names.empty() || task.integer_labels);
      std::printf("%zu: %s%s%s\n", n, name.c_str(), fashion ? " " : "", fashion ? kClassNames[label] : "");
    }
  }
  if (!o.output.empty())
    write_npy_f32(o.output, std::vector<std::int64_t>{static_cast<std::int64_t>(rows.size()), outputs}, all_outputs);
}

}  // namespace

Runner add_predict_command(CLI::App& app) {
  auto o = std::make_shared<PredictOptions>();
  CLI::App* cmd = app.add_subcommand(
      "predict",
      "Predict examples one at a time with a saved model (running statistics): labels from a classifier, values "
      "from a regression or an imported model's raw outputs");
  cmd->add_option("--model", o->model, "Model file written by 'bnorm train'")->required();
  cmd->add_option("--input", o->input,
                  "Examples: a CSV file (.csv or .csv.gz; the model's feature columns by name, a target column is "
                  "ignored), a NumPy .npy array (N, ...), an IDX image file (gzipped or not), or a text file with "
                  "one example per line (raw values separated by spaces or commas)")
      ->required();
  cmd->add_option("--output", o->output,
                  "Also write the raw outputs as a float32 NumPy array (N, outputs): logits, predictions in the "
                  "targets' units, or an imported model's outputs as they are");
  cmd->add_option("--limit", o->limit, "Classify only the first N examples (0 = all)")->capture_default_str();
  cmd->add_flag("--batch-stats", o->batch_stats,
                "Demonstration of what goes wrong: normalize each single example with its own statistics "
                "instead of the running ones (prints a warning)");
  cmd->add_option("--threads", o->threads, "Threads for the matrix products (0 = one per core)")->capture_default_str();
  cmd->add_flag("--json", o->json,
                "One JSON object per example: index, label (as the training data wrote it) and logits; or index "
                "and prediction for regression");
  return [o] { run_predict(*o); };
}

}  // namespace bnorm::cli

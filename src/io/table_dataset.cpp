#include "bnorm/io/table_dataset.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <functional>
#include <map>
#include <set>

#include "bnorm/error.hpp"
#include "bnorm/io/csv.hpp"
#include "bnorm/io/npy.hpp"

namespace bnorm {
namespace {

std::string quoted_list(const std::vector<std::string>& names, std::size_t most = 5) {
  std::string s;
  for (std::size_t i = 0; i < names.size() && i < most; ++i) s += (i ? ", '" : "'") + names[i] + "'";
  if (names.size() > most) s += ", ... (" + std::to_string(names.size()) + " in all)";
  return s;
}

std::int64_t integer_value(const std::string& s) {
  std::int64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

// Class names in a stable order: integers by value, anything else as text.
std::vector<std::string> sorted_classes(std::set<std::string> seen, bool integers) {
  std::vector<std::string> names(seen.begin(), seen.end());
  if (integers)
    std::sort(names.begin(), names.end(),
              [](const std::string& a, const std::string& b) { return integer_value(a) < integer_value(b); });
  return names;
}

// Labels as written (cell text, or an integer's decimal form) to class
// indices: the training set's classes when there is one to follow, else the
// classes these labels name.
void assign_classes(Dataset& d, const std::vector<std::string>& raw, bool integers, const ModelTask* like,
                    const std::string& path, const std::function<std::string(std::size_t)>& where) {
  d.task = Task::classify;
  if (like && !like->class_names.empty()) {
    d.class_names = like->class_names;
  } else {
    d.class_names = sorted_classes(std::set<std::string>(raw.begin(), raw.end()), integers);
    if (d.class_names.size() < 2)
      fail_file(path,
                "the target holds a single class (" + quoted_list(d.class_names) + "); a classifier needs at least 2");
  }
  d.num_classes = static_cast<std::int64_t>(d.class_names.size());
  std::map<std::string, std::int32_t> index;
  for (std::size_t k = 0; k < d.class_names.size(); ++k) index[d.class_names[k]] = static_cast<std::int32_t>(k);
  d.labels.resize(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    const auto it = index.find(raw[i]);
    if (it == index.end())
      fail_file(path, where(i) + ": label '" + raw[i] +
                          "' was never seen in training (classes: " + quoted_list(d.class_names, 12) + ")");
    d.labels[i] = it->second;
  }
}

std::string csv_where(const CsvTable& t, std::int64_t row, std::int64_t col) {
  return "line " + std::to_string(t.line[static_cast<std::size_t>(row)]) + ", column " + std::to_string(col + 1) +
         " ('" + t.header[static_cast<std::size_t>(col)] + "')";
}

// The columns holding features: the named ones in that order, or every column but skip.
std::vector<std::int64_t> feature_columns(const CsvTable& t, const std::vector<std::string>& names, std::int64_t skip,
                                          const std::string& path) {
  std::vector<std::int64_t> cols;
  if (names.empty()) {
    for (std::int64_t c = 0; c < static_cast<std::int64_t>(t.header.size()); ++c)
      if (c != skip) cols.push_back(c);
    return cols;
  }
  for (const std::string& name : names) {
    const std::int64_t c = t.column(name);
    if (c < 0)
      fail_file(path, "has no column '" + name + "', which the model reads (header: " + quoted_list(t.header, 8) + ")");
    cols.push_back(c);
  }
  return cols;
}

void read_csv_features(Dataset& d, const CsvTable& t, const std::vector<std::int64_t>& cols, const std::string& path) {
  d.count = t.rows;
  d.features = static_cast<std::int64_t>(cols.size());
  d.example_shape = {d.features};
  d.values.resize(static_cast<std::size_t>(d.count * d.features));
  for (std::int64_t r = 0; r < t.rows; ++r)
    for (std::size_t f = 0; f < cols.size(); ++f)
      d.values[static_cast<std::size_t>(r * d.features) + f] = static_cast<float>(csv_number(t, r, cols[f], path));
  for (const std::int64_t c : cols) d.feature_names.push_back(t.header[static_cast<std::size_t>(c)]);
}

// NPY values as floats, refusing what a float cannot hold.
std::vector<float> finite_floats(const NpyArray& a, const std::string& path, const char* what) {
  std::vector<float> v = a.to_float();
  for (std::size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      fail_file(path, std::string(what) + " value at flat index " + std::to_string(i) +
                          " is not finite (NaN, infinity, or beyond float range)");
  return v;
}

Shape example_shape_of(const NpyArray& a) { return Shape(a.shape.begin() + 1, a.shape.end()); }

}  // namespace

TableData load_csv_dataset(const std::string& path, const TableOptions& options) {
  const CsvTable t = read_csv(path);
  const ModelTask* like = options.like;
  std::string target = options.target;
  if (target.empty() && like) target = like->target_column;
  const std::int64_t tcol = target.empty() ? static_cast<std::int64_t>(t.header.size()) - 1 : t.column(target);
  if (tcol < 0) fail_file(path, "has no target column '" + target + "' (header: " + quoted_list(t.header, 8) + ")");
  if (t.header.size() < 2) fail_file(path, "needs at least one feature column besides the target");
  TableData out;
  out.target_column = t.header[static_cast<std::size_t>(tcol)];
  Dataset& d = out.data;
  read_csv_features(d, t, feature_columns(t, like ? like->feature_names : std::vector<std::string>{}, tcol, path),
                    path);

  std::vector<std::string> raw(static_cast<std::size_t>(t.rows));
  bool integers = true, numbers = true;
  std::string first_text;
  for (std::int64_t r = 0; r < t.rows; ++r) {
    raw[static_cast<std::size_t>(r)] = t.cell(r, tcol);
    const std::string& cell = raw[static_cast<std::size_t>(r)];
    if (!csv_is_integer(cell)) {
      integers = false;
      double v = 0;
      const auto [end, ec] = std::from_chars(cell.data(), cell.data() + cell.size(), v);
      if (ec != std::errc() || end != cell.data() + cell.size()) {
        if (numbers) first_text = csv_where(t, r, tcol) + " holds '" + cell + "'";
        numbers = false;
      }
    }
  }
  const Task task = options.task ? *options.task
                    : like       ? like->kind
                                 : (numbers && !integers ? Task::regress : Task::classify);
  const std::string column = "target '" + out.target_column + "'";
  if (task == Task::regress) {
    if (!numbers) fail_file(path, "regression needs numeric targets, but " + first_text);
    d.task = Task::regress;
    d.target_dims = 1;
    d.target_names = {out.target_column};
    d.targets.resize(raw.size());
    for (std::int64_t r = 0; r < t.rows; ++r)
      d.targets[static_cast<std::size_t>(r)] = static_cast<float>(csv_number(t, r, tcol, path));
    out.task_rule = options.task || like ? "as asked" : column + " holds non-integer numbers";
  } else {
    // Integer labels are compared by value ("07" and "7" are one class).
    if (integers)
      for (std::string& s : raw) s = std::to_string(integer_value(s));
    assign_classes(d, raw, integers, like, path,
                   [&](std::size_t i) { return csv_where(t, static_cast<std::int64_t>(i), tcol); });
    out.task_rule = options.task || like ? "as asked" : integers ? column + " holds integers" : column + " holds text";
  }
  d.validate(path);
  return out;
}

TableData load_npy_dataset(const std::string& x_path, const std::string& y_path, const TableOptions& options) {
  const NpyArray x = read_npy(x_path);
  const NpyArray y = read_npy(y_path);
  if (x.shape.size() < 2)
    fail_file(x_path, "features need a shape (N, ...) with at least one value per example, got " + shape_str(x.shape));
  if (y.shape.empty() || y.shape[0] != x.shape[0])
    fail_file(y_path, "holds " + (y.shape.empty() ? std::string("no examples") : std::to_string(y.shape[0])) +
                          " targets but " + x_path + " holds " + std::to_string(x.shape[0]) + " examples");
  TableData out;
  Dataset& d = out.data;
  d.count = x.shape[0];
  d.example_shape = example_shape_of(x);
  d.features = numel(d.example_shape);
  d.values = finite_floats(x, x_path, "feature");
  const ModelTask* like = options.like;
  const Task task = options.task ? *options.task : like ? like->kind : y.is_integer() ? Task::classify : Task::regress;
  const std::string dtype = npy_dtype_name(y.dtype);
  if (task == Task::classify) {
    if (!(y.shape.size() == 1 || (y.shape.size() == 2 && y.shape[1] == 1)))
      fail_file(y_path, "class labels need shape (N) or (N, 1), got " + shape_str(y.shape));
    std::vector<std::string> raw;
    raw.reserve(static_cast<std::size_t>(d.count));
    if (y.is_integer()) {
      for (const std::int64_t v : y.to_int64()) raw.push_back(std::to_string(v));
    } else {
      for (const float v : finite_floats(y, y_path, "target")) {
        if (v != std::floor(v) || std::abs(v) > 1e9f)
          fail_file(y_path, "class labels must be whole numbers, got " + std::to_string(v));
        raw.push_back(std::to_string(static_cast<std::int64_t>(v)));
      }
    }
    assign_classes(d, raw, true, like, y_path, [](std::size_t i) { return "example " + std::to_string(i); });
    out.task_rule = options.task || like ? "as asked" : "targets are " + dtype + " integers";
  } else {
    if (y.shape.size() > 2) fail_file(y_path, "regression targets need shape (N) or (N, T), got " + shape_str(y.shape));
    d.task = Task::regress;
    d.target_dims = y.shape.size() == 2 ? y.shape[1] : 1;
    d.targets = finite_floats(y, y_path, "target");
    out.task_rule = options.task || like ? "as asked" : "targets are " + dtype;
  }
  if (like && like->kind == Task::regress && !like->target_names.empty() &&
      d.target_dims != static_cast<std::int64_t>(like->target_names.size()))
    fail_file(y_path, "holds " + std::to_string(d.target_dims) + " targets per example, the model predicts " +
                          std::to_string(like->target_names.size()));
  d.validate(x_path);
  return out;
}

Dataset load_csv_features(const std::string& path, const std::vector<std::string>& feature_names,
                          std::int64_t features) {
  const CsvTable t = read_csv(path);
  Dataset d;
  read_csv_features(d, t, feature_columns(t, feature_names, -1, path), path);
  if (d.features != features)
    fail_file(path, "has " + std::to_string(d.features) + " feature columns but the model takes " +
                        std::to_string(features) + " values per example");
  return d;
}

Dataset load_npy_features(const std::string& path, std::int64_t features) {
  const NpyArray x = read_npy(path);
  if (x.shape.size() < 2 || numel(example_shape_of(x)) != features)
    fail_file(path, "has shape " + shape_str(x.shape) + " but the model takes examples of " + std::to_string(features) +
                        " values: (N, ...) with that many after N");
  Dataset d;
  d.count = x.shape[0];
  d.example_shape = example_shape_of(x);
  d.features = features;
  d.values = finite_floats(x, path, "feature");
  return d;
}

}  // namespace bnorm

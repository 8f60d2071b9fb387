// The trainer's view of data (train/dataset.hpp), the CSV and NPY tables that
// become it (io/table_dataset.hpp), regression training and its metrics, and
// model files that remember the task.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

#include "bnorm/error.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/io/npy.hpp"
#include "bnorm/io/table_dataset.hpp"
#include "bnorm/nn/arch.hpp"
#include "bnorm/nn/loss.hpp"
#include "bnorm/rng.hpp"
#include "bnorm/train/dataset.hpp"
#include "bnorm/train/trainer.hpp"

namespace bnorm::test {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("bnorm_dataset_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& text) const {
    const std::string p = (path / name).string();
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// The message must name the file and say what is wrong.
#define EXPECT_ERROR_WITH(statement, part1, part2)          \
  try {                                                     \
    statement;                                              \
    ADD_FAILURE() << "no error from " #statement;           \
  } catch (const Error& e) {                                \
    const std::string what = e.what();                      \
    EXPECT_NE(what.find(part1), std::string::npos) << what; \
    EXPECT_NE(what.find(part2), std::string::npos) << what; \
  }

Dataset float_table(std::int64_t count, std::int64_t features) {
  Dataset d;
  d.count = count;
  d.example_shape = {features};
  d.features = features;
  d.task = Task::classify;
  d.num_classes = 3;
  d.class_names = {"a", "b", "c"};
  for (std::int64_t i = 0; i < count; ++i) {
    d.labels.push_back(static_cast<std::int32_t>(i % 3));
    for (std::int64_t f = 0; f < features; ++f) d.values.push_back(static_cast<float>(i * features + f));
  }
  return d;
}

TEST(Dataset, SubsetAndTruncateKeepFeaturesAndTargetsTogether) {
  const Dataset d = float_table(10, 2);
  const std::int64_t idx[] = {7, 2};
  const Dataset s = d.subset(idx);
  ASSERT_EQ(s.count, 2);
  EXPECT_EQ(s.values, (std::vector<float>{14, 15, 4, 5}));
  EXPECT_EQ(s.labels, (std::vector<std::int32_t>{1, 2}));
  Dataset t = d;
  t.truncate(4);
  EXPECT_EQ(t.values.size(), 8u);
  EXPECT_EQ(t.labels.size(), 4u);
  const std::int64_t bad[] = {10};
  EXPECT_THROW(d.subset(bad), Error);
}

TEST(Dataset, ValidateRefusesNonFiniteFeaturesAndLabelsOutOfRange) {
  Dataset d = float_table(4, 2);
  d.validate("x");
  d.values[3] = std::nanf("");
  EXPECT_ERROR_WITH(d.validate("x.csv"), "x.csv", "example 1, feature 1 is not finite");
  d = float_table(4, 2);
  d.labels[2] = 3;
  EXPECT_ERROR_WITH(d.validate("x.csv"), "x.csv", "label 3 at index 2");
}

TEST(Dataset, ValidationSplitIsSeededDisjointAndComplete) {
  const Dataset d = float_table(100, 1);
  const ValidationSplit a = split_validation(d, 0.2, 7), b = split_validation(d, 0.2, 7),
                        c = split_validation(d, 0.2, 8);
  EXPECT_EQ(a.validation.count, 20);
  EXPECT_EQ(a.train.count, 80);
  EXPECT_EQ(a.validation_indices, b.validation_indices);
  EXPECT_NE(a.validation_indices, c.validation_indices);
  std::set<float> seen(a.train.values.begin(), a.train.values.end());
  for (const float v : a.validation.values) EXPECT_TRUE(seen.insert(v).second) << "in both halves: " << v;
  EXPECT_EQ(seen.size(), 100u);
  EXPECT_TRUE(std::is_sorted(a.validation_indices.begin(), a.validation_indices.end()));
  EXPECT_THROW(split_validation(d, 0.0, 1), Error);
  EXPECT_THROW(split_validation(float_table(2, 1), 0.5, 1), Error);  // leaves one example to train on
}

TEST(InputNormalization, FeatureChannelAndNoneOnFloats) {
  Dataset d;
  d.count = 2;
  d.example_shape = {2, 1, 2};  // two channels of two values
  d.features = 4;
  d.values = {1, 3, 10, 10, 3, 5, 10, 10};
  d.num_classes = 2;
  d.labels = {0, 1};
  const auto feature = InputNormalization::fit(d, "feature");
  ASSERT_EQ(feature.mean.size(), 4u);
  EXPECT_FLOAT_EQ(feature.divisor, 1.0f);
  EXPECT_FLOAT_EQ(feature.mean[0], 2.0f);
  EXPECT_FLOAT_EQ(feature.std[0], 1.0f);
  EXPECT_FLOAT_EQ(feature.std[2], 1.0f);  // a constant column: std 1, not 0
  const auto channel = InputNormalization::fit(d, "channel");
  ASSERT_EQ(channel.mean.size(), 2u);
  EXPECT_FLOAT_EQ(channel.mean[0], 3.0f);            // mean of 1, 3, 3, 5
  EXPECT_FLOAT_EQ(channel.std[0], std::sqrt(2.0f));  // biased variance (4+0+0+4)/4
  Tensor out;
  const std::int64_t idx[] = {1};
  channel.apply(out, d, d.example_shape, idx);
  EXPECT_FLOAT_EQ(out[1], (5.0f - 3.0f) / std::sqrt(2.0f));
  EXPECT_FLOAT_EQ(out[2], 0.0f);
  const auto none = InputNormalization::fit(d, "none");
  none.validate(4);
  none.apply(out, d, d.example_shape, idx);
  EXPECT_FLOAT_EQ(out[0], 3.0f);
  d.example_shape = {4};
  EXPECT_THROW(InputNormalization::fit(d, "channel"), Error);  // a table has no channels
}

TEST(Loss, MeanSquaredErrorMatchesItsDefinitionAndFiniteDifferences) {
  Tensor pred({3, 2});
  const std::vector<float> target = {0.5f, -1.0f, 2.0f, 0.0f, 1.0f, 3.0f};
  for (std::int64_t i = 0; i < 6; ++i) pred[i] = 0.3f * static_cast<float>(i) - 0.7f;
  Tensor grad;
  const LossResult r = mean_squared_error(pred, target, &grad);
  double want = 0.0;
  for (std::int64_t i = 0; i < 6; ++i) want += std::pow(pred[i] - target[static_cast<std::size_t>(i)], 2.0);
  EXPECT_NEAR(r.loss, want / 6.0, 1e-6);
  for (std::int64_t i = 0; i < 6; ++i) {
    Tensor up = pred, down = pred;
    up[i] += 1e-3f;
    down[i] -= 1e-3f;
    const double numeric =
        (mean_squared_error(up, target, nullptr).loss - mean_squared_error(down, target, nullptr).loss) / 2e-3;
    EXPECT_NEAR(grad[i], numeric, 1e-3) << "value " << i;
  }
  EXPECT_THROW(mean_squared_error(pred, std::vector<float>(5), nullptr), Error);
}

// y = 3 x0 - 2 x1 + 0.5 x2 + 100 (an offset and scale the standardization must absorb).
Dataset linear_regression(std::int64_t count, std::uint64_t seed) {
  Rng rng(seed);
  Dataset d;
  d.count = count;
  d.example_shape = {3};
  d.features = 3;
  d.task = Task::regress;
  d.target_dims = 1;
  for (std::int64_t i = 0; i < count; ++i) {
    float y = 100.0f;
    const float w[] = {3.0f, -2.0f, 0.5f};
    for (int f = 0; f < 3; ++f) {
      const auto x = static_cast<float>(rng.normal());
      d.values.push_back(x * 10.0f + 50.0f);
      y += w[f] * x;
    }
    d.targets.push_back(y);
  }
  return d;
}

TEST(Regression, TrainsToHighR2AndMetricsAreInTheTargetsUnits) {
  const Dataset train = linear_regression(512, 1), test = linear_regression(200, 2);
  Model model = Model::from_architecture(parse_arch("fc:32,bn,relu,fc:1", {3}, BnPlacement::before, {}));
  Rng init(3);
  model.init_parameters(init);
  const Preprocessing prep(InputNormalization::fit(train, "feature"), TargetNormalization::fit(train));
  EXPECT_NEAR(prep.target.mean[0], 100.0f, 0.5f);
  auto sgd = make_optimizer("sgd", 0.05f, 0.9f, 0.0f);
  TrainConfig config;
  config.epochs = 30;
  config.batch_size = 32;
  Trainer trainer(model, *sgd, prep, config);
  EpochReport last;
  trainer.fit(train, test, nullptr, [&](const EpochReport& r) { last = r; });
  EXPECT_EQ(last.task, Task::regress);
  EXPECT_GT(last.test_r2, 0.97);
  // The same figures computed here from the predictions, in the targets' units.
  const EvalResult e = evaluate(model, test, prep);
  Tensor x;
  std::vector<std::int64_t> all(static_cast<std::size_t>(test.count));
  std::iota(all.begin(), all.end(), 0);
  prep.input.apply(x, test, model.input_shape(), all);
  const Tensor& out = model.forward(x, Mode::eval);
  double sse = 0.0, sae = 0.0, mean = 0.0, sst = 0.0;
  for (std::int64_t i = 0; i < test.count; ++i)
    mean += test.targets[static_cast<std::size_t>(i)] / static_cast<double>(test.count);
  for (std::int64_t i = 0; i < test.count; ++i) {
    const double y = test.targets[static_cast<std::size_t>(i)];
    const double p = static_cast<double>(out[i]) * prep.target.std[0] + prep.target.mean[0];
    sse += (p - y) * (p - y);
    sae += std::abs(p - y);
    sst += (y - mean) * (y - mean);
  }
  EXPECT_NEAR(e.rmse, std::sqrt(sse / static_cast<double>(test.count)), 1e-4);
  EXPECT_NEAR(e.mae, sae / static_cast<double>(test.count), 1e-4);
  EXPECT_NEAR(e.r2, 1.0 - sse / sst, 1e-6);
  EXPECT_NEAR(e.r2, last.test_r2, 1e-12);
}

TEST(Trainer, RefusesAModelWhoseOutputsDoNotMatchTheClasses) {
  const Dataset d = float_table(20, 2);
  Model model = Model::from_architecture(parse_arch("fc:8,bn,relu,fc:4", {2}, BnPlacement::before, {}));
  auto sgd = make_optimizer("sgd", 0.01f, 0.9f, 0.0f);
  Trainer trainer(model, *sgd, InputNormalization::fit(d, "feature"), TrainConfig{});
  EXPECT_ERROR_WITH(trainer.fit(d, Dataset{}, nullptr, nullptr), "outputs (4)", "3 classes");
}

TEST(CsvDataset, ClassesFromStringsAndIntegersAndRegressionFromNumbers) {
  TempDir dir;
  const auto strings = dir.write("iris.csv", "a,b,species\n1,2,setosa\n3,4,virginica\n5,6,setosa\n");
  const TableData s = load_csv_dataset(strings);
  EXPECT_EQ(s.data.task, Task::classify);
  EXPECT_EQ(s.data.class_names, (std::vector<std::string>{"setosa", "virginica"}));
  EXPECT_EQ(s.data.labels, (std::vector<std::int32_t>{0, 1, 0}));
  EXPECT_EQ(s.data.values, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(s.data.feature_names, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(s.target_column, "species");

  // Integer labels sort by value, not as text; the target may be any column.
  const auto ints = dir.write("ints.csv", "y,a\n10,1\n9,2\n10,3\n");
  TableOptions by_name;
  by_name.target = "y";
  const TableData i = load_csv_dataset(ints, by_name);
  EXPECT_EQ(i.data.class_names, (std::vector<std::string>{"9", "10"}));
  EXPECT_EQ(i.data.labels, (std::vector<std::int32_t>{1, 0, 1}));
  EXPECT_EQ(i.data.feature_names, (std::vector<std::string>{"a"}));

  const auto reals = dir.write("reals.csv", "a,price\n1,2.5\n2,3\n3,4.25\n");
  const TableData r = load_csv_dataset(reals);
  EXPECT_EQ(r.data.task, Task::regress);
  EXPECT_EQ(r.data.targets, (std::vector<float>{2.5f, 3.0f, 4.25f}));
  TableOptions forced;
  forced.task = Task::regress;
  EXPECT_EQ(load_csv_dataset(ints,
                             [&] {
                               auto o = forced;
                               o.target = "y";
                               return o;
                             }())
                .data.targets,
            (std::vector<float>{10, 9, 10}));
}

TEST(CsvDataset, BadTablesAreRefusedWithFileLineAndColumn) {
  TempDir dir;
  const auto one_class = dir.write("one.csv", "a,y\n1,x\n2,x\n");
  EXPECT_ERROR_WITH(load_csv_dataset(one_class), one_class, "single class ('x')");
  const auto no_target = dir.write("nt.csv", "a,y\n1,x\n2,z\n");
  TableOptions missing;
  missing.target = "label";
  EXPECT_ERROR_WITH(load_csv_dataset(no_target, missing), no_target, "no target column 'label'");
  const auto text_feature = dir.write("tf.csv", "a,b,y\n1,2,x\n3,abc,z\n");
  EXPECT_ERROR_WITH(load_csv_dataset(text_feature), text_feature, "line 3, column 2 ('b'): 'abc' is not a number");
  const auto nan_feature = dir.write("nan.csv", "a,b,y\n1,nan,x\n3,4,z\n");
  EXPECT_ERROR_WITH(load_csv_dataset(nan_feature), nan_feature, "line 2, column 2 ('b')");
  TableOptions regress;
  regress.task = Task::regress;
  EXPECT_ERROR_WITH(load_csv_dataset(no_target, regress), no_target, "line 2, column 2 ('y') holds 'x'");
  const auto only_target = dir.write("only.csv", "y\n1\n2\n");
  EXPECT_ERROR_WITH(load_csv_dataset(only_target), only_target, "at least one feature column");

  // A test set follows its training set: unseen labels and missing columns are refused.
  const TableData train = load_csv_dataset(dir.write("train.csv", "a,b,y\n1,2,cat\n3,4,dog\n"));
  ModelTask task = ModelTask::of(train.data);
  task.target_column = train.target_column;
  TableOptions like;
  like.like = &task;
  const auto unseen = dir.write("unseen.csv", "b,a,y\n1,2,cat\n3,4,bird\n");
  EXPECT_ERROR_WITH(load_csv_dataset(unseen, like), unseen,
                    "line 3, column 3 ('y'): label 'bird' was never seen in training");
  const auto reordered = dir.write("reordered.csv", "y,b,a\ndog,20,10\n");
  const TableData t = load_csv_dataset(reordered, like);
  EXPECT_EQ(t.data.values, (std::vector<float>{10, 20}));  // by name, in the training order
  EXPECT_EQ(t.data.labels, (std::vector<std::int32_t>{1}));
  const auto lacks = dir.write("lacks.csv", "a,y\n1,cat\n");
  EXPECT_ERROR_WITH(load_csv_dataset(lacks, like), lacks, "no column 'b'");
}

TEST(NpyDataset, ShapesDtypesAndMismatchedCounts) {
  TempDir dir;
  const std::int64_t x_shape[] = {4, 1, 2, 2};
  std::vector<float> x(16);
  std::iota(x.begin(), x.end(), 0.0f);
  const auto xp = dir.file("x.npy");
  write_npy_f32(xp, x_shape, x);
  const std::int64_t y_shape[] = {4};
  const auto yp = dir.file("y.npy");
  write_npy_f32(yp, y_shape, std::vector<float>{0.5f, 1.5f, 2.5f, 3.5f});
  const TableData r = load_npy_dataset(xp, yp);
  EXPECT_EQ(r.data.example_shape, (Shape{1, 2, 2}));
  EXPECT_EQ(r.data.task, Task::regress);  // float targets
  TableOptions classify;
  classify.task = Task::classify;
  EXPECT_ERROR_WITH(load_npy_dataset(xp, yp, classify), yp, "whole numbers");
  const auto y3 = dir.file("y3.npy");
  const std::int64_t three[] = {3};
  write_npy_f32(y3, three, std::vector<float>{1, 2, 3});
  EXPECT_ERROR_WITH(load_npy_dataset(xp, y3), y3, "holds 3 targets but " + xp + " holds 4 examples");
  const auto flat = dir.file("flat.npy");
  write_npy_f32(flat, three, std::vector<float>{1, 2, 3});
  EXPECT_ERROR_WITH(load_npy_dataset(flat, y3), flat, "features need a shape (N, ...)");
  EXPECT_ERROR_WITH(load_npy_features(xp, 5), xp, "model takes examples of 5 values");
}

TEST(ModelFile, RemembersTheTaskClassNamesAndTargetScaling) {
  TempDir dir;
  const Dataset train = linear_regression(64, 5);
  Model model = Model::from_architecture(parse_arch("fc:4,bn,relu,fc:1", {3}, BnPlacement::before, {}));
  Rng init(1);
  model.init_parameters(init);
  ModelTask task = ModelTask::of(train);
  task.target_names = {"price"};
  task.feature_names = {"a", "b", "c"};
  task.target_column = "price";
  const Preprocessing prep(InputNormalization::fit(train, "feature"), TargetNormalization::fit(train));
  const auto path = dir.file("reg.safetensors");
  save_model(path, model, prep, nlohmann::json::object(), task);
  const LoadedModel loaded = load_model(path);
  EXPECT_EQ(loaded.task.kind, Task::regress);
  EXPECT_EQ(loaded.task.feature_names, task.feature_names);
  EXPECT_EQ(loaded.task.target_column, "price");
  EXPECT_EQ(loaded.target_normalization.mean, prep.target.mean);
  EXPECT_EQ(loaded.target_normalization.std, prep.target.std);
  EXPECT_EQ(loaded.input_normalization.mode, "feature");
  EXPECT_FLOAT_EQ(loaded.input_normalization.divisor, 1.0f);

  // A freshly made classifier with the default (no) normalization saves and loads.
  Model plain = Model::from_architecture(parse_arch("fc:2", {3}, BnPlacement::none, {}));
  const auto p2 = dir.file("plain.safetensors");
  ModelTask names;
  names.class_names = {"no", "yes"};
  save_model(p2, plain, InputNormalization{}, nlohmann::json::object(), names);
  EXPECT_EQ(load_model(p2).task.class_names, names.class_names);
  EXPECT_FALSE(load_model(p2).task.integer_labels);
}

TEST(InputNormalization, FitsTrainingStatisticsGlobalAndPerPixel) {
  Dataset d;
  d.count = 2;
  d.features = 2;
  d.example_shape = {2};
  d.num_classes = 2;
  d.bytes = {0, 255, 255, 255};  // pixel 0: {0, 1}; pixel 1: {1, 1}
  d.labels = {0, 1};
  const auto global = InputNormalization::fit(d, "global");
  ASSERT_EQ(global.mean.size(), 1u);
  EXPECT_FLOAT_EQ(global.mean[0], 0.75f);
  EXPECT_FLOAT_EQ(global.std[0], std::sqrt(0.75f - 0.5625f));
  const auto pixel = InputNormalization::fit(d, "pixel");
  ASSERT_EQ(pixel.mean.size(), 2u);
  EXPECT_FLOAT_EQ(pixel.mean[0], 0.5f);
  EXPECT_FLOAT_EQ(pixel.std[0], 0.5f);
  EXPECT_FLOAT_EQ(pixel.std[1], 1e-3f);  // constant pixel: floored, not zero
  Tensor out;
  const std::int64_t idx[] = {0};
  pixel.apply(out, d, Shape{2}, idx);
  EXPECT_FLOAT_EQ(out[0], (0.0f - 0.5f) / 0.5f);
  EXPECT_THROW(InputNormalization::fit(d, "median"), Error);
}

}  // namespace
}  // namespace bnorm::test

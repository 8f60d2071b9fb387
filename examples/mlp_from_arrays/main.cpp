// Trains a small MLP with batch norm on data held in plain arrays (two
// Gaussian blobs), saves it, loads it back and checks that the loaded model
// predicts exactly what the trained one does.
//   mlp_from_arrays [model path]   (default mlp_from_arrays.safetensors)
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "bnorm/bnorm.hpp"

namespace {

// Class 0 around (-1, -1), class 1 around (1, 1); with this spread about 2%
// of the points lie on the other class's side. The arrays are what a program
// would have from its own source: features (n, 2) row-major, labels (n).
bnorm::Dataset make_blobs(std::int64_t n, bnorm::Rng& rng) {
  std::vector<float> features;
  std::vector<std::int32_t> labels;
  for (std::int64_t i = 0; i < n; ++i) {
    const auto label = static_cast<std::int32_t>(i % 2);
    const double centre = label == 0 ? -1.0 : 1.0;
    features.push_back(static_cast<float>(centre + 0.6 * rng.normal()));
    features.push_back(static_cast<float>(centre + 0.6 * rng.normal()));
    labels.push_back(label);
  }
  bnorm::Dataset d;
  d.count = n;
  d.example_shape = {2};
  d.features = 2;
  d.values = std::move(features);
  d.task = bnorm::Task::classify;
  d.num_classes = 2;
  d.class_names = {"left", "right"};
  d.labels = std::move(labels);
  return d;
}

// Classes of every example, one at a time as at test time (running statistics).
std::vector<std::int64_t> predict(bnorm::LoadedModel& m, const bnorm::Dataset& data) {
  std::vector<std::int64_t> classes;
  bnorm::Tensor x({1, 2});
  for (std::int64_t i = 0; i < data.count; ++i) {
    m.input_normalization.apply_row(x.data(), data.values.data() + 2 * i, 2);
    const bnorm::Tensor& logits = m.model.forward(x, bnorm::Mode::eval);
    classes.push_back(logits[1] > logits[0] ? 1 : 0);
  }
  return classes;
}

int run(const std::string& path) {
  bnorm::Rng rng(42);
  const bnorm::Dataset train = make_blobs(512, rng), test = make_blobs(512, rng);

  // A new model is ready to train: weights drawn from a fixed seed, gamma 1, beta 0.
  bnorm::Model model =
      bnorm::Model::from_architecture(bnorm::parse_arch("fc:32,bn,relu,fc:2", {2}, bnorm::BnPlacement::before, {}));
  // Inputs standardized with the training set's statistics (stored with the model).
  const bnorm::Preprocessing prep(bnorm::InputNormalization::fit(train, "feature"));
  const auto optimizer = bnorm::make_optimizer("sgd", 0.1f, 0.9f, 0.0f);
  bnorm::TrainConfig config;
  config.epochs = 10;
  config.batch_size = 64;
  bnorm::Trainer trainer(model, *optimizer, prep, config);
  double accuracy = 0.0;
  trainer.fit(train, test, nullptr, [&](const bnorm::EpochReport& r) {
    std::printf("epoch %lld: train loss %.4f, test accuracy %.4f\n", static_cast<long long>(r.epoch), r.train_loss,
                r.test_accuracy);
    accuracy = r.test_accuracy;
  });

  bnorm::save_model(path, model, prep, {{"example", "mlp_from_arrays"}}, bnorm::ModelTask::of(train));
  bnorm::LoadedModel loaded = bnorm::load_model(path);
  bnorm::LoadedModel trained{std::move(model), prep.input, prep.target, bnorm::ModelTask::of(train), {}};
  const bool same = predict(loaded, test) == predict(trained, test);
  std::printf("saved to %s; reloaded model (classes %s, %s) predicts %s\n", path.c_str(),
              loaded.task.class_names[0].c_str(), loaded.task.class_names[1].c_str(),
              same ? "the same" : "DIFFERENTLY");
  return same && accuracy >= 0.9 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc > 1 ? argv[1] : "mlp_from_arrays.safetensors");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mlp_from_arrays: %s\n", e.what());
    return 1;
  }
}

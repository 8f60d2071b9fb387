// A small convolutional net with batch norm (BatchNorm2d: statistics per
// channel over N·H·W values) on 8x8 images the program draws: a bright
// horizontal bar (class 0) or a vertical one (class 1) at a random place, in
// noise. Trains, evaluates with running statistics, saves and reloads.
//   cnn_small [model path]   (default cnn_small.safetensors)
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>

#include "bnorm/bnorm.hpp"

namespace {

bnorm::Dataset make_bars(std::int64_t n, bnorm::Rng& rng) {
  bnorm::Dataset d;
  d.count = n;
  d.example_shape = {1, 8, 8};  // (C, H, W)
  d.features = 64;
  d.task = bnorm::Task::classify;
  d.num_classes = 2;
  d.class_names = {"horizontal", "vertical"};
  for (std::int64_t i = 0; i < n; ++i) {
    const auto label = static_cast<std::int32_t>(rng.below(2));
    const auto at = static_cast<std::int64_t>(rng.below(8));
    for (std::int64_t r = 0; r < 8; ++r)
      for (std::int64_t c = 0; c < 8; ++c) {
        const bool bar = label == 0 ? r == at : c == at;
        d.values.push_back(static_cast<float>((bar ? 1.0 : 0.0) + 0.3 * rng.normal()));
      }
    d.labels.push_back(label);
  }
  return d;
}

int run(const std::string& path) {
  bnorm::Rng rng(7);
  const bnorm::Dataset train = make_bars(1024, rng), test = make_bars(256, rng);
  bnorm::Model model = bnorm::Model::from_architecture(bnorm::parse_arch(
      "conv3x3:8,bn,relu,maxpool2,conv3x3:16,bn,relu,gap,fc:2", train.example_shape, bnorm::BnPlacement::before, {}));
  const bnorm::Preprocessing prep(bnorm::InputNormalization::fit(train, "channel"));
  const auto optimizer = bnorm::make_optimizer("sgd", 0.05f, 0.9f, 0.0f);
  bnorm::TrainConfig config;
  config.epochs = 5;
  config.batch_size = 32;
  bnorm::Trainer trainer(model, *optimizer, prep, config);
  trainer.fit(train, test, nullptr, [](const bnorm::EpochReport& r) {
    std::printf("epoch %lld: train loss %.4f, test accuracy %.4f\n", static_cast<long long>(r.epoch), r.train_loss,
                r.test_accuracy);
  });
  bnorm::save_model(path, model, prep, {{"example", "cnn_small"}}, bnorm::ModelTask::of(train));
  bnorm::LoadedModel loaded = bnorm::load_model(path);
  const bnorm::EvalResult before = bnorm::evaluate(model, test, prep);
  const bnorm::EvalResult after = bnorm::evaluate(loaded.model, test, loaded.preprocessing());
  std::printf("saved to %s; test accuracy %.4f before and %.4f after reloading\n", path.c_str(), before.accuracy,
              after.accuracy);
  return before.accuracy == after.accuracy && after.accuracy >= 0.9 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc > 1 ? argv[1] : "cnn_small.safetensors");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cnn_small: %s\n", e.what());
    return 1;
  }
}

// Trains a small MLP with batch norm on data held in plain arrays (two
// Gaussian blobs), saves it, loads it back and checks that the loaded model
// predicts exactly what the trained one does.
//   mlp_from_arrays [model path]   (default mlp_from_arrays.safetensors)
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "bnorm/bnorm.hpp"

namespace {

struct Arrays {
  std::vector<float> x;             // (n, 2), row-major
  std::vector<std::uint8_t> label;  // (n)
};

// Class 0 around (-1, -1), class 1 around (1, 1); with this spread about 2%
// of the points lie on the other class's side.
Arrays make_blobs(std::int64_t n, bnorm::Rng& rng) {
  Arrays a;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint8_t label = static_cast<std::uint8_t>(i % 2);
    const double centre = label == 0 ? -1.0 : 1.0;
    a.x.push_back(static_cast<float>(centre + 0.6 * rng.normal()));
    a.x.push_back(static_cast<float>(centre + 0.6 * rng.normal()));
    a.label.push_back(label);
  }
  return a;
}

bnorm::Tensor to_tensor(std::span<const float> rows) {
  bnorm::Tensor t({static_cast<std::int64_t>(rows.size() / 2), 2});
  std::copy(rows.begin(), rows.end(), t.data());
  return t;
}

std::vector<std::int64_t> predict(bnorm::Model& model, const bnorm::Tensor& x) {
  const bnorm::Tensor& logits = model.forward(x, bnorm::Mode::eval);
  std::vector<std::int64_t> classes;
  for (std::int64_t i = 0; i < logits.dim(0); ++i) classes.push_back(logits[2 * i + 1] > logits[2 * i] ? 1 : 0);
  return classes;
}

int run(const std::string& path) {
  bnorm::Rng rng(42);
  const Arrays train = make_blobs(512, rng);
  const Arrays test = make_blobs(512, rng);

  bnorm::Model model = bnorm::Model::from_architecture(
      bnorm::parse_arch("fc:32,bn,relu,fc:2", {2}, bnorm::BnPlacement::before, {}));
  model.init_parameters(rng);
  const auto optimizer = bnorm::make_optimizer("sgd", 0.1f, 0.9f, 0.0f);

  const std::int64_t batch = 64, n = static_cast<std::int64_t>(train.label.size());
  bnorm::Tensor dlogits;
  for (int epoch = 0; epoch < 10; ++epoch) {
    double loss = 0.0;
    for (std::int64_t begin = 0; begin < n; begin += batch) {
      const auto rows = static_cast<std::size_t>(begin), count = static_cast<std::size_t>(batch);
      const bnorm::Tensor x = to_tensor(std::span(train.x).subspan(2 * rows, 2 * count));
      const auto y = std::span(train.label).subspan(rows, count);
      loss += bnorm::softmax_cross_entropy(model.forward(x, bnorm::Mode::train), y, &dlogits).loss;
      model.backward(dlogits);
      optimizer->step(model.parameters(), model.gradients());
    }
    std::printf("epoch %d: mean loss %.4f\n", epoch + 1, loss / static_cast<double>(n / batch));
  }

  const bnorm::Tensor test_x = to_tensor(test.x);
  const std::vector<std::int64_t> predicted = predict(model, test_x);
  std::int64_t correct = 0;
  for (std::size_t i = 0; i < predicted.size(); ++i) correct += predicted[i] == test.label[i];
  const double accuracy = static_cast<double>(correct) / static_cast<double>(predicted.size());
  std::printf("test accuracy: %.4f\n", accuracy);

  // The inputs are used as they are, so the file records an identity
  // normalization (a default-constructed one, "pixel" with no statistics, is
  // refused by load_model).
  bnorm::InputNormalization identity;
  identity.mode = "global";
  identity.mean = {0.0f};
  identity.std = {1.0f};
  bnorm::save_model(path, model, identity, {{"example", "mlp_from_arrays"}});
  bnorm::LoadedModel loaded = bnorm::load_model(path);
  const bool same = predict(loaded.model, test_x) == predicted;
  std::printf("saved to %s; reloaded model predicts %s\n", path.c_str(), same ? "the same" : "DIFFERENTLY");

  if (!same || accuracy < 0.9) return 1;
  return 0;
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

// Data-parallel training against one process, run under mpirun with any
// number of processes K:
//   mpirun -np K build/tests/test_distributed
// Every process trains a small MLP and a small CNN twice on the same
// deterministic data: once alone on the whole global batches (the
// reference), once as one of K processes taking a share of each batch. With
// synchronized batch norm the two must end with the same parameters and
// running statistics to 1e-5 relative; with per-share statistics they must
// differ (for K > 1). Cases cover uneven shares (a batch that K does not
// divide) and empty shares (a batch of 2 over 3 processes). Rank 0 prints the
// table; the exit status is non-zero on every process if any case failed.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "bnorm/dist/mpi.hpp"
#include "bnorm/error.hpp"
#include "bnorm/io/dataset.hpp"
#include "bnorm/nn/arch.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/train/optimizer.hpp"
#include "bnorm/train/trainer.hpp"

namespace {

using namespace bnorm;

// Pixels with a different mean and spread per position, labels at random.
Dataset make_data(std::int64_t count) {
  Dataset d;
  d.count = count;
  d.example_shape = {1, 6, 6};
  d.num_classes = 10;
  d.features = 36;
  std::mt19937 gen(1234);
  d.bytes.resize(static_cast<std::size_t>(count * d.features));
  for (std::int64_t i = 0; i < count; ++i)
    for (std::int64_t f = 0; f < d.features; ++f) {
      std::normal_distribution<double> pixel(60.0 + 3.0 * static_cast<double>(f),
                                             20.0 + static_cast<double>(f % 7) * 5.0);
      d.bytes[static_cast<std::size_t>(i * d.features + f)] =
          static_cast<std::uint8_t>(std::clamp(pixel(gen), 0.0, 255.0));
    }
  std::uniform_int_distribution<int> label(0, 9);
  for (std::int64_t i = 0; i < count; ++i) d.labels.push_back(static_cast<std::uint8_t>(label(gen)));
  return d;
}

struct Case {
  const char* model;  // "mlp", "cnn", with "+dropout"
  std::string arch;
  std::int64_t batch;
  std::int64_t count;
  bool sync;
};

Model build(const Case& c) {
  Model m = Model::from_architecture(parse_arch(c.arch, {1, 6, 6}, BnPlacement::before, BatchNormOptions{}));
  Rng rng(init_rng_seed(7));
  m.init_parameters(rng);
  return m;
}

void train(Model& model, const Case& c, DataParallel* dist) {
  const Dataset data = make_data(c.count);
  const Dataset none;
  const InputNormalization norm = InputNormalization::fit(data, "pixel");
  Sgd sgd(0.05f, 0.9f, 1e-4f);
  TrainConfig tc;
  tc.epochs = 2;
  tc.batch_size = c.batch;
  tc.seed = 3;
  tc.dist = dist;
  tc.sync_batch_stats = c.sync;
  Trainer(model, sgd, norm, tc).fit(data, none, nullptr, nullptr);
}

// Largest difference relative to each tensor's scale: max |a - b| / max |b|
// per tensor (the infinity norm), the worst tensor of each kind.
struct Diff {
  double params = 0, stats = 0;
};

Diff compare(Model& a, Model& b) {
  Diff d;
  const std::vector<StateEntry> ea = a.state_dict(), eb = b.state_dict();
  for (std::size_t t = 0; t < ea.size(); ++t) {
    if (ea[t].dtype != StateEntry::DType::f32) continue;
    const auto* x = static_cast<const float*>(ea[t].data);
    const auto* y = static_cast<const float*>(eb[t].data);
    double diff = 0, scale = 0;
    for (std::int64_t i = 0; i < numel(ea[t].shape); ++i) {
      diff = std::max(diff, std::fabs(static_cast<double>(x[i]) - y[i]));
      scale = std::max(scale, std::fabs(static_cast<double>(y[i])));
    }
    const double rel = diff / std::max(scale, 1e-30);
    const bool stat = ea[t].name.ends_with("running_mean") || ea[t].name.ends_with("running_var");
    (stat ? d.stats : d.params) = std::max(stat ? d.stats : d.params, rel);
  }
  return d;
}

// Everything a process holds of the model, for a bit-for-bit comparison.
std::uint64_t model_bits(Model& m) {
  std::uint64_t h = fingerprint({});
  for (const StateEntry& e : m.state_dict()) {
    const std::size_t bytes = static_cast<std::size_t>(numel(e.shape)) * (e.dtype == StateEntry::DType::f32 ? 4 : 8);
    h = fingerprint({static_cast<const unsigned char*>(e.data), bytes}, h);
  }
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  dist::MpiSession mpi(&argc, &argv);
  DataParallel& world = mpi.world();
  const int K = world.size();
  const std::string mlp = "fc:16,bn,relu,fc:12,bn,relu,fc:10";
  const std::string cnn = "conv3x3:4,bn,relu,maxpool2,conv3x3:6,bn,relu,gap,fc:10";
  const std::string mlp_dropout = "fc:16,bn,relu,dropout:0.3,fc:12,bn,relu,fc:10";
  const std::string cnn_dropout = "conv3x3:4,bn,relu,dropout:0.2,maxpool2,conv3x3:6,bn,relu,gap,fc:10";
  const std::vector<Case> cases = {
      {"mlp", mlp, 10, 43, true},
      {"cnn", cnn, 10, 43, true},  // uneven shares; last batch of 3
      {"mlp", mlp, 5, 21, true},   // shares of 1 (K = 3: 2, 2, 1)
      {"cnn", cnn, 2, 21, true},   // K = 3: shares 1, 1, 0 (an empty one); the MLP is left out here: with two
                                   // values per channel x_hat is ±1 whatever x is, so its input gradient is
                                   // rounding noise in every run
      {"mlp", mlp, 12, 48, false},
      {"cnn", cnn, 12, 48, false},                 // per-share statistics
      {"mlp+dropout", mlp_dropout, 10, 43, true},  // masks as one process draws them
      {"cnn+dropout", cnn_dropout, 2, 21, true},   // and past an empty share
  };
  constexpr double kTolerance = 1e-5;
  if (world.rank() == 0) {
    std::printf(
        "K = %d processes; 2 epochs of SGD (momentum 0.9, lr 0.05); difference to one process on the same global "
        "batches,\n"
        "max |a - b| / max |b| per tensor, worst parameter tensor / worst running mean or variance\n",
        K);
    std::printf("%-3s %-11s %-7s %-6s %-13s %-14s %-13s %s\n", "K", "model", "bn-sync", "batch", "max param diff",
                "max run-stat diff", "same on ranks", "result");
  }
  double failures = 0;
  for (const Case& c : cases) {
    std::string verdict;
    double dp = 0, ds = 0;
    bool same = false;
    try {
      Model reference = build(c);
      train(reference, c, nullptr);
      Model model = build(c);
      train(model, c, &world);
      const Diff diff = compare(model, reference);
      dp = diff.params;
      ds = diff.stats;
      // Bit-identical parameters and statistics on every process.
      const std::vector<std::uint64_t> all = world.allgather(model_bits(model));
      same = std::all_of(all.begin(), all.end(), [&](std::uint64_t v) { return v == all[0]; });
      bool ok = same;
      if (c.sync || K == 1)
        ok = ok && dp <= kTolerance && ds <= kTolerance;
      else
        ok = ok && (dp > 1e-3 || ds > 1e-3);  // per-share statistics must show
      verdict = ok ? (c.sync || K == 1 ? "equal" : "differ, as expected") : "FAIL";
    } catch (const std::exception& e) {
      verdict = std::string("FAIL: ") + e.what();
    }
    double failed = verdict.starts_with("FAIL") ? 1.0 : 0.0;
    world.allreduce_sum(std::span<double>(&failed, 1));
    failures += failed;
    if (world.rank() == 0)
      std::printf("%-3d %-11s %-7s %-6lld %-13.2e %-14.2e    %-13s %s\n", K, c.model, c.sync ? "global" : "local",
                  static_cast<long long>(c.batch), dp, ds, same ? "yes" : "NO", verdict.c_str());
  }
  if (world.rank() == 0) std::printf("%s\n", failures == 0 ? "all cases passed" : "some cases FAILED");
  return failures == 0 ? 0 : 1;
}

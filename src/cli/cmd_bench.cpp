// bnorm bench bn: times the batch-norm layer alone on a given shape.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <memory>

#include "bnorm/error.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "commands.hpp"

namespace bnorm::cli {
namespace {

struct BenchOptions {
  std::string shape = "32x64x56x56";
  std::int64_t iterations = 50;
  int threads = 0;
  bool json = false;
};

Shape parse_shape(const std::string& text) {
  Shape shape;
  const char* p = text.data();
  const char* end = p + text.size();
  while (p < end) {
    std::int64_t v = 0;
    auto [next, ec] = std::from_chars(p, end, v);
    if (ec != std::errc() || v <= 0 || v > (1 << 24)) throw Error("--shape '" + text + "': expected NxC or NxCxHxW");
    shape.push_back(v);
    p = next;
    if (p < end && *p++ != 'x') throw Error("--shape '" + text + "': separate sizes with 'x'");
  }
  if (shape.size() != 2 && shape.size() != 4) throw Error("--shape '" + text + "': expected NxC or NxCxHxW");
  if (numel(shape) > (std::int64_t{1} << 30)) throw Error("--shape '" + text + "': more than 2^30 values");
  return shape;
}

template <class F>
double median_ms(std::int64_t iterations, F&& body) {
  body();  // warm-up: page faults and first-touch allocation are not what we time
  std::vector<double> ms;
  for (std::int64_t i = 0; i < iterations; ++i) {
    const auto start = std::chrono::steady_clock::now();
    body();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::nth_element(ms.begin(), ms.begin() + static_cast<std::ptrdiff_t>(ms.size() / 2), ms.end());
  return ms[ms.size() / 2];
}

void run_bench(const BenchOptions& o) {
  apply_threads(o.threads);
  if (o.iterations < 1 || o.iterations > 100000) throw Error("--iterations must be in 1..100000");
  const Shape shape = parse_shape(o.shape);
  const std::int64_t C = shape[1];
  BatchNorm bn(C);
  std::vector<float> params(static_cast<std::size_t>(2 * C)), grads(params.size());
  bn.bind_parameters(params, grads);
  Rng rng(1);
  bn.init_parameters(rng);
  Tensor x(shape), y, dy(shape), dx;
  for (std::int64_t i = 0; i < x.size(); ++i) {
    x[i] = static_cast<float>(rng.normal());
    dy[i] = static_cast<float>(rng.normal());
  }
  const double fwd = median_ms(o.iterations, [&] { bn.forward(y, x, Mode::train); });
  const double fwdbwd = median_ms(o.iterations, [&] {
    bn.forward(y, x, Mode::train);
    bn.backward(&dx, dy);
  });
  const double infer = median_ms(o.iterations, [&] { bn.forward(y, x, Mode::eval); });
  // Effective bandwidth of forward+backward: the fewest bytes the two must
  // move, x read and y written, then x and dy read and dx written.
  const double gbps = 5.0 * 4.0 * static_cast<double>(x.size()) / (fwdbwd * 1e-3) / 1e9;
  if (o.json)
    std::printf("%s\n", nlohmann::json{{"shape", o.shape}, {"fwd_train_ms", fwd}, {"fwdbwd_train_ms", fwdbwd},
                                       {"infer_ms", infer}, {"gbps", gbps}}
                            .dump()
                            .c_str());
  else
    std::printf("batchnorm %s: train forward %.3f ms, train forward+backward %.3f ms, inference %.3f ms, %.1f GB/s "
                "(median of %lld)\n",
                o.shape.c_str(), fwd, fwdbwd, infer, gbps, static_cast<long long>(o.iterations));
}

}  // namespace

Runner add_bench_command(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* bench = app.add_subcommand("bench", "Micro-benchmarks");
  bench->require_subcommand(1);
  CLI::App* cmd = bench->add_subcommand("bn", "Median times of the batch-norm layer: training forward, training "
                                              "forward+backward, inference forward; and effective GB/s");
  cmd->add_option("--shape", o->shape, "NxC or NxCxHxW")->capture_default_str();
  cmd->add_option("--iterations", o->iterations, "Timed repetitions (median reported)")->capture_default_str();
  cmd->add_option("--threads", o->threads, "Threads (0 = one per core)")->capture_default_str();
  cmd->add_flag("--json", o->json, "One JSON object: shape, fwd_train_ms, fwdbwd_train_ms, infer_ms, gbps");
  return [o] { run_bench(*o); };
}

}  // namespace bnorm::cli

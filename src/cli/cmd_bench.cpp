// bnorm bench bn: times the batch-norm layer alone on a given shape.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>

#include "bnorm/error.hpp"
#include "bnorm/kernels/activation.hpp"
#include "bnorm/kernels/batchnorm.hpp"
#include "bnorm/kernels/cpu_caches.hpp"
#include "bnorm/kernels/gemm.hpp"
#include "bnorm/nn/activation.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "commands.hpp"

namespace bnorm::cli {
namespace {

struct BenchOptions {
  std::string shape = "32x64x56x56";
  std::int64_t iterations = 50;
  int threads = 0;
  bool json = false;
  bool relu = false;
};

struct StreamOptions {
  std::int64_t megabytes = 256;
  std::int64_t iterations = 10;
  int threads = 0;
  bool json = false;
};

Shape parse_shape(const std::string& text) {
  const Shape shape = parse_size_list("--shape", text, 'x', "256x512 or 64x32x28x28");
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

// The caches the kernels found, where from, what the batch norm made of them,
// and OpenBLAS's kernel choice: a time means little without the blocking it
// was measured with.
nlohmann::json machine_facts() {
  const kernels::CacheSizes& caches = kernels::cpu_caches();
  const kernels::BatchnormTuning& tuning = kernels::batchnorm_tuning();
  const std::string sources = std::string(kernels::cpu_cache_source(0)) + "," + kernels::cpu_cache_source(1) + "," +
                              kernels::cpu_cache_source(2);
  return {{"l1d_bytes", caches.l1d_bytes},
          {"l2_bytes", caches.l2_bytes},
          {"l3_bytes", caches.l3_bytes},
          {"caches_from", sources},
          {"bn_group_bytes", tuning.group_bytes},
          {"bn_stream_from_bytes", tuning.stream_footprint_bytes},
          {"bn_prefetch_bytes", tuning.prefetch_bytes},
          {"gemm", kernels::gemm_backend()},
          {"openblas_core", kernels::openblas_core()}};
}

void print_machine_facts(const nlohmann::json& facts) {
  const auto kib = [&](const char* key) { return static_cast<long long>(facts.at(key).get<std::int64_t>() >> 10); };
  std::printf(
      "caches (%s): L1d %lld KiB, L2 %lld KiB, L3 %lld KiB; batch norm: groups of %lld KiB, streamed from "
      "%lld KiB, prefetch %lld KiB ahead; matrix products through %s; OpenBLAS core %s\n",
      facts.at("caches_from").get<std::string>().c_str(), kib("l1d_bytes"), kib("l2_bytes"), kib("l3_bytes"),
      kib("bn_group_bytes"), kib("bn_stream_from_bytes"), kib("bn_prefetch_bytes"),
      facts.at("gemm").get<std::string>().c_str(), facts.at("openblas_core").get<std::string>().c_str());
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
  // --relu times BN + ReLU: fused (one layer, as a model runs them) and, for
  // comparison, as two layers.
  bn.set_fused_relu(o.relu);
  const double fwd = median_ms(o.iterations, [&] { bn.forward(y, x, Mode::train); });
  const double fwdbwd = median_ms(o.iterations, [&] {
    bn.forward(y, x, Mode::train);
    bn.backward(&dx, dy);
  });
  const double infer = median_ms(o.iterations, [&] { bn.forward(y, x, Mode::eval); });
  // Effective bandwidth of forward+backward: the fewest bytes the two must
  // move, x read and y written, then x and dy read and dx written (the fused
  // ReLU's byte mask, written and read once more, is not counted).
  const double gbps = 5.0 * 4.0 * static_cast<double>(x.size()) / (fwdbwd * 1e-3) / 1e9;
  nlohmann::json result{{"shape", o.shape}, {"fwd_train_ms", fwd}, {"fwdbwd_train_ms", fwdbwd}, {"infer_ms", infer},
                        {"gbps", gbps},     {"relu", o.relu},      {"machine", machine_facts()}};
  double sep_fwd = 0, sep_fwdbwd = 0, sep_infer = 0;
  if (o.relu) {
    bn.set_fused_relu(false);
    Activation relu(ActivationKind::relu);
    Tensor z, dz;
    sep_fwd = median_ms(o.iterations, [&] {
      bn.forward(z, x, Mode::train);
      relu.forward(y, z, Mode::train);
    });
    sep_fwdbwd = median_ms(o.iterations, [&] {
      bn.forward(z, x, Mode::train);
      relu.forward(y, z, Mode::train);
      relu.backward(&dz, dy);
      bn.backward(&dx, dz);
    });
    sep_infer = median_ms(o.iterations, [&] {
      bn.forward(z, x, Mode::eval);
      relu.forward(y, z, Mode::eval);
    });
    result["separate_fwd_train_ms"] = sep_fwd;
    result["separate_fwdbwd_train_ms"] = sep_fwdbwd;
    result["separate_infer_ms"] = sep_infer;
  }
  if (o.json) {
    std::printf("%s\n", result.dump().c_str());
    return;
  }
  print_machine_facts(result["machine"]);
  std::printf(
      "batchnorm%s %s: train forward %.3f ms, train forward+backward %.3f ms, inference %.3f ms, %.1f GB/s "
      "(median of %lld)\n",
      o.relu ? "+relu fused" : "", o.shape.c_str(), fwd, fwdbwd, infer, gbps, static_cast<long long>(o.iterations));
  if (o.relu)
    std::printf(
        "batchnorm, relu as two layers: train forward %.3f ms, train forward+backward %.3f ms, "
        "inference %.3f ms\n",
        sep_fwd, sep_fwdbwd, sep_infer);
}

// STREAM-style memory bandwidth: copy (a = b) and triad (a = b + s*c) over
// arrays far larger than any cache, with the same threads as the kernels, so
// a kernel's GB/s can be read as a fraction of what the machine can move.
void run_stream(const StreamOptions& o) {
  apply_threads(o.threads);
  if (o.megabytes < 1 || o.megabytes > 8192) throw Error("--megabytes must be in 1..8192");
  if (o.iterations < 1 || o.iterations > 1000) throw Error("--iterations must be in 1..1000");
  const std::int64_t n = o.megabytes * (1 << 20) / 4;
  Tensor a(Shape{n}), b(Shape{n}), c(Shape{n});
  float* pa = a.data();
  float* pb = b.data();
  float* pc = c.data();
  // First touch in parallel, so pages land near the threads that use them.
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    pa[i] = 0.0f;
    pb[i] = 1.0f;
    pc[i] = 2.0f;
  }
  const double copy_ms = median_ms(o.iterations, [&] {
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) pa[i] = pb[i];
  });
  const double triad_ms = median_ms(o.iterations, [&] {
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) pa[i] = pb[i] + 3.0f * pc[i];
  });
  const double bytes = 4.0 * static_cast<double>(n);
  const double copy_gbps = 2.0 * bytes / (copy_ms * 1e-3) / 1e9;
  const double triad_gbps = 3.0 * bytes / (triad_ms * 1e-3) / 1e9;
  if (o.json)
    std::printf("%s\n", nlohmann::json{{"megabytes", o.megabytes}, {"copy_gbps", copy_gbps}, {"triad_gbps", triad_gbps}}
                            .dump()
                            .c_str());
  else
    std::printf("stream (%lld MiB arrays): copy %.1f GB/s, triad %.1f GB/s (median of %lld)\n",
                static_cast<long long>(o.megabytes), copy_gbps, triad_gbps, static_cast<long long>(o.iterations));
}

}  // namespace

Runner add_bench_command(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* bench = app.add_subcommand("bench", "Micro-benchmarks");
  bench->require_subcommand(1);
  CLI::App* cmd = bench->add_subcommand("bn",
                                        "Median times of the batch-norm layer: training forward, training "
                                        "forward+backward, inference forward; and effective GB/s");
  cmd->add_option("--shape", o->shape, "NxC or NxCxHxW")->capture_default_str();
  cmd->add_option("--iterations", o->iterations, "Timed repetitions (median reported)")->capture_default_str();
  cmd->add_option("--threads", o->threads, "Threads (0 = one per core)")->capture_default_str();
  cmd->add_flag("--relu", o->relu, "Time batch norm + ReLU fused, and as two layers for comparison");
  cmd->add_flag("--json", o->json, "One JSON object: shape, fwd_train_ms, fwdbwd_train_ms, infer_ms, gbps, machine");

  auto so = std::make_shared<StreamOptions>();
  CLI::App* stream = bench->add_subcommand("stream", "Memory bandwidth (STREAM-style copy and triad), in GB/s");
  stream->add_option("--megabytes", so->megabytes, "Size of each of the three arrays, MiB")->capture_default_str();
  stream->add_option("--iterations", so->iterations, "Timed repetitions (median reported)")->capture_default_str();
  stream->add_option("--threads", so->threads, "Threads (0 = one per core)")->capture_default_str();
  stream->add_flag("--json", so->json, "One JSON object: megabytes, copy_gbps, triad_gbps");
  return [o, so, cmd, stream] {
    if (cmd->parsed()) run_bench(*o);
    if (stream->parsed()) run_stream(*so);
  };
}

}  // namespace bnorm::cli

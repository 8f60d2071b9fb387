// oneDNN peer of `bnorm bench bn`: median times of oneDNN's batch
// normalization on one shape and memory layout, printed as one JSON object.
// Built and run by bench/compare_bn.py against Debian's libdnnl-dev (2.6).
//
//   onednn_bn SHAPE LAYOUT [ITERATIONS]
//   SHAPE: NxC or NxCxHxW; an (N, C) shape runs as (N, C, 1, 1)
//   LAYOUT: plain (nchw) or blocked (nChw16c, oneDNN's fastest on AVX-512)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

namespace {

using namespace dnnl;

template <class F>
double median_ms(int iterations, F&& body) {
  body();
  std::vector<double> ms;
  for (int i = 0; i < iterations; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    body();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

memory filled(const memory::desc& md, const engine& eng, std::mt19937& gen) {
  memory m(md, eng);
  std::normal_distribution<float> normal;
  auto* p = static_cast<float*>(m.get_data_handle());
  for (size_t i = 0; i < md.get_size() / sizeof(float); ++i) p[i] = normal(gen);
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s NxC|NxCxHxW plain|blocked [iterations]\n", argv[0]);
    return 2;
  }
  const std::string shape_text = argv[1], layout = argv[2];
  const int iterations = argc > 3 ? std::atoi(argv[3]) : 50;
  memory::dims dims;
  std::stringstream ss(shape_text);
  for (std::string part; std::getline(ss, part, 'x');) dims.push_back(std::stoll(part));
  if (dims.size() == 2) dims.insert(dims.end(), {1, 1});
  if (dims.size() != 4 || (layout != "plain" && layout != "blocked")) {
    std::fprintf(stderr, "bad shape or layout\n");
    return 2;
  }
  const memory::dim C = dims[1];
  engine eng(engine::kind::cpu, 0);
  stream s(eng);
  const auto tag = layout == "plain" ? memory::format_tag::nchw : memory::format_tag::nChw16c;
  const memory::desc data_md(dims, memory::data_type::f32, tag);
  const memory::desc channel_md({C}, memory::data_type::f32, memory::format_tag::x);
  const float eps = 1e-5f;
  const auto flags = normalization_flags::use_scale | normalization_flags::use_shift;

  batch_normalization_forward::primitive_desc fwd_pd(
      batch_normalization_forward::desc(prop_kind::forward_training, data_md, eps, flags), eng);
  batch_normalization_backward::primitive_desc bwd_pd(
      batch_normalization_backward::desc(prop_kind::backward, data_md, data_md, eps, flags), eng, fwd_pd);
  batch_normalization_forward::primitive_desc inf_pd(
      batch_normalization_forward::desc(prop_kind::forward_inference, data_md, eps,
                                        flags | normalization_flags::use_global_stats),
      eng);

  std::mt19937 gen(1);
  memory src = filled(data_md, eng, gen), diff_dst = filled(data_md, eng, gen);
  memory dst(data_md, eng), diff_src(data_md, eng);
  memory mean(fwd_pd.mean_desc(), eng), var(fwd_pd.variance_desc(), eng);
  memory scale = filled(channel_md, eng, gen), shift = filled(channel_md, eng, gen);
  memory diff_scale(channel_md, eng), diff_shift(channel_md, eng);
  memory workspace(fwd_pd.workspace_desc(), eng);

  batch_normalization_forward fwd(fwd_pd), inf(inf_pd);
  batch_normalization_backward bwd(bwd_pd);
  std::unordered_map<int, memory> fwd_args = {{DNNL_ARG_SRC, src},   {DNNL_ARG_DST, dst},
                                              {DNNL_ARG_MEAN, mean}, {DNNL_ARG_VARIANCE, var},
                                              {DNNL_ARG_SCALE, scale}, {DNNL_ARG_SHIFT, shift}};
  std::unordered_map<int, memory> bwd_args = {
      {DNNL_ARG_SRC, src},           {DNNL_ARG_MEAN, mean},           {DNNL_ARG_VARIANCE, var},
      {DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_SCALE, scale},         {DNNL_ARG_DIFF_SRC, diff_src},
      {DNNL_ARG_SHIFT, shift},       {DNNL_ARG_DIFF_SCALE, diff_scale}, {DNNL_ARG_DIFF_SHIFT, diff_shift}};
  if (fwd_pd.workspace_desc().get_size() > 0) {  // only some implementations keep one
    fwd_args.insert({DNNL_ARG_WORKSPACE, workspace});
    bwd_args.insert({DNNL_ARG_WORKSPACE, workspace});
  }
  const std::unordered_map<int, memory> inf_args = {{DNNL_ARG_SRC, src},   {DNNL_ARG_DST, dst},
                                                    {DNNL_ARG_MEAN, mean}, {DNNL_ARG_VARIANCE, var},
                                                    {DNNL_ARG_SCALE, scale}, {DNNL_ARG_SHIFT, shift}};
  const double t_fwd = median_ms(iterations, [&] {
    fwd.execute(s, fwd_args);
    s.wait();
  });
  const double t_both = median_ms(iterations, [&] {
    fwd.execute(s, fwd_args);
    bwd.execute(s, bwd_args);
    s.wait();
  });
  const double t_inf = median_ms(iterations, [&] {
    inf.execute(s, inf_args);
    s.wait();
  });
  std::printf("{\"shape\": \"%s\", \"layout\": \"%s\", \"fwd_train_ms\": %.5f, \"fwdbwd_train_ms\": %.5f, "
              "\"infer_ms\": %.5f}\n",
              shape_text.c_str(), layout == "plain" ? (dims[2] * dims[3] == 1 ? "nc" : "nchw") : "nChw16c", t_fwd,
              t_both, t_inf);
  return 0;
}

#pragma once
// oneDNN's batch normalization on one shape and layout, set up once: the
// training forward, the backward and the inference forward (with the training
// forward's mean and variance), each with its arguments bound. Shared by
// bench/onednn_bn.cpp and bench/bn_pair_onednn.cpp.
#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <sstream>
#include <string>
#include <unordered_map>

// "NxC" or "NxCxHxW" as N, C, H, W (an (N, C) shape runs as (N, C, 1, 1));
// the caller checks the result. Throws std::invalid_argument on a part that
// is not a number.
inline dnnl::memory::dims parse_bn_shape(const std::string& text) {
  dnnl::memory::dims dims;
  std::stringstream ss(text);
  for (std::string part; std::getline(ss, part, 'x');) dims.push_back(std::stoll(part));
  if (dims.size() == 2) dims.insert(dims.end(), {1, 1});
  return dims;
}

struct OnednnBatchNorm {
  // dims: N, C, H, W; layout: nchw, nChw8c (oneDNN's JIT layout on AVX2) or
  // nChw16c (on AVX-512; elsewhere oneDNN runs its reference code on it).
  // Input, dy, gamma and beta are filled from gen.
  OnednnBatchNorm(const dnnl::memory::dims& dims, dnnl::memory::format_tag layout, std::mt19937& gen)
      : data_md(dims, dnnl::memory::data_type::f32, layout),
        channel_md({dims[1]}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::x),
        fwd_pd(dnnl::batch_normalization_forward::desc(dnnl::prop_kind::forward_training, data_md, kEps, flags()), eng),
        bwd_pd(dnnl::batch_normalization_backward::desc(dnnl::prop_kind::backward, data_md, data_md, kEps, flags()),
               eng, fwd_pd),
        inf_pd(dnnl::batch_normalization_forward::desc(dnnl::prop_kind::forward_inference, data_md, kEps,
                                                       flags() | dnnl::normalization_flags::use_global_stats),
               eng),
        src(filled(data_md, gen)),
        diff_dst(filled(data_md, gen)),
        dst(data_md, eng),
        diff_src(data_md, eng),
        mean(fwd_pd.mean_desc(), eng),
        var(fwd_pd.variance_desc(), eng),
        scale(filled(channel_md, gen)),
        shift(filled(channel_md, gen)),
        diff_scale(channel_md, eng),
        diff_shift(channel_md, eng),
        workspace(fwd_pd.workspace_desc(), eng),
        fwd(fwd_pd),
        bwd(bwd_pd),
        inf(inf_pd) {
    fwd_args = {{DNNL_ARG_SRC, src},      {DNNL_ARG_DST, dst},     {DNNL_ARG_MEAN, mean},
                {DNNL_ARG_VARIANCE, var}, {DNNL_ARG_SCALE, scale}, {DNNL_ARG_SHIFT, shift}};
    inf_args = fwd_args;
    bwd_args = {{DNNL_ARG_SRC, src},
                {DNNL_ARG_MEAN, mean},
                {DNNL_ARG_VARIANCE, var},
                {DNNL_ARG_DIFF_DST, diff_dst},
                {DNNL_ARG_SCALE, scale},
                {DNNL_ARG_DIFF_SRC, diff_src},
                {DNNL_ARG_SHIFT, shift},
                {DNNL_ARG_DIFF_SCALE, diff_scale},
                {DNNL_ARG_DIFF_SHIFT, diff_shift}};
    if (fwd_pd.workspace_desc().get_size() > 0) {  // only some implementations keep one
      fwd_args.insert({DNNL_ARG_WORKSPACE, workspace});
      bwd_args.insert({DNNL_ARG_WORKSPACE, workspace});
    }
  }

  void forward() {
    fwd.execute(strm, fwd_args);
    strm.wait();
  }
  void forward_backward() {
    fwd.execute(strm, fwd_args);
    bwd.execute(strm, bwd_args);
    strm.wait();
  }
  void inference() {
    inf.execute(strm, inf_args);
    strm.wait();
  }
  static float* data(const dnnl::memory& m) { return static_cast<float*>(m.get_data_handle()); }

  static constexpr float kEps = 1e-5f;
  static dnnl::normalization_flags flags() {
    return dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
  }

  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  dnnl::memory::desc data_md, channel_md;
  dnnl::batch_normalization_forward::primitive_desc fwd_pd;
  dnnl::batch_normalization_backward::primitive_desc bwd_pd;
  dnnl::batch_normalization_forward::primitive_desc inf_pd;
  dnnl::memory src, diff_dst, dst, diff_src, mean, var, scale, shift, diff_scale, diff_shift, workspace;
  dnnl::batch_normalization_forward fwd;
  dnnl::batch_normalization_backward bwd;
  dnnl::batch_normalization_forward inf;
  std::unordered_map<int, dnnl::memory> fwd_args, bwd_args, inf_args;

 private:
  dnnl::memory filled(const dnnl::memory::desc& md, std::mt19937& gen) {
    dnnl::memory m(md, eng);
    std::normal_distribution<float> normal;
    float* p = data(m);
    for (size_t i = 0; i < md.get_size() / sizeof(float); ++i) p[i] = normal(gen);
    return m;
  }
};

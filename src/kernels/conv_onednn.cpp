#include "conv_onednn.hpp"

#include <omp.h>

#include <algorithm>
#include <initializer_list>
#include <oneapi/dnnl/dnnl.hpp>
#include <vector>

#include "bnorm/error.hpp"

namespace bnorm::kernels {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;

// One primitive and its arguments, fixed at creation: the memory objects keep
// their identity and only their data pointers change per call. Executed
// through the C API, which takes the arguments as an array; the C++ API's
// execute builds a std::vector from a map on every call.
struct Step {
  dnnl::primitive primitive;
  std::vector<dnnl_exec_arg_t> args;
  memory::desc scratch_desc;  // what this primitive needs of the shared scratchpad
  memory scratch;             // a view of the shared scratchpad, set once every step exists
};

// One pass (forward, backward-data or backward-weights): the reorders of its
// inputs into the layouts the convolution chose, the convolution, the
// reorders of its outputs back to bnorm's layout.
struct Pass {
  std::vector<Step> steps;
  std::vector<memory> plain;    // bnorm's tensors, in the order the caller passes them
  std::vector<memory> blocked;  // the copies in the layouts the primitive chose, owned here

  void run(dnnl::stream& stream, std::initializer_list<const void*> tensors) {
    auto plain_at = plain.begin();
    for (const void* p : tensors) (plain_at++)->set_data_handle(const_cast<void*>(p));
    for (const Step& s : steps)
      if (dnnl_primitive_execute(s.primitive.get(), stream.get(), static_cast<int>(s.args.size()), s.args.data()) !=
          dnnl_success)
        throw Error("conv2d: a oneDNN primitive failed");
    stream.wait();
  }
};

// An argument of a convolution primitive: which one, the layout the primitive
// chose and bnorm's plain layout of it.
struct Arg {
  int id;
  memory::desc chosen, plain;
  bool output;
};

dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

Step make_step(dnnl::primitive primitive, const memory::desc& scratch_desc,
               std::initializer_list<std::pair<int, const memory*>> args) {
  Step s{std::move(primitive), {}, scratch_desc, {}};
  for (const auto& [id, m] : args) s.args.push_back({id, m->get()});
  return s;
}

// The pass around one convolution primitive: each argument whose chosen
// layout is not bnorm's gets a buffer of its own (made here, once) and a
// reorder before the convolution (inputs) or after it (outputs).
template <class PrimitiveDesc>
Pass make_pass(const dnnl::engine& engine, const PrimitiveDesc& pd, const std::vector<Arg>& args) {
  Pass pass;
  std::vector<Step> before, after;
  std::vector<memory> inner;
  for (const Arg& a : args) {
    pass.plain.emplace_back(a.plain, engine, static_cast<void*>(DNNL_MEMORY_NONE));
    const memory& plain = pass.plain.back();
    if (a.chosen == a.plain) {
      inner.push_back(plain);
      continue;
    }
    inner.emplace_back(a.chosen, engine);
    const memory& from = a.output ? inner.back() : plain;
    const memory& to = a.output ? plain : inner.back();
    const dnnl::reorder::primitive_desc rpd(engine, from.get_desc(), engine, to.get_desc(), user_scratchpad());
    (a.output ? after : before)
        .push_back(make_step(dnnl::reorder(rpd), rpd.scratchpad_desc(), {{DNNL_ARG_FROM, &from}, {DNNL_ARG_TO, &to}}));
  }
  Step conv{dnnl::primitive(pd), {}, pd.scratchpad_desc(), {}};
  for (std::size_t i = 0; i < args.size(); ++i) conv.args.push_back({args[i].id, inner[i].get()});
  pass.steps = std::move(before);
  pass.steps.push_back(std::move(conv));
  for (Step& s : after) pass.steps.push_back(std::move(s));
  // The steps hold bare dnnl_memory_t handles: the pass keeps the objects.
  for (std::size_t i = 0; i < args.size(); ++i)
    if (!(args[i].chosen == args[i].plain)) pass.blocked.push_back(inner[i]);
  return pass;
}

}  // namespace

struct OnednnConv::Passes {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  Pass forward, backward_data, backward_weights;
  memory scratchpad;  // one buffer for every step: the steps run one after another
};

OnednnConv::OnednnConv(std::int64_t N, const ConvGeometry& g, std::int64_t O, bool bias)
    : N_(N), threads_(omp_get_max_threads()), passes_(std::make_unique<Passes>()) {
  Passes& p = *passes_;
  const memory::dims x_dims{N, g.C, g.H, g.W}, y_dims{N, O, g.out_h(), g.out_w()}, w_dims{O, g.C, g.KH, g.KW},
      b_dims{O}, strides{g.stride, g.stride}, pad{g.pad, g.pad};
  const auto f32 = memory::data_type::f32;
  const memory::desc x_plain(x_dims, f32, Tag::nchw), y_plain(y_dims, f32, Tag::nchw), w_plain(w_dims, f32, Tag::oihw),
      b_plain(b_dims, f32, Tag::x);
  const memory::desc x_any(x_dims, f32, Tag::any), y_any(y_dims, f32, Tag::any), w_any(w_dims, f32, Tag::any);
  const dnnl::primitive_attr attr = user_scratchpad();
  const auto direct = dnnl::algorithm::convolution_direct;

  const auto fwd_desc = bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, direct, x_any, w_any,
                                                               b_plain, y_any, strides, pad, pad)
                             : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, direct, x_any, w_any,
                                                               y_any, strides, pad, pad);
  const dnnl::convolution_forward::primitive_desc fwd(fwd_desc, attr, p.engine);
  std::vector<Arg> fwd_args{{DNNL_ARG_DST, fwd.dst_desc(), y_plain, true},
                            {DNNL_ARG_SRC, fwd.src_desc(), x_plain, false},
                            {DNNL_ARG_WEIGHTS, fwd.weights_desc(), w_plain, false}};
  if (bias) fwd_args.push_back({DNNL_ARG_BIAS, b_plain, b_plain, false});
  p.forward = make_pass(p.engine, fwd, fwd_args);

  const dnnl::convolution_backward_data::primitive_desc bwd_data(
      dnnl::convolution_backward_data::desc(direct, x_any, w_any, y_any, strides, pad, pad), attr, p.engine, fwd);
  p.backward_data = make_pass(p.engine, bwd_data,
                              {{DNNL_ARG_DIFF_SRC, bwd_data.diff_src_desc(), x_plain, true},
                               {DNNL_ARG_DIFF_DST, bwd_data.diff_dst_desc(), y_plain, false},
                               {DNNL_ARG_WEIGHTS, bwd_data.weights_desc(), w_plain, false}});

  const dnnl::convolution_backward_weights::primitive_desc bwd_weights(
      dnnl::convolution_backward_weights::desc(direct, x_any, w_any, y_any, strides, pad, pad), attr, p.engine, fwd);
  p.backward_weights = make_pass(p.engine, bwd_weights,
                                 {{DNNL_ARG_DIFF_WEIGHTS, bwd_weights.diff_weights_desc(), w_plain, true},
                                  {DNNL_ARG_SRC, bwd_weights.src_desc(), x_plain, false},
                                  {DNNL_ARG_DIFF_DST, bwd_weights.diff_dst_desc(), y_plain, false}});

  // One scratchpad, as large as the largest step's, viewed by every step.
  memory::dim bytes = 1;
  for (Pass* pass : {&p.forward, &p.backward_data, &p.backward_weights})
    for (const Step& s : pass->steps) bytes = std::max<memory::dim>(bytes, s.scratch_desc.get_size());
  p.scratchpad = memory(memory::desc({bytes}, memory::data_type::u8, Tag::x), p.engine);
  for (Pass* pass : {&p.forward, &p.backward_data, &p.backward_weights})
    for (Step& s : pass->steps) {
      if (s.scratch_desc.get_size() == 0) continue;
      s.scratch = memory(s.scratch_desc, p.engine, p.scratchpad.get_data_handle());
      s.args.push_back({DNNL_ARG_SCRATCHPAD, s.scratch.get()});
    }
}

OnednnConv::~OnednnConv() = default;

void OnednnConv::forward(float* y, const float* x, const float* weight, const float* bias) {
  if (bias)
    passes_->forward.run(passes_->stream, {y, x, weight, bias});
  else
    passes_->forward.run(passes_->stream, {y, x, weight});
}

void OnednnConv::backward_data(float* dx, const float* dy, const float* weight) {
  passes_->backward_data.run(passes_->stream, {dx, dy, weight});
}

void OnednnConv::backward_weights(float* dweight, const float* x, const float* dy) {
  passes_->backward_weights.run(passes_->stream, {dweight, x, dy});
}

}  // namespace bnorm::kernels

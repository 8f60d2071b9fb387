#pragma once
// A convolution's forward, backward-data and backward-weights passes through
// oneDNN primitives (built with BNORM_CONV=onednn). The tensors at the
// boundary are bnorm's own: x and dx (N, C, H, W), y and dy (N, O, OH, OW),
// weight and dweight (O, C, KH, KW), bias (O). Where oneDNN prefers a blocked
// layout, the reorders to and from it run inside each call.
//
// The primitives, their scratchpad and any blocked copies are made once, in
// the constructor, for one batch size and thread count (oneDNN's OpenMP build
// plans its work for the thread count it was created with); a call allocates
// no buffer. It is state, so the layer owns one (src/nn/conv2d.cpp) and makes
// a new one when N or the thread count changes.
//
// Each call runs on omp_get_max_threads() threads of bnorm's own OpenMP pool
// (oneDNN's OpenMP build, the same libgomp): call it outside any parallel region.
#include <cstdint>
#include <memory>

#include "bnorm/kernels/conv.hpp"

namespace bnorm::kernels {

class OnednnConv {
 public:
  OnednnConv(std::int64_t N, const ConvGeometry& g, std::int64_t O, bool bias);
  ~OnednnConv();
  OnednnConv(const OnednnConv&) = delete;
  OnednnConv& operator=(const OnednnConv&) = delete;

  // Whether this object was made for a batch of N on `threads` threads.
  bool fits(std::int64_t N, int threads) const { return N == N_ && threads == threads_; }

  // y = weight ⋆ x (+ bias, when made with one). Assigns y.
  void forward(float* y, const float* x, const float* weight, const float* bias);
  // dx = the input gradient of dy. Assigns dx.
  void backward_data(float* dx, const float* dy, const float* weight);
  // dweight = Σ over the batch of dy ⋆ x. Assigns dweight (the bias gradient is the layer's).
  void backward_weights(float* dweight, const float* x, const float* dy);

 private:
  struct Passes;
  std::int64_t N_;
  int threads_;
  std::unique_ptr<Passes> passes_;
};

}  // namespace bnorm::kernels

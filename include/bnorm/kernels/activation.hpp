#pragma once
// Element-wise activations over n contiguous floats. Backward passes take the
// forward *output* y, which is all each derivative needs, and assign dx.
#include <cstdint>

namespace bnorm::kernels {

void relu_forward(float* y, const float* x, std::int64_t n);
void relu_backward(float* dx, const float* dy, const float* y, std::int64_t n);  // dy * (y > 0)

void tanh_forward(float* y, const float* x, std::int64_t n);
void tanh_backward(float* dx, const float* dy, const float* y, std::int64_t n);  // dy * (1 - y^2)

void sigmoid_forward(float* y, const float* x, std::int64_t n);
void sigmoid_backward(float* dx, const float* dy, const float* y, std::int64_t n);  // dy * y * (1 - y)

}  // namespace bnorm::kernels

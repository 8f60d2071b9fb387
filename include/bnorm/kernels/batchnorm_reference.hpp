#pragma once
// Batch norm written plainly as the formulas in batchnorm.hpp: per channel,
// two passes in double (the mean, then the squares around it), no blocking,
// no lanes, no shifts. It is what the public kernels compute where their
// vectorized paths are not compiled (non-x86), and the oracle the tests hold
// the fast kernels to.
//
// Layout (N, C, S) as in batchnorm.hpp; S == 1 is the (N, C) case. Real is
// the type of every result: float where the public kernels call these,
// double where a test wants the exact values to compare with. relu_mask,
// where taken, may be nullptr; with relu the outputs are max(0, y) as the
// fused kernels define them, and dy counts only where the mask is 1.
#include <cstdint>

namespace bnorm::kernels::reference {

// mean, biased var and inv_std = 1 / sqrt(var + eps) (C each), and y (N, C, S).
template <class Real>
void batchnorm_forward_train(Real* y, std::uint8_t* relu_mask, bool relu, Real* mean, Real* var, Real* inv_std,
                             const float* x, const float* gamma, const float* beta, float eps, std::int64_t N,
                             std::int64_t C, std::int64_t S);

// y = (x - mean) * gamma / sqrt(var + eps) + beta with given statistics.
template <class Real>
void batchnorm_forward_inference(Real* y, bool relu, const float* x, const float* mean, const float* var,
                                 const float* gamma, const float* beta, float eps, std::int64_t N, std::int64_t C,
                                 std::int64_t S);

// dbeta = Σ dy, dgamma = Σ dy * x_hat, dx = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)
// with x_hat = (x - mean) * inv_std; dgamma and dbeta may be nullptr.
template <class Real>
void batchnorm_backward(Real* dx, Real* dgamma, Real* dbeta, const float* dy, const std::uint8_t* relu_mask,
                        const float* x, const Real* mean, const Real* inv_std, const float* gamma, std::int64_t N,
                        std::int64_t C, std::int64_t S);

// The stages and the running update, with the meaning and arguments of their
// namesakes in batchnorm.hpp (less the scratch, which these do not need).
void batchnorm_update_running(float* running_mean, float* running_var, const float* mean, const float* var, double f,
                              double var_scale, std::int64_t C);
void batchnorm_channel_moments(double* mean, double* m2, const float* x, std::int64_t N, std::int64_t C,
                               std::int64_t S);
void batchnorm_normalize_with(float* y, std::uint8_t* relu_mask, bool relu, float* mean_out, float* var_out,
                              float* inv_std, const float* x, const double* mean, const double* var, const float* gamma,
                              const float* beta, float eps, std::int64_t N, std::int64_t C, std::int64_t S);
void batchnorm_grad_sums(double* sum_dy, double* sum_dy_xc, const float* dy, const std::uint8_t* relu_mask,
                         const float* x, const float* mean, std::int64_t N, std::int64_t C, std::int64_t S);
void batchnorm_apply_grad(float* dx, const float* dy, const std::uint8_t* relu_mask, const float* x, const float* mean,
                          const float* inv_std, const float* gamma, const double* sum_dy, const double* sum_dy_xc,
                          double m, std::int64_t N, std::int64_t C, std::int64_t S);

}  // namespace bnorm::kernels::reference

// Each step of the Winograd path alone (kernels/winograd.hpp and
// small_gemm.hpp), on one thread, for the default CNN's second convolution
// (32x14x14 -> 64, 49 tiles per example), per example and with the products'
// GFLOP/s, for groups of 1, 2, 4 and 8 examples: what the Winograd path's group size (WinogradGroups in
// src/nn/conv2d.cpp) and the transforms' costs were chosen by. Best of 50 runs of each step.
//
// Run: OMP_NUM_THREADS=1 build/bench/winograd_steps
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "bnorm/kernels/small_gemm.hpp"
#include "bnorm/kernels/winograd.hpp"

namespace {

template <class F>
double best_ms(F&& f) {
  double best = 1e30;
  for (int r = 0; r < 50; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main() {
  using namespace bnorm::kernels;
  const std::int64_t C = 32, O = 64;
  const ConvGeometry g{C, 14, 14, 3, 3, 1, 1};
  std::printf("%3s | %8s %8s %8s | %8s %8s %8s %8s | %8s %8s %8s   (us per example; GFLOP/s)\n", "nb", "input",
              "product", "output", "out_adj", "dU", "dV", "in_adj", "product", "dU", "dV");
  for (std::int64_t nb : {1, 2, 4, 8}) {
    const std::int64_t ld = winograd_row_length(nb * winograd_tiles(g));
    const std::int64_t sv = winograd_position_stride(C, ld), sm = winograd_position_stride(O, ld),
                       su = winograd_position_stride(O, C);
    std::vector<float> x(static_cast<std::size_t>(nb * C * 196), 0.5f),
        y(static_cast<std::size_t>(nb * O * 196), 0.25f);
    std::vector<float> v(static_cast<std::size_t>(16 * sv)), m(static_cast<std::size_t>(16 * sm)),
        u(static_cast<std::size_t>(16 * su), 0.1f), du(u.size()), dv(v.size());
    const double input = best_ms([&] { winograd_input(v.data(), x.data(), nb, g); });
    const double product = best_ms([&] {
      for (int xi = 0; xi < 16; ++xi)
        small_gemm_ab(m.data() + xi * sm, u.data() + xi * su, v.data() + xi * sv, O, ld, C);
    });
    const double output = best_ms([&] { winograd_output(y.data(), m.data(), nullptr, nb, O, g); });
    const double out_adj = best_ms([&] { winograd_output_adjoint(m.data(), y.data(), nb, O, g); });
    const double d_u = best_ms([&] {
      for (int xi = 0; xi < 16; ++xi)
        small_gemm_abt_add(du.data() + xi * su, m.data() + xi * sm, v.data() + xi * sv, O, C, ld);
    });
    const double d_v = best_ms([&] {
      for (int xi = 0; xi < 16; ++xi)
        small_gemm_atb(dv.data() + xi * sv, u.data() + xi * su, m.data() + xi * sm, C, ld, O);
    });
    const double in_adj = best_ms([&] { winograd_input_adjoint(x.data(), dv.data(), nb, g); });
    const double flops = 2.0 * 16 * O * C * static_cast<double>(ld), per = 1e3 / static_cast<double>(nb);
    std::printf("%3lld | %8.1f %8.1f %8.1f | %8.1f %8.1f %8.1f %8.1f | %8.1f %8.1f %8.1f\n", static_cast<long long>(nb),
                input * per, product * per, output * per, out_adj * per, d_u * per, d_v * per, in_adj * per,
                flops / product / 1e6, flops / d_u / 1e6, flops / d_v / 1e6);
  }
  return 0;
}

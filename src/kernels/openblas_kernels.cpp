// Debian's OpenBLAS 0.3.21 (a DYNAMIC_ARCH build) picks its kernels by CPU
// model, and a model newer than the library gets its generic Prescott (SSE3)
// kernels: on an Intel Xeon of family 6, model 207 (AVX-512), sgemm 1024³ ran
// at 65 GFLOP/s that way and at 298 with the same library's Cooperlake
// kernels. When OPENBLAS_CORETYPE is set to a name it does not know (even
// empty), it picks by the CPU's feature flags instead. So bnorm, seeing the
// fallback on a CPU with AVX2, has the library run that selection again. The
// decision reads the library's answer and the CPU's features, never the
// CPU's model.
#include "openblas_kernels.hpp"

#include <cblas.h>
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "bnorm/kernels/gemm.hpp"

namespace bnorm::kernels {

bool openblas_should_choose_by_features(const char* core, bool cpu_has_avx2, const char* coretype_env) {
  return coretype_env == nullptr && cpu_has_avx2 && core != nullptr && std::strcmp(core, "Prescott") == 0;
}

bool openblas_choose_by_features() {
  // Exported by DYNAMIC_ARCH builds only, hence looked up rather than linked.
  using Hook = void (*)();
  const auto quit = reinterpret_cast<Hook>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
  const auto init = reinterpret_cast<Hook>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
  if (quit == nullptr || init == nullptr) return false;
  const char* before = std::getenv("OPENBLAS_CORETYPE");
  const bool had = before != nullptr;
  // Only this value makes the library fall through to its feature rule; the
  // user's own value, if any, is put back afterwards.
  const std::string kept = had ? before : "";
  setenv("OPENBLAS_CORETYPE", "", 1);
  quit();
  init();
  if (had)
    setenv("OPENBLAS_CORETYPE", kept.c_str(), 1);
  else
    unsetenv("OPENBLAS_CORETYPE");
  return true;
}

void openblas_pick_kernels_once() {
  static const bool done = [] {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (openblas_should_choose_by_features(openblas_get_corename(), __builtin_cpu_supports("avx2"),
                                           std::getenv("OPENBLAS_CORETYPE")))
      openblas_choose_by_features();
#endif
    return true;
  }();
  (void)done;
}

const char* openblas_core() {
  openblas_pick_kernels_once();
  return openblas_get_corename();
}

}  // namespace bnorm::kernels

#include "bnorm/kernels/small_gemm.hpp"

#include <cstring>

// Compiled with -ffp-contract=fast (CMakeLists.txt), unlike the rest of the
// library: a*b + c becomes one fused multiply-add in the copies for CPUs that
// have it, as in any BLAS, so a product's last bits depend on the copy that
// ran, as they depend on the kernel OpenBLAS chose. The middle copy is
// x86-64-v3 (AVX2 with FMA), not plain AVX2, for that reason.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(BNORM_NO_MULTIVERSION)
#define BNORM_MULTIVERSION_FMA __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BNORM_MULTIVERSION_FMA
#endif

namespace bnorm::kernels {

namespace {

typedef float Floats8 __attribute__((vector_size(8 * sizeof(float))));
// The same vector at any float's address: an unaligned load or store of
// eight floats; may_alias, so that it may read and write float arrays.
typedef float UnalignedFloats8 __attribute__((vector_size(8 * sizeof(float)), aligned(alignof(float)), may_alias));

// Every helper is forced inline into the multiversioned entry points: a
// separate function would be compiled for the baseline only, and one taking
// or returning a vector by value has a different ABI in each copy.
#define BNORM_ALWAYS_INLINE __attribute__((always_inline)) inline
#define BNORM_LOAD8(var, ptr) \
  Floats8 var;                \
  std::memcpy(&var, (ptr), sizeof var)

BNORM_ALWAYS_INLINE void store8(float* p, const Floats8& v) { std::memcpy(p, &v, sizeof v); }

// Rows [i, i + R) of c = op(a) · b, 16 columns at a time (8 at the end): R·2
// accumulators in registers over the whole of K, each step one row of b (two
// vector loads) against R values of a, broadcast. a's value (r, k) is
// a[(i + r)·K + k], or a[k·M + i + r] when a is given transposed.
template <int R, bool kTransposedA>
BNORM_ALWAYS_INLINE void row_block(float* c, const float* a, const float* b, std::int64_t i, std::int64_t M,
                                   std::int64_t N, std::int64_t K) {
  auto a_at = [&](int r, std::int64_t k) { return kTransposedA ? a[k * M + i + r] : a[(i + r) * K + k]; };
  std::int64_t j = 0;
  for (; j + 16 <= N; j += 16) {
    Floats8 acc[R][2];  // zeroed one by one: "= {}" compiled to a rep stos of the array per block
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = Floats8{};
    for (std::int64_t k = 0; k < K; ++k) {
      BNORM_LOAD8(b0, b + k * N + j);
      BNORM_LOAD8(b1, b + k * N + j + 8);
      for (int r = 0; r < R; ++r) {
        const float ar = a_at(r, k);
        acc[r][0] = acc[r][0] + ar * b0;
        acc[r][1] = acc[r][1] + ar * b1;
      }
    }
    for (int r = 0; r < R; ++r) {
      store8(c + (i + r) * N + j, acc[r][0]);
      store8(c + (i + r) * N + j + 8, acc[r][1]);
    }
  }
  if (j < N) {  // N is a multiple of 8: one vector left
    Floats8 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = Floats8{};
    for (std::int64_t k = 0; k < K; ++k) {
      BNORM_LOAD8(b0, b + k * N + j);
      for (int r = 0; r < R; ++r) acc[r] = acc[r] + a_at(r, k) * b0;
    }
    for (int r = 0; r < R; ++r) store8(c + (i + r) * N + j, acc[r]);
  }
}

// Six rows at a time: 12 accumulators, 2 loads of b and one broadcast of a
// in the 16 vector registers of AVX2. The remaining 1 to 5 rows in one block.
template <bool kTransposedA>
BNORM_ALWAYS_INLINE void rows_times(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N,
                                    std::int64_t K) {
  std::int64_t i = 0;
  for (; i + 6 <= M; i += 6) row_block<6, kTransposedA>(c, a, b, i, M, N, K);
  switch (M - i) {
    case 5:
      row_block<5, kTransposedA>(c, a, b, i, M, N, K);
      break;
    case 4:
      row_block<4, kTransposedA>(c, a, b, i, M, N, K);
      break;
    case 3:
      row_block<3, kTransposedA>(c, a, b, i, M, N, K);
      break;
    case 2:
      row_block<2, kTransposedA>(c, a, b, i, M, N, K);
      break;
    case 1:
      row_block<1, kTransposedA>(c, a, b, i, M, N, K);
      break;
    default:
      break;
  }
}

// Neighbouring lanes added: x0+x1, x2+x3, y0+y1, y2+y3, then the same of
// lanes 4-7. A macro: a function returning a vector has a different ABI in
// each copy.
#define pair_sums(x, y)                                           \
  (__builtin_shufflevector((x), (y), 0, 2, 8, 10, 4, 6, 12, 14) + \
   __builtin_shufflevector((x), (y), 1, 3, 9, 11, 5, 7, 13, 15))

// c[i.., j..] += the R x S dot products of rows of a with rows of b, each
// over all of K in 8 lanes, the lanes added at the end.
template <int R, int S>
BNORM_ALWAYS_INLINE void dot_block(float* c, const float* a, const float* b, std::int64_t i, std::int64_t j,
                                   std::int64_t N, std::int64_t K) {
  Floats8 acc[R][S];
  for (int r = 0; r < R; ++r)
    for (int s = 0; s < S; ++s) acc[r][s] = Floats8{};
  for (std::int64_t k = 0; k < K; k += 8) {
    // Loaded as whole vectors, not by memcpy into an array, which GCC kept
    // on the stack here and which ran at a fifth of this speed.
    Floats8 av[R], bv[S];
    for (int r = 0; r < R; ++r) av[r] = *reinterpret_cast<const UnalignedFloats8*>(a + (i + r) * K + k);
    for (int s = 0; s < S; ++s) bv[s] = *reinterpret_cast<const UnalignedFloats8*>(b + (j + s) * K + k);
    for (int r = 0; r < R; ++r)
      for (int s = 0; s < S; ++s) acc[r][s] = acc[r][s] + av[r] * bv[s];
  }
  if constexpr (S == 4) {
    // Three rounds of pairwise sums: lane s and lane s + 4 of the last hold
    // the two halves of accumulator s's sum. Lane by lane, the 12 sums took
    // as long as the multiply-adds over a group's 392 tiles.
    for (int r = 0; r < R; ++r) {
      const Floats8 sums = pair_sums(pair_sums(acc[r][0], acc[r][1]), pair_sums(acc[r][2], acc[r][3]));
      for (int s = 0; s < 4; ++s) c[(i + r) * N + j + s] += sums[s] + sums[s + 4];
    }
  } else {
    for (int r = 0; r < R; ++r)
      for (int s = 0; s < S; ++s) {
        float sum = 0.0f;
        for (int l = 0; l < 8; ++l) sum += acc[r][s][l];
        c[(i + r) * N + j + s] += sum;
      }
  }
}

// Three rows of a against four of b: 12 accumulators and 7 loads per 12
// multiply-adds. Leftover rows and columns one at a time.
template <int R>
BNORM_ALWAYS_INLINE void dot_rows(float* c, const float* a, const float* b, std::int64_t i, std::int64_t N,
                                  std::int64_t K) {
  std::int64_t j = 0;
  for (; j + 4 <= N; j += 4) dot_block<R, 4>(c, a, b, i, j, N, K);
  for (; j < N; ++j) dot_block<R, 1>(c, a, b, i, j, N, K);
}

}  // namespace

BNORM_MULTIVERSION_FMA
void small_gemm_ab(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K) {
  rows_times<false>(c, a, b, M, N, K);
}

BNORM_MULTIVERSION_FMA
void small_gemm_atb(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K) {
  rows_times<true>(c, a, b, M, N, K);
}

BNORM_MULTIVERSION_FMA
void small_gemm_abt_add(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K) {
  std::int64_t i = 0;
  for (; i + 3 <= M; i += 3) dot_rows<3>(c, a, b, i, N, K);
  for (; i < M; ++i) dot_rows<1>(c, a, b, i, N, K);
}

}  // namespace bnorm::kernels

#pragma once
// BNORM_MULTIVERSION compiles a hot function three times (AVX-512, AVX2,
// baseline x86-64) and the loader picks the best for the CPU it runs on
// (GCC/Clang target_clones), so the portable build is fast on new machines.
// Anything such a function calls should be inlined into it: a separate
// function is compiled for the baseline only.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(BNORM_NO_MULTIVERSION)
#define BNORM_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BNORM_MULTIVERSION
#endif

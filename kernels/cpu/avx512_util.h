// Small AVX-512 helpers shared by the AVX-512 kernel files. static inline: each including file
// (compiled with AVX-512 flags) gets its own copy.
#pragma once

#include <immintrin.h>

#include <cstdint>

// GCC 12 reports -Wuninitialized inside its own _mm512_reduce_add_epi32 (through
// _mm256_undefined_si256): a false positive in the compiler's header, silenced for the files that
// include this one. Hand-written shuffle or store-based reductions avoid the warning but made GCC
// keep the callers' accumulator arrays in memory (a 2x slowdown of the GEMM tile).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// Sum of the 16 int32 lanes.
static inline int32_t hsum_epi32_avx512(__m512i v) { return _mm512_reduce_add_epi32(v); }

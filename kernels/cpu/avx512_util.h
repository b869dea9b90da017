// Small AVX-512 helpers shared by the AVX-512 kernel files. static inline: each including file
// (compiled with AVX-512 flags) gets its own copy.
#pragma once

#include <immintrin.h>

#include <cstdint>

// Sum of the 16 int32 lanes. Runs once per output element, so a store and scalar adds cost
// nothing measurable (and avoid GCC 12's -Wuninitialized false positives inside
// _mm512_reduce_add_epi32 / _mm512_castsi512_si256).
static inline int32_t hsum_epi32_avx512(__m512i v) {
  alignas(64) int32_t lanes[16];
  _mm512_store_si512(lanes, v);
  int32_t s = 0;
  for (int i = 0; i < 16; ++i) s += lanes[i];
  return s;
}

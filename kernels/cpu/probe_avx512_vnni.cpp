// AVX-512 VNNI machine probe (kernels.h): vpdpbusd throughput, the int8 peak of this class of CPU.
#include <immintrin.h>

#include "avx512_util.h"
#include "kernels.h"

namespace bitnet::kernels::avx512_vnni {

int64_t int8_peak(int64_t iters, int64_t* macs_per_iter) {
  // 12 independent accumulator chains cover the 5-cycle latency at up to 2 per cycle.
  constexpr int kChains = 12;
  __m512i acc[kChains];
  const __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(2);
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_epi32(i);
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
  *macs_per_iter = int64_t(kChains) * 64;  // 64 u8 x s8 products per instruction
  __m512i s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_epi32(s, acc[i]);
  return hsum_epi32_avx512(s);
}

}  // namespace bitnet::kernels::avx512_vnni

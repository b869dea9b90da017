// AVX-512 machine probes (kernels.h): 512-bit vpmaddubsw throughput.
#include <immintrin.h>

#include "avx512_util.h"
#include "kernels.h"

namespace bitnet::kernels::avx512 {

int64_t int8_peak(int64_t iters, int64_t* macs_per_iter) {
  constexpr int kChains = 12;
  __m512i x[kChains];
  const __m512i y = _mm512_set1_epi8(1);
  for (int i = 0; i < kChains; ++i) x[i] = _mm512_set1_epi8(char(i + 1));
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kChains; ++i) x[i] = _mm512_maddubs_epi16(x[i], y);
  *macs_per_iter = int64_t(kChains) * 64;
  __m512i s = x[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_xor_si512(s, x[i]);
  return hsum_epi32_avx512(s);
}

}  // namespace bitnet::kernels::avx512

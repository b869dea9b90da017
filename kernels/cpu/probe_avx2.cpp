// AVX2 machine probes (kernels.h): streaming read bandwidth and vpmaddubsw throughput.
#include <immintrin.h>

#include "kernels.h"

namespace bitnet::kernels::avx2 {

uint64_t read_bytes(const uint8_t* p, size_t bytes) {
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  for (size_t i = 0; i + 128 <= bytes; i += 128) {
    a = _mm256_add_epi64(a, _mm256_load_si256((const __m256i*)(p + i)));
    b = _mm256_add_epi64(b, _mm256_load_si256((const __m256i*)(p + i + 32)));
    c = _mm256_add_epi64(c, _mm256_load_si256((const __m256i*)(p + i + 64)));
    d = _mm256_add_epi64(d, _mm256_load_si256((const __m256i*)(p + i + 96)));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256((__m256i*)lanes, s);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

int64_t int8_peak(int64_t iters, int64_t* macs_per_iter) {
  // 12 independent chains x = maddubs(x, y): enough to cover the 5-cycle latency at 2 per cycle.
  constexpr int kChains = 12;
  __m256i x[kChains];
  const __m256i y = _mm256_set1_epi8(1);
  for (int i = 0; i < kChains; ++i) x[i] = _mm256_set1_epi8(char(i + 1));
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kChains; ++i) x[i] = _mm256_maddubs_epi16(x[i], y);
  *macs_per_iter = int64_t(kChains) * 32;  // 32 u8 x s8 products per instruction
  __m256i s = x[0];
  for (int i = 1; i < kChains; ++i) s = _mm256_xor_si256(s, x[i]);
  return _mm256_extract_epi64(s, 0);
}

}  // namespace bitnet::kernels::avx2

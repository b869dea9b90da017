// Control experiment for the multiply-add side: the K256 AVX-512 VNNI GEMV of the core
// (k256_gemm<1, 4> in kernels/cpu/k256_gemm.inc with vpdpbusd) plus software prefetch of the
// weights. Decode streams the weights from DRAM; this variant tells whether the core kernel's
// gap to the streaming bandwidth is the kernel's access pattern (fixable with prefetch) or the
// layout's bytes. Same contract as gemm_k256_fn (kernels.h), M == 1 only.
//
// Overflow: as the core kernel (vpdpbusd adds at most 4 * 2 * 128 per lane per instruction;
// |total| <= 2 * 128 * kp < 2^31 for nb < 2^15).
#include <immintrin.h>

#include "kernels.h"
#include "lut_kernels.h"

namespace bitnet::kernels::avx512_vnni {

namespace {

inline int32_t hsum(__m512i v) {
  alignas(64) int32_t lanes[16];
  _mm512_store_si512(lanes, v);
  int32_t s = 0;
  for (int i = 0; i < 16; ++i) s += lanes[i];
  return s;
}

// Four weight rows n .. n + 3 (contiguous: 4 * nb * 64 bytes) against one activation row.
// While it runs, the tile prefetches the bytes `ahead` bytes past the tile start, 4 lines per
// block step, so the prefetches cover the same amount of data the tile consumes.
inline void tile4(const uint8_t* w, int64_t nb, const int8_t* q, int64_t n, int64_t ahead,
                  int32_t out[4]) {
  const int64_t row_bytes = nb * kK256Bytes;
  const uint8_t* base = w + n * row_bytes;
  const __m512i c3 = _mm512_set1_epi8(3);
  __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                    _mm512_setzero_si512()};
  for (int64_t b = 0; b < nb; ++b) {
    if (ahead > 0) {
      const char* pf = reinterpret_cast<const char*>(base) + ahead + 4 * b * kK256Bytes;
      _mm_prefetch(pf, _MM_HINT_T0);
      _mm_prefetch(pf + 64, _MM_HINT_T0);
      _mm_prefetch(pf + 128, _MM_HINT_T0);
      _mm_prefetch(pf + 192, _MM_HINT_T0);
    }
    __m512i raw[4];
    for (int j = 0; j < 4; ++j) raw[j] = _mm512_loadu_si512(base + j * row_bytes + b * kK256Bytes);
    for (int i = 0; i < 4; ++i) {
      const __m512i qv = _mm512_loadu_si512(q + b * kK256Values + i * 64);
      for (int j = 0; j < 4; ++j) {
        const __m512i c = _mm512_and_si512(_mm512_srli_epi16(raw[j], 2 * i), c3);
        acc[j] = _mm512_dpbusd_epi32(acc[j], c, qv);
      }
    }
  }
  for (int j = 0; j < 4; ++j) out[j] = hsum(acc[j]);
}

}  // namespace

void gemv_k256_i8_prefetch(const uint8_t* w, int64_t nb, const int8_t* q, const float* s_x,
                           const int32_t* q_sum, int64_t M, int64_t n0, int64_t n1, float w_scale,
                           float* y, int64_t ldy, int64_t ahead) {
  const float f = w_scale / s_x[0];
  // ahead < 0: -ahead tiles (of 4 rows) ahead.
  if (ahead < 0) ahead = -ahead * 4 * nb * kK256Bytes;
  int32_t out[4];
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) {
    // Never prefetch past the thread's range (harmless, but it would steal bandwidth).
    const int64_t room = (n1 - n) * nb * kK256Bytes;
    tile4(w, nb, q, n, ahead + 4 * nb * kK256Bytes <= room ? ahead : 0, out);
    for (int j = 0; j < 4; ++j) y[n + j] = float(out[j] - q_sum[0]) * f;
  }
  for (; n < n1; ++n) {  // remainder rows: the scalar reference is fine for a control
    int32_t acc = 0;
    const uint8_t* row = w + n * nb * kK256Bytes;
    for (int64_t b = 0; b < nb; ++b)
      for (int j = 0; j < kK256Values; ++j)
        acc += ((row[b * kK256Bytes + j % 64] >> (2 * (j / 64))) & 3) * q[b * kK256Values + j];
    y[n] = float(acc - q_sum[0]) * f;
  }
  (void)M;
  (void)ldy;
}

}  // namespace bitnet::kernels::avx512_vnni

// Control experiment for the multiply-add side on AVX2 (compiled with -mavx2 -mfma -mf16c): the
// core's K256 AVX2 GEMV (k256_gemm<1, 4> with vpmaddubsw, kernels/cpu/gemm_avx2.cpp) plus
// software prefetch of the weights, as k256_prefetch_avx512.cpp does for VNNI. Same contract as
// gemm_k256_fn (kernels.h), M == 1 only.
//
// Overflow (as the core kernel): vpmaddubsw of codes {0, 1, 2} and int8 gives int16 pair sums in
// [-512, 508]; 8 blocks add 8 * 8 = 64 of them per lane: [-32768, 32512], inside int16, so the
// wrapping vpaddw is exact. vpmaddwd(., 1) widens into int32: |total| <= 256 * kp < 2^31.
#include <immintrin.h>

#include "kernels.h"
#include "lut_kernels.h"

namespace bitnet::kernels::avx2 {

namespace {

inline int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

constexpr int64_t kPartBlocks = 8;  // blocks summed in int16 before widening (bound above)

// Rows n .. n + 3 (contiguous, 4 * nb * 64 bytes); prefetches `ahead` bytes past the tile start,
// 4 lines per block step (see k256_prefetch_avx512.cpp).
inline void tile4(const uint8_t* w, int64_t nb, const int8_t* q, int64_t n, int64_t ahead,
                  int32_t out[4]) {
  const int64_t row_bytes = nb * kK256Bytes;
  const uint8_t* base = w + n * row_bytes;
  const __m256i c3 = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
  __m256i acc[4];
  for (int j = 0; j < 4; ++j) acc[j] = _mm256_setzero_si256();
  for (int64_t b0 = 0; b0 < nb; b0 += kPartBlocks) {
    const int64_t b1 = b0 + kPartBlocks < nb ? b0 + kPartBlocks : nb;
    __m256i part[4];
    for (int j = 0; j < 4; ++j) part[j] = _mm256_setzero_si256();
    for (int64_t b = b0; b < b1; ++b) {
      if (ahead > 0) {
        const char* pf = reinterpret_cast<const char*>(base) + ahead + 4 * b * kK256Bytes;
        _mm_prefetch(pf, _MM_HINT_T0);
        _mm_prefetch(pf + 64, _MM_HINT_T0);
        _mm_prefetch(pf + 128, _MM_HINT_T0);
        _mm_prefetch(pf + 192, _MM_HINT_T0);
      }
      for (int s = 0; s < 2; ++s) {  // two 32-byte halves of the 64-byte block
        __m256i raw[4];
        for (int j = 0; j < 4; ++j)
          raw[j] =
              _mm256_loadu_si256((const __m256i*)(base + j * row_bytes + b * kK256Bytes + 32 * s));
        for (int i = 0; i < 4; ++i) {
          const __m256i qv =
              _mm256_loadu_si256((const __m256i*)(q + b * kK256Values + i * 64 + 32 * s));
          for (int j = 0; j < 4; ++j) {
            const __m256i c = _mm256_and_si256(_mm256_srli_epi16(raw[j], 2 * i), c3);
            part[j] = _mm256_add_epi16(part[j], _mm256_maddubs_epi16(c, qv));
          }
        }
      }
    }
    for (int j = 0; j < 4; ++j) acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(part[j], ones));
  }
  for (int j = 0; j < 4; ++j) out[j] = hsum(acc[j]);
}

}  // namespace

void gemv_k256_i8_prefetch(const uint8_t* w, int64_t nb, const int8_t* q, const float* s_x,
                           const int32_t* q_sum, int64_t M, int64_t n0, int64_t n1, float w_scale,
                           float* y, int64_t ldy, int64_t ahead) {
  const float f = w_scale / s_x[0];
  if (ahead < 0) ahead = -ahead * 4 * nb * kK256Bytes;  // -T: T tiles ahead
  int32_t out[4];
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) {
    const int64_t room = (n1 - n) * nb * kK256Bytes;  // never prefetch past the range
    tile4(w, nb, q, n, ahead + 4 * nb * kK256Bytes <= room ? ahead : 0, out);
    for (int j = 0; j < 4; ++j) y[n + j] = float(out[j] - q_sum[0]) * f;
  }
  for (; n < n1; ++n) {  // remainder rows: scalar
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

}  // namespace bitnet::kernels::avx2

// AVX2 kernels (compiled with -mavx2 -mfma -mf16c): activation quantization and the K256
// ternary x int8 product with vpmaddubsw.
//
// Overflow proof for the int16 partial sums. vpmaddubsw multiplies a code c in {0, 1, 2}
// (unsigned operand) by an activation q in [-128, 127] (signed operand) and adds adjacent pairs:
// each int16 result lies in [2 * 2 * -128, 2 * 2 * 127] = [-512, 508], so the instruction itself
// never saturates. One K256 block adds 8 such results into each int16 lane (4 shifts x 2 halves);
// kPartBlocks = 8 blocks add 64 results: the sum lies in [-32768, 32512], inside int16, so the
// wrapping vpaddw is exact for every int8 input (including all -128 and all +127). The partial
// is then widened with vpmaddwd(., 1) into int32 lanes; |total| <= 512 * kp / 2 < 2^31.
#include <immintrin.h>

#include <cmath>

#include "kernels.h"

namespace bitnet::kernels::avx2 {

namespace {

inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

struct Ops {
  static constexpr int kChunk = 32;
  static constexpr int kPartBlocks = 8;  // 8 blocks x 8 vpmaddubsw per lane: see the proof above
  using Raw = __m256i;
  using Q = __m256i;
  using Part = __m256i;
  using Acc = __m256i;
  static Raw load_w(const uint8_t* p) { return _mm256_loadu_si256((const __m256i*)p); }
  static Raw code(Raw raw, int i) {
    // 16-bit shifts move bits across bytes, but the mask keeps only the 2 bits of each byte.
    return _mm256_and_si256(_mm256_srli_epi16(raw, 2 * i), _mm256_set1_epi8(3));
  }
  static void store(uint8_t* p, Raw v) { _mm256_storeu_si256((__m256i*)p, v); }
  static Q load_q(const int8_t* p) { return _mm256_loadu_si256((const __m256i*)p); }
  static Part part_zero() { return _mm256_setzero_si256(); }
  static Part mac(Part p, Raw c, Q q) { return _mm256_add_epi16(p, _mm256_maddubs_epi16(c, q)); }
  static Acc acc_zero() { return _mm256_setzero_si256(); }
  static Acc widen(Acc a, Part p) {
    return _mm256_add_epi32(a, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
  }
  static int32_t hsum(Acc a) { return hsum_epi32(a); }
};

#include "k256_gemm.inc"

}  // namespace

bool quantize_row_i8(const float* x, int64_t k, int8_t* q, int64_t k_pad, float* s_x,
                     int32_t* q_sum) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 inf = _mm256_set1_ps(INFINITY);
  __m256 vmax = _mm256_setzero_ps();
  __m256 bad = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i));
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, inf, _CMP_NLT_UQ));  // |x| >= inf, or NaN
    vmax = _mm256_max_ps(vmax, a);
  }
  if (_mm256_movemask_ps(bad)) return false;
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
  float amax = _mm_cvtss_f32(m4);
  for (int64_t t = i; t < k; ++t) {
    if (!std::isfinite(x[t])) return false;
    amax = std::fmax(amax, std::fabs(x[t]));
  }
  // PyTorch evaluates `127.0 / t` as reciprocal(t) * 127 (see kernels.h).
  const float s = (1.0f / (amax > 1e-5f ? amax : 1e-5f)) * 127.0f;
  const __m256 vs = _mm256_set1_ps(s);
  const __m256 lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
  __m256i vsum = _mm256_setzero_si256();
  auto quant8 = [&](const float* p) {
    __m256 v = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(p), vs),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    const __m256i r = _mm256_cvtps_epi32(v);  // exact: v is integral
    vsum = _mm256_add_epi32(vsum, r);
    return r;
  };
  i = 0;
  for (; i + 32 <= k; i += 32) {
    const __m256i a = quant8(x + i), b = quant8(x + i + 8);
    const __m256i c = quant8(x + i + 16), d = quant8(x + i + 24);
    // packs work per 128-bit lane: the result holds a0 b0 c0 d0 a1 b1 c1 d1 (4-byte groups of
    // 4 values); the permute restores the order a b c d.
    const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    const __m256i abcd = _mm256_packs_epi16(ab, cd);
    const __m256i fixed =
        _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i*)(q + i), fixed);
  }
  int32_t sum = hsum_epi32(vsum);
  for (; i < k; ++i) {
    float v = std::nearbyint(x[i] * s);
    v = v < -128.0f ? -128.0f : (v > 127.0f ? 127.0f : v);
    q[i] = int8_t(v);
    sum += q[i];
  }
  for (; i < k_pad; ++i) q[i] = 0;
  *s_x = s;
  *q_sum = sum;
  return true;
}

void gemv_k256_i8(const uint8_t* w, int64_t nb, const int8_t* q, const float* s_x,
                  const int32_t* q_sum, int64_t M, int64_t n0, int64_t n1, float w_scale, float* y,
                  int64_t ldy) {
  // One weight row at a time: rows are contiguous, so each thread reads its range as a single
  // linear stream, prefetched 2 KiB ahead (decode is memory-bound; see docs/performance.md).
  k256_gemm<1, 1, 2048>(w, nb, q, s_x, q_sum, M, n0, n1, w_scale, y, ldy);
}

void gemm_k256_i8(const uint8_t* w, int64_t nb, const int8_t* q, const float* s_x,
                  const int32_t* q_sum, int64_t M, int64_t n0, int64_t n1, float w_scale, float* y,
                  int64_t ldy) {
  k256_gemm_unpacked<2, 3>(w, nb, q, s_x, q_sum, M, n0, n1, w_scale, y, ldy);
}

}  // namespace bitnet::kernels::avx2

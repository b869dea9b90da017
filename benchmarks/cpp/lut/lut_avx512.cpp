// AVX-512 BW TL2 kernels (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni): vpshufb
// zmm looks up 2 groups x 32 rows per instruction (lanes 0-1 one group, lanes 2-3 another, see
// the lut64 layout in lut_kernels.h). AVX-512 has no vpsignb: the sign becomes a mask register
// (vptestmb against the group's sign bit) and a masked subtraction from zero negates the lookup.
//
// Instructions per super-group (768 weights) and activation row: 8 vpshufb, 8 masked vpsubb,
// 8 vpaddb, widening 2 vpunpck + 2 vpmaddubsw + 2 vpaddw; shared by the MT rows of a tile:
// 6 index ops (and / shift) and 4 vptestmb. GEMV (MT = 1): 40 ops per 768 weights.
//
// Bounds (lut_kernels.h): every int8 lane sums 4 lookups (one per unit) -> |.| <= 96; each
// 256-bit half of an int16 accumulator holds the dot product of 12 weights per super-group,
// |.| <= 1536 * 10 = 15360 per flush, so adding the two halves stays within 30720 <= 32767.
#include <immintrin.h>

#include <algorithm>

#include "lut_kernels.h"

// Activation rows per GEMM tile (4 zmm accumulators per row; 32 zmm registers).
#ifndef BITNET_LUT_AVX512_GEMM_MT
#define BITNET_LUT_AVX512_GEMM_MT 6  // 1, 2, 3, 4, 6, 8 measured: 6 best by ~2%
#endif

namespace bitnet::kernels::avx512 {

namespace {

#include "lut_build.inc"

struct RowAcc {
  // int16 lanes: s16[0] = rows 0-7 | 16-23 | 0-7 | 16-23 (128-bit lanes), s16[1] = rows 8-15 |
  // 24-31 | 8-15 | 24-31; the two 256-bit halves hold different groups of the same rows.
  __m512i s16[2];
  // int32 sums of the even / odd int16 lanes of the low 256 bits of s16[i] (int32 lanes 0-7;
  // lanes 8-15 hold a copy).
  __m512i even[2], odd[2];
};

// Bytes 0..31 = lo, 32..63 = hi. (A blend, not _mm512_inserti64x4 on a cast: GCC 12 reports a
// false -Wmaybe-uninitialized for the cast's undefined upper half.)
inline __m512i halves(char lo, char hi) {
  return _mm512_mask_blend_epi8(__mmask64(0xFFFFFFFF00000000ull), _mm512_set1_epi8(lo),
                                _mm512_set1_epi8(hi));
}

// All-ones masks for the maskz forms of intrinsics whose plain forms pass an undefined vector
// through, which GCC 12.2 reports as a false -Wmaybe-uninitialized (GCC PR 105593).
constexpr __mmask8 kAll8 = 0xFF;
constexpr __mmask16 kAll16 = 0xFFFF;

template <int MT>
// Prefetch (ahead > 0): each super-group step prefetches the 160 bytes `ahead` bytes further
// on, while they lie within `room` bytes of wb (the caller's row range).
static inline void tl2_tile(const block_tl2* wb, int64_t n_sg, const int8_t* lut, int64_t stride,
                            int32_t (*out)[32], int64_t ahead, int64_t room) {
  const __m512i c0f = _mm512_set1_epi8(0x0F), c116 = _mm512_set1_epi16(0x1001);
  const __m512i zero = _mm512_setzero_si512();
  // Sign bit of the group each half of a unit looks up: units (0,2) (1,3) (4,6) (5,7).
  const __m512i b02 = halves(0x01, 0x04), b13 = halves(0x02, 0x08);
  const __m512i b46 = halves(0x10, 0x40), b57 = halves(0x20, char(0x80));
  RowAcc acc[MT];
  for (int m = 0; m < MT; ++m)
    acc[m].even[0] = acc[m].even[1] = acc[m].odd[0] = acc[m].odd[1] = zero;
  for (int64_t s0 = 0; s0 < n_sg; s0 += kTl2FlushSg) {
    const int64_t s1 = std::min(s0 + kTl2FlushSg, n_sg);
    for (int m = 0; m < MT; ++m) acc[m].s16[0] = acc[m].s16[1] = zero;
    for (int64_t s = s0; s < s1; ++s) {
      const block_tl2* blk = wb + s;
      if (ahead > 0 &&
          s * int64_t(sizeof(block_tl2)) + ahead + int64_t(sizeof(block_tl2)) <= room) {
        const char* pf = reinterpret_cast<const char*>(blk) + ahead;
        _mm_prefetch(pf, _MM_HINT_T0);
        _mm_prefetch(pf + 64, _MM_HINT_T0);
        _mm_prefetch(pf + 159, _MM_HINT_T0);
      }
      const __m512i xa = _mm512_loadu_si512(blk->mag[0]);  // mag[0] | mag[1]
      const __m512i xb = _mm512_loadu_si512(blk->mag[2]);  // mag[2] | mag[3]
      const __m512i S =
          _mm512_maskz_broadcast_i64x4(kAll8, _mm256_loadu_si256((const __m256i*)blk->sign));
      const __m512i idx[4] = {
          _mm512_and_si512(xa, c0f), _mm512_and_si512(_mm512_srli_epi16(xa, 4), c0f),
          _mm512_and_si512(xb, c0f), _mm512_and_si512(_mm512_srli_epi16(xb, 4), c0f)};
      const __mmask64 neg[4] = {_mm512_test_epi8_mask(S, b02), _mm512_test_epi8_mask(S, b13),
                                _mm512_test_epi8_mask(S, b46), _mm512_test_epi8_mask(S, b57)};
      for (int m = 0; m < MT; ++m) {
        const int8_t* lt = lut + m * stride + s * kTl2Lut64Bytes;
        __m512i ah = zero, al = zero;  // |.| <= 4 * 24 = 96
        for (int u = 0; u < 4; ++u) {
          __m512i vh = _mm512_shuffle_epi8(_mm512_loadu_si512(lt + 128 * u), idx[u]);
          __m512i vl = _mm512_shuffle_epi8(_mm512_loadu_si512(lt + 128 * u + 64), idx[u]);
          vh = _mm512_mask_sub_epi8(vh, neg[u], zero, vh);
          vl = _mm512_mask_sub_epi8(vl, neg[u], zero, vl);
          ah = _mm512_add_epi8(ah, vh);
          al = _mm512_add_epi8(al, vl);
        }
        // l + 16 h per row (vpmaddubsw never saturates: |.| <= 96 + 16 * 96).
        acc[m].s16[0] = _mm512_add_epi16(acc[m].s16[0],
                                         _mm512_maddubs_epi16(c116, _mm512_unpacklo_epi8(al, ah)));
        acc[m].s16[1] = _mm512_add_epi16(acc[m].s16[1],
                                         _mm512_maddubs_epi16(c116, _mm512_unpackhi_epi8(al, ah)));
      }
    }
    // Widen: add the two 256-bit halves (|.| <= 30720, see above), then sign-extend the even
    // and odd int16 lanes into int32 with shifts (no 512 -> 256-bit conversions).
    for (int m = 0; m < MT; ++m) {
      for (int i = 0; i < 2; ++i) {
        const __m512i v = acc[m].s16[i];
        const __m512i w = _mm512_add_epi16(v, _mm512_maskz_shuffle_i64x2(kAll8, v, v, 0x4E));
        const __m512i e =
            _mm512_maskz_srai_epi32(kAll16, _mm512_maskz_slli_epi32(kAll16, w, 16), 16);
        acc[m].even[i] = _mm512_add_epi32(acc[m].even[i], e);
        acc[m].odd[i] = _mm512_add_epi32(acc[m].odd[i], _mm512_maskz_srai_epi32(kAll16, w, 16));
      }
    }
  }
  for (int m = 0; m < MT; ++m) {
    for (int i = 0; i < 2; ++i) {
      alignas(64) int32_t e[16], o[16];
      _mm512_store_si512(e, acc[m].even[i]);
      _mm512_store_si512(o, acc[m].odd[i]);
      // int16 lane L (0..15) of s16[i] is row L (L < 8) or L + 8 (L >= 8), plus 8 * i.
      for (int j = 0; j < 8; ++j) {
        const int L0 = 2 * j, L1 = 2 * j + 1;
        out[m][8 * i + (L0 < 8 ? L0 : L0 + 8)] = e[j];
        out[m][8 * i + (L1 < 8 ? L1 : L1 + 8)] = o[j];
      }
    }
  }
}

template <int MT>
static void tl2_gemm(const uint8_t* w, int64_t n_sg, const int8_t* lut, int64_t stride,
                     const float* s_x, int64_t M, int64_t n0, int64_t n1, float w_scale, float* y,
                     int64_t ldy, int64_t ahead) {
  const block_tl2* blocks = reinterpret_cast<const block_tl2*>(w);
  const int64_t end_block = (n1 + kTl2Rows - 1) / kTl2Rows;  // row blocks [n0 / 32, end_block)
  alignas(64) int32_t out[MT][32];
  int64_t m = 0;
  for (; m + MT <= M; m += MT) {
    for (int64_t n = n0; n < n1; n += kTl2Rows) {
      const int64_t room = (end_block - n / kTl2Rows) * n_sg * int64_t(sizeof(block_tl2));
      tl2_tile<MT>(blocks + (n / kTl2Rows) * n_sg, n_sg, lut + m * stride, stride, out, ahead,
                   room);
      const int64_t rows = std::min<int64_t>(kTl2Rows, n1 - n);
      for (int i = 0; i < MT; ++i) {
        const float f = w_scale / s_x[m + i];
        for (int64_t r = 0; r < rows; ++r) y[(m + i) * ldy + n + r] = float(out[i][r]) * f;
      }
    }
  }
  if constexpr (MT > 1) {
    if (m < M)
      tl2_gemm<MT - 1>(w, n_sg, lut + m * stride, stride, s_x + m, M - m, n0, n1, w_scale,
                       y + m * ldy, ldy, ahead);
  }
}

}  // namespace

void build_lut_tl2_i8(const int8_t* q, int64_t k, int64_t n_sg, int8_t* lut) {
  build_lut_tl2_pairs(q, k, n_sg * kTl2SgGroups, [&](int64_t g, __m256i th, __m256i tl) {
    // lut64: group j of super-group s is in unit u = (j & 1) + 2 (j >= 4), half (j >> 1) & 1;
    // its 16-byte table fills both 128-bit lanes of that half. g is even: groups g, g + 1.
    for (int e = 0; e < 2; ++e) {
      const int64_t gj = g + e, s = gj / kTl2SgGroups;
      const int j = int(gj % kTl2SgGroups);
      const int u = (j & 1) + 2 * (j >= 4), half = (j >> 1) & 1;
      int8_t* dst = lut + s * kTl2Lut64Bytes + 128 * u + 32 * half;
      const __m256i h2 = e == 0 ? _mm256_permute2x128_si256(th, th, 0x00)
                                : _mm256_permute2x128_si256(th, th, 0x11);
      const __m256i l2 = e == 0 ? _mm256_permute2x128_si256(tl, tl, 0x00)
                                : _mm256_permute2x128_si256(tl, tl, 0x11);
      _mm256_storeu_si256((__m256i*)dst, h2);
      _mm256_storeu_si256((__m256i*)(dst + 64), l2);
    }
  });
}

void gemv_tl2_i8(const uint8_t* w, int64_t n_sg, const int8_t* lut, int64_t lut_stride,
                 const float* s_x, int64_t M, int64_t n0, int64_t n1, float w_scale, float* y,
                 int64_t ldy, int64_t prefetch) {
  tl2_gemm<1>(w, n_sg, lut, lut_stride, s_x, M, n0, n1, w_scale, y, ldy, prefetch);
}

void gemm_tl2_i8(const uint8_t* w, int64_t n_sg, const int8_t* lut, int64_t lut_stride,
                 const float* s_x, int64_t M, int64_t n0, int64_t n1, float w_scale, float* y,
                 int64_t ldy, int64_t prefetch) {
  tl2_gemm<BITNET_LUT_AVX512_GEMM_MT>(w, n_sg, lut, lut_stride, s_x, M, n0, n1, w_scale, y, ldy,
                                      prefetch);
}

}  // namespace bitnet::kernels::avx512

// AVX2 TL2 kernels (compiled with -mavx2 -mfma -mf16c): tables of 16 int8 entries looked up
// with vpshufb ymm, 32 weight rows per lookup, signs applied with vpsignb. Layout, tables and
// the overflow proof: lut_kernels.h.
//
// Instructions per super-group (8 groups x 32 rows = 768 weights) and activation row:
//   lookups 16 vpshufb, signs 16 vpsignb, sums 16 vpaddb, widening 4 vpunpck + 4 vpmaddubsw +
//   4 vpaddw; shared by the MT activation rows of a tile: index extraction 12 (and / shift) and
//   sign controls 16 (shift / or). GEMV (MT = 1): 88 ALU ops per 768 weights.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "lut_kernels.h"

// Activation rows per GEMM tile (4 ymm accumulators per row; 16 ymm registers).
#ifndef BITNET_LUT_AVX2_GEMM_MT
#define BITNET_LUT_AVX2_GEMM_MT 3  // 1, 2, 3, 4 measured: 3 best by ~2%
#endif

namespace bitnet::kernels::avx2 {

namespace {

#include "lut_build.inc"

// Accumulators of one activation row for one 32-row block.
struct RowAcc {
  __m256i h, l;    // int8 part sums of the current 4 groups: |.| <= 4 * 24 = 96
  __m256i s16[2];  // int16 partial dot products: [0] rows 0-7 | 16-23, [1] rows 8-15 | 24-31
  __m256i s32[4];  // int32 totals: rows 0-7, 8-15, 16-23, 24-31
};

// Groups 2P and 2P + 1 of super-group `blk` for the MT rows of the tile.
template <int P, int MT>
static inline void tl2_pair(const block_tl2* blk, __m256i S, const int8_t* lut_g, int64_t stride,
                            RowAcc (&acc)[MT]) {
  const __m256i c0f = _mm256_set1_epi8(0x0F), c1 = _mm256_set1_epi8(1);
  const __m256i x = _mm256_loadu_si256((const __m256i*)blk->mag[P]);
  const __m256i i0 = _mm256_and_si256(x, c0f);
  const __m256i i1 = _mm256_and_si256(_mm256_srli_epi16(x, 4), c0f);
  // vpsignb controls: bit 7 of each byte = sign bit 2P (2P + 1) of the same byte (16-bit shifts
  // keep each byte's own bit at position 7), | 1 so that a positive control is never 0.
  const __m256i c0 = _mm256_or_si256(_mm256_slli_epi16(S, 7 - 2 * P), c1);
  const __m256i cc = _mm256_or_si256(_mm256_slli_epi16(S, 6 - 2 * P), c1);
  for (int m = 0; m < MT; ++m) {
    const int8_t* t = lut_g + m * stride + 2 * P * 32;
    const __m256i th0 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)t));
    const __m256i tl0 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(t + 16)));
    const __m256i th1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(t + 32)));
    const __m256i tl1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(t + 48)));
    acc[m].h = _mm256_add_epi8(acc[m].h, _mm256_sign_epi8(_mm256_shuffle_epi8(th0, i0), c0));
    acc[m].l = _mm256_add_epi8(acc[m].l, _mm256_sign_epi8(_mm256_shuffle_epi8(tl0, i0), c0));
    acc[m].h = _mm256_add_epi8(acc[m].h, _mm256_sign_epi8(_mm256_shuffle_epi8(th1, i1), cc));
    acc[m].l = _mm256_add_epi8(acc[m].l, _mm256_sign_epi8(_mm256_shuffle_epi8(tl1, i1), cc));
  }
}

// int8 parts (4 groups) -> int16: vpmaddubsw({1, 16}, {l, h}) = l + 16 h per row, exact.
template <int MT>
static inline void tl2_widen(RowAcc (&acc)[MT]) {
  const __m256i c116 = _mm256_set1_epi16(0x1001);  // bytes 1, 16
  for (int m = 0; m < MT; ++m) {
    const __m256i lo = _mm256_unpacklo_epi8(acc[m].l, acc[m].h);  // rows 0-7 | 16-23
    const __m256i hi = _mm256_unpackhi_epi8(acc[m].l, acc[m].h);  // rows 8-15 | 24-31
    acc[m].s16[0] = _mm256_add_epi16(acc[m].s16[0], _mm256_maddubs_epi16(c116, lo));
    acc[m].s16[1] = _mm256_add_epi16(acc[m].s16[1], _mm256_maddubs_epi16(c116, hi));
    acc[m].h = _mm256_setzero_si256();
    acc[m].l = _mm256_setzero_si256();
  }
}

// One tile: MT activation rows x one 32-row block, over all n_sg super-groups. out[m][r] = the
// exact int32 dot product of activation row m with weight row r of the block.
template <int MT>
// Prefetch (ahead > 0): each super-group step prefetches the 160 bytes `ahead` bytes further
// on, while they lie within `room` bytes of wb (the caller's row range).
static inline void tl2_tile(const block_tl2* wb, int64_t n_sg, const int8_t* lut, int64_t stride,
                            int32_t (*out)[32], int64_t ahead, int64_t room) {
  RowAcc acc[MT];
  for (int m = 0; m < MT; ++m) {
    acc[m].h = acc[m].l = _mm256_setzero_si256();
    for (int i = 0; i < 4; ++i) acc[m].s32[i] = _mm256_setzero_si256();
  }
  for (int64_t s0 = 0; s0 < n_sg; s0 += kTl2FlushSg) {
    const int64_t s1 = std::min(s0 + kTl2FlushSg, n_sg);
    for (int m = 0; m < MT; ++m) acc[m].s16[0] = acc[m].s16[1] = _mm256_setzero_si256();
    for (int64_t s = s0; s < s1; ++s) {
      const block_tl2* blk = wb + s;
      if (ahead > 0 &&
          s * int64_t(sizeof(block_tl2)) + ahead + int64_t(sizeof(block_tl2)) <= room) {
        const char* pf = reinterpret_cast<const char*>(blk) + ahead;
        _mm_prefetch(pf, _MM_HINT_T0);
        _mm_prefetch(pf + 64, _MM_HINT_T0);
        _mm_prefetch(pf + 159, _MM_HINT_T0);
      }
      const int8_t* lut_g = lut + s * kTl2Lut16Bytes;
      const __m256i S = _mm256_loadu_si256((const __m256i*)blk->sign);
      tl2_pair<0, MT>(blk, S, lut_g, stride, acc);
      tl2_pair<1, MT>(blk, S, lut_g, stride, acc);
      tl2_widen<MT>(acc);
      tl2_pair<2, MT>(blk, S, lut_g, stride, acc);
      tl2_pair<3, MT>(blk, S, lut_g, stride, acc);
      tl2_widen<MT>(acc);
    }
    // |s16| <= 128 * 24 * kTl2FlushSg = 30720: widen into int32 before it could overflow.
    for (int m = 0; m < MT; ++m) {
      for (int i = 0; i < 2; ++i) {
        const __m256i v = acc[m].s16[i];
        acc[m].s32[i] =
            _mm256_add_epi32(acc[m].s32[i], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(v)));
        acc[m].s32[2 + i] = _mm256_add_epi32(acc[m].s32[2 + i],
                                             _mm256_cvtepi16_epi32(_mm256_extracti128_si256(v, 1)));
      }
    }
  }
  for (int m = 0; m < MT; ++m) {
    // s32[0] rows 0-7, s32[1] rows 8-15, s32[2] rows 16-23, s32[3] rows 24-31.
    for (int i = 0; i < 4; ++i) _mm256_storeu_si256((__m256i*)(out[m] + 8 * i), acc[m].s32[i]);
  }
}

template <int MT>
static void tl2_gemm(const uint8_t* w, int64_t n_sg, const int8_t* lut, int64_t stride,
                     const float* s_x, int64_t M, int64_t n0, int64_t n1, float w_scale, float* y,
                     int64_t ldy, int64_t ahead) {
  const block_tl2* blocks = reinterpret_cast<const block_tl2*>(w);
  const int64_t end_block = (n1 + kTl2Rows - 1) / kTl2Rows;  // row blocks [n0 / 32, end_block)
  alignas(32) int32_t out[MT][32];
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
    // lut16: group g = [T_h | T_l] at byte 32 g.
    _mm256_storeu_si256((__m256i*)(lut + 32 * g), _mm256_permute2x128_si256(th, tl, 0x20));
    _mm256_storeu_si256((__m256i*)(lut + 32 * (g + 1)), _mm256_permute2x128_si256(th, tl, 0x31));
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
  tl2_gemm<BITNET_LUT_AVX2_GEMM_MT>(w, n_sg, lut, lut_stride, s_x, M, n0, n1, w_scale, y, ldy,
                                    prefetch);
}

}  // namespace bitnet::kernels::avx2

// AVX-512 kernels of the dense matrices (compiled with AVX-512 F/BW/VL/DQ, plus AVX2/FMA/F16C);
// the loops are the templates of dense_kernels.h, this file supplies the 512-bit operations.
//
// Float types: 16 fp32 lanes; f16 widened with vcvtph2ps, bf16 with a zero-extend and a 16-bit
// shift (both exact); products accumulated with vfmadd.
//
// Quantized types, two 32-value blocks per step (lanes 0..7 block b, 8..15 block b + 1; lane g of
// a block holds the dot of its values 4g..4g+3). x codes are in [-127, 127] (DenseQ8Rows).
// vpmaddubsw (unsigned x signed bytes, adjacent pairs added into int16 with saturation) is made
// saturation-free by the operand ranges:
//   Q8_0 (w in [-128, 127]): u = |w| (vpabsb; |-128| is the byte 0x80 = unsigned 128) and
//     s = x negated where w < 0 (masked subtract; in [-127, 127]). u * s = w * x; a pair sum is
//     at most 2 * 128 * 127 = 32512 < 2^15.
//   Q4_0 (codes c in [0, 15], value c - 8): u = c, s = x, pair sums at most 2 * 15 * 127 = 3810;
//     the -8 offset comes from corr4 per lane (-8 * the lane's sum of x codes).
// vpmaddwd with ones widens the int16 pairs to int32 lanes (|lane| <= 4 * 128 * 127), converted
// exactly to fp32 and scaled by d_w * d_x with one vfmadd per lane.
// The VNNI table (dense_avx512_vnni.cpp) replaces vpmaddubsw + vpmaddwd by vpdpbusd.
#include <immintrin.h>

#include <cstring>

#include "avx512_util.h"  // also silences GCC 12's false -Wuninitialized in its AVX-512 headers
#include "dense_kernels.h"

#ifndef BITNET_DENSE_AVX512_NS
#define BITNET_DENSE_AVX512_NS avx512
#endif

namespace bitnet::kernels::BITNET_DENSE_AVX512_NS {

namespace {

using dense_detail::load_u16;

struct Ops {
  // ---- float types
  using F = __m512;
  static constexpr int kLanes = 16;
  static F zero() { return _mm512_setzero_ps(); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static float hsum(F v) {
    const __m256 h =
        _mm256_add_ps(_mm512_castps512_ps256(v),
                      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static F load_x(const float* p) { return _mm512_loadu_ps(p); }
  static F load_f32(const uint8_t* p) { return _mm512_loadu_ps(p); }
  static F load_f16(const uint8_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static F load_bf16(const uint8_t* p) {
    const __m512i u =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
  }
  static void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }
  static void prefetch_l2(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1); }

  // ---- quantized types: two blocks per step
  static constexpr int kBlocks = 2;
  using I = __m512i;
  struct Q8W {
    __m512i u;      // |w| as unsigned bytes
    __mmask64 neg;  // w < 0
  };
  struct Q4W {
    __m512i c;  // codes 0..15: bytes 0..31 values 0..31 of block b, bytes 32..63 of block b + 1
  };
  static Q8W q8_load(const uint8_t* blk) {
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
    const __m256i hi =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kDenseQ8Bytes + 2));
    const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    return {_mm512_abs_epi8(w), _mm512_movepi8_mask(w)};
  }
  static __m512i q8_signed_x(const Q8W& w, const int8_t* x) {
    const __m512i v = _mm512_loadu_si512(x);
    return _mm512_mask_sub_epi8(v, w.neg, _mm512_setzero_si512(), v);
  }
  static Q4W q4_load(const uint8_t* blk) {
    // [qs_b, qs_b, qs_b+1, qs_b+1] (two broadcast loads), the second copy of each shifted right
    // by 4 (32-bit shifts: bits crossing into a byte land in its high nibble, which the mask
    // drops), masked to 4 bits: values 0..31 of each block in order.
    const __m256i q0 =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2)));
    const __m256i q1 = _mm256_broadcastsi128_si256(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + kDenseQ4Bytes + 2)));
    const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1);
    const __m512i v =
        _mm512_srlv_epi32(z, _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4, 4));
    return {_mm512_and_si512(v, _mm512_set1_epi8(0x0f))};
  }
#if defined(BITNET_DENSE_AVX512_VNNI)
  // vpdpbusd adds the 4 unsigned x signed byte products of each lane into int32 directly (no
  // intermediate int16, so no saturation question at all).
  static I q8_dot(const Q8W& w, const int8_t* x, const int32_t*) {
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), w.u, q8_signed_x(w, x));
  }
  static I q4_dot(const Q4W& w, const int8_t* x, const int32_t* corr4) {
    return _mm512_dpbusd_epi32(_mm512_loadu_si512(corr4), w.c, _mm512_loadu_si512(x));
  }
#else
  static I q8_dot(const Q8W& w, const int8_t* x, const int32_t*) {
    return _mm512_madd_epi16(_mm512_maddubs_epi16(w.u, q8_signed_x(w, x)), _mm512_set1_epi16(1));
  }
  static I q4_dot(const Q4W& w, const int8_t* x, const int32_t* corr4) {
    const __m512i p =
        _mm512_madd_epi16(_mm512_maddubs_epi16(w.c, _mm512_loadu_si512(x)), _mm512_set1_epi16(1));
    return _mm512_add_epi32(p, _mm512_loadu_si512(corr4));
  }
#endif
  // fp32 d_w of blocks b and b + 1, broadcast to lanes 0..7 and 8..15.
  template <int BS>
  static F load_dw(const uint8_t* blk) {
    const uint32_t pair = uint32_t(load_u16(blk)) | uint32_t(load_u16(blk + BS)) << 16;
    const __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128(int(pair)));
    const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(d));
  }
  // The scales of 16 consecutive blocks (8 steps): one gather of the 32-bit words at the block
  // starts (d in the low half; the high half is the block's first code bytes, never past the
  // block), truncated to 16 bits (vpmovdw) and converted at once.
  static constexpr int kGroupSteps = 8;
  using DwGroup = __m512;
  template <int BS>
  static DwGroup load_dw_group(const uint8_t* blk) {
    const __m512i idx =
        _mm512_setr_epi32(0, BS, 2 * BS, 3 * BS, 4 * BS, 5 * BS, 6 * BS, 7 * BS, 8 * BS, 9 * BS,
                          10 * BS, 11 * BS, 12 * BS, 13 * BS, 14 * BS, 15 * BS);
    const __m512i v = _mm512_i32gather_epi32(idx, blk, 1);
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
  }
  static DwGroup group_scale(const DwGroup& g, const float* dx) {
    return _mm512_mul_ps(g, _mm512_loadu_ps(dx));
  }
  static F fma_lanes(F acc, I dot, F d) { return _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), d, acc); }
  static F dw_of(const DwGroup& g, int step) {
    const __m512i pair = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_permutexvar_ps(_mm512_add_epi32(pair, _mm512_set1_epi32(2 * step)), g);
  }
  static F scale_acc(F acc, I dot, F dw, const float* d4) {
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw, _mm512_loadu_ps(d4)), acc);
  }
};

}  // namespace

#if !defined(BITNET_DENSE_AVX512_VNNI)  // the VNNI table uses these float kernels as they are
void dense_f32(const uint8_t* w, int64_t row_bytes, int64_t cols, const float* x, int64_t ldx,
               int64_t M, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  dense_detail::f_rows<Ops, dense_detail::ElemF32>(w, row_bytes, cols, x, ldx, M, r0, r1, y, ldy);
}

void dense_f16(const uint8_t* w, int64_t row_bytes, int64_t cols, const float* x, int64_t ldx,
               int64_t M, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  dense_detail::f_rows<Ops, dense_detail::ElemF16>(w, row_bytes, cols, x, ldx, M, r0, r1, y, ldy);
}

void dense_bf16(const uint8_t* w, int64_t row_bytes, int64_t cols, const float* x, int64_t ldx,
                int64_t M, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  dense_detail::f_rows<Ops, dense_detail::ElemBF16>(w, row_bytes, cols, x, ldx, M, r0, r1, y, ldy);
}
#endif

void dense_q8_0(const uint8_t* w, int64_t row_bytes, int64_t nb, const DenseQ8Rows& x, int64_t M,
                int64_t r0, int64_t r1, float* y, int64_t ldy) {
  dense_detail::q_rows<Ops, dense_detail::Q8>(w, row_bytes, nb, x, M, r0, r1, y, ldy);
}

void dense_q4_0(const uint8_t* w, int64_t row_bytes, int64_t nb, const DenseQ8Rows& x, int64_t M,
                int64_t r0, int64_t r1, float* y, int64_t ldy) {
  dense_detail::q_rows<Ops, dense_detail::Q4>(w, row_bytes, nb, x, M, r0, r1, y, ldy);
}

#include "attention_f32.inc"  // attention_f32, compiled with this file's ISA flags

}  // namespace bitnet::kernels::BITNET_DENSE_AVX512_NS

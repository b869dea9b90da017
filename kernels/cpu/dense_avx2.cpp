// AVX2 kernels of the dense matrices (compiled with -mavx2 -mfma -mf16c); the loops are the
// templates of dense_kernels.h, this file supplies the 256-bit operations.
//
// Float types: 8 fp32 lanes; f16 widened with vcvtph2ps (F16C), bf16 with a zero-extend and a
// 16-bit shift (both exact); products accumulated with vfmadd.
//
// Quantized types, one 32-value block per step (int8 codes of x in [-127, 127], see
// DenseQ8Rows). vpmaddubsw multiplies an unsigned by a signed byte and adds adjacent pairs into
// int16 with saturation, so both operand ranges are arranged to make saturation impossible:
//   Q8_0 (weights w in [-128, 127]): the sign trick u = |w| (vpsignb(w, w); |-128| is the byte
//     0x80, read as the unsigned 128), s = x * sign(w) (vpsignb(x, w); in [-127, 127] since x
//     never is -128). u * s = w * x, and a pair sum is at most 2 * 128 * 127 = 32512 < 2^15.
//   Q4_0 (codes c in [0, 15], value c - 8): u = c, s = x; a pair sum is at most
//     2 * 15 * 127 = 3810. The -8 offset is added per lane from corr4 (-8 * sum of the 4 x codes
//     of the lane), so the lane holds sum (c - 8) x exactly.
// vpmaddwd with ones then adds the int16 pairs into int32 lanes: lane g holds the exact dot of
// values 4g..4g+3 (|.| <= 4 * 128 * 127), converted exactly to fp32 and scaled by
// d_w * d_x (fp32 product) with one vfmadd into the lane accumulator.
#include <immintrin.h>

#include <cstring>

#include "dense_kernels.h"

namespace bitnet::kernels::avx2 {

namespace {

using dense_detail::load_u16;

struct Ops {
  // ---- float types
  using F = __m256;
  static constexpr int kLanes = 8;
  static F zero() { return _mm256_setzero_ps(); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static float hsum(F v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static F load_x(const float* p) { return _mm256_loadu_ps(p); }
  static F load_f32(const uint8_t* p) { return _mm256_loadu_ps(reinterpret_cast<const float*>(p)); }
  static F load_f16(const uint8_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static F load_bf16(const uint8_t* p) {
    const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
  }
  static void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }
  static void prefetch_l2(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1); }

  // ---- quantized types: one block per step, lanes 0..7 = groups of 4 values
  static constexpr int kBlocks = 1;
  using I = __m256i;
  struct Q8W {
    __m256i u;  // |w| as unsigned bytes
    __m256i w;  // w (the sign source for x)
  };
  struct Q4W {
    __m256i c;  // codes 0..15, value j of the block in byte j
  };
  static __m256i ones16() { return _mm256_set1_epi16(1); }
  static Q8W q8_load(const uint8_t* blk) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
    return {_mm256_sign_epi8(w, w), w};
  }
  static I q8_dot(const Q8W& w, const int8_t* x, const int32_t*) {
    const __m256i s =
        _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)), w.w);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w.u, s), ones16());
  }
  static Q4W q4_load(const uint8_t* blk) {
    // Low nibbles hold values 0..15, high nibbles 16..31: [qs | qs] (one broadcast load), the
    // upper copy shifted right by 4 (32-bit shifts: bits crossing into a byte land in its high
    // nibble, which the mask drops), masked to 4 bits.
    const __m256i q =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2)));
    const __m256i v = _mm256_srlv_epi32(q, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    return {_mm256_and_si256(v, _mm256_set1_epi8(0x0f))};
  }
  static I q4_dot(const Q4W& w, const int8_t* x, const int32_t* corr4) {
    const __m256i p = _mm256_madd_epi16(
        _mm256_maddubs_epi16(w.c, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x))),
        ones16());
    return _mm256_add_epi32(p, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(corr4)));
  }
  template <int BS>
  static F load_dw(const uint8_t* blk) {
    return _mm256_set1_ps(_cvtsh_ss(load_u16(blk)));
  }
  // The scales of 8 consecutive blocks: one gather of the 32-bit words at the block starts (d in
  // the low half, the block's first code bytes in the high half, never past the block), the
  // low halves packed to 8 fp16 and converted at once.
  static constexpr int kGroupSteps = 8;
  using DwGroup = __m256;
  template <int BS>
  static DwGroup load_dw_group(const uint8_t* blk) {
    const __m256i idx = _mm256_setr_epi32(0, BS, 2 * BS, 3 * BS, 4 * BS, 5 * BS, 6 * BS, 7 * BS);
    const __m256i v = _mm256_i32gather_epi32(reinterpret_cast<const int*>(blk), idx, 1);
    const __m256i lo16 = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1,
                                          0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, lo16), 0x08);
    return _mm256_cvtph_ps(_mm256_castsi256_si128(packed));
  }
  static DwGroup group_scale(const DwGroup& g, const float* dx) {
    return _mm256_mul_ps(g, _mm256_loadu_ps(dx));
  }
  static F dw_of(const DwGroup& g, int step) {
    return _mm256_permutevar8x32_ps(g, _mm256_set1_epi32(step));
  }
  static F fma_lanes(F acc, I dot, F d) { return _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), d, acc); }
  static F scale_acc(F acc, I dot, F dw, const float* d4) {
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(dw, _mm256_loadu_ps(d4)), acc);
  }
};

}  // namespace

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

void dense_q8_0(const uint8_t* w, int64_t row_bytes, int64_t nb, const DenseQ8Rows& x, int64_t M,
                int64_t r0, int64_t r1, float* y, int64_t ldy) {
  dense_detail::q_rows<Ops, dense_detail::Q8>(w, row_bytes, nb, x, M, r0, r1, y, ldy);
}

void dense_q4_0(const uint8_t* w, int64_t row_bytes, int64_t nb, const DenseQ8Rows& x, int64_t M,
                int64_t r0, int64_t r1, float* y, int64_t ldy) {
  dense_detail::q_rows<Ops, dense_detail::Q4>(w, row_bytes, nb, x, M, r0, r1, y, ldy);
}

#include "attention_f32.inc"  // attention_f32, compiled with this file's ISA flags

}  // namespace bitnet::kernels::avx2

// NEON kernels of the dense matrices (compiled with -march=armv8-a); the loops are the templates
// of dense_kernels.h, this file supplies the operations on pairs of 128-bit registers (8 lanes,
// the lane count per 32-value block that the quantized loops expect).
//
// Float types: two float32x4_t per step; f16 widened with fcvtl (vcvt_f32_f16, exact), bf16 with
// a 16-bit left shift (ushll, exact); products accumulated with fmla (fused).
//
// Quantized types, one 32-value block per step (x codes in [-127, 127], see DenseQ8Rows). The
// weights are used as signed bytes: Q8_0 q in [-128, 127], Q4_0 code - 8 in [-8, 7] (so the
// corr4 offsets are not needed here). Without the dot-product extension, smull/smlal2 multiply
// 8 byte pairs into int16 and add a second 8: each int16 lane holds 2 products, at most
// 2 * 128 * 127 = 32512 < 2^15 in magnitude, so it cannot overflow; sadalp/saddlp then add
// adjacent int16 pairs into int32 lanes (4 products each). With the dot-product extension
// (dense_neon_dotprod.cpp) sdot adds 4 byte products straight into each int32 lane. Either way
// each int32 lane is an exact partial of the block's dot product; it is converted exactly to
// fp32 and scaled by d_w * d_x with one fmla.
#include <arm_neon.h>

#include <cstring>

#include "dense_kernels.h"

#ifndef BITNET_DENSE_NEON_NS
#define BITNET_DENSE_NEON_NS neon
#endif

namespace bitnet::kernels::BITNET_DENSE_NEON_NS {

namespace {

using dense_detail::load_u16;

struct Ops {
  // 8 fp32 lanes: values 0..3 in lo, 4..7 in hi.
  struct F {
    float32x4_t lo, hi;
  };
  struct I {
    int32x4_t lo, hi;
  };
  static constexpr int kLanes = 8;
  static F zero() { return {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)}; }
  static F fma(F a, F b, F c) { return {vfmaq_f32(c.lo, a.lo, b.lo), vfmaq_f32(c.hi, a.hi, b.hi)}; }
  static F add(F a, F b) { return {vaddq_f32(a.lo, b.lo), vaddq_f32(a.hi, b.hi)}; }
  static float hsum(F v) { return vaddvq_f32(vaddq_f32(v.lo, v.hi)); }
  static F load_x(const float* p) { return {vld1q_f32(p), vld1q_f32(p + 4)}; }
  // Byte loads (vld1q_u8) never need alignment; the data are reinterpreted afterwards.
  static F load_f32(const uint8_t* p) {
    return {vreinterpretq_f32_u8(vld1q_u8(p)), vreinterpretq_f32_u8(vld1q_u8(p + 16))};
  }
  static F load_f16(const uint8_t* p) {
    const float16x8_t h = vreinterpretq_f16_u8(vld1q_u8(p));
    return {vcvt_f32_f16(vget_low_f16(h)), vcvt_high_f32_f16(h)};
  }
  static F load_bf16(const uint8_t* p) {
    const uint16x8_t h = vreinterpretq_u16_u8(vld1q_u8(p));
    return {vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16)),
            vreinterpretq_f32_u32(vshll_high_n_u16(h, 16))};
  }
  static void prefetch(const void* p) { __builtin_prefetch(p, 0, 3); }
  static void prefetch_l2(const void* p) { __builtin_prefetch(p, 0, 2); }

  // ---- quantized types: one block per step
  static constexpr int kBlocks = 1;
  struct Q8W {
    int8x16_t a, b;  // values 0..15 and 16..31
  };
  using Q4W = Q8W;  // code - 8, same arrangement
  static Q8W q8_load(const uint8_t* blk) {
    return {vreinterpretq_s8_u8(vld1q_u8(blk + 2)), vreinterpretq_s8_u8(vld1q_u8(blk + 18))};
  }
  static Q4W q4_load(const uint8_t* blk) {
    const uint8x16_t qs = vld1q_u8(blk + 2);
    const int8x16_t eight = vdupq_n_s8(8);
    return {vsubq_s8(vreinterpretq_s8_u8(vandq_u8(qs, vdupq_n_u8(0x0f))), eight),
            vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(qs, 4)), eight)};
  }
#if defined(BITNET_DENSE_NEON_DOTPROD)
  static I dot(const Q8W& w, const int8_t* x) {
    return {vdotq_s32(vdupq_n_s32(0), w.a, vld1q_s8(x)),
            vdotq_s32(vdupq_n_s32(0), w.b, vld1q_s8(x + 16))};
  }
#else
  static int32x4_t dot16(int8x16_t w, int8x16_t x) {
    int16x8_t p = vmull_s8(vget_low_s8(w), vget_low_s8(x));
    p = vmlal_high_s8(p, w, x);  // 2 products per int16 lane: |.| <= 32512
    return vpaddlq_s16(p);
  }
  static I dot(const Q8W& w, const int8_t* x) {
    return {dot16(w.a, vld1q_s8(x)), dot16(w.b, vld1q_s8(x + 16))};
  }
#endif
  static I q8_dot(const Q8W& w, const int8_t* x, const int32_t*) { return dot(w, x); }
  static I q4_dot(const Q4W& w, const int8_t* x, const int32_t*) { return dot(w, x); }
  template <int BS>
  static F load_dw(const uint8_t* blk) {
    const float32x4_t d = vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(load_u16(blk))));
    return {d, d};
  }
  static constexpr int kGroupSteps = 1;  // scales loaded per step (load_dw)
  static F scale_acc(F acc, I dot, F dw, const float* d4) {
    const float32x4_t s0 = vmulq_f32(dw.lo, vld1q_f32(d4));
    const float32x4_t s1 = vmulq_f32(dw.hi, vld1q_f32(d4 + 4));
    return {vfmaq_f32(acc.lo, vcvtq_f32_s32(dot.lo), s0),
            vfmaq_f32(acc.hi, vcvtq_f32_s32(dot.hi), s1)};
  }
};

}  // namespace

#if !defined(BITNET_DENSE_NEON_DOTPROD)  // the dot-product table uses these float kernels
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

}  // namespace bitnet::kernels::BITNET_DENSE_NEON_NS

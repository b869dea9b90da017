// The 128-bit K256 loads, unpack and stores shared by the NEON Ops structs (k256_gemm.inc).
// In an unnamed namespace on purpose: files built with different -march flags include this
// header, and each must get its own copy (internal linkage).
#pragma once

#include <arm_neon.h>

#include <cstdint>

namespace {

struct NeonK256Base {
  static constexpr int kChunk = 16;
  using Raw = uint8x16_t;
  using Q = int8x16_t;
  using Acc = int32x4_t;
  static Raw load_w(const uint8_t* p) { return vld1q_u8(p); }
  static Raw code(Raw raw, int i) {
    // i is a constant after inlining in the unrolled tiles; the switch keeps the immediate-shift
    // form for every i.
    const uint8x16_t mask = vdupq_n_u8(3);
    switch (i) {
      case 0:
        return vandq_u8(raw, mask);
      case 1:
        return vandq_u8(vshrq_n_u8(raw, 2), mask);
      case 2:
        return vandq_u8(vshrq_n_u8(raw, 4), mask);
      default:
        return vshrq_n_u8(raw, 6);  // the top two bits need no mask
    }
  }
  static void store(uint8_t* p, Raw v) { vst1q_u8(p, v); }
  static Q load_q(const int8_t* p) { return vld1q_s8(p); }
  static Acc acc_zero() { return vdupq_n_s32(0); }
  static int32_t hsum(Acc a) { return vaddvq_s32(a); }
};

}  // namespace

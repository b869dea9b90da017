// ARMv8-A NEON kernels (compiled with -march=armv8-a, no dot product): activation quantization and
// the K256 ternary x int8 product with widening multiply-accumulate (smlal / smlal2).
//
// The product. A code c in {0, 1, 2} is reinterpreted as a signed byte (same value) and
// multiplied by an activation q in [-128, 127] with vmlal_s8 (low 8 bytes) and vmlal_high_s8
// (high 8 bytes) into two int16x8 partial sums, Part = {lo, hi}; every Part is pairwise-widened
// into int32x4 lanes with vpadalq_s16 after kPartBlocks K256 blocks.
//
// Overflow proof for the int16 partial sums (smlal wraps, it never saturates, so it must never
// leave int16). One product c * q lies in [2 * -128, 2 * 127] = [-256, 254]. One mac() adds
// exactly one product to each int16 lane of lo and one to each lane of hi. Per K256 block a
// (row m, weight row j) pair calls mac() 64 / kChunk = 4 steps x 4 shifts = 16 times, so each
// lane receives 16 products per block. kPartBlocks = 8 blocks give 128 products per lane:
//   all q = -128, all c = 2:  128 * -256 = -32768 = INT16_MIN   (exactly representable)
//   all q = +127, all c = 2:  128 *  254 =  32512 <= INT16_MAX
// and any other int8 input lies between these bounds, so every int16 partial sum is exact.
// (9 blocks could reach -36864: 8 is the largest safe count.) The unpacked GEMM path
// (k256_codes_tile) gives a lane one mac per kChunk values, i.e. the same 16 per block, and widens
// after the same kPartBlocks * 256 values. vpadalq_s16 adds two int16 lanes into an int32 lane;
// over a whole row |total| <= 256 * kp < 2^31 for nb < 2^15 (kernels.h).
//
// The quantizer uses vcvtnq_s32_f32 (round to nearest, ties to even, independent of FPCR) on
// the fp32 product x * s, which is bit-exact with ref's std::nearbyint(x * s) in the default
// rounding mode.
#include <arm_neon.h>

#include <cmath>

#include "kernels.h"
#include "neon_util.h"

namespace bitnet::kernels::neon {

namespace {

struct Ops : NeonK256Base {
  static constexpr int kPartBlocks = 8;  // 8 blocks x 16 products per int16 lane: see above
  struct Part {
    int16x8_t lo, hi;  // products of bytes 0..7 and 8..15 of the chunk
  };
  static Part part_zero() { return Part{vdupq_n_s16(0), vdupq_n_s16(0)}; }
  static Part mac(Part p, Raw c, Q q) {
    const int8x16_t cs = vreinterpretq_s8_u8(c);  // codes 0..2: same value as s8
    p.lo = vmlal_s8(p.lo, vget_low_s8(cs), vget_low_s8(q));
    p.hi = vmlal_high_s8(p.hi, cs, q);
    return p;
  }
  static Acc widen(Acc a, Part p) { return vpadalq_s16(vpadalq_s16(a, p.lo), p.hi); }
};

#include "k256_gemm.inc"

}  // namespace

bool quantize_row_i8(const float* x, int64_t k, int8_t* q, int64_t k_pad, float* s_x,
                     int32_t* q_sum) {
  const float32x4_t inf = vdupq_n_f32(INFINITY);
  float32x4_t vmax = vdupq_n_f32(0.0f);
  uint32x4_t finite = vdupq_n_u32(~0u);
  int64_t i = 0;
  for (; i + 4 <= k; i += 4) {
    const float32x4_t a = vabsq_f32(vld1q_f32(x + i));
    finite = vandq_u32(finite, vcltq_f32(a, inf));  // false for +-inf and NaN
    vmax = vmaxq_f32(vmax, a);
  }
  if (vminvq_u32(finite) == 0) return false;
  float amax = vmaxvq_f32(vmax);  // every lane is finite here: max is order-independent
  for (int64_t t = i; t < k; ++t) {
    if (!std::isfinite(x[t])) return false;
    amax = std::fmax(amax, std::fabs(x[t]));
  }
  // PyTorch evaluates `127.0 / t` as reciprocal(t) * 127 (see kernels.h).
  const float s = (1.0f / (amax > 1e-5f ? amax : 1e-5f)) * 127.0f;
  const float32x4_t vs = vdupq_n_f32(s);
  const int32x4_t lo = vdupq_n_s32(-128), hi = vdupq_n_s32(127);
  int32x4_t vsum = vdupq_n_s32(0);
  auto quant4 = [&](const float* p) {
    // fp32 x * s, then round half to even; |x * s| <= 127 (+ rounding), far inside int32.
    int32x4_t r = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(p), vs));
    r = vminq_s32(vmaxq_s32(r, lo), hi);
    vsum = vaddq_s32(vsum, r);
    return r;
  };
  i = 0;
  for (; i + 16 <= k; i += 16) {
    const int32x4_t a = quant4(x + i), b = quant4(x + i + 4);
    const int32x4_t c = quant4(x + i + 8), d = quant4(x + i + 12);
    // Values are already in [-128, 127]: the saturating narrows are exact.
    const int16x8_t ab = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));
    const int16x8_t cd = vcombine_s16(vqmovn_s32(c), vqmovn_s32(d));
    vst1q_s8(q + i, vcombine_s8(vqmovn_s16(ab), vqmovn_s16(cd)));
  }
  int32_t sum = vaddvq_s32(vsum);
  for (; i < k; ++i) {
    float v = std::nearbyint(x[i] * s);
    v = v < -128.0f ? -128.0f : (v > 127.0f ? 127.0f : v);
    q[i] = int8_t(v);
    sum += q[i];
  }
  const int8x16_t zero = vdupq_n_s8(0);
  for (; i + 16 <= k_pad; i += 16) vst1q_s8(q + i, zero);
  for (; i < k_pad; ++i) q[i] = 0;
  *s_x = s;
  *q_sum = sum;
  return true;
}

void gemv_k256_i8(const uint8_t* w, int64_t nb, const int8_t* q, const float* s_x,
                  const int32_t* q_sum, int64_t M, int64_t n0, int64_t n1, float w_scale, float* y,
                  int64_t ldy) {
  // One weight row at a time: each thread reads its range as one linear stream, prefetched
  // 1 KiB ahead (distance not tuned on ARM hardware yet).
  k256_gemm<1, 1, 1024>(w, nb, q, s_x, q_sum, M, n0, n1, w_scale, y, ldy);
}

void gemm_k256_i8(const uint8_t* w, int64_t nb, const int8_t* q, const float* s_x,
                  const int32_t* q_sum, int64_t M, int64_t n0, int64_t n1, float w_scale, float* y,
                  int64_t ldy) {
  // Weights unpacked once per 4 rows (k256_gemm_unpacked), then 2 x 4 tiles: 16 int16 partials
  // + 4 code + 1 activation registers in the inner loop (the 8 int32 accumulators are touched
  // once per kPartBlocks blocks), inside the 32 NEON registers.
  k256_gemm_unpacked<2, 4>(w, nb, q, s_x, q_sum, M, n0, n1, w_scale, y, ldy);
}

}  // namespace bitnet::kernels::neon

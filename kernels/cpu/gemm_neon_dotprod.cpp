// ARMv8.2-A NEON + dot product kernels (compiled with -march=armv8.2-a+dotprod): the K256
// ternary x int8 product with sdot (vdotq_s32), which multiplies four signed bytes by four signed
// bytes and adds the four products straight into an int32 lane. Quantization reuses
// neon::quantize_row_i8 (dispatch.cpp).
//
// Codes c in {0, 1, 2} are reinterpreted as signed bytes (same values), so the signed sdot
// computes exactly c * q for every activation q in [-128, 127].
//
// Overflow proof: one sdot adds to a lane at most 4 products of magnitude <= 2 * 128 = 256,
// i.e. a value in [-1024, 1016]. Per K256 block a (row m, weight row j) pair issues
// 4 steps x 4 shifts = 16 sdot, so a lane changes by at most 16 * 1024 = 2^14 per block, and over
// a whole row of nb blocks by at most 2^14 * nb < 2^29 for nb < 2^15 (kernels.h); the horizontal
// sum of the 4 lanes stays below 2^31 (|total| <= 256 * kp). The int32 lanes never overflow for
// any int8 input, so the tiles accumulate straight into the int32 Acc (kPartBlocks = 0).
#include <arm_neon.h>

#include "kernels.h"
#include "neon_util.h"

namespace bitnet::kernels::neon_dotprod {

namespace {

struct Ops : NeonK256Base {
  static constexpr int kPartBlocks = 0;  // sdot accumulates int32 directly into Acc
  using Part = int32x4_t;
  static Part part_zero() { return vdupq_n_s32(0); }
  static Part mac(Part p, Raw c, Q q) { return vdotq_s32(p, vreinterpretq_s8_u8(c), q); }
  static Acc widen(Acc a, Part p) { return vaddq_s32(a, p); }
};

#include "k256_gemm.inc"

}  // namespace

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
  // Weights unpacked once per 4 rows (k256_gemm_unpacked), then 6 x 4 tiles: 24 int32
  // accumulators + 4 code + 1 activation registers (of 32); each activation load feeds 4 sdot
  // and each code load feeds 6.
  k256_gemm_unpacked<6, 4>(w, nb, q, s_x, q_sum, M, n0, n1, w_scale, y, ldy);
}

}  // namespace bitnet::kernels::neon_dotprod

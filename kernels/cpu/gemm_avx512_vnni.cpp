// AVX-512 VNNI kernels: the K256 ternary x int8 product with vpdpbusd, which multiplies four
// unsigned codes by four signed activations and adds them straight into an int32 lane.
//
// Overflow proof: one vpdpbusd adds at most 4 * 2 * 128 = 1024 in magnitude to a lane, and a
// row of kp values feeds kp / 64 of them into each of the 16 lanes; the total over all lanes is
// bounded by 2 * 128 * kp < 2^31 for nb < 2^15 (kernels.h). vpdpbusd (not vpdpbusds) wraps
// instead of saturating, and never needs to.
#include <immintrin.h>

#include "avx512_util.h"
#include "kernels.h"

namespace bitnet::kernels::avx512_vnni {

namespace {

struct Ops : Avx512K256Base {
  static constexpr int kPartBlocks = 0;  // vpdpbusd accumulates int32 directly into Acc
  using Part = __m512i;
  static Part part_zero() { return _mm512_setzero_si512(); }
  static Part mac(Part p, Raw c, Q q) { return _mm512_dpbusd_epi32(p, c, q); }
  static Acc widen(Acc a, Part p) { return _mm512_add_epi32(a, p); }
};

#include "k256_gemm.inc"

}  // namespace

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
  k256_gemm_unpacked<5, 5>(w, nb, q, s_x, q_sum, M, n0, n1, w_scale, y, ldy);
}

}  // namespace bitnet::kernels::avx512_vnni

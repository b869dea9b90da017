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

struct Ops {
  static constexpr int kChunk = 64;
  static constexpr int kPartBlocks = 0;  // vpdpbusd accumulates int32 directly into Acc
  using Raw = __m512i;
  using Q = __m512i;
  using Part = __m512i;
  using Acc = __m512i;
  static Raw load_w(const uint8_t* p) { return _mm512_loadu_si512(p); }
  static Raw code(Raw raw, int i) {
    return _mm512_and_si512(_mm512_srli_epi16(raw, 2 * i), _mm512_set1_epi8(3));
  }
  static void store(uint8_t* p, Raw v) { _mm512_storeu_si512(p, v); }
  static Q load_q(const int8_t* p) { return _mm512_loadu_si512(p); }
  static Part part_zero() { return _mm512_setzero_si512(); }
  static Part mac(Part p, Raw c, Q q) { return _mm512_dpbusd_epi32(p, c, q); }
  static Acc acc_zero() { return _mm512_setzero_si512(); }
  static Acc widen(Acc a, Part p) { return _mm512_add_epi32(a, p); }
  static int32_t hsum(Acc a) { return hsum_epi32_avx512(a); }
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

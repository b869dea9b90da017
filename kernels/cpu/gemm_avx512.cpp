// AVX-512 F/BW/VL kernels without VNNI (Skylake-SP class): the K256 ternary x int8 product with
// 512-bit vpmaddubsw.
//
// Overflow proof: as in gemm_avx2.cpp each vpmaddubsw result lies in [-512, 508]. A 64-byte
// K256 block feeds 4 results (one per shift) into each int16 lane, so kPartBlocks = 16 blocks
// add 64 results: [-32768, 32512], inside int16 for every int8 input. Widened with vpmaddwd.
#include <immintrin.h>

#include "avx512_util.h"
#include "kernels.h"

namespace bitnet::kernels::avx512 {

namespace {

struct Ops {
  static constexpr int kChunk = 64;
  static constexpr int kPartBlocks = 16;  // 16 blocks x 4 vpmaddubsw per lane: see above
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
  static Part mac(Part p, Raw c, Q q) { return _mm512_add_epi16(p, _mm512_maddubs_epi16(c, q)); }
  static Acc acc_zero() { return _mm512_setzero_si512(); }
  static Acc widen(Acc a, Part p) {
    return _mm512_add_epi32(a, _mm512_madd_epi16(p, _mm512_set1_epi16(1)));
  }
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
  k256_gemm_unpacked<4, 3>(w, nb, q, s_x, q_sum, M, n0, n1, w_scale, y, ldy);
}

}  // namespace bitnet::kernels::avx512

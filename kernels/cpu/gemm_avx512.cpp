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

struct Ops : Avx512K256Base {
  static constexpr int kPartBlocks = 16;  // 16 blocks x 4 vpmaddubsw per lane: see above
  using Part = __m512i;
  static Part part_zero() { return _mm512_setzero_si512(); }
  static Part mac(Part p, Raw c, Q q) { return _mm512_add_epi16(p, _mm512_maddubs_epi16(c, q)); }
  static Acc widen(Acc a, Part p) {
    return _mm512_add_epi32(a, _mm512_madd_epi16(p, _mm512_set1_epi16(1)));
  }
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

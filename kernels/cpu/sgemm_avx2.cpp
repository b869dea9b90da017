// AVX2 + FMA sgemm micro-kernel (sgemm_kernels.h): register tile MR 6 x NR 16, i.e. 6 rows x two
// 8-lane vectors = 12 ymm accumulators (of 16). Per step of K: two loads of the B panel row, 6
// broadcasts of A, 12 FMAs. Edge tiles use the same loop with fewer rows (a template per row
// count) and vmaskmov loads / stores for the columns, so every output element sees the same
// arithmetic wherever its tile lies.
#include <immintrin.h>

#include "sgemm_kernels.h"

namespace bitnet::kernels::avx2 {

namespace {

constexpr int kMr = kSgemmMr;
constexpr int kNr = kSgemmNr;

// Lane mask of the first n (clamped to 0..8) lanes: all ones where lane < n.
__m256i lane_mask(int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int v = int(n < 0 ? 0 : n > 8 ? 8 : n);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(v), idx);
}

// kFull: n == NR, plain loads and stores of C; otherwise C is only touched under lane masks.
template <int M, bool kFull>
void tile_rows(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t n,
               float alpha, float beta) {
  const __m256i m0 = lane_mask(n), m1 = lane_mask(n - 8);
  __m256 c0[M], c1[M];
#pragma GCC unroll 8
  for (int i = 0; i < M; ++i) {
    c0[i] = _mm256_setzero_ps();
    c1[i] = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b);
    const __m256 b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
      c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
    }
    a += kMr;
    b += kNr;
  }
  const __m256 va = _mm256_set1_ps(alpha);
  const __m256 vb = _mm256_set1_ps(beta);
#pragma GCC unroll 8
  for (int i = 0; i < M; ++i) {
    float* ci = c + i * ldc;
    __m256 r0 = _mm256_mul_ps(va, c0[i]), r1 = _mm256_mul_ps(va, c1[i]);
    if (beta != 0.0f) {
      const __m256 o0 = kFull ? _mm256_loadu_ps(ci) : _mm256_maskload_ps(ci, m0);
      const __m256 o1 = kFull ? _mm256_loadu_ps(ci + 8) : _mm256_maskload_ps(ci + 8, m1);
      r0 = _mm256_fmadd_ps(va, c0[i], _mm256_mul_ps(vb, o0));
      r1 = _mm256_fmadd_ps(va, c1[i], _mm256_mul_ps(vb, o1));
    }
    if (kFull) {
      _mm256_storeu_ps(ci, r0);
      _mm256_storeu_ps(ci + 8, r1);
    } else {
      _mm256_maskstore_ps(ci, m0, r0);
      _mm256_maskstore_ps(ci + 8, m1, r1);
    }
  }
}

using TileFn = void (*)(int64_t, const float*, const float*, float*, int64_t, int64_t, float,
                        float);
constexpr TileFn kFullTiles[kMr] = {tile_rows<1, true>, tile_rows<2, true>, tile_rows<3, true>,
                                    tile_rows<4, true>, tile_rows<5, true>, tile_rows<6, true>};
constexpr TileFn kEdgeTiles[kMr] = {tile_rows<1, false>, tile_rows<2, false>, tile_rows<3, false>,
                                    tile_rows<4, false>, tile_rows<5, false>, tile_rows<6, false>};

}  // namespace

void sgemm_pack_a(bool trans, const float* A, int64_t lda, int64_t m0, int64_t m, int64_t k0,
                  int64_t kc, float* dst) {
  sgemm_detail::pack_a<kMr>(trans, A, lda, m0, m, k0, kc, dst);
}

void sgemm_pack_b(bool trans, const float* B, int64_t ldb, int64_t k0, int64_t kc, int64_t n0,
                  int64_t n, float* dst) {
  sgemm_detail::pack_b<kNr>(trans, B, ldb, k0, kc, n0, n, dst);
}

void sgemm_tile(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t m,
                int64_t n, float alpha, float beta) {
  (n == kNr ? kFullTiles : kEdgeTiles)[m - 1](kc, a, b, c, ldc, n, alpha, beta);
}

}  // namespace bitnet::kernels::avx2

// AVX-512F sgemm micro-kernel (sgemm_kernels.h): register tile MR 12 x NR 32, i.e. 12 rows x two
// 16-lane vectors = 24 zmm accumulators. Per step of K: two loads of the B panel row, 12
// broadcasts of A, 24 FMAs (two FMA ports: 12 cycles, which the loads and the loop overhead fit
// under). Edge tiles use the same loop with fewer rows (a template per row count; the panels are
// zero-padded past N) and masked loads / stores of C, so every output element sees the same
// arithmetic wherever its tile lies.
#include <immintrin.h>

#include <array>
#include <cstddef>
#include <utility>

#include "avx512_util.h"  // silences GCC 12's false -Wuninitialized in its AVX-512 headers
#include "sgemm_kernels.h"

namespace bitnet::kernels::avx512 {

namespace {

constexpr int kMr = kSgemmMr;
constexpr int kNr = kSgemmNr;
// B panel rows are prefetched into L1 this many steps (16 x 128 bytes) ahead: the panel streams
// from L2 (or L3 for the first row tile of a block), whose latency the FMAs of 16 steps cover.
// Measured +3..6% over relying on the hardware prefetchers.
constexpr int64_t kPrefetchB = 16;

// Prefetches the C tile's lines (rows of 32 floats: up to three lines each, as c may be unaligned).
template <int M, _mm_hint kHint>
inline void prefetch_c(const float* c, int64_t ldc) {
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), kHint);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16), kHint);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 31), kHint);
  }
}

template <int M>
void tile_rows(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t n,
               float alpha, float beta) {
  __m512 c0[M], c1[M];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i) {
    c0[i] = _mm512_setzero_ps();
    c1[i] = _mm512_setzero_ps();
  }
  // C is written (and for beta != 0 read) after ~kc * 12 cycles of FMAs: its lines are
  // prefetched into L2 now, which covers a miss to memory, and into L1 for writing
  // kPrefetchSteps steps before the end.
  constexpr int64_t kPrefetchSteps = 24;
  prefetch_c<M, _MM_HINT_T1>(c, ldc);
  const int64_t k_pf = kc - kPrefetchSteps;
  for (int64_t k = 0; k < kc; ++k) {
    if (k == k_pf) prefetch_c<M, _MM_HINT_ET0>(c, ldc);
    _mm_prefetch(reinterpret_cast<const char*>(b + kPrefetchB * kNr), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(b + kPrefetchB * kNr + 16), _MM_HINT_T0);
    const __m512 b0 = _mm512_loadu_ps(b);
    const __m512 b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
    }
    a += kMr;
    b += kNr;
  }
  // Lanes of the tile's columns: C is only touched under them.
  const __mmask16 m0 = n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
  const __mmask16 m1 = n >= 32 ? __mmask16(0xFFFF) : n > 16 ? __mmask16((1u << (n - 16)) - 1) : 0;
  const __m512 va = _mm512_set1_ps(alpha);
  if (beta == 0.0f) {
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) {
      _mm512_mask_storeu_ps(c + i * ldc, m0, _mm512_mul_ps(va, c0[i]));
      _mm512_mask_storeu_ps(c + i * ldc + 16, m1, _mm512_mul_ps(va, c1[i]));
    }
  } else {
    const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) {
      float* ci = c + i * ldc;
      const __m512 o0 = _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m0, ci));
      const __m512 o1 = _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m1, ci + 16));
      _mm512_mask_storeu_ps(ci, m0, _mm512_fmadd_ps(va, c0[i], o0));
      _mm512_mask_storeu_ps(ci + 16, m1, _mm512_fmadd_ps(va, c1[i], o1));
    }
  }
}

using TileFn = void (*)(int64_t, const float*, const float*, float*, int64_t, int64_t, float,
                        float);
template <size_t... I>
constexpr std::array<TileFn, kMr> tile_table(std::index_sequence<I...>) {
  return {tile_rows<int(I) + 1>...};
}
constexpr auto kTiles = tile_table(std::make_index_sequence<kMr>());

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
  kTiles[size_t(m - 1)](kc, a, b, c, ldc, n, alpha, beta);
}

}  // namespace bitnet::kernels::avx512

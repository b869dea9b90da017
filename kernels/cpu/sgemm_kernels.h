// Kernels of the single-precision matrix product bitnet::sgemm (cpp/include/bitnet/sgemm.h):
// packing of A / B blocks into contiguous panels and the register-tiled micro-kernel.
//
// Like the other kernels (kernels.h) these are leaf functions: no allocation, no threading, no
// global state. Each ISA file defines the functions of its namespace bitnet::kernels::<isa>;
// bitnet::kernels::sgemm_table_for (cpp/src/sgemm.cpp) gathers them into tables, and
// sgemm_active() is the table of kernels::active().isa, so BITNET_MAX_ISA caps sgemm exactly like
// the ternary and dense kernels.
//
// Packed layouts (a table's MR x NR is its register tile; kc <= kSgemmKc values of K):
//   A panel: MR rows of op(A) [M, K] over kc values of K, K-major:   a[k * MR + i]
//            (rows past the end of M are zero). A block of `m` rows is ceil(m / MR) panels, panel
//            p at a + p * MR * kc.
//   B panel: NR columns of op(B) [K, N] over kc values of K, K-major: b[k * NR + j]
//            (columns past the end of N are zero). A block of `n` columns is ceil(n / NR) panels,
//            panel q at b + q * NR * kc.
// Panels start 64-byte aligned when the block buffer does (MR * kc * 4 and NR * kc * 4 bytes are
// multiples of 64 for the tables' MR, NR and even kc... the kernels use unaligned loads for A and
// require only 4-byte alignment anywhere).
//
// The micro-kernel computes, for i < m <= MR and j < n <= NR,
//   acc[i][j] = sum_{k < kc} a[k * MR + i] * b[k * NR + j]     (k in increasing order, one
//                                                              accumulator per element)
//   c[i * ldc + j] = alpha * acc[i][j] + beta * c[i * ldc + j]  (beta == 0: c is not read)
// and touches nothing of c outside the m x n tile. The order of the sum of one element depends
// only on kc, never on m, n or where the tile lies (the edge tiles use the same per-element
// arithmetic as the full ones), which is what makes sgemm's result independent of the thread
// count. The SIMD tables accumulate with FMA (one rounding per step), the reference with a
// rounded product and a rounded sum (-ffp-contract=off); either way the error of one K block is
// at most about kc * 2^-24 * sum_k |a_k b_k| (recursive summation, Higham 3.1).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "kernels.h"

namespace bitnet::kernels {

// The K block of every table. Fixed (not tuned to the thread count or the shape) because each
// output's sum is formed block by block: it must be the same partition of K on any thread count.
constexpr int64_t kSgemmKc = 256;

// Packs op(A) rows [m0, m0 + m) x K values [k0, k0 + kc) into ceil(m / MR) A panels at dst.
// trans == false: op(A)[i][k] = A[i * lda + k] (A stored [M, K]); true: A[k * lda + i] (A [K, M]).
using sgemm_pack_a_fn = void (*)(bool trans, const float* A, int64_t lda, int64_t m0, int64_t m,
                                 int64_t k0, int64_t kc, float* dst);
// Packs op(B) K values [k0, k0 + kc) x columns [n0, n0 + n) into ceil(n / NR) B panels at dst.
// trans == false: op(B)[k][j] = B[k * ldb + j] (B stored [K, N]); true: B[j * ldb + k] (B [N, K]).
using sgemm_pack_b_fn = void (*)(bool trans, const float* B, int64_t ldb, int64_t k0, int64_t kc,
                                 int64_t n0, int64_t n, float* dst);
// The micro-kernel above: one A panel, one B panel, an m x n tile of C (1 <= m <= MR,
// 1 <= n <= NR, kc >= 1).
using sgemm_tile_fn = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                               int64_t m, int64_t n, float alpha, float beta);

#define BITNET_DECLARE_SGEMM_KERNELS(ns)                                                         \
  namespace ns {                                                                                 \
  void sgemm_pack_a(bool trans, const float* A, int64_t lda, int64_t m0, int64_t m, int64_t k0,  \
                    int64_t kc, float* dst);                                                     \
  void sgemm_pack_b(bool trans, const float* B, int64_t ldb, int64_t k0, int64_t kc, int64_t n0, \
                    int64_t n, float* dst);                                                      \
  void sgemm_tile(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t m,  \
                  int64_t n, float alpha, float beta);                                           \
  }

BITNET_DECLARE_SGEMM_KERNELS(ref)     // portable C++, compiled without ISA flags
BITNET_DECLARE_SGEMM_KERNELS(avx2)    // AVX2 + FMA
BITNET_DECLARE_SGEMM_KERNELS(avx512)  // AVX-512F

// Register tiles (MR x NR) of the micro-kernels, shared by the ISA files and the tables.
namespace ref {
constexpr int kSgemmMr = 4, kSgemmNr = 16;  // 64 scalar accumulators (vectorised by the compiler)
}
namespace avx2 {
constexpr int kSgemmMr = 6, kSgemmNr = 16;  // 12 ymm accumulators of 16
}
namespace avx512 {
constexpr int kSgemmMr = 12, kSgemmNr = 32;  // 24 zmm accumulators of 32
}

// One ISA's sgemm kernels; mr / nr are the register tile of its micro-kernel.
struct SgemmKernels {
  Isa isa;
  const char* name;
  int64_t mr;
  int64_t nr;
  sgemm_pack_a_fn pack_a;
  sgemm_pack_b_fn pack_b;
  sgemm_tile_fn tile;
};

// The table of kernels::active().isa (re-read on every call, so kernels::reload() switches it).
// ISAs without their own table use the best lower one of the family (avx512_vnni: avx512; the
// NEON ISAs: ref).
const SgemmKernels& sgemm_active();
// The table used for one ISA, or nullptr when table_for(isa) is (not compiled in, not runnable).
const SgemmKernels* sgemm_table_for(Isa isa);

// ------------------------------------------------------------------------------------------------
// Portable packing loops, templates over the panel widths. Instantiated inside the ISA files (so
// each instantiation is compiled with that file's flags and has internal linkage through the
// unnamed namespace: no code built for one ISA can be picked by the linker for another).
namespace sgemm_detail {
namespace {

// dst[k * ld_dst + r] = src[r * ld_src + k] for r < rows, k < kc: rows of the source become
// columns of a panel (the packing of A [M, K] and of B^T). Scalar; the x86 tables use
// transpose_rows_sse below for groups of 4 rows.
inline void transpose_rows_scalar(const float* src, int64_t ld_src, int rows, int64_t kc,
                                  float* dst, int64_t ld_dst) {
  for (int r = 0; r < rows; ++r) {
    const float* s = src + r * ld_src;
    for (int64_t k = 0; k < kc; ++k) dst[k * ld_dst + r] = s[k];
  }
}

#if defined(__AVX__)
// transpose_rows_scalar with 4x4 in-register transposes, for the x86 SIMD files (the scalar
// reference keeps the scalar loop: it must build for any target).
inline void transpose_rows_sse(const float* src, int64_t ld_src, int rows, int64_t kc, float* dst,
                               int64_t ld_dst) {
  int r = 0;
  for (; r + 4 <= rows; r += 4) {
    const float* s = src + r * ld_src;
    float* d = dst + r;
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
      __m128 r0 = _mm_loadu_ps(s + k), r1 = _mm_loadu_ps(s + ld_src + k);
      __m128 r2 = _mm_loadu_ps(s + 2 * ld_src + k), r3 = _mm_loadu_ps(s + 3 * ld_src + k);
      _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
      _mm_storeu_ps(d + k * ld_dst, r0);
      _mm_storeu_ps(d + (k + 1) * ld_dst, r1);
      _mm_storeu_ps(d + (k + 2) * ld_dst, r2);
      _mm_storeu_ps(d + (k + 3) * ld_dst, r3);
    }
    for (; k < kc; ++k)
      for (int i = 0; i < 4; ++i) d[k * ld_dst + i] = s[i * ld_src + k];
  }
  transpose_rows_scalar(src + r * ld_src, ld_src, rows - r, kc, dst + r, ld_dst);
}
#define BITNET_SGEMM_TRANSPOSE transpose_rows_sse
#else
#define BITNET_SGEMM_TRANSPOSE transpose_rows_scalar
#endif

// Rows of the source copied per pass over the panels (see pack_a).
constexpr int64_t kPackChunk = 16;

// Copies `n` floats (n <= W) to a W-wide panel row and zero-fills the rest.
template <int W>
inline void copy_row(const float* s, int n, float* d) {
  if (n == W) {
    std::memcpy(d, s, sizeof(float) * W);  // constant size: inlined as vector moves
  } else {
    std::memcpy(d, s, sizeof(float) * size_t(n));
    std::memset(d + n, 0, sizeof(float) * size_t(W - n));
  }
}

template <int MR>
void pack_a(bool trans, const float* A, int64_t lda, int64_t m0, int64_t m, int64_t k0, int64_t kc,
            float* dst) {
  if (trans) {  // row k of A [K, M] holds op(A)[., k]: contiguous copies
    // In chunks of kPackChunk rows of A, panel by panel: the panels are MR * kc * 4 bytes apart
    // (a multiple of 4 KiB), so writing them all for each k would thrash one L1 set.
    for (int64_t kb = 0; kb < kc; kb += kPackChunk) {
      const int64_t ke = std::min(kc, kb + kPackChunk);
      for (int64_t p = 0; p < m; p += MR) {
        const int rows = int(std::min<int64_t>(MR, m - p));
        for (int64_t k = kb; k < ke; ++k)
          copy_row<MR>(A + (k0 + k) * lda + m0 + p, rows, dst + p * kc + k * MR);
      }
    }
    return;
  }
  for (int64_t p = 0; p < m; p += MR) {  // rows of A [M, K] become columns of the panels
    const int rows = int(std::min<int64_t>(MR, m - p));
    float* d = dst + p * kc;  // panel p / MR starts at (p / MR) * MR * kc
    BITNET_SGEMM_TRANSPOSE(A + (m0 + p) * lda + k0, lda, rows, kc, d, MR);
    for (int64_t k = 0; k < kc; ++k)
      for (int i = rows; i < MR; ++i) d[k * MR + i] = 0.0f;
  }
}

template <int NR>
void pack_b(bool trans, const float* B, int64_t ldb, int64_t k0, int64_t kc, int64_t n0, int64_t n,
            float* dst) {
  if (!trans) {  // row k of B [K, N] holds op(B)[k, .]: contiguous copies (chunked as in pack_a)
    for (int64_t kb = 0; kb < kc; kb += kPackChunk) {
      const int64_t ke = std::min(kc, kb + kPackChunk);
      for (int64_t q = 0; q < n; q += NR) {
        const int cols = int(std::min<int64_t>(NR, n - q));
        for (int64_t k = kb; k < ke; ++k)
          copy_row<NR>(B + (k0 + k) * ldb + n0 + q, cols, dst + q * kc + k * NR);
      }
    }
    return;
  }
  for (int64_t q = 0; q < n; q += NR) {  // rows of B [N, K] become columns of the panels
    const int cols = int(std::min<int64_t>(NR, n - q));
    float* d = dst + q * kc;  // panel q / NR starts at (q / NR) * NR * kc
    BITNET_SGEMM_TRANSPOSE(B + (n0 + q) * ldb + k0, ldb, cols, kc, d, NR);
    for (int64_t k = 0; k < kc; ++k)
      for (int j = cols; j < NR; ++j) d[k * NR + j] = 0.0f;
  }
}

#undef BITNET_SGEMM_TRANSPOSE

}  // namespace
}  // namespace sgemm_detail

}  // namespace bitnet::kernels

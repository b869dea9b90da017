// Scalar reference sgemm kernels (sgemm_kernels.h), compiled without ISA flags and, like the whole
// project, with -ffp-contract=off: each step of a sum is a rounded product then a rounded add.
// Register tile MR 4 x NR 16: small enough for any target, and the inner loop over the 16
// columns is what the compiler vectorises for the baseline ISA (SSE2 on x86-64, NEON on aarch64).
#include "sgemm_kernels.h"

namespace bitnet::kernels::ref {

namespace {
constexpr int kMr = kSgemmMr;
constexpr int kNr = kSgemmNr;
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
  // The whole MR x NR tile is computed (the panels are zero-padded), only m x n of it stored.
  float acc[kMr][kNr] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const float* ak = a + k * kMr;
    const float* bk = b + k * kNr;
    for (int i = 0; i < kMr; ++i)
      for (int j = 0; j < kNr; ++j) acc[i][j] += ak[i] * bk[j];
  }
  for (int64_t i = 0; i < m; ++i) {
    float* ci = c + i * ldc;
    if (beta == 0.0f) {
      for (int64_t j = 0; j < n; ++j) ci[j] = alpha * acc[i][j];
    } else {
      for (int64_t j = 0; j < n; ++j) ci[j] = alpha * acc[i][j] + beta * ci[j];
    }
  }
}

}  // namespace bitnet::kernels::ref

// Single-precision matrix products for training (the tape's linear, BitLinear backward and
// attention), BLAS-style with transposes, split across the thread pool.
#pragma once

#include <cstdint>

namespace bitnet {

// C[M, N] = alpha * op(A) @ op(B) + beta * C, row-major with leading dimensions (row strides):
//   op(A) = A [M, K] (lda >= K)   or, trans_a, A^T with A stored [K, M] (lda >= M);
//   op(B) = B [K, N] (ldb >= N)   or, trans_b, B^T with B stored [N, K] (ldb >= K);
//   C [M, N], ldc >= N. beta == 0 ignores C's contents (NaN in C does not propagate).
// M, N or K may be 0 (K == 0: C = beta * C). Throws std::invalid_argument on a negative size or
// a leading dimension too small.
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace bitnet

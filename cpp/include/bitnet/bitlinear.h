// BitLinear forward: y = (q . t) / s_x * s_w with per-token int8 activations and ternary weights.
#pragma once

#include <cstdint>

#include "bitnet/packed_weights.h"

namespace bitnet {

// x [M, K] fp32 row-major (row stride K) -> y [M, N] fp32 (row stride ldy >= N).
// Quantizes x per row (quant.h), multiplies with the ternary weights in int32 on the active ISA's
// kernels, rescales. M == 1 runs the GEMV kernel, M > 1 the GEMM kernel; output rows are split
// across the thread pool. Throws std::invalid_argument on a K mismatch or NaN/Inf in x.
void bitlinear(const float* x, int64_t M, int64_t K, const PackedWeights& w, float* y, int64_t ldy);

// The same on already-quantized activations q [M, kp] (kp = 256 * w.kernel().nb, zero-padded),
// with their scales and row sums; used by benchmarks and by layers that share one quantization.
void bitlinear_quantized(const int8_t* q, const float* s_x, const int32_t* q_sum, int64_t M,
                         const KernelWeights& w, float* y, int64_t ldy);

// One product of a multi-matrix call: y [M, w->rows] with row stride ldy.
struct BitLinearTarget {
  const KernelWeights* w;
  float* y;
  int64_t ldy;
};

// bitlinear_quantized for several matrices that share one quantized input (q/k/v, gate/up), in
// one parallel region: every thread takes the same share of each matrix's rows as
// bitlinear_quantized would give it, so the results are identical and the projections cost one
// fork/join instead of one each. Every matrix must have the same nb.
void bitlinear_quantized_multi(const int8_t* q, const float* s_x, const int32_t* q_sum, int64_t M,
                               const BitLinearTarget* targets, int64_t n_targets);

}  // namespace bitnet

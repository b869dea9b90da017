// Decode GEMV, W2A8: ternary weights in the W2G layout (w2_layout.cuh) times int8 activations
// with __dp4a. Host launcher; plain C++ declaration.
#pragma once

#include <cstdint>

#include "bitnet/cuda.h"

namespace bitnet::cuda {

// y[m * ldy + n] = float(sum_k code[n][k] * q[m][k] - q_sum[m]) * (w_scale / s_x[m])
// for m < M, n < N: the same formula and fp32 operations as the CPU kernels
// (kernels/cpu/kernels.h gemm_k256_fn), so for the same q / s_x / q_sum the result is bit-exact
// (the integer sum is exact: |sum| <= 2 * 128 * Kp < 2^31 for Kp < 2^23).
//   w     [N, Kp / 16] uint32 (W2G), 16-byte aligned
//   q     [M, Kp] int8 (act_quant with k_pad = Kp), 16-byte aligned; s_x, q_sum [M]
// One warp per (row n, token m); tuned for M == 1, correct for any M (weights are re-read per m:
// use launch_gemm_w2a8 for prefill).
void launch_gemv_w2a8(const uint32_t* w, int64_t N, int64_t K, const int8_t* q, const float* s_x,
                      const int32_t* q_sum, int64_t M, float w_scale, float* y, int64_t ldy,
                      Stream stream);

}  // namespace bitnet::cuda

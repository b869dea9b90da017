// Prefill GEMM, W2A8, on int8 tensor cores (mma.sync.m16n8k32.s8, sm_80+): ternary weights in
// the W2G layout (w2_layout.cuh) decoded to int8 in shared memory. Host launcher; plain C++.
#pragma once

#include <cstdint>

#include "bitnet/cuda.h"

namespace bitnet::cuda {

// y[m * ldy + n] = float(sum_k t[n][k] * q[m][k]) * (w_scale / s_x[m])   for m < M, n < N.
// The integer sum is exact and equals the CPU kernels' sum_k code q - q_sum, so the result is
// bit-exact with them and with launch_gemv_w2a8 for the same q / s_x.
//   w [N, Kp / 16] uint32 (W2G), q [M, Kp] int8 zero-padded (act_quant with k_pad = Kp),
//   both 16-byte aligned; s_x [M].
// Block tile 64 (M) x 64 (N) x 64 (K), 4 warps of 32 x 32; any M, N (edges masked).
void launch_gemm_w2a8(const uint32_t* w, int64_t N, int64_t K, const int8_t* q, const float* s_x,
                      int64_t M, float w_scale, float* y, int64_t ldy, Stream stream);

}  // namespace bitnet::cuda

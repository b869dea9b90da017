// Per-token activation quantization on the GPU (formats.md section 1), bit-exact with the CPU
// reference kernels/cpu/gemm_ref.cpp quantize_row_i8. Host launcher; plain C++ declaration.
#pragma once

#include <cstdint>

#include "bitnet/cuda.h"

namespace bitnet::cuda {

// For each row m < M of x [M, K] (row stride ldx floats):
//   s_x[m] = (1.0f / max(max_i |x[m, i]|, 1e-5f)) * 127.0f          (two fp32 roundings)
//   q[m * k_pad + i] = clamp(rint(x[m, i] * s_x[m]), -128, 127)       (half to even), i < K
//   q[m * k_pad + i] = 0 for K <= i < k_pad;  q_sum[m] = sum_i q[m, i]  (|q_sum| <= 128 K)
// One block per row. k_pad >= K; q_sum may be null. If a row holds a NaN or an infinity, its
// outputs are unspecified and *bad_row (when not null) is lowered to min(*bad_row, m) with
// atomicMin: initialise it to a value >= M (e.g. INT32_MAX) to detect bad rows.
void launch_act_quant(const float* x, int64_t ldx, int64_t M, int64_t K, int8_t* q, int64_t k_pad,
                      float* s_x, int32_t* q_sum, int32_t* bad_row, Stream stream);

}  // namespace bitnet::cuda

// The LM head (logits = x @ W^T) on the GPU for W stored as f16 or q8_0; the formulas of
// bitnet::DenseMatrix::matmul (cpp/include/bitnet/dense.h, kernels/cpu/dense_kernels.h).
// Host launchers and the q8_0 load-time repack; plain C++ declarations.
#pragma once

#include <cstdint>

#include "bitnet/cuda.h"

namespace bitnet::cuda {

// F16: y[m * ldy + r] = sum_k x[m, k] * float(w[r, k]) for m < M, r < rows; w [rows, cols] IEEE
// half bit patterns, row-major, 16-byte aligned; x [M, cols] fp32 contiguous. fp32 accumulation
// (FMA, per-lane partial sums combined by a warp reduction): error <= about
// cols * 2^-24 * sum_k |x_k w_k| versus the exact sum, like the CPU. One warp per (r, m);
// M <= 65535.
void launch_head_f16(const uint16_t* w, int64_t rows, int64_t cols, const float* x, int64_t M,
                     float* y, int64_t ldy, Stream stream);

// Q8_0 on the GPU ("Q8G" layout, repacked once at load): the ggml blocks {fp16 d; int8 qs[32]}
// split into qs [rows, cols] int8 (row-major, cols % 32 == 0, 16-byte aligned) and
// d [rows, cols / 32] fp32 (the fp16 scale widened, exact). Reads the ggml bytes of
// rows x cols / 32 blocks (34 bytes each) and writes both arrays. Throws std::invalid_argument
// when cols % 32 != 0 or a block scale is not finite (naming the row and block).
void q8g_from_q8_0(const uint8_t* blocks, int64_t rows, int64_t cols, int8_t* qs, float* d);

// Activations for the q8_0 head, quantized per 32-block exactly as ggml's quantize_row_q8_0
// (DenseMatrix::matmul does the same on the CPU): for row m < M and block b,
//   amax = max |x|, dd = amax / 127, id = dd != 0 ? 1 / dd : 0, d_x = fp32(fp16(dd)),
//   q = roundf(clamp(x * id, -127, 127))   (half away from zero)
// x [M, cols] fp32 contiguous; xq [M, cols] int8; xd [M, cols / 32] fp32. If a block holds a
// NaN or Inf or its scale overflows fp16, *bad_row (when not null) is lowered to min(., m).
void launch_quantize_q8_0(const float* x, int64_t M, int64_t cols, int8_t* xq, float* xd,
                          int32_t* bad_row, Stream stream);

// y[m * ldy + r] = sum_b float(dot_b) * (d_w(r, b) * d_x(m, b)), dot_b the exact int32 dot of
// block b, summed in fp32 (per lane, then a warp reduction): within the CPU's bound
// (nb + 16) * 2^-24 * sum_b D_b |dot|_b of the exact value. One warp per (r, m); M <= 65535.
void launch_head_q8_0(const int8_t* w_qs, const float* w_d, int64_t rows, int64_t cols,
                      const int8_t* xq, const float* xd, int64_t M, float* y, int64_t ldy,
                      Stream stream);

}  // namespace bitnet::cuda

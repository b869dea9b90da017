// BitNet b1.58 quantizers (formats.md section 1).
#pragma once

#include <cstdint>

namespace bitnet {

// Weights, one scale per tensor: s_w = max(mean|w|, 1e-5) (mean accumulated in double, rounded
// to fp32 once), t = clamp(nearbyint(w / s_w), -1, 1). Writes t[count], returns s_w. Throws
// std::invalid_argument if w holds a NaN or an infinity, or count == 0.
float quantize_weights(const float* w, int64_t count, int8_t* t);

// Activations, one scale per row: for each of the M rows of x [M, K] (row stride K),
// s_x[m] = 127 / max(max|x_m|, 1e-5) and q[m] = clamp(nearbyint(x_m * s_x[m]), -128, 127),
// computed in fp32 in that order (bit-exact with PyTorch's activation_quant). q is [M, k_pad]
// (k_pad >= K, zero-padded); q_sum (optional) receives the row sums of q. Runs on the active
// ISA's kernel and the thread pool. Throws std::invalid_argument naming the row when a row holds
// a NaN or an infinity.
void quantize_activations(const float* x, int64_t M, int64_t K, int8_t* q, int64_t k_pad,
                          float* s_x, int32_t* q_sum);

}  // namespace bitnet

// Rotary position embedding (NEOX / rotate_half pairing) on the GPU; matches bitnet::nn::rope_*
// (cpp/include/bitnet/nn.h). Host launcher.
#pragma once

#include <cstdint>

#include "bitnet/cuda.h"

namespace bitnet::cuda {

// In place, for each row m < M of x (row stride ldx floats) holding n_heads heads of head_dim
// (even) values back to back, with h = head_dim / 2 and i < h:
//   a = float(pos[m]) * inv_freq[i]                    (fp32 product; pos[m] in [0, 2^24))
//   c = float(cos(double(a))), s = float(sin(double(a)))
//   x'[i] = x[i] * c - x[i + h] * s,   x'[i + h] = x[i + h] * c + x[i] * s
// inv_freq [h] comes from bitnet::nn::rope_inv_freq (computed once on the host). Same fp32
// operations as the CPU; the double cos/sin (CUDA: <= 2 ulp of double) round to the CPU's fp32
// value except in the rare case of a double rounding at a tie. One block per row.
void launch_rope_neox(float* x, int64_t ldx, int64_t M, int64_t n_heads, int64_t head_dim,
                      const int32_t* pos, const float* inv_freq, Stream stream);

}  // namespace bitnet::cuda

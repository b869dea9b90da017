// The BitNet b1.58 FFN gate on the GPU: relu(g)^2 * u; matches bitnet::nn::gated_activation
// with Activation::relu2 bit for bit. Host launcher.
#pragma once

#include <cstdint>

#include "bitnet/cuda.h"

namespace bitnet::cuda {

// h[m, i] = (r * r) * u[m, i],  r = g[m, i] < 0 ? 0 : g[m, i]   (std::max(g, 0.0f): NaN stays NaN)
// for m < M, i < n; row strides ldg, ldu, ldh >= n; h may equal g or u (elementwise).
void launch_relu2_mul(const float* g, int64_t ldg, const float* u, int64_t ldu, int64_t M,
                      int64_t n, float* h, int64_t ldh, Stream stream);

}  // namespace bitnet::cuda

// RMSNorm on the GPU; matches bitnet::nn::rmsnorm (cpp/include/bitnet/nn.h). Host launcher.
#pragma once

#include <cstdint>

#include "bitnet/cuda.h"

namespace bitnet::cuda {

// y[m, i] = (x[m, i] * r_m) * w[i],  r_m = 1 / sqrt(mean_i x[m, i]^2 + eps)   for m < M, i < n.
// The sum of squares is accumulated in double (each square exact) and rounded to fp32 once, the
// rest is fp32 with explicit round-to-nearest operations in the CPU's order, so the result
// differs from the CPU only when the double sums (different addition order) round to different
// fp32 means: at most 1 ulp of r_m, rarely. Row strides ldx, ldy >= n; y may equal x.
// One block per row.
void launch_rmsnorm(const float* x, int64_t ldx, int64_t M, int64_t n, const float* w, float eps,
                    float* y, int64_t ldy, Stream stream);

}  // namespace bitnet::cuda

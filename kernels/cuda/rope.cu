#include "device_util.cuh"
#include "rope.cuh"

namespace bitnet::cuda {

namespace {

constexpr int kThreads = 128;

__global__ void __launch_bounds__(kThreads)
    rope_neox_kernel(float* x, int64_t ldx, int64_t n_heads, int64_t head_dim,
                     const int32_t* __restrict__ pos, const float* __restrict__ inv_freq) {
  const int64_t m = blockIdx.x, half = head_dim / 2;
  const float p = static_cast<float>(pos[m]);
  float* xr = x + m * ldx;
  // Angles depend on i only: compute cos/sin once per i and sweep the heads.
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const float a = __fmul_rn(p, inv_freq[i]);
    double sd, cd;
    sincos(static_cast<double>(a), &sd, &cd);
    const float c = static_cast<float>(cd), s = static_cast<float>(sd);
    for (int64_t h = 0; h < n_heads; ++h) {
      float* lo = xr + h * head_dim;
      const float u = lo[i], v = lo[i + half];
      lo[i] = __fsub_rn(__fmul_rn(u, c), __fmul_rn(v, s));
      lo[i + half] = __fadd_rn(__fmul_rn(v, c), __fmul_rn(u, s));
    }
  }
}

}  // namespace

void launch_rope_neox(float* x, int64_t ldx, int64_t M, int64_t n_heads, int64_t head_dim,
                      const int32_t* pos, const float* inv_freq, Stream stream) {
  if (M <= 0 || n_heads <= 0 || head_dim <= 0) return;
  rope_neox_kernel<<<static_cast<unsigned>(M), kThreads, 0, stream>>>(x, ldx, n_heads, head_dim,
                                                                      pos, inv_freq);
  BITNET_CUDA_CHECK_LAUNCH();
}

}  // namespace bitnet::cuda

#include "act_quant.cuh"
#include "device_util.cuh"

namespace bitnet::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    act_quant_kernel(const float* __restrict__ x, int64_t ldx, int64_t K, int8_t* __restrict__ q,
                     int64_t k_pad, float* __restrict__ s_x, int32_t* __restrict__ q_sum,
                     int32_t* bad_row) {
  __shared__ float fscratch[32];
  __shared__ int iscratch[32];
  const int64_t m = blockIdx.x;
  const float* xr = x + m * ldx;
  int8_t* qr = q + m * k_pad;

  float amax = 0.0f;
  int bad = 0;
  for (int64_t i = threadIdx.x; i < K; i += blockDim.x) {
    const float v = xr[i];
    bad |= !isfinite(v);
    amax = fmaxf(amax, fabsf(v));
  }
  amax = detail::block_max(amax, fscratch);
  bad = detail::block_sum(bad, iscratch);
  if (bad) {
    if (threadIdx.x == 0 && bad_row) atomicMin(bad_row, static_cast<int32_t>(m));
    return;
  }
  // Explicit round-to-nearest intrinsics: no contraction or approximation can change the bits.
  const float s = __fmul_rn(__frcp_rn(fmaxf(amax, 1e-5f)), 127.0f);
  int sum = 0;
  for (int64_t i = threadIdx.x; i < K; i += blockDim.x) {
    const float v = fminf(127.0f, fmaxf(-128.0f, rintf(__fmul_rn(xr[i], s))));
    const int qi = static_cast<int>(v);
    qr[i] = static_cast<int8_t>(qi);
    sum += qi;
  }
  for (int64_t i = K + threadIdx.x; i < k_pad; i += blockDim.x) qr[i] = 0;
  sum = detail::block_sum(sum, iscratch);
  if (threadIdx.x == 0) {
    s_x[m] = s;
    if (q_sum) q_sum[m] = sum;
  }
}

}  // namespace

void launch_act_quant(const float* x, int64_t ldx, int64_t M, int64_t K, int8_t* q, int64_t k_pad,
                      float* s_x, int32_t* q_sum, int32_t* bad_row, Stream stream) {
  if (M <= 0) return;
  act_quant_kernel<<<static_cast<unsigned>(M), kThreads, 0, stream>>>(x, ldx, K, q, k_pad, s_x,
                                                                      q_sum, bad_row);
  BITNET_CUDA_CHECK_LAUNCH();
}

}  // namespace bitnet::cuda

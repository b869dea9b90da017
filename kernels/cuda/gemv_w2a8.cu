#include <stdexcept>
#include <string>

#include "device_util.cuh"
#include "gemv_w2a8.cuh"
#include "w2_layout.cuh"

namespace bitnet::cuda {

namespace {

constexpr int kWarps = 8;  // rows per block

// Lane l of the warp for row n reads chunks c = l, l + 32, ... of 64 values: one uint4 of weights
// (4 words) and four int4 of activations (64 bytes); a warp-wide step reads 512 contiguous bytes
// of the weight row (coalesced). Word j of the chunk pairs with int4 j of the activations, and
// extraction i of a word with component i of that int4 (values 16 j + 4 i .. + 3).
__global__ void __launch_bounds__(kWarps * 32)
    gemv_w2a8_kernel(const uint4* __restrict__ w, int64_t N, int64_t chunks,
                     const int4* __restrict__ q, const float* __restrict__ s_x,
                     const int32_t* __restrict__ q_sum, float w_scale, float* __restrict__ y,
                     int64_t ldy) {
  const int lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int64_t m = blockIdx.y;
  if (n >= N) return;  // whole warps exit together: n is uniform per warp
  const uint4* wr = w + n * chunks;
  const int4* qr = q + m * chunks * 4;
  int acc = 0;
  for (int64_t c = lane; c < chunks; c += 32) {
    const uint4 wv = __ldg(wr + c);
    const uint32_t words[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int4 a = __ldg(qr + c * 4 + j);
      const int acts[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
        acc = __dp4a(static_cast<int>((words[j] >> (2 * i)) & 0x03030303u), acts[i], acc);
    }
  }
  acc = detail::warp_sum(acc);
  if (lane == 0)
    y[m * ldy + n] = __fmul_rn(static_cast<float>(acc - q_sum[m]), __fdiv_rn(w_scale, s_x[m]));
}

}  // namespace

void launch_gemv_w2a8(const uint32_t* w, int64_t N, int64_t K, const int8_t* q, const float* s_x,
                      const int32_t* q_sum, int64_t M, float w_scale, float* y, int64_t ldy,
                      Stream stream) {
  if (M <= 0 || N <= 0) return;
  if (M > 65535)
    throw std::invalid_argument("launch_gemv_w2a8: M = " + std::to_string(M) +
                                " > 65535 tokens (grid.y); use launch_gemm_w2a8");
  const int64_t chunks = w2g_kpad(K) / 64;
  const dim3 grid(detail::ceil_div_u(N, kWarps), static_cast<unsigned>(M));
  gemv_w2a8_kernel<<<grid, kWarps * 32, 0, stream>>>(reinterpret_cast<const uint4*>(w), N, chunks,
                                                     reinterpret_cast<const int4*>(q), s_x, q_sum,
                                                     w_scale, y, ldy);
  BITNET_CUDA_CHECK_LAUNCH();
}

}  // namespace bitnet::cuda

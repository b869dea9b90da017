#include <stdexcept>
#include <string>

#include "attention.cuh"
#include "device_util.cuh"

namespace bitnet::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

// Dynamic shared memory: q [head_dim] then the scores [n_past + M].
__global__ void __launch_bounds__(kThreads)
    attention_kernel(const float* __restrict__ q, const float* __restrict__ k,
                     const float* __restrict__ v, float* __restrict__ out, int64_t n_past,
                     int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale) {
  extern __shared__ float smem[];
  __shared__ float red[32];
  float* sq = smem;
  float* s = smem + head_dim;
  const int64_t h = blockIdx.x, m = blockIdx.y;
  const int64_t hk = h / (n_head / n_head_kv), kv_stride = n_head_kv * head_dim;
  const int64_t n = n_past + m + 1;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float* qh = q + (m * n_head + h) * head_dim;
  for (int64_t i = threadIdx.x; i < head_dim; i += blockDim.x) sq[i] = qh[i];
  __syncthreads();

  // Scores: one warp per key, lanes split head_dim.
  const float* kb = k + hk * head_dim;
  for (int64_t j = warp; j < n; j += kWarps) {
    const float* kj = kb + j * kv_stride;
    float d = 0.0f;
    for (int64_t i = lane; i < head_dim; i += 32) d += sq[i] * kj[i];
    d = detail::warp_sum(d);
    if (lane == 0) s[j] = d * scale;
  }
  __syncthreads();
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) mx = fmaxf(mx, s[j]);
  mx = detail::block_max(mx, red);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const float e = expf(s[j] - mx);
    s[j] = e;
    sum += e;
  }
  sum = detail::block_sum(sum, red);  // ends after a barrier: every s[j] is written
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s[j] = s[j] / sum;
  __syncthreads();

  // out = sum_j p_j v_j in key order; threads split head_dim (coalesced per key).
  const float* vb = v + hk * head_dim;
  float* oh = out + (m * n_head + h) * head_dim;
  for (int64_t i = threadIdx.x; i < head_dim; i += blockDim.x) {
    float o = 0.0f;
    for (int64_t j = 0; j < n; ++j) o += s[j] * vb[j * kv_stride + i];
    oh[i] = o;
  }
}

}  // namespace

void launch_attention(const float* q, const float* k, const float* v, float* out, int64_t M,
                      int64_t n_past, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                      float scale, Stream stream) {
  if (M <= 0) return;
  if (n_head <= 0 || n_head_kv <= 0 || head_dim <= 0 || n_head % n_head_kv != 0 || n_past < 0)
    throw std::invalid_argument("launch_attention: bad shape n_head " + std::to_string(n_head) +
                                ", n_head_kv " + std::to_string(n_head_kv) + ", head_dim " +
                                std::to_string(head_dim) + ", n_past " + std::to_string(n_past));
  if (M > 65535 || n_head > 65535)
    throw std::invalid_argument("launch_attention: M and n_head must be <= 65535");
  const size_t smem = sizeof(float) * static_cast<size_t>(head_dim + n_past + M);
  int dev = 0, optin = 0;
  BITNET_CUDA_CHECK(cudaGetDevice(&dev));
  BITNET_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  // Static shared memory (red) is 128 bytes; leave it room.
  if (smem + 128 > static_cast<size_t>(optin))
    throw std::invalid_argument(
        "launch_attention: " + std::to_string(n_past + M) + " keys need " + std::to_string(smem) +
        " bytes of shared memory; this device allows " + std::to_string(optin));
  if (smem > 48 * 1024)
    BITNET_CUDA_CHECK(cudaFuncSetAttribute(
        attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const dim3 grid(static_cast<unsigned>(n_head), static_cast<unsigned>(M));
  attention_kernel<<<grid, kThreads, smem, stream>>>(q, k, v, out, n_past, n_head, n_head_kv,
                                                     head_dim, scale);
  BITNET_CUDA_CHECK_LAUNCH();
}

}  // namespace bitnet::cuda

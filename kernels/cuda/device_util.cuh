// Device-side helpers shared by the CUDA kernels (included by .cu files only).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "bitnet/cuda.h"

namespace bitnet::cuda::detail {

constexpr unsigned kFullMask = 0xffffffffu;

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Block-wide reductions for blockDim.x a multiple of 32 and <= 1024. Every thread gets the
// result. `scratch` is 32 elements of shared memory; the call begins and ends with a barrier,
// so the same scratch can be reused by consecutive calls.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = lane < nw ? scratch[lane] : T(0);
  r = warp_sum(r);
  return r;
}

// Max of non-negative or general floats; NaN inputs are ignored by fmaxf (callers that must
// detect NaN check isfinite separately).
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = lane < nw ? scratch[lane] : -INFINITY;
  r = warp_max(r);
  return r;
}

inline unsigned ceil_div_u(int64_t a, int64_t b) { return static_cast<unsigned>((a + b - 1) / b); }

}  // namespace bitnet::cuda::detail

// Checks the launch just made (configuration errors); asynchronous faults surface at the next
// synchronising call.
#define BITNET_CUDA_CHECK_LAUNCH() BITNET_CUDA_CHECK(cudaGetLastError())

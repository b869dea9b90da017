#include <stdexcept>
#include <string>

#include "device_util.cuh"
#include "sampling.cuh"

namespace bitnet::cuda {

namespace {

constexpr int kThreads = 1024;

// Candidate order: a before b when a.v > b.v, or equal values and a.id < b.id. id < 0: none.
struct Cand {
  float v;
  int32_t id;
};

__device__ __forceinline__ bool better(const Cand& a, const Cand& b) {
  if (a.id < 0) return false;
  if (b.id < 0) return true;
  return a.v > b.v || (a.v == b.v && a.id < b.id);
}

__device__ __forceinline__ Cand warp_best(Cand c) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Cand other;
    other.v = __shfl_xor_sync(detail::kFullMask, c.v, o);
    other.id = __shfl_xor_sync(detail::kFullMask, c.id, o);
    if (better(other, c)) c = other;
  }
  return c;
}

// Best candidate of the block; every thread gets it. scratch: 32 Cand in shared memory.
__device__ Cand block_best(Cand c, Cand* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  c = warp_best(c);
  __syncthreads();
  if (lane == 0) scratch[warp] = c;
  __syncthreads();
  Cand r = lane < nw ? scratch[lane] : Cand{0.0f, -1};
  return warp_best(r);
}

// Smallest index of a NaN / +inf logit, or INT32_MAX.
__device__ int first_bad(const float* logits, int64_t V, int* iscratch) {
  int bad = INT32_MAX;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float x = logits[i];
    if ((isnan(x) || (isinf(x) && x > 0)) && i < bad) bad = static_cast<int>(i);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) bad = min(bad, __shfl_xor_sync(detail::kFullMask, bad, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) iscratch[warp] = bad;
  __syncthreads();
  int r = lane < nw ? iscratch[lane] : INT32_MAX;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) r = min(r, __shfl_xor_sync(detail::kFullMask, r, o));
  return r;
}

__global__ void __launch_bounds__(kThreads)
    argmax_kernel(const float* __restrict__ logits, int64_t V, int32_t* out_id) {
  __shared__ Cand scratch[32];
  __shared__ int iscratch[32];
  const int bad = first_bad(logits, V, iscratch);
  if (bad != INT32_MAX) {
    if (threadIdx.x == 0) *out_id = -1 - bad;
    return;
  }
  Cand c{0.0f, -1};
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const Cand x{logits[i], static_cast<int32_t>(i)};
    if (better(x, c)) c = x;
  }
  c = block_best(c, scratch);
  if (threadIdx.x == 0) *out_id = c.id;
}

__global__ void __launch_bounds__(kThreads)
    topk_kernel(const float* __restrict__ logits, int64_t V, int k, float* top_val, int32_t* top_id,
                int32_t* count) {
  __shared__ Cand scratch[32];
  __shared__ int iscratch[32];
  const int bad = first_bad(logits, V, iscratch);
  if (bad != INT32_MAX) {
    if (threadIdx.x == 0) *count = -1 - bad;
    return;
  }
  Cand prev{0.0f, -1};  // the last pick; candidates must come after it in the order
  int found = 0;
  for (; found < k; ++found) {
    Cand c{0.0f, -1};
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
      const Cand x{logits[i], static_cast<int32_t>(i)};
      if (isinf(x.v)) continue;  // -inf is masked (+inf was rejected above)
      if (prev.id >= 0 && !better(prev, x)) continue;
      if (better(x, c)) c = x;
    }
    c = block_best(c, scratch);
    if (c.id < 0) break;
    if (threadIdx.x == 0) {
      top_val[found] = c.v;
      top_id[found] = c.id;
    }
    prev = c;
  }
  if (threadIdx.x == 0) *count = found;
}

__global__ void sample_topk_kernel(const float* top_val, const int32_t* top_id,
                                   const int32_t* count, double temperature, double u,
                                   int32_t* out_id, double* out_prob) {
  const int n = *count;
  if (n < 1) {
    *out_id = -1;
    *out_prob = 0.0;
    return;
  }
  const double x0 = __ddiv_rn(static_cast<double>(top_val[0]), temperature);
  double W = 0.0;
  for (int i = 0; i < n; ++i)
    W = __dadd_rn(W, exp(__dsub_rn(__ddiv_rn(static_cast<double>(top_val[i]), temperature), x0)));
  const double target = __dmul_rn(u, W);
  double S = 0.0;
  int pick = -1, last_pos = 0;
  double w_pick = 0.0, w_last = 0.0;
  for (int i = 0; i < n; ++i) {
    const double w = exp(__dsub_rn(__ddiv_rn(static_cast<double>(top_val[i]), temperature), x0));
    if (w > 0.0) {
      last_pos = i;
      w_last = w;
    }
    S = __dadd_rn(S, w);
    if (target < S) {
      pick = i;
      w_pick = w;
      break;
    }
  }
  if (pick < 0) {
    pick = last_pos;
    w_pick = w_last;
  }
  *out_id = top_id[pick];
  *out_prob = w_pick / W;
}

}  // namespace

void launch_argmax(const float* logits, int64_t V, int32_t* out_id, Stream stream) {
  if (V < 1 || V > INT32_MAX)
    throw std::invalid_argument("launch_argmax: V = " + std::to_string(V) + " out of range");
  argmax_kernel<<<1, kThreads, 0, stream>>>(logits, V, out_id);
  BITNET_CUDA_CHECK_LAUNCH();
}

void launch_topk(const float* logits, int64_t V, int k, float* top_val, int32_t* top_id,
                 int32_t* count, Stream stream) {
  if (V < 1 || V > INT32_MAX)
    throw std::invalid_argument("launch_topk: V = " + std::to_string(V) + " out of range");
  if (k < 1 || k > kMaxTopK)
    throw std::invalid_argument("launch_topk: k = " + std::to_string(k) + " not in [1, " +
                                std::to_string(kMaxTopK) + "]");
  topk_kernel<<<1, kThreads, 0, stream>>>(logits, V, k, top_val, top_id, count);
  BITNET_CUDA_CHECK_LAUNCH();
}

void launch_sample_topk(const float* top_val, const int32_t* top_id, const int32_t* count,
                        double temperature, double u, int32_t* out_id, double* out_prob,
                        Stream stream) {
  if (!(temperature > 0.0) || !(u >= 0.0 && u < 1.0))
    throw std::invalid_argument("launch_sample_topk: need temperature > 0 and u in [0, 1), got " +
                                std::to_string(temperature) + ", " + std::to_string(u));
  sample_topk_kernel<<<1, 1, 0, stream>>>(top_val, top_id, count, temperature, u, out_id, out_prob);
  BITNET_CUDA_CHECK_LAUNCH();
}

}  // namespace bitnet::cuda

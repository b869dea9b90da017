// Causal grouped-query attention over a KV cache on the GPU, decode (one query) and prefill (a
// run of queries); the formula of bitnet::nn::attention / kernels/cpu/attention_f32.inc.
// Host launcher.
#pragma once

#include <cstdint>

#include "bitnet/cuda.h"

namespace bitnet::cuda {

// Queries m < M at positions n_past + m of one sequence:
//   q   [M, n_head, head_dim]            (row stride n_head * head_dim)
//   k,v [>= n_past + M, n_head_kv, head_dim] the cache, position stride n_head_kv * head_dim
//   out [M, n_head, head_dim]            may not overlap q, k or v
// For each (m, head h), kv head h / (n_head / n_head_kv), n = n_past + m + 1 keys:
//   s_j = (q . k_j) * scale;  p_j = e_j / sum_j e_j,  e_j = exp(s_j - max_j s_j);
//   out = sum_j p_j v_j                                    (fp32; expf, not the CPU polynomial)
// One block of 128 threads per (h, m); the n scores live in shared memory, so n_past + M is
// limited by the device's opt-in shared memory (4 bytes per key, about 56k keys on sm_80+):
// throws std::invalid_argument beyond it. M <= 65535. Requires n_head % n_head_kv == 0.
void launch_attention(const float* q, const float* k, const float* v, float* out, int64_t M,
                      int64_t n_past, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                      float scale, Stream stream);

}  // namespace bitnet::cuda

// The fp32 building blocks of the transformer forward pass (docs/formats.md section 4):
// RMSNorm, rotary position embedding (NEOX pairing), causal grouped-query attention over a KV
// cache, the gated FFN activations and the residual add.
//
// All functions work on fp32 row-major matrices with explicit row strides (in floats), split
// their work across the core's thread pool (bitnet::parallel_for; nested calls run serially),
// and keep their inner loops free of cross-iteration dependencies so the compiler vectorizes
// them (dot products use eight independent partial sums). No function allocates except
// attention(), whose per-thread score buffer grows only when a call needs more keys than any
// call before it (size it once with `max_keys`).
//
// Numerics follow the PyTorch/transformers formulas they replace, in fp32; the tests compare
// against torch with tolerances derived in tests/test_nn.py.
#pragma once

#include <cstdint>
#include <string>

namespace bitnet::nn {

// ------------------------------------------------------------------ RMSNorm
// y[m, i] = (x[m, i] * r_m) * w[i] with r_m = 1 / sqrt(mean_i(x[m, i]^2) + eps), for m in [0, M)
// and i in [0, n). The mean of squares is accumulated in double and rounded to fp32 once; the
// rest is fp32 in the order written (transformers' BitNetRMSNorm: x * rsqrt(var + eps), then
// weight * that). Row strides ldx, ldy >= n; y may equal x (in place), other overlap is not
// allowed. `w` is [n].
void rmsnorm(const float* x, int64_t ldx, int64_t M, int64_t n, const float* w, float eps, float* y,
             int64_t ldy);

// ------------------------------------------------------------------ RoPE (NEOX)
// Rotary embedding with the "rotate_half" pairing: within each head of `head_dim` values
// (even), element i and i + head_dim/2 form the pair rotated by the angle
//   a_i(p) = float(p) * inv_freq_i,   inv_freq_i = 1 / theta^(2i / head_dim)   (i < head_dim / 2)
// computed in fp32 exactly as transformers' default RoPE does (exponent 2i/head_dim in fp32,
// angle product in fp32), cos/sin of that fp32 angle rounded to fp32.
//
// rope_inv_freq fills inv_freq[head_dim / 2] (once per model); rope_tables fills cos_out /
// sin_out [M, head_dim / 2] for the positions pos[0..M) (each in [0, 2^24)).
void rope_inv_freq(int64_t head_dim, float theta, float* inv_freq);
void rope_tables(const int64_t* pos, int64_t M, int64_t head_dim, const float* inv_freq,
                 float* cos_out, float* sin_out);

// Rotates, for each row m in [0, M), the n_heads heads stored back to back at x + m * ldx
// ([n_heads, head_dim]) with the tables of row m (from rope_tables):
//   x'[i]        = x[i] * c_i - x[i + h] * s_i
//   x'[i + h]    = x[i + h] * c_i + x[i] * s_i          (h = head_dim / 2)
// which is transformers' q * cos + rotate_half(q) * sin.
void rope_neox(float* x, int64_t ldx, int64_t M, int64_t n_heads, int64_t head_dim,
               const float* cos_tab, const float* sin_tab);

// ------------------------------------------------------------------ attention
// One query row and the keys/values it attends to (the first n_keys positions of one sequence's
// cache, so causality is expressed by n_keys = position + 1).
//   q   [n_head, head_dim]            the (RoPE'd) query of one token
//   k,v [n_keys, n_head_kv, head_dim] position stride kv_stride = n_head_kv * head_dim floats
//   out [n_head, head_dim]            written, may not overlap q, k or v
struct AttentionQuery {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t n_keys = 0;
  float* out = nullptr;
};

struct AttentionShape {
  int64_t n_head = 0, n_head_kv = 0, head_dim = 0;  // n_head % n_head_kv == 0
  float scale = 0.0f;                               // usually 1 / sqrt(head_dim)
};

// Causal GQA attention: for each query and each head h (kv head h / (n_head / n_head_kv)):
//   s_j = (q_h . k_j) * scale,  p_j = exp(s_j - max s) / sum_j exp(s_j - max s),
//   out_h = sum_j p_j v_j                                       (j < n_keys, all fp32)
// The work is split into (query, kv head, sub-group of query heads) tasks across the thread pool
// (the group is halved while there are fewer than 4 tasks per thread, so decode's few kv heads
// still balance); the query heads of a task share one pass over their keys and values. The
// per-ISA kernel (kernels/cpu/attention_f32.inc) computes exp with a polynomial (~2 ulp) and gives
// the same bits on every ISA. `max_keys` sizes the per-thread score buffer
// on first use (pass the context length so later calls never reallocate). Throws
// std::invalid_argument on an inconsistent shape or n_keys < 1.
void attention(const AttentionQuery* queries, int64_t n_queries, const AttentionShape& shape,
               int64_t max_keys);

// ------------------------------------------------------------------ FFN activation, residual
enum class Activation : int {
  relu2 = 0,  // relu(g)^2 * u  (BitNet b1.58 2B4T)
  silu = 1,   // g / (1 + exp(-g)) * u  (1bitLLM, LLaMA)
};
const char* activation_name(Activation a);
// "relu2" | "silu" (also "swish" for silu); throws std::invalid_argument listing them.
Activation parse_activation(const std::string& name);

// h[m, i] = act(g[m, i]) * u[m, i] for m in [0, M), i in [0, n); relu2 computes (r * r) * u with
// r = max(g, 0) (transformers' ReLUSquaredActivation), silu computes (g / (1 + exp(-g))) * u.
// Row strides ldg, ldu, ldh >= n; h may equal g or u.
void gated_activation(Activation act, const float* g, int64_t ldg, const float* u, int64_t ldu,
                      int64_t M, int64_t n, float* h, int64_t ldh);

// x[m, i] += y[m, i] for m in [0, M), i in [0, n) (the residual connection).
void add_inplace(float* x, int64_t ldx, const float* y, int64_t ldy, int64_t M, int64_t n);

}  // namespace bitnet::nn

// Differentiable ops on the tape (bitnet/tape.h), each with a hand-written backward.
//
// Layout conventions: activations are 2-D row-major [rows, features]; a batch of B sequences of
// T tokens is [B * T, C] with sequence b's token t at row b * T + t. Multi-head tensors are
// [B * T, H * D] with head h in columns [h * D, (h + 1) * D). Every op validates its inputs and
// throws std::invalid_argument naming the op, the argument and the shapes. Outputs are new
// tensors; no op writes into its inputs.
//
// Every op records a node only when should_record(inputs) holds, and its backward accumulates
// into the gradients of the inputs that need one (tape.h's contract). Float reductions use the
// orders documented in each implementation file; tests state their tolerances against PyTorch.
#pragma once

#include <cstdint>
#include <vector>

#include "bitnet/nn.h"  // nn::Activation
#include "bitnet/tape.h"

namespace bitnet::autograd {

// ---------------------------------------------------------------- linear
// (src/autograd/linear_ops.cpp) y[M, N] = x[M, K] @ w[N, K]^T (dense linear, no bias). Backward: dx
// = dy @ w, dw = dy^T @ x.
Tensor linear(const Tensor& x, const Tensor& w);

// BitLinear with the straight-through estimator (docs/formats.md section 1):
//   s_w = max(mean|w|, 1e-5), wq = clamp(round(w / s_w), -1, 1) * s_w         (per tensor)
//   s_x = 127 / max(max_k |x[m, k]|, 1e-5), xq = clamp(round(x * s_x), -128, 127) / s_x (per row)
//   w_eff = w + lambda * (wq - w),  x_eff = x + lambda * (xq - x),  y = x_eff @ w_eff^T
// lambda in [0, 1] is the warm-up mix (1: fully quantized, the int8 x ternary kernels compute y
// exactly as inference does; < 1: fp32 product). Backward, as if quantization were the
// identity (scales get no gradient): dx = dy @ w_eff, dw = dy^T @ x_eff.
Tensor bitlinear(const Tensor& x, const Tensor& w, float lambda = 1.0f);

// out[n, E] = table[ids[n], :] for a table [V, E]. Backward scatter-adds into the table's
// gradient. Every id must be in [0, V) (the error names the index).
Tensor embedding(const Tensor& table, const std::vector<int32_t>& ids);

// ---------------------------------------------------------------- norms
// (src/autograd/norm_ops.cpp) y[M, C] = x / sqrt(mean(x^2) + eps) * w over each row; w [C] may be
// undefined (no weight).
Tensor rmsnorm(const Tensor& x, const Tensor& w, float eps);

// ------------------------------------------------------ attention (src/autograd/attention_ops.cpp)
// RoPE, NEOX style (pairs (i, i + D/2)), on x [B * T, H * D]: row b * T + t sits at position
// pos0 + t, angle = pos * theta^(-2i / D). Backward rotates the gradient by minus the angle.
Tensor rope(const Tensor& x, int64_t T, int64_t H, int64_t D, float theta, int64_t pos0 = 0);

// Causal self-attention with grouped-query heads: q [B * T, Hq * D], k, v [B * T, Hkv * D],
// Hq % Hkv == 0 (query head h reads kv head h / (Hq / Hkv)); scores scaled by 1 / sqrt(D);
// token t attends to tokens 0 .. t of its own sequence. Output [B * T, Hq * D].
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t B, int64_t T,
                 int64_t Hq, int64_t Hkv, int64_t D);

// --------------------------------------------------- elementwise
// (src/autograd/elementwise_ops.cpp)
Tensor add(const Tensor& a, const Tensor& b);  // same shapes
Tensor mul(const Tensor& a, const Tensor& b);  // same shapes
Tensor scale(const Tensor& a, float s);
// act(gate) * up, act = relu^2 (relu(g)^2) or SiLU (g * sigmoid(g)); gate and up [M, F].
Tensor gated(const Tensor& gate, const Tensor& up, nn::Activation act);
// Inverted dropout: zeroes each element with probability p and scales the rest by 1 / (1 - p);
// the mask comes from `seed` (xoshiro256**, element order), so a run is reproducible. p == 0 or
// grad mode off returns x itself. 0 <= p < 1.
Tensor dropout(const Tensor& x, float p, uint64_t seed);

// ---------------------------------------------------------------- loss (src/autograd/loss_ops.cpp)
// Mean softmax cross-entropy over the rows of logits [N, V] whose target != ignore_index;
// targets [N] in [0, V) or == ignore_index. Returns a one-element tensor (0 when every row is
// ignored). Backward: (softmax - onehot) / n_counted on counted rows.
Tensor cross_entropy(const Tensor& logits, const std::vector<int32_t>& targets,
                     int32_t ignore_index = -100);

}  // namespace bitnet::autograd

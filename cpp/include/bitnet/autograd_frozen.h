// A tape op for a frozen, packed ternary BitLinear (LoRA fine-tuning: python/bitnet/lora).
//
// The base weights stay in their packed storage (any bitnet::Format; the kernel layout K256 is
// built once by PackedWeights::kernel() and cached there) and receive no gradient; only the
// activations flowing through the layer are differentiated, so that adapters placed before and
// after it (and in parallel with it) can be trained.
#pragma once

#include <memory>

#include "bitnet/packed_weights.h"
#include "bitnet/tape.h"

namespace bitnet::autograd {

// y[M, N] = bitlinear(x[M, K], w[N, K]) computed by the inference path (bitnet::bitlinear:
// per-token int8 absmax activations, ternary weights, int32 accumulation, rescale by
// s_w / s_x), so the output is bit for bit what inference (bitnet.ops.bitlinear) returns.
// Backward (straight-through estimator, quantization treated as the identity):
//   dx[M, K] += dy[M, N] @ (s_w * T)[N, K]
// w receives no gradient and nothing about x is saved (the backward needs only dy and w).
// M may be 0 (y is [0, N]). Throws std::invalid_argument when x is not 2-D, K != w.cols(), w is
// null, or x holds NaN / Inf (naming the row).
Tensor bitlinear_frozen(const Tensor& x, std::shared_ptr<const PackedWeights> w);

}  // namespace bitnet::autograd

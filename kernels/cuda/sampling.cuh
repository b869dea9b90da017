// Greedy and top-k sampling on the GPU over one row of logits, with the CPU sampler's order and
// tie rules (cpp/include/bitnet/sampler.h, no penalties, top_p = 1, min_p = 0). Host launchers.
#pragma once

#include <cstdint>

#include "bitnet/cuda.h"

namespace bitnet::cuda {

// *out_id = argmax_i logits[i] over [0, V), ties to the lowest id (-inf allowed). If a logit is
// NaN or +inf, *out_id = -1 - (its smallest index) instead. One block.
void launch_argmax(const float* logits, int64_t V, int32_t* out_id, Stream stream);

constexpr int kMaxTopK = 1024;

// The k best finite logits in the sampler's order (value descending, then id ascending):
// top_val[0 .. k), top_id[0 .. k); *count = min(k, number of finite logits) (-inf is masked).
// A NaN or +inf logit sets *count = -1 - (its smallest index). 1 <= k <= kMaxTopK. O(k V) work
// in one block: k passes, each selecting the best candidate below the previous one in that
// order (so ties need no marking and the result is exact).
void launch_topk(const float* logits, int64_t V, int k, float* top_val, int32_t* top_id,
                 int32_t* count, Stream stream);

// Draw from the top-k candidates of launch_topk with temperature T > 0 and a uniform u in [0, 1)
// (the CPU sampler's u = (xoshiro256** >> 11) * 2^-53): in float64, in candidate order,
//   x_i = double(v_i) / T, w_i = exp(x_i - x_0) (w_0 = 1), W = sum_i w_i (sequential),
//   target = u * W, S = 0; for each i: S += w_i; the first i with target < S is drawn
// (if rounding leaves none, the last candidate with w > 0). *out_id = top_id[i] and
// *out_prob = w_i / W; *out_id = -1 when count < 1. One thread (k is small).
void launch_sample_topk(const float* top_val, const int32_t* top_id, const int32_t* count,
                        double temperature, double u, int32_t* out_id, double* out_prob,
                        Stream stream);

}  // namespace bitnet::cuda

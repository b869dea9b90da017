#include "bitnet/bitlinear.h"

#include <algorithm>
#include <memory>

#include "bitnet/common.h"
#include "bitnet/memory.h"
#include "bitnet/quant.h"
#include "bitnet/threadpool.h"
#include "kernels.h"

namespace bitnet {

void bitlinear_quantized(const int8_t* q, const float* s_x, const int32_t* q_sum, int64_t M,
                         const KernelWeights& w, float* y, int64_t ldy) {
  const kernels::CpuKernels& kern = kernels::active();
  const kernels::gemm_k256_fn fn = M == 1 ? kern.gemv : kern.gemm;
  // One contiguous range of output rows per thread (a multiple of 16 rows, so tiles stay whole):
  // each thread streams its own part of the weights once.
  const int64_t threads =
      std::max<int64_t>(1, std::min<int64_t>(get_num_threads(), ceil_div(w.rows, 16)));
  const int64_t per = round_up(ceil_div(w.rows, threads), 16);
  parallel_for(threads, [&](int64_t t, int) {
    const int64_t n0 = std::min(w.rows, t * per), n1 = std::min(w.rows, n0 + per);
    if (n0 < n1) fn(w.data, w.nb, q, s_x, q_sum, M, n0, n1, w.scale, y, ldy);
  });
}

void bitlinear_quantized_multi(const int8_t* q, const float* s_x, const int32_t* q_sum, int64_t M,
                               const BitLinearTarget* targets, int64_t n_targets) {
  const kernels::CpuKernels& kern = kernels::active();
  const kernels::gemm_k256_fn fn = M == 1 ? kern.gemv : kern.gemm;
  const int64_t threads = get_num_threads();
  for (int64_t i = 1; i < n_targets; ++i)
    check_arg(targets[i].w->nb == targets[0].w->nb,
              "bitlinear_quantized_multi: matrices of different widths");
  parallel_for(threads, [&](int64_t t, int) {
    for (int64_t i = 0; i < n_targets; ++i) {
      const KernelWeights& w = *targets[i].w;
      const int64_t tw = std::max<int64_t>(1, std::min<int64_t>(threads, ceil_div(w.rows, 16)));
      if (t >= tw) continue;
      const int64_t per = round_up(ceil_div(w.rows, tw), 16);
      const int64_t n0 = std::min(w.rows, t * per), n1 = std::min(w.rows, n0 + per);
      if (n0 < n1)
        fn(w.data, w.nb, q, s_x, q_sum, M, n0, n1, w.scale, targets[i].y, targets[i].ldy);
    }
  });
}

void bitlinear(const float* x, int64_t M, int64_t K, const PackedWeights& w, float* y,
               int64_t ldy) {
  check_arg(M > 0, "bitlinear: x has no rows");
  check_arg(K == w.cols(), "bitlinear: x has ", K, " features but the weights are [", w.rows(),
            ", ", w.cols(), "] (expected x of shape [M, ", w.cols(), "])");
  check_arg(ldy >= w.rows(), "bitlinear: output row stride ", ldy, " < N = ", w.rows());
  check_arg(K < (int64_t(1) << 23), "bitlinear: K = ", K, " exceeds the int32 accumulator bound");
  const KernelWeights& kw = w.kernel();
  const int64_t kp = kw.nb * 256;
  // Per-calling-thread scratch, reused across calls (no allocation per decode step). The int8
  // rows are 64-byte aligned (kp is a multiple of 256): the GEMM streams them with full-line
  // loads, which measured ~15% faster than unaligned scratch.
  thread_local std::shared_ptr<uint8_t> scratch;
  thread_local int64_t scratch_bytes = 0;
  const int64_t q_bytes = M * kp, need = q_bytes + M * int64_t(sizeof(float) + sizeof(int32_t));
  if (need > scratch_bytes) {
    scratch = alloc_buffer(need);
    scratch_bytes = need;
  }
  int8_t* q = reinterpret_cast<int8_t*>(scratch.get());
  float* s_x = reinterpret_cast<float*>(scratch.get() + q_bytes);
  int32_t* q_sum = reinterpret_cast<int32_t*>(s_x + M);
  quantize_activations(x, M, K, q, kp, s_x, q_sum);
  bitlinear_quantized(q, s_x, q_sum, M, kw, y, ldy);
}

}  // namespace bitnet

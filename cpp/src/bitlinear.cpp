#include "bitnet/bitlinear.h"

#include <algorithm>
#include <vector>

#include "bitnet/common.h"
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

void bitlinear(const float* x, int64_t M, int64_t K, const PackedWeights& w, float* y,
               int64_t ldy) {
  check_arg(M > 0, "bitlinear: x has no rows");
  check_arg(K == w.cols(), "bitlinear: x has ", K, " features but the weights are [", w.rows(),
            ", ", w.cols(), "] (expected x of shape [M, ", w.cols(), "])");
  check_arg(ldy >= w.rows(), "bitlinear: output row stride ", ldy, " < N = ", w.rows());
  check_arg(K < (int64_t(1) << 23), "bitlinear: K = ", K, " exceeds the int32 accumulator bound");
  const KernelWeights& kw = w.kernel();
  const int64_t kp = kw.nb * 256;
  // Per-calling-thread scratch, reused across calls (no allocation per decode step).
  thread_local std::vector<int8_t> q;
  thread_local std::vector<float> s_x;
  thread_local std::vector<int32_t> q_sum;
  q.resize(size_t(M * kp));
  s_x.resize(size_t(M));
  q_sum.resize(size_t(M));
  quantize_activations(x, M, K, q.data(), kp, s_x.data(), q_sum.data());
  bitlinear_quantized(q.data(), s_x.data(), q_sum.data(), M, kw, y, ldy);
}

}  // namespace bitnet

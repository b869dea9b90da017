#include "bitnet/quant.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "bitnet/common.h"
#include "bitnet/threadpool.h"
#include "kernels.h"

namespace bitnet {

float quantize_weights(const float* w, int64_t count, int8_t* t) {
  check_arg(count > 0, "quantize_weights: the weight tensor is empty");
  // Pass 1: sum |w| per thread chunk in double (exact enough that the fp32 result is the
  // correctly rounded mean for any realistic size), and reject NaN / Inf.
  // A fixed chunk size keeps the summation order, hence s_w, independent of the thread count.
  const int64_t chunk = int64_t(1) << 16;
  const int64_t n_chunks = ceil_div(count, chunk);
  std::vector<double> sums(size_t(n_chunks), 0.0);
  std::vector<int64_t> bad(size_t(n_chunks), -1);
  parallel_for(n_chunks, [&](int64_t c, int) {
    const int64_t lo = c * chunk, hi = std::min(count, lo + chunk);
    double s = 0.0;
    for (int64_t i = lo; i < hi; ++i) {
      if (!std::isfinite(w[i])) {
        bad[size_t(c)] = i;
        return;
      }
      s += std::fabs(double(w[i]));
    }
    sums[size_t(c)] = s;
  });
  for (int64_t c = 0; c < n_chunks; ++c)
    check_arg(bad[size_t(c)] < 0, "quantize_weights: weight ", w[bad[size_t(c)]], " at flat index ",
              bad[size_t(c)], " is not finite");
  double total = 0.0;
  for (double s : sums) total += s;
  const float s_w = std::max(float(total / double(count)), 1e-5f);
  // Pass 2: t = clamp(round_half_even(w / s_w), -1, 1), written as two comparisons: the
  // half-even rounding sends +-0.5 to 0 and everything beyond +-0.5 to a value clamped to +-1,
  // so t = (v > 0.5) - (v < -0.5) is the same function, and it vectorises (nearbyint did not:
  // it was most of the time of BitLinear's forward in training, which re-quantizes every step).
  parallel_for(n_chunks, [&](int64_t c, int) {
    const int64_t lo = c * chunk, hi = std::min(count, lo + chunk);
    for (int64_t i = lo; i < hi; ++i) {
      const float v = w[i] / s_w;
      t[i] = int8_t(int(v > 0.5f) - int(v < -0.5f));
    }
  });
  return s_w;
}

void quantize_activations(const float* x, int64_t M, int64_t K, int8_t* q, int64_t k_pad,
                          float* s_x, int32_t* q_sum) {
  const kernels::CpuKernels& kern = kernels::active();
  // Split rows across threads only when there is enough work to pay for the wake-up.
  const int64_t rows_per_task = std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(1, K));
  const int64_t n_tasks = ceil_div(M, rows_per_task);
  std::vector<int64_t> bad(size_t(n_tasks), -1);
  parallel_for(n_tasks, [&](int64_t task, int) {
    const int64_t lo = task * rows_per_task, hi = std::min(M, lo + rows_per_task);
    for (int64_t m = lo; m < hi; ++m) {
      int32_t sum = 0;
      if (!kern.quantize_row(x + m * K, K, q + m * k_pad, k_pad, s_x + m, &sum)) {
        bad[size_t(task)] = m;
        return;
      }
      if (q_sum) q_sum[m] = sum;
    }
  });
  for (int64_t b : bad)
    check_arg(b < 0, "quantize_activations: row ", b, " of the input holds NaN or Inf");
}

}  // namespace bitnet

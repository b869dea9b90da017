// RMSNorm on the tape (bitnet/autograd_ops.h).
//
// Forward: the same fp32 arithmetic, in the same order, as bitnet::nn::rmsnorm (inference), so a
// model trained here and exported normalizes bit for bit as the inference engine does:
//   ss_m  = sum_i x[m, i]^2 in double (four partial sums (i mod 4), combined (0+1)+(2+3)),
//   r_m   = 1 / sqrt(float(ss_m / n) + eps)                                       (fp32),
//   y     = (x * r_m) * w[i]   (w undefined: y = x * r_m, the same value as with w = 1).
// r_m [M] is saved for the backward pass.
//
// Backward, with gw[m, i] = g[m, i] * w[i] (gw = g without a weight):
//   dx[m, i] += r_m * gw[m, i] - x[m, i] * c_m,   c_m = r_m^3 * mean_i(gw[m, i] * x[m, i])
//   (the mean accumulated in double, c_m rounded to fp32 once);
//   dw[i]    += sum_m g[m, i] * x[m, i] * r_m     (fp32, rows summed in order m = 0, 1, ...
//   within one task that owns a column range, so the result does not depend on the threads).
#include <algorithm>
#include <cmath>
#include <string>

#include "bitnet/autograd_ops.h"
#include "bitnet/common.h"
#include "bitnet/threadpool.h"

namespace bitnet::autograd {

namespace {

// Below this many values a whole op runs on the calling thread (the pool's fork/join costs a few
// microseconds; 32k fp32 values of this arithmetic take about as long).
constexpr int64_t kSerialWork = int64_t(1) << 15;

// Runs fn(r0, r1) over row ranges of [0, M) of rows `row_elems` values long, each range large
// enough to amortize a hand-off to the pool.
template <typename Fn>
void for_row_ranges(int64_t M, int64_t row_elems, const Fn& fn) {
  const int64_t rows = std::max<int64_t>(1, kSerialWork / std::max<int64_t>(row_elems, 1));
  const int64_t tasks = ceil_div(M, rows);
  if (tasks <= 1) {
    if (M > 0) fn(int64_t(0), M);
    return;
  }
  parallel_for(tasks, [&](int64_t t, int) { fn(t * rows, std::min(M, (t + 1) * rows)); });
}

}  // namespace

Tensor rmsnorm(const Tensor& x, const Tensor& w, float eps) {
  check_arg(x.defined() && x.dim() == 2, "rmsnorm: x must be a 2-D tensor [M, C], got ",
            x.defined() ? x.shape_str() : std::string("an undefined tensor"));
  const int64_t M = x.size(0), n = x.size(1);
  check_arg(n > 0, "rmsnorm: x ", x.shape_str(), " has no features (C must be > 0)");
  const bool has_w = w.defined();
  check_arg(!has_w || (w.dim() == 1 && w.size(0) == n), "rmsnorm: w must be [", n, "] to match x ",
            x.shape_str(), ", got ", has_w ? w.shape_str() : std::string());
  check_arg(eps >= 0.0f && std::isfinite(eps), "rmsnorm: eps must be finite and >= 0, got ", eps);

  Tensor y = Tensor::empty({M, n});
  Tensor r = Tensor::empty({M});  // 1 / sqrt(mean(x^2) + eps) per row
  const float* xp = x.data();
  const float* wp = has_w ? w.data() : nullptr;
  float* yp = y.data();
  float* rp = r.data();
  for_row_ranges(M, n, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      const float* xr = xp + m * n;
      float* yr = yp + m * n;
      // Identical to nn::rmsnorm: double squares (exact), four partial sums, one rounding.
      double acc[4] = {0, 0, 0, 0};
      int64_t i = 0;
      for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; ++j) acc[j] += double(xr[i + j]) * double(xr[i + j]);
      for (; i < n; ++i) acc[0] += double(xr[i]) * double(xr[i]);
      const float mean = float(((acc[0] + acc[1]) + (acc[2] + acc[3])) / double(n));
      const float rm = 1.0f / std::sqrt(mean + eps);
      rp[m] = rm;
      if (wp) {
        for (int64_t k = 0; k < n; ++k) yr[k] = (xr[k] * rm) * wp[k];
      } else {
        for (int64_t k = 0; k < n; ++k) yr[k] = xr[k] * rm;
      }
    }
  });

  if (should_record({&x, &w})) {
    record("rmsnorm", y, [x = x, w = w, r, M, n](const float* g) mutable {
      const float* xp = x.data();
      const float* wp = w.defined() ? w.data() : nullptr;
      const float* rp = r.data();
      if (needs_grad(x)) {
        float* gx = x.grad();
        for_row_ranges(M, n, [&](int64_t m0, int64_t m1) {
          for (int64_t m = m0; m < m1; ++m) {
            const float* xr = xp + m * n;
            const float* gr = g + m * n;
            float* dx = gx + m * n;
            const float rm = rp[m];
            // mean(gw * x): double partial sums as in the forward (products of two fp32 values
            // rounded once to double; |error| <= n * 2^-53 of sum |gw * x|).
            double acc[4] = {0, 0, 0, 0};
            int64_t i = 0;
            if (wp) {
              for (; i + 4 <= n; i += 4)
                for (int j = 0; j < 4; ++j)
                  acc[j] += double(gr[i + j]) * double(wp[i + j]) * double(xr[i + j]);
              for (; i < n; ++i) acc[0] += double(gr[i]) * double(wp[i]) * double(xr[i]);
            } else {
              for (; i + 4 <= n; i += 4)
                for (int j = 0; j < 4; ++j) acc[j] += double(gr[i + j]) * double(xr[i + j]);
              for (; i < n; ++i) acc[0] += double(gr[i]) * double(xr[i]);
            }
            const double mean = ((acc[0] + acc[1]) + (acc[2] + acc[3])) / double(n);
            const float c = float(double(rm) * double(rm) * double(rm) * mean);
            if (wp) {
              for (int64_t k = 0; k < n; ++k) dx[k] += rm * (gr[k] * wp[k]) - xr[k] * c;
            } else {
              for (int64_t k = 0; k < n; ++k) dx[k] += rm * gr[k] - xr[k] * c;
            }
          }
        });
      }
      if (wp && needs_grad(w)) {
        float* gw = w.grad();
        // Tasks own column ranges (multiples of 16 values) and sum their rows in order.
        const int64_t threads = get_num_threads();
        int64_t cols = round_up(ceil_div(n, threads), 16);
        cols =
            std::max<int64_t>(cols, round_up(ceil_div(kSerialWork, std::max<int64_t>(M, 1)), 16));
        const int64_t tasks = ceil_div(n, cols);
        auto columns = [&](int64_t task, int) {
          const int64_t c0 = task * cols, c1 = std::min(n, c0 + cols), nc = c1 - c0;
          float* dw = gw + c0;
          // Column sums accumulate in a block of at most 256 locals, added to dw at the end.
          for (int64_t b0 = 0; b0 < nc; b0 += 256) {
            const int64_t nb = std::min<int64_t>(256, nc - b0);
            float acc[256];
            std::fill(acc, acc + nb, 0.0f);
            for (int64_t m = 0; m < M; ++m) {
              const float* xr = xp + m * n + c0 + b0;
              const float* gr = g + m * n + c0 + b0;
              const float rm = rp[m];
              for (int64_t k = 0; k < nb; ++k) acc[k] += (gr[k] * xr[k]) * rm;
            }
            for (int64_t k = 0; k < nb; ++k) dw[b0 + k] += acc[k];
          }
        };
        if (tasks <= 1) {
          columns(0, 0);
        } else {
          parallel_for(tasks, columns);
        }
      }
    });
  }
  return y;
}

}  // namespace bitnet::autograd

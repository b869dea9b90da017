// Tape ops linear, bitlinear and embedding (bitnet/autograd_ops.h).
//
// Every fp32 product (forward and backward) is bitnet::sgemm, so its summation order is sgemm's.
// bitlinear with lambda == 1 runs the inference path (quantize_weights, pack into K256,
// quantize_activations, bitlinear_quantized on the active ISA's integer kernels): its forward
// output is bit-for-bit what inference computes for the same weights. Its backward, and every
// path with lambda < 1, are fp32 products with the saved effective operands
//   w_eff = w + lambda * (t * s_w - w)    [N, K]   (lambda == 1: exactly t * s_w)
//   x_eff = x + lambda * (q / s_x - x)    [M, K]   (lambda == 1: exactly q / s_x)
// computed elementwise in fp32 in that order (the build uses -ffp-contract=off, so this matches
// PyTorch's `x + lam * (xq - x)` with xq = round(x * s_x).clamp(-128, 127) / s_x bit for bit).
//
// Zero sizes: linear accepts M, N or K == 0 (y = x @ w^T is then [M, N] of zeros, or empty).
// bitlinear accepts M == 0 (an empty batch: y is [0, N]) but needs a non-empty w, whose
// per-tensor scale mean|w| is undefined otherwise. embedding accepts an empty ids list ([0, E]).
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <utility>
#include <vector>

#include "bitnet/autograd_ops.h"
#include "bitnet/bitlinear.h"
#include "bitnet/common.h"
#include "bitnet/formats.h"
#include "bitnet/packed_weights.h"
#include "bitnet/quant.h"
#include "bitnet/sgemm.h"
#include "bitnet/threadpool.h"

namespace bitnet::autograd {

namespace {

// Elementwise loops split across the pool only above this many elements per task (~64K floats,
// tens of microseconds of streaming work, enough to amortize the fork/join).
constexpr int64_t kMinElemsPerTask = int64_t(1) << 16;

// Runs fn(r0, r1) over row ranges covering [0, rows), rows of `cols` elements each: on the
// calling thread when the work is small, otherwise in at most get_num_threads() contiguous
// ranges. fn must not depend on how the rows are split (every use writes disjoint rows).
template <typename Fn>
void for_rows(int64_t rows, int64_t cols, const Fn& fn) {
  const int64_t total = rows * std::max<int64_t>(cols, 1);
  const int64_t tasks = std::min<int64_t>(
      {int64_t(get_num_threads()), rows, std::max<int64_t>(1, total / kMinElemsPerTask)});
  if (tasks <= 1) {
    if (rows > 0) fn(int64_t(0), rows);
    return;
  }
  const int64_t per = ceil_div(rows, tasks);
  parallel_for(tasks, [&](int64_t task, int) {
    const int64_t r0 = std::min(rows, task * per), r1 = std::min(rows, r0 + per);
    if (r0 < r1) fn(r0, r1);
  });
}

// A leading dimension (row stride) for sgemm: BLAS convention requires >= 1 even for a
// zero-width matrix, whose elements are never read.
constexpr int64_t ld(int64_t cols) { return cols > 0 ? cols : 1; }

// A 2-D [rows, cols] operand check: names the op, the argument and its expected layout.
void check_2d(const Tensor& t, const char* op, const char* name, const char* layout) {
  check_arg(t.defined(), op, ": ", name, " is undefined");
  check_arg(t.dim() == 2, op, ": ", name, " must be 2-D ", layout, ", got shape ", t.shape_str());
}

// x [M, K] and w [N, K]: both 2-D with the same K.
void check_linear_args(const Tensor& x, const Tensor& w, const char* op) {
  check_2d(x, op, "x", "[M, K]");
  check_2d(w, op, "w", "[N, K]");
  check_arg(x.size(1) == w.size(1), op, ": x ", x.shape_str(), " and w ", w.shape_str(),
            " disagree on K (expected x [M, K] and w [N, K]; ", x.size(1), " != ", w.size(1), ")");
}

// Records the backward of y[M, N] = x_eff[M, K] @ w_eff[N, K]^T for the inputs x and w:
//   dx += dy @ w_eff    (sgemm NN, beta = 1 on x's gradient)
//   dw += dy^T @ x_eff  (sgemm TN, beta = 1 on w's gradient)
// w_eff must be defined when x needs a gradient, x_eff when w does (they may be x and w
// themselves for the plain linear).
void record_product(const char* op, Tensor& y, const Tensor& x, const Tensor& w, Tensor x_eff,
                    Tensor w_eff) {
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  // Init-captures: a plain copy-capture of a const reference would keep the const.
  record(op, y, [x = x, w = w, x_eff, w_eff, M, K, N](const float* dy) mutable {
    if (needs_grad(x) && w_eff.defined())
      sgemm(false, false, M, K, N, 1.0f, dy, ld(N), w_eff.data(), ld(K), 1.0f, x.grad(), ld(K));
    if (needs_grad(w) && x_eff.defined())
      sgemm(true, false, N, K, M, 1.0f, dy, ld(N), x_eff.data(), ld(K), 1.0f, w.grad(), ld(K));
  });
}

}  // namespace

// ------------------------------------------------------------------ linear
Tensor linear(const Tensor& x, const Tensor& w) {
  check_linear_args(x, w, "linear");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  Tensor y = Tensor::empty({M, N});
  // K == 0 gives y = 0 (sgemm with beta = 0 writes alpha * empty sum).
  sgemm(false, true, M, N, K, 1.0f, x.data(), ld(K), w.data(), ld(K), 0.0f, y.data(), ld(N));
  if (should_record({&x, &w})) {
    // The product's own operands are the saved activations (shared handles, no copy).
    record_product("linear", y, x, w, needs_grad(w) ? x : Tensor(), needs_grad(x) ? w : Tensor());
  }
  return y;
}

// ------------------------------------------------------------------ bitlinear
Tensor bitlinear(const Tensor& x, const Tensor& w, float lambda) {
  check_linear_args(x, w, "bitlinear");
  check_arg(lambda >= 0.0f && lambda <= 1.0f, "bitlinear: lambda must be in [0, 1], got ", lambda);
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  check_arg(N > 0 && K > 0, "bitlinear: w ", w.shape_str(),
            " is empty (the per-tensor scale mean|w| needs at least one weight)");
  // The integer kernels accumulate q . t in int32 over nb = ceil(K / 256) blocks and require
  // nb < 2^15 (|sum| <= 128 * 256 * nb < 2^31).
  const int64_t nb = ceil_div(K, 256), kp = nb * 256;
  check_arg(nb < (int64_t(1) << 15), "bitlinear: K = ", K,
            " exceeds the int32 accumulator bound of the kernels (K <= ", ((1 << 15) - 1) * 256,
            ")");

  const bool record_it = should_record({&x, &w});
  const bool keep_w_eff = record_it && needs_grad(x);  // dx = dy @ w_eff
  const bool keep_x_eff = record_it && needs_grad(w);  // dw = dy^T @ x_eff
  const bool quantized = lambda == 1.0f;

  // Scratch layout (each part 64-byte aligned): t [N * K] int8, packed K256 [N * nb * 64]
  // (lambda == 1 only), q [M, kp] int8, s_x [M] fp32, q_sum [M] int32.
  const int64_t t_off = 0;
  const int64_t pk_off = round_up(t_off + N * K, 64);
  const int64_t q_off = round_up(pk_off + (quantized ? N * nb * 64 : 0), 64);
  const int64_t sx_off = round_up(q_off + M * kp, 64);
  const int64_t qs_off = round_up(sx_off + M * int64_t(sizeof(float)), 64);
  // Scratch from the tape's caching pool (64-byte aligned; a training step repeats the same
  // shapes, so after the first step this is a free-list pop), returned when the op returns.
  Tensor scratch = Tensor::empty({ceil_div(qs_off + M * int64_t(sizeof(int32_t)), 4)});
  uint8_t* buf = reinterpret_cast<uint8_t*>(scratch.data());
  int8_t* t = reinterpret_cast<int8_t*>(buf + t_off);
  uint8_t* packed = buf + pk_off;
  int8_t* q = reinterpret_cast<int8_t*>(buf + q_off);
  float* s_x = reinterpret_cast<float*>(buf + sx_off);
  int32_t* q_sum = reinterpret_cast<int32_t*>(buf + qs_off);

  float s_w = 0.0f;
  try {
    s_w = quantize_weights(w.data(), N * K, t);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(str_cat("bitlinear: w ", w.shape_str(), ": ", e.what()));
  }
  if (M > 0) {
    try {
      quantize_activations(x.data(), M, K, q, kp, s_x, q_sum);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(str_cat("bitlinear: x ", x.shape_str(), ": ", e.what()));
    }
  }

  const float* xd = x.data();
  const float* wd = w.data();
  Tensor y = Tensor::empty({M, N});
  Tensor w_eff, x_eff;
  if (quantized) {
    pack_ternary(Format::native, t, N, K, s_w, packed);
    if (M > 0)
      bitlinear_quantized(q, s_x, q_sum, M, KernelWeights{packed, N, nb, s_w}, y.data(), N);
    if (keep_w_eff) {
      w_eff = Tensor::empty({N, K});
      float* we = w_eff.data();
      for_rows(N, K, [&](int64_t r0, int64_t r1) {
        for (int64_t i = r0 * K; i < r1 * K; ++i) we[i] = float(t[i]) * s_w;
      });
    }
    if (keep_x_eff) {
      x_eff = Tensor::empty({M, K});
      float* xe = x_eff.data();
      for_rows(M, K, [&](int64_t r0, int64_t r1) {
        for (int64_t m = r0; m < r1; ++m)
          for (int64_t k = 0; k < K; ++k) xe[m * K + k] = float(q[m * kp + k]) / s_x[m];
      });
    }
  } else {
    // The fp32 warm-up mix; both operands are needed for the forward product.
    w_eff = Tensor::empty({N, K});
    x_eff = Tensor::empty({M, K});
    float* we = w_eff.data();
    float* xe = x_eff.data();
    for_rows(N, K, [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0 * K; i < r1 * K; ++i) {
        const float wq = float(t[i]) * s_w;
        we[i] = wd[i] + lambda * (wq - wd[i]);
      }
    });
    for_rows(M, K, [&](int64_t r0, int64_t r1) {
      for (int64_t m = r0; m < r1; ++m)
        for (int64_t k = 0; k < K; ++k) {
          const float xq = float(q[m * kp + k]) / s_x[m];
          const float xv = xd[m * K + k];
          xe[m * K + k] = xv + lambda * (xq - xv);
        }
    });
    sgemm(false, true, M, N, K, 1.0f, xe, ld(K), we, ld(K), 0.0f, y.data(), ld(N));
    if (!keep_w_eff) w_eff = Tensor();
    if (!keep_x_eff) x_eff = Tensor();
  }
  if (record_it) record_product("bitlinear", y, x, w, std::move(x_eff), std::move(w_eff));
  return y;
}

// ------------------------------------------------------------------ embedding
Tensor embedding(const Tensor& table, const std::vector<int32_t>& ids) {
  check_2d(table, "embedding", "table", "[V, E]");
  const int64_t V = table.size(0), E = table.size(1), n = int64_t(ids.size());
  for (int64_t i = 0; i < n; ++i)
    check_arg(ids[size_t(i)] >= 0 && ids[size_t(i)] < V, "embedding: ids[", i,
              "] = ", ids[size_t(i)], " is out of range [0, ", V, ") for table ",
              table.shape_str());
  Tensor out = Tensor::empty({n, E});
  const float* tab = table.data();
  float* o = out.data();
  for_rows(n, E, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i)
      std::memcpy(o + i * E, tab + int64_t(ids[size_t(i)]) * E, size_t(E) * sizeof(float));
  });
  if (should_record({&table})) {
    record("embedding", out, [table = table, ids, n, E](const float* gout) mutable {
      if (!needs_grad(table) || n == 0 || E == 0) return;
      float* g = table.grad();
      // Scatter-add over column slices: every slice walks the ids in order, so each gradient
      // element sums its contributions in id order whatever the split (deterministic). Slices
      // are multiples of 16 floats (a cache line) to limit false sharing between threads.
      const int64_t threads = std::min<int64_t>({int64_t(get_num_threads()), ceil_div(E, 16),
                                                 std::max<int64_t>(1, n * E / kMinElemsPerTask)});
      const int64_t per = round_up(ceil_div(E, std::max<int64_t>(threads, 1)), 16);
      auto slice = [&](int64_t e0, int64_t e1) {
        for (int64_t i = 0; i < n; ++i) {
          float* dst = g + int64_t(ids[size_t(i)]) * E;
          const float* src = gout + i * E;
          for (int64_t e = e0; e < e1; ++e) dst[e] += src[e];
        }
      };
      if (threads <= 1) {
        slice(0, E);
      } else {
        parallel_for(threads, [&](int64_t task, int) {
          const int64_t e0 = std::min(E, task * per), e1 = std::min(E, e0 + per);
          if (e0 < e1) slice(e0, e1);
        });
      }
    });
  }
  return out;
}

}  // namespace bitnet::autograd

// Softmax cross-entropy on the tape (bitnet/autograd_ops.h).
//
// Forward, for each counted row n (targets[n] != ignore_index) of logits x [N, V]:
//   m_n   = max_j x[n, j]                                                         (fp32, exact)
//   S_n   = sum_j e(x[n, j] - m_n)   e = exp_nonpos below (fp32); the terms are summed in
//           blocks of kBlock columns (eight fp32 partial sums (j mod 8) per block, combined
//           pairwise), the block sums added in column order in double
//   l_n   = (double(m_n) + log(S_n)) - double(x[n, t_n])                          (double)
//   loss  = float((sum_n l_n) / n_counted), rows summed in index order in double; 0 when no row
//           is counted.
// Rows are independent tasks and the final sum is serial, so the result does not depend on the
// thread count. NaN or +inf logits in a counted row give a NaN loss (as in PyTorch); -inf
// logits are masked entries (probability 0) as long as the row has one finite logit.
// Saved for backward: the logits tensor (a handle, no copy), m_n and 1 / S_n per row ([N] each).
//
// Backward, with c = g_out / n_counted (fp32), only on counted rows:
//   dx[n, j] += (e(x[n, j] - m_n) * float(1 / S_n)) * c,   then dx[n, t_n] -= c
// i.e. (softmax - onehot) * c, with the probabilities recomputed instead of stored (storing them
// would cost another [N, V] fp32 buffer: 1 GiB for 2048 rows of a 128k vocabulary).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "bitnet/autograd_ops.h"
#include "bitnet/common.h"
#include "bitnet/threadpool.h"

namespace bitnet::autograd {

namespace {

// Columns per block of the row sum (fp32 lane sums of at most 128 terms each, then double).
constexpr int64_t kBlock = 1024;
// Rows are grouped into tasks of at least this many logits (~25-50 us of work each).
constexpr int64_t kTaskWork = int64_t(1) << 15;

// Four fp32 lanes (GCC/Clang vector extensions: SSE2 on x86-64, NEON on AArch64, no ISA flags).
// Written out because GCC does not vectorize the scalar form of exp below (the selects are not
// if-converted), which made the op ~5x slower than this.
typedef float f32x4 __attribute__((vector_size(16)));
typedef int32_t i32x4 __attribute__((vector_size(16)));

inline f32x4 load4(const float* p) {
  f32x4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store4(float* p, f32x4 v) { std::memcpy(p, &v, sizeof v); }
// p[0 .. n) (n < 4) in the low lanes, `fill` in the others.
inline f32x4 load_part(const float* p, int64_t n, float fill) {
  float b[4] = {fill, fill, fill, fill};
  for (int64_t j = 0; j < n; ++j) b[j] = p[j];
  return load4(b);
}
inline f32x4 select(i32x4 mask, f32x4 a, f32x4 b) {  // mask lanes all-ones: a, else b
  return f32x4((i32x4(a) & mask) | (i32x4(b) & ~mask));
}

// e^d lane-wise for d <= 0 (d = logit - row max). Cody-Waite reduction d = k ln2 + r
// (|r| <= ln2 / 2, k * 0.693359375 exact), e^r by Cephes' expf minimax polynomial, 2^k put into
// the exponent bits: relative error < 1e-7 (checked against double exp on 2M points in
// [-87, 0]). d < -87 gives 0 (e^-87 = 1.6e-38 is below 2^-125 relative to the row's largest
// term e^0 = 1, so no row sum notices); -inf gives 0 and NaN gives NaN. k is taken from the bit
// pattern of the magic-number-rounded t (no float-to-int conversion, which is undefined for NaN).
inline f32x4 exp_nonpos(f32x4 d) {
  const i32x4 low = d < -87.0f;  // NaN: false
  const f32x4 dc = select(low, f32x4{} - 87.0f, d);
  const f32x4 t = dc * 1.44269504088896341f + 12582912.0f;  // 1.5 * 2^23: rounds d / ln2
  const f32x4 kf = t - 12582912.0f;                         // k in [-126, 0]
  const f32x4 r = (dc - kf * 0.693359375f) - kf * -2.12194440e-4f;
  const f32x4 z = r * r;
  f32x4 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const f32x4 er = (p * z + r) + 1.0f;
  // k = bits(t) - bits(1.5 * 2^23) for |k| < 2^22; 2^k has the bits (k + 127) << 23.
  const i32x4 kbits = i32x4(t) - 0x4B400000;
  const f32x4 two_k = f32x4((kbits + 127) << 23);
  return f32x4(i32x4(er * two_k) & ~low);
}

// max_j x[j], V >= 1, with four lanes (a NaN never wins: the exp pass turns it into NaN).
float row_max(const float* x, int64_t V) {
  f32x4 m = f32x4{} + x[0];
  int64_t i = 0;
  for (; i + 4 <= V; i += 4) {
    const f32x4 v = load4(x + i);
    m = select(v > m, v, m);
  }
  if (i < V) {
    const f32x4 v = load_part(x + i, V - i, x[0]);
    m = select(v > m, v, m);
  }
  float r = m[0];
  for (int j = 1; j < 4; ++j) r = m[j] > r ? m[j] : r;
  return r;
}

// sum_j e(x[j] - m): per block of kBlock columns, eight fp32 lane sums (column j in lane
// j mod 8, the last partial group padded with -inf, i.e. e = 0), combined pairwise
// ((0+4)+(1+5))+((2+6)+(3+7)); the block sums added in column order in double.
double row_sum_exp(const float* x, int64_t V, float m) {
  double total = 0.0;
  for (int64_t b0 = 0; b0 < V; b0 += kBlock) {
    const int64_t b1 = std::min(V, b0 + kBlock);
    f32x4 a0 = {}, a1 = {};
    int64_t i = b0;
    for (; i + 8 <= b1; i += 8) {
      a0 += exp_nonpos(load4(x + i) - m);
      a1 += exp_nonpos(load4(x + i + 4) - m);
    }
    if (i < b1) {
      const float ninf = -std::numeric_limits<float>::infinity();
      const int64_t rem = b1 - i;
      a0 += exp_nonpos(load_part(x + i, std::min<int64_t>(rem, 4), ninf) - m);
      if (rem > 4) a1 += exp_nonpos(load_part(x + i + 4, rem - 4, ninf) - m);
    }
    total += double(((a0[0] + a1[0]) + (a0[1] + a1[1])) + ((a0[2] + a1[2]) + (a0[3] + a1[3])));
  }
  return total;
}

// dr[j] += (e(x[j] - m) * inv_s) * c for j in [0, V).
void row_softmax_grad(const float* x, int64_t V, float m, float inv_s, float c, float* dr) {
  int64_t j = 0;
  for (; j + 4 <= V; j += 4)
    store4(dr + j, load4(dr + j) + (exp_nonpos(load4(x + j) - m) * inv_s) * c);
  if (j < V) {
    const f32x4 d = (exp_nonpos(load_part(x + j, V - j, m) - m) * inv_s) * c;
    for (int64_t k = 0; j + k < V; ++k) dr[j + k] += d[k];
  }
}

// Runs fn(r0, r1) over row ranges of [0, N), each at least kTaskWork logits, across the pool.
template <typename Fn>
void for_row_ranges(int64_t N, int64_t V, const Fn& fn) {
  const int64_t rows = std::max<int64_t>(1, kTaskWork / std::max<int64_t>(V, 1));
  const int64_t tasks = ceil_div(N, rows);
  if (tasks <= 1) {
    if (N > 0) fn(int64_t(0), N);
    return;
  }
  parallel_for(tasks, [&](int64_t t, int) { fn(t * rows, std::min(N, (t + 1) * rows)); });
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const std::vector<int32_t>& targets,
                     int32_t ignore_index) {
  check_arg(logits.defined() && logits.dim() == 2,
            "cross_entropy: logits must be a 2-D tensor [N, V], got ",
            logits.defined() ? logits.shape_str() : std::string("an undefined tensor"));
  const int64_t N = logits.size(0), V = logits.size(1);
  check_arg(V > 0, "cross_entropy: logits ", logits.shape_str(), " has no classes (V must be > 0)");
  check_arg(int64_t(targets.size()) == N, "cross_entropy: targets has ", targets.size(),
            " entries but logits ", logits.shape_str(), " has N = ", N, " rows");
  int64_t counted = 0;
  for (int64_t n = 0; n < N; ++n) {
    const int32_t t = targets[size_t(n)];
    if (t == ignore_index) continue;
    check_arg(t >= 0 && int64_t(t) < V, "cross_entropy: targets[", n, "] = ", t,
              " is out of range for V = ", V, " classes (and is not ignore_index = ", ignore_index,
              ")");
    ++counted;
  }

  Tensor out = Tensor::empty({1});
  if (counted == 0) {
    // Nothing to average: the loss is 0 and the logits' gradient is 0 (materialized, so that a
    // training step sees a zero gradient rather than none).
    out.data()[0] = 0.0f;
    if (should_record({&logits}))
      record("cross_entropy", out, [logits = logits](const float*) mutable {
        (void)logits.grad();  // a zero gradient (allocated zeroed), not none
      });
    return out;
  }

  auto row_m = std::make_shared<std::vector<float>>(size_t(N), 0.0f);
  auto row_inv_s = std::make_shared<std::vector<float>>(size_t(N), 0.0f);
  std::vector<double> row_loss(size_t(N), 0.0);
  const float* xp = logits.data();
  for_row_ranges(N, V, [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      const int32_t t = targets[size_t(n)];
      if (t == ignore_index) continue;
      const float* xr = xp + n * V;
      const float m = row_max(xr, V);
      const double s = row_sum_exp(xr, V, m);
      (*row_m)[size_t(n)] = m;
      (*row_inv_s)[size_t(n)] = float(1.0 / s);
      row_loss[size_t(n)] = (double(m) + std::log(s)) - double(xr[t]);
    }
  });
  double total = 0.0;
  for (int64_t n = 0; n < N; ++n) total += row_loss[size_t(n)];
  out.data()[0] = float(total / double(counted));

  if (should_record({&logits})) {
    auto tg = std::make_shared<std::vector<int32_t>>(targets);
    record("cross_entropy", out,
           [logits = logits, tg, row_m, row_inv_s, ignore_index, counted, N,
            V](const float* g) mutable {
             const float c = g[0] / float(counted);
             const float* xp = logits.data();
             float* gx = logits.grad();
             for_row_ranges(N, V, [&](int64_t r0, int64_t r1) {
               for (int64_t n = r0; n < r1; ++n) {
                 const int32_t t = (*tg)[size_t(n)];
                 if (t == ignore_index) continue;
                 const float* xr = xp + n * V;
                 float* dr = gx + n * V;
                 const float m = (*row_m)[size_t(n)];
                 const float inv_s = (*row_inv_s)[size_t(n)];
                 row_softmax_grad(xr, V, m, inv_s, c, dr);
                 dr[t] -= c;
               }
             });
           });
  }
  return out;
}

}  // namespace bitnet::autograd

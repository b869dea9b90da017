// RoPE and causal grouped-query attention on the tape (bitnet/autograd_ops.h).
//
// Both forwards compute the same fp32 values, in the same order, as the inference building blocks
// in bitnet/nn.h (nn::rope_neox with nn::rope_inv_freq / nn::rope_tables; nn::attention), so a
// model trained here and exported runs identically in the inference engine.
//
// rope: the cos / sin tables [T, D / 2] of positions pos0 .. pos0 + T - 1 come from nn's table
// functions; each pair (a, b) = (x[i], x[i + D/2]) of a head becomes
//   (a * c_i - b * s_i,  b * c_i + a * s_i)
// and the backward applies the transposed rotation (minus the angle) to the gradient (ga, gb):
//   da += ga * c_i + gb * s_i,   db += gb * c_i - ga * s_i.
//
// attention, per sequence b, query head h (kv head hk = h / (Hq / Hkv)) and query t:
//   s_j = dot(q_t, k_j) * scale (j <= t, scale = 1 / sqrt(D)), m = max_j s_j,
//   e_j = exp(s_j - m), l = sum_j e_j, p_j = e_j / l, o_t = sum_j p_j v_j
// computed by the inference engine's own per-ISA kernel (kernels::dense_active().attention, the
// kernel nn::attention runs; kernels/cpu/attention_f32.inc states its arithmetic), so training
// and inference agree bit for bit on every ISA. Nothing is saved but the inputs: the backward
// recomputes the probabilities with the kernel's first half (attention_probs), the same bits.
// Backward (per (b, kv head) task, so the query heads sharing a kv head accumulate into one dK /
// dV without conflicts, in a fixed order):
//   dp_j = dot(dO_t, v_j),  r = sum_j p_j dp_j,  ds_j = p_j (dp_j - r) * scale,
//   dQ_t += sum_j ds_j k_j,  dK_j += sum_{t, h in group} ds_j q_t,  dV_j += sum p_j dO_t.
// Cost: forward ~2 T^2 D per head (causal half of two T x T x D products), backward ~5 T^2 D.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "bitnet/autograd_ops.h"
#include "bitnet/common.h"
#include "bitnet/nn.h"
#include "bitnet/threadpool.h"
#include "dense_kernels.h"

namespace bitnet::autograd {

namespace {

// Below this many values a whole elementwise op runs on the calling thread (the pool's fork/join
// costs a few microseconds; 32k fp32 values of this arithmetic take about as long).
constexpr int64_t kSerialWork = int64_t(1) << 15;

// Largest element count a Tensor may hold (tape.cpp's limit); products of shape arguments are
// checked against it before they are formed, so no int64 overflow.
constexpr int64_t kMaxNumel = int64_t(1) << 40;

bool product_fits(int64_t a, int64_t b) {
  return a >= 0 && b >= 0 && (a == 0 || b <= kMaxNumel / a);
}

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

// nn.cpp's dot product, verbatim (the forward must round exactly as inference does): eight
// independent fp32 partial sums combined pairwise, then the scalar tail.
inline float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float tail = 0.0f;
  for (; i < n; ++i) tail += a[i] * b[i];
  return (((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))) + tail;
}

// y[i] += a * x[i]
inline void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

std::string describe(const Tensor& t) { return t.defined() ? t.shape_str() : "undefined"; }

// Checks that t is [rows, heads * D] (rows = B * T) without forming a product that could overflow.
void check_heads(const char* op, const char* name, const Tensor& t, int64_t B, int64_t T,
                 int64_t heads, int64_t D, const char* heads_name) {
  const bool ok = t.defined() && t.dim() == 2 && product_fits(B, T) && product_fits(heads, D) &&
                  t.size(0) == B * T && t.size(1) == heads * D;
  check_arg(ok, op, ": ", name, " must be [B * T, ", heads_name, " * D] = [", B, " * ", T, ", ",
            heads, " * ", D, "], got ", describe(t));
}

// The attention backward (see the top of this file): accumulates into the gradients of the
// inputs that need one, one task per (sequence, kv head), each owning its rows of dK / dV and the
// dQ columns of its query heads, so the result does not depend on the thread count.
void attention_backward(Tensor& q, Tensor& k, Tensor& v, const float* g, int64_t B, int64_t T,
                        int64_t Hq, int64_t Hkv, int64_t D, float scale) {
  const bool need_q = needs_grad(q), need_k = needs_grad(k), need_v = needs_grad(v);
  const int64_t ldq = Hq * D, ldk = Hkv * D, G = Hq / Hkv;
  const kernels::attention_probs_fn probs = kernels::dense_active().attention_probs;
  const float* qp = q.data();
  const float* kp = k.data();
  const float* vp = v.data();
  float* gq = need_q ? q.grad() : nullptr;
  float* gk = need_k ? k.grad() : nullptr;
  float* gv = need_v ? v.grad() : nullptr;
  parallel_for(B * Hkv, [&](int64_t task, int) {
    const int64_t b = task / Hkv, hk = task % Hkv;
    // Per-thread scratch: p [G, T], ds [T], dq [D], local dK and dV [T, D] of this kv head.
    thread_local std::vector<float> scratch;
    const size_t need = size_t(G * T + T + D + 2 * T * D);
    if (scratch.size() < need) scratch.resize(need);
    float* pg = scratch.data();
    float* ds = pg + G * T;
    float* dq = ds + T;
    float* dk = dq + D;
    float* dv = dk + T * D;
    std::fill(dk, dk + 2 * T * D, 0.0f);
    const float* ks = kp + b * T * ldk + hk * D;
    const float* vs = vp + b * T * ldk + hk * D;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t n = t + 1, row0 = (b * T + t) * ldq + hk * G * D;
      // The forward's probabilities of the group's G heads, [G, n], recomputed by the kernel.
      probs(qp + row0, G, D, ks, ldk, n, scale, pg);
      for (int64_t gi = 0; gi < G; ++gi) {
        const int64_t row = row0 + gi * D;
        const float* p = pg + gi * n;
        const float* qt = qp + row;
        const float* got = g + row;
        if (need_v)
          for (int64_t j = 0; j < n; ++j) axpy(p[j], got, dv + j * D, D);
        if (!need_q && !need_k) continue;
        for (int64_t j = 0; j < n; ++j) ds[j] = dot(got, vs + j * ldk, D);
        const float r = dot(p, ds, n);
        for (int64_t j = 0; j < n; ++j) ds[j] = (p[j] * (ds[j] - r)) * scale;
        if (need_q) {
          std::fill(dq, dq + D, 0.0f);
          for (int64_t j = 0; j < n; ++j) axpy(ds[j], ks + j * ldk, dq, D);
          float* gqt = gq + row;
          for (int64_t i = 0; i < D; ++i) gqt[i] += dq[i];
        }
        if (need_k)
          for (int64_t j = 0; j < n; ++j) axpy(ds[j], qt, dk + j * D, D);
      }
    }
    for (int64_t j = 0; j < T; ++j) {
      const int64_t off = (b * T + j) * ldk + hk * D;
      if (need_k)
        for (int64_t i = 0; i < D; ++i) gk[off + i] += dk[j * D + i];
      if (need_v)
        for (int64_t i = 0; i < D; ++i) gv[off + i] += dv[j * D + i];
    }
  });
}

}  // namespace

// ------------------------------------------------------------------ RoPE
Tensor rope(const Tensor& x, int64_t T, int64_t H, int64_t D, float theta, int64_t pos0) {
  check_arg(T > 0 && H > 0 && D > 0, "rope: T, H and D must be > 0, got T = ", T, ", H = ", H,
            ", D = ", D);
  check_arg(D % 2 == 0, "rope: head dimension D must be even (NEOX pairs i, i + D/2), got D = ", D);
  check_arg(theta > 0.0f && std::isfinite(theta), "rope: theta must be finite and > 0, got ",
            theta);
  constexpr int64_t kMaxPos = int64_t(1) << 24;  // positions are exact in fp32 below 2^24
  check_arg(pos0 >= 0 && T <= kMaxPos && pos0 <= kMaxPos - T, "rope: positions pos0 = ", pos0,
            " .. pos0 + T - 1 (T = ", T, ") must lie in [0, 2^24)");
  check_arg(
      x.defined() && x.dim() == 2 && product_fits(H, D) && x.size(1) == H * D && x.size(0) % T == 0,
      "rope: x must be [B * T, H * D] with T = ", T, ", H = ", H, ", D = ", D, ", got ",
      describe(x));
  const int64_t rows = x.size(0), C = H * D, half = D / 2;

  // tabs = [cos [T, half], sin [T, half]], shared with the backward closure.
  auto tabs = std::make_shared<std::vector<float>>(size_t(2 * T * half));
  {
    std::vector<int64_t> pos(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) pos[size_t(t)] = pos0 + t;
    std::vector<float> inv(static_cast<size_t>(half));
    nn::rope_inv_freq(D, theta, inv.data());
    nn::rope_tables(pos.data(), T, D, inv.data(), tabs->data(), tabs->data() + T * half);
  }

  Tensor y = Tensor::empty({rows, C});
  const float* xp = x.data();
  float* yp = y.data();
  const float* cos_tab = tabs->data();
  const float* sin_tab = cos_tab + T * half;
  for_row_ranges(rows, C, [&](int64_t r0, int64_t r1) {
    for (int64_t m = r0; m < r1; ++m) {
      const float* c = cos_tab + (m % T) * half;
      const float* s = sin_tab + (m % T) * half;
      for (int64_t h = 0; h < H; ++h) {
        const float* lo = xp + m * C + h * D;
        const float* hi = lo + half;
        float* ylo = yp + m * C + h * D;
        float* yhi = ylo + half;
        for (int64_t i = 0; i < half; ++i) {
          const float a = lo[i], b = hi[i];
          ylo[i] = a * c[i] - b * s[i];
          yhi[i] = b * c[i] + a * s[i];
        }
      }
    }
  });

  if (should_record({&x})) {
    record("rope", y, [x = x, tabs, rows, T, H, D](const float* g) mutable {
      if (!needs_grad(x)) return;
      const int64_t C = H * D, half = D / 2;
      const float* cos_tab = tabs->data();
      const float* sin_tab = cos_tab + T * half;
      float* gx = x.grad();
      for_row_ranges(rows, C, [&](int64_t r0, int64_t r1) {
        for (int64_t m = r0; m < r1; ++m) {
          const float* c = cos_tab + (m % T) * half;
          const float* s = sin_tab + (m % T) * half;
          for (int64_t h = 0; h < H; ++h) {
            const float* glo = g + m * C + h * D;
            const float* ghi = glo + half;
            float* dlo = gx + m * C + h * D;
            float* dhi = dlo + half;
            for (int64_t i = 0; i < half; ++i) {
              const float ga = glo[i], gb = ghi[i];
              dlo[i] += ga * c[i] + gb * s[i];
              dhi[i] += gb * c[i] - ga * s[i];
            }
          }
        }
      });
    });
  }
  return y;
}

// ------------------------------------------------------------------ attention
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t B, int64_t T,
                 int64_t Hq, int64_t Hkv, int64_t D) {
  check_arg(B >= 0 && T > 0 && Hq > 0 && Hkv > 0 && D > 0,
            "attention: need B >= 0 and T, Hq, Hkv, D > 0, got B = ", B, ", T = ", T, ", Hq = ", Hq,
            ", Hkv = ", Hkv, ", D = ", D);
  check_arg(Hq % Hkv == 0, "attention: Hq = ", Hq, " query heads is not a multiple of Hkv = ", Hkv,
            " kv heads");
  check_heads("attention", "q", q, B, T, Hq, D, "Hq");
  check_heads("attention", "k", k, B, T, Hkv, D, "Hkv");
  check_heads("attention", "v", v, B, T, Hkv, D, "Hkv");

  const int64_t ldq = Hq * D, ldk = Hkv * D, G = Hq / Hkv;
  const float scale = 1.0f / std::sqrt(float(D));  // as the inference model (model.cpp)
  Tensor out = Tensor::empty({B * T, ldq});
  const float* qp = q.data();
  const float* kp = k.data();
  const float* vp = v.data();
  float* op = out.data();
  const kernels::attention_fn kern = kernels::dense_active().attention;
  // Tasks of (sequence, kv head, sub-group of `sub` query heads): the group is halved while there
  // are fewer than 4 tasks per thread (as nn::attention does; per head the kernel's arithmetic
  // does not depend on how many heads share a call). B == 0 runs none.
  int64_t sub = G;
  while (sub % 2 == 0 && B * Hkv * (G / sub) < 4 * int64_t(get_num_threads())) sub /= 2;
  const int64_t per_kv = G / sub;
  parallel_for(B * Hkv * per_kv, [&](int64_t task, int) {
    const int64_t b = task / (Hkv * per_kv), hk = task / per_kv % Hkv;
    const int64_t h0 = hk * G + task % per_kv * sub;
    thread_local std::vector<float> scores;  // [sub, n] probabilities of the kernel
    if (int64_t(scores.size()) < sub * T) scores.resize(size_t(sub * T));
    const float* ks = kp + b * T * ldk + hk * D;
    const float* vs = vp + b * T * ldk + hk * D;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t row = (b * T + t) * ldq + h0 * D;
      kern(qp + row, sub, D, ks, vs, ldk, t + 1, scale, scores.data(), op + row);
    }
  });

  if (should_record({&q, &k, &v})) {
    record("attention", out,
           [q = q, k = k, v = v, B, T, Hq, Hkv, D, scale](const float* g) mutable {
             if (B > 0) attention_backward(q, k, v, g, B, T, Hq, Hkv, D, scale);
           });
  }
  return out;
}

}  // namespace bitnet::autograd

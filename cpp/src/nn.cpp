#include "bitnet/nn.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "bitnet/common.h"
#include "bitnet/threadpool.h"
#include "dense_kernels.h"

namespace bitnet::nn {

namespace {

// Elementwise work below this many values per task is not worth a hand-off to another thread
// (the pool's wake-up costs about a microsecond; 4096 fp32 values take about as long).
constexpr int64_t kChunk = 4096;

// Runs fn(m, i0, i1) over the M x n index space in row pieces of at most kChunk columns.
template <typename Fn>
void for_chunks(int64_t M, int64_t n, const Fn& fn) {
  const int64_t per_row = ceil_div(n, kChunk);
  const int64_t tasks = M * per_row;
  if (tasks == 1) {
    fn(int64_t(0), int64_t(0), n);
    return;
  }
  parallel_for(tasks, [&](int64_t t, int) {
    const int64_t m = t / per_row, c = t % per_row;
    fn(m, c * kChunk, std::min(n, (c + 1) * kChunk));
  });
}

// Dot product with eight independent fp32 partial sums (SLP-vectorizable without -ffast-math),
// combined pairwise at the end. For n < 8 only the scalar tail runs.
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

void check_norm_args(const char* what, int64_t M, int64_t n, int64_t ldx, int64_t ldy) {
  check_arg(M >= 0 && n > 0, what, ": bad shape [", M, ", ", n, "]");
  check_arg(ldx >= n && ldy >= n, what, ": row strides (", ldx, ", ", ldy, ") must be >= n = ", n);
}

}  // namespace

// ------------------------------------------------------------------ RMSNorm
void rmsnorm(const float* x, int64_t ldx, int64_t M, int64_t n, const float* w, float eps, float* y,
             int64_t ldy) {
  check_norm_args("rmsnorm", M, n, ldx, ldy);
  check_arg(eps >= 0.0f && std::isfinite(eps), "rmsnorm: eps must be finite and >= 0, got ", eps);
  if (M == 0) return;
  auto row = [&](int64_t m) {
    const float* xr = x + m * ldx;
    float* yr = y + m * ldy;
    // Sum of squares in double: exact for the squares, <= n ulps of double overall, so the fp32
    // mean below is the correctly rounded mean for any realistic n.
    double acc[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
      for (int j = 0; j < 4; ++j) acc[j] += double(xr[i + j]) * double(xr[i + j]);
    for (; i < n; ++i) acc[0] += double(xr[i]) * double(xr[i]);
    const float mean = float(((acc[0] + acc[1]) + (acc[2] + acc[3])) / double(n));
    const float r = 1.0f / std::sqrt(mean + eps);
    for (int64_t k = 0; k < n; ++k) yr[k] = (xr[k] * r) * w[k];
  };
  if (M == 1) {
    row(0);
    return;
  }
  parallel_for(M, [&](int64_t m, int) { row(m); });
}

// ------------------------------------------------------------------ RoPE
void rope_inv_freq(int64_t head_dim, float theta, float* inv_freq) {
  check_arg(head_dim > 0 && head_dim % 2 == 0, "rope: head_dim must be even and > 0, got ",
            head_dim);
  check_arg(theta > 0.0f && std::isfinite(theta), "rope: theta must be finite and > 0, got ",
            theta);
  // inv_freq_i = 1 / theta^(fp32(2i) / fp32(head_dim)): the exponent is the fp32 quotient that
  // torch's arange(0, d, 2, dtype=float) / d produces; the power is evaluated in double and
  // rounded once, then the reciprocal is one fp32 division.
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    const float e = float(2 * i) / float(head_dim);
    inv_freq[i] = 1.0f / float(std::pow(double(theta), double(e)));
  }
}

void rope_tables(const int64_t* pos, int64_t M, int64_t head_dim, const float* inv_freq,
                 float* cos_out, float* sin_out) {
  const int64_t half = head_dim / 2;
  for (int64_t m = 0; m < M; ++m) {
    check_arg(pos[m] >= 0 && pos[m] < (int64_t(1) << 24), "rope: position ", pos[m], " (row ", m,
              ") out of range [0, 2^24)");
    const float p = float(pos[m]);  // exact below 2^24
    for (int64_t i = 0; i < half; ++i) {
      const float a = p * inv_freq[i];  // fp32 product, as transformers computes it
      cos_out[m * half + i] = float(std::cos(double(a)));
      sin_out[m * half + i] = float(std::sin(double(a)));
    }
  }
}

void rope_neox(float* x, int64_t ldx, int64_t M, int64_t n_heads, int64_t head_dim,
               const float* cos_tab, const float* sin_tab) {
  check_arg(head_dim > 0 && head_dim % 2 == 0, "rope: head_dim must be even and > 0, got ",
            head_dim);
  check_arg(n_heads > 0 && ldx >= n_heads * head_dim, "rope: row stride ", ldx, " < ", n_heads,
            " heads x ", head_dim);
  const int64_t half = head_dim / 2;
  auto rotate = [&](int64_t m) {
    const float* c = cos_tab + m * half;
    const float* s = sin_tab + m * half;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* lo = x + m * ldx + h * head_dim;
      float* hi = lo + half;
      for (int64_t i = 0; i < half; ++i) {
        const float a = lo[i], b = hi[i];
        lo[i] = a * c[i] - b * s[i];
        hi[i] = b * c[i] + a * s[i];
      }
    }
  };
  if (M == 1) {
    rotate(0);
    return;
  }
  parallel_for(M, [&](int64_t m, int) { rotate(m); });
}

// ------------------------------------------------------------------ attention
void attention(const AttentionQuery* queries, int64_t n_queries, const AttentionShape& shape,
               int64_t max_keys) {
  const int64_t n_head = shape.n_head, n_kv = shape.n_head_kv, hd = shape.head_dim;
  check_arg(n_head > 0 && n_kv > 0 && hd > 0 && n_head % n_kv == 0, "attention: bad shape n_head ",
            n_head, ", n_head_kv ", n_kv, ", head_dim ", hd,
            " (n_head must be a positive multiple of n_head_kv)");
  check_arg(std::isfinite(shape.scale), "attention: scale is not finite");
  for (int64_t i = 0; i < n_queries; ++i)
    check_arg(queries[i].n_keys >= 1, "attention: query ", i, " has n_keys = ", queries[i].n_keys,
              " (needs >= 1)");
  const int64_t group = n_head / n_kv, kv_stride = n_kv * hd;
  const float scale = shape.scale;
  const kernels::attention_fn kern = kernels::dense_active().attention;
  int64_t sub = group;  // query heads per task
  while (sub % 2 == 0 && n_queries * n_kv * (group / sub) < 4 * int64_t(get_num_threads()))
    sub /= 2;
  const int64_t per_kv = group / sub;
  parallel_for(n_queries * n_kv * per_kv, [&](int64_t task, int) {
    const AttentionQuery& a = queries[task / (n_kv * per_kv)];
    const int64_t hk = task / per_kv % n_kv, h0 = hk * group + task % per_kv * sub;
    const int64_t n = a.n_keys;
    // Scores of the task's query heads [sub, n]; grown to the context length once.
    thread_local std::vector<float> scores;
    const size_t need = size_t(sub * n);
    if (scores.size() < need) scores.resize(std::max(need, size_t(group * std::max(max_keys, n))));
    kern(a.q + h0 * hd, sub, hd, a.k + hk * hd, a.v + hk * hd, kv_stride, n, scale, scores.data(),
         a.out + h0 * hd);
  });
}

// ------------------------------------------------------------------ activations
const char* activation_name(Activation a) { return a == Activation::silu ? "silu" : "relu2"; }

Activation parse_activation(const std::string& name) {
  if (name == "relu2") return Activation::relu2;
  if (name == "silu" || name == "swish") return Activation::silu;
  throw std::invalid_argument(
      str_cat("unknown FFN activation '", name, "'; expected relu2 or silu"));
}

void gated_activation(Activation act, const float* g, int64_t ldg, const float* u, int64_t ldu,
                      int64_t M, int64_t n, float* h, int64_t ldh) {
  check_arg(M >= 0 && n > 0 && ldg >= n && ldu >= n && ldh >= n,
            "gated_activation: bad shape/strides");
  if (M == 0) return;
  if (act == Activation::relu2) {
    for_chunks(M, n, [&](int64_t m, int64_t i0, int64_t i1) {
      const float* gr = g + m * ldg;
      const float* ur = u + m * ldu;
      float* hr = h + m * ldh;
      for (int64_t i = i0; i < i1; ++i) {
        const float r = std::max(gr[i], 0.0f);
        hr[i] = (r * r) * ur[i];
      }
    });
  } else {
    for_chunks(M, n, [&](int64_t m, int64_t i0, int64_t i1) {
      const float* gr = g + m * ldg;
      const float* ur = u + m * ldu;
      float* hr = h + m * ldh;
      for (int64_t i = i0; i < i1; ++i) hr[i] = (gr[i] / (1.0f + std::exp(-gr[i]))) * ur[i];
    });
  }
}

void add_inplace(float* x, int64_t ldx, const float* y, int64_t ldy, int64_t M, int64_t n) {
  check_arg(M >= 0 && n > 0 && ldx >= n && ldy >= n, "add_inplace: bad shape/strides");
  if (M == 0) return;
  for_chunks(M, n, [&](int64_t m, int64_t i0, int64_t i1) {
    float* xr = x + m * ldx;
    const float* yr = y + m * ldy;
    for (int64_t i = i0; i < i1; ++i) xr[i] += yr[i];
  });
}

}  // namespace bitnet::nn

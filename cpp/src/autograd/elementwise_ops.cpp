// Elementwise ops on the tape (bitnet/autograd_ops.h): add, mul, scale, gated, dropout.
// (Backward closures init-capture the inputs, `[a = a]`, to hold non-const handles.)
//
// Every op works on any shape (gated: 2-D [M, F]) and loops over the flat, row-major element
// index; the work is split into contiguous ranges of kSerialWork elements across the pool when
// there is more than one range. Each output or gradient element depends on its own index only,
// so results do not depend on the thread count. All arithmetic is fp32 in the order written.
//
// Forward / backward (g = the output's gradient, accumulated (+=) into the inputs' gradients):
//   add(a, b)        y = a + b                    da += g,            db += g
//   mul(a, b)        y = a * b                    da += g * b,        db += g * a
//   scale(a, s)      y = a * s                    da += g * s
//   gated(g, u, act) y = act(g) * u, bit for bit nn::gated_activation (inference), and
//     relu2: r = max(g, 0), y = (r * r) * u
//            dg += (g_out * u) * (2 * r),  du += g_out * (r * r)
//     silu:  y = (g / (1 + exp(-g))) * u; with s = 1 / (1 + exp(-g))
//            dg += (g_out * u) * (s * (1 + g * (1 - s))),  du += g_out * (g / (1 + exp(-g)))
//   dropout(x, p, seed)  see dropout() below.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "bitnet/autograd_ops.h"
#include "bitnet/common.h"
#include "bitnet/threadpool.h"

namespace bitnet::autograd {

namespace {

// Below this many elements an op runs on the calling thread (the pool's fork/join costs a few
// microseconds; 32k fp32 elements of these loops take about as long).
constexpr int64_t kSerialWork = int64_t(1) << 15;

// Runs fn(i0, i1) over [0, n) in ranges of kSerialWork elements, across the pool if more than one.
template <typename Fn>
void for_ranges(int64_t n, const Fn& fn) {
  const int64_t tasks = ceil_div(n, kSerialWork);
  if (tasks <= 1) {
    if (n > 0) fn(int64_t(0), n);
    return;
  }
  parallel_for(tasks,
               [&](int64_t t, int) { fn(t * kSerialWork, std::min(n, (t + 1) * kSerialWork)); });
}

// SplitMix64 and xoshiro256** (Blackman & Vigna), exactly as in sampler.cpp.
inline uint64_t splitmix64_next(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// keep[i] = (r_i >> 11) >= thr for the first n outputs r_i of xoshiro256** seeded with `seed`.
// The state lives in locals: stores through uint8_t* may alias anything in memory, so a state
// array would be reloaded after every byte.
void dropout_mask(uint64_t seed, uint64_t thr, int64_t n, uint8_t* keep) {
  uint64_t x = seed;
  uint64_t s0 = splitmix64_next(x), s1 = splitmix64_next(x);
  uint64_t s2 = splitmix64_next(x), s3 = splitmix64_next(x);
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t r = rotl(s1 * 5, 7) * 9;
    const uint64_t t = s1 << 17;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl(s3, 45);
    keep[i] = uint8_t((r >> 11) >= thr);
  }
}

std::string describe(const Tensor& t) {
  return t.defined() ? t.shape_str() : std::string("an undefined tensor");
}

void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  check_arg(a.defined(), op, ": a is an undefined tensor");
  check_arg(b.defined(), op, ": b is an undefined tensor");
  check_arg(a.shape() == b.shape(), op, ": a and b must have the same shape, got a ", a.shape_str(),
            " and b ", b.shape_str());
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  check_same_shape("add", a, b);
  const int64_t n = a.numel();
  Tensor y = Tensor::empty(a.shape());
  const float* ap = a.data();
  const float* bp = b.data();
  float* yp = y.data();
  for_ranges(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) yp[i] = ap[i] + bp[i];
  });
  if (should_record({&a, &b})) {
    record("add", y, [a = a, b = b, n](const float* g) mutable {
      // a and b may be the same tensor: the two accumulations then both land in its gradient.
      for (Tensor* t : {&a, &b}) {
        if (!needs_grad(*t)) continue;
        float* gt = t->grad();
        for_ranges(n, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) gt[i] += g[i];
        });
      }
    });
  }
  return y;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  check_same_shape("mul", a, b);
  const int64_t n = a.numel();
  Tensor y = Tensor::empty(a.shape());
  const float* ap = a.data();
  const float* bp = b.data();
  float* yp = y.data();
  for_ranges(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) yp[i] = ap[i] * bp[i];
  });
  if (should_record({&a, &b})) {
    record("mul", y, [a = a, b = b, n](const float* g) mutable {
      const float* ap = a.data();
      const float* bp = b.data();
      if (needs_grad(a)) {
        float* ga = a.grad();
        for_ranges(n, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) ga[i] += g[i] * bp[i];
        });
      }
      if (needs_grad(b)) {
        float* gb = b.grad();
        for_ranges(n, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) gb[i] += g[i] * ap[i];
        });
      }
    });
  }
  return y;
}

Tensor scale(const Tensor& a, float s) {
  check_arg(a.defined(), "scale: a is an undefined tensor");
  const int64_t n = a.numel();
  Tensor y = Tensor::empty(a.shape());
  const float* ap = a.data();
  float* yp = y.data();
  for_ranges(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) yp[i] = ap[i] * s;
  });
  if (should_record({&a})) {
    record("scale", y, [a = a, s, n](const float* g) mutable {
      float* ga = a.grad();
      for_ranges(n, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) ga[i] += g[i] * s;
      });
    });
  }
  return y;
}

Tensor gated(const Tensor& gate, const Tensor& up, nn::Activation act) {
  check_arg(gate.defined() && gate.dim() == 2, "gated: gate must be a 2-D tensor [M, F], got ",
            describe(gate));
  check_arg(up.defined() && up.shape() == gate.shape(), "gated: up must have gate's shape ",
            gate.shape_str(), ", got ", describe(up));
  check_arg(act == nn::Activation::relu2 || act == nn::Activation::silu,
            "gated: unknown activation code ", int(act));
  const int64_t M = gate.size(0), F = gate.size(1), n = M * F;
  Tensor y = Tensor::empty({M, F});
  // The inference routine itself: the forward is nn::gated_activation bit for bit by
  // construction (it splits [M, F] across the pool on its own).
  if (n > 0) nn::gated_activation(act, gate.data(), F, up.data(), F, M, F, y.data(), F);

  if (should_record({&gate, &up})) {
    record("gated", y, [gate = gate, up = up, act, n](const float* g) mutable {
      const float* gp = gate.data();
      const float* up_ = up.data();
      float* dg = needs_grad(gate) ? gate.grad() : nullptr;
      float* du = needs_grad(up) ? up.grad() : nullptr;
      // gate and up may be the same tensor (dg == du): each range adds dg's term, then du's.
      for_ranges(n, [&](int64_t i0, int64_t i1) {
        if (act == nn::Activation::relu2) {
          if (dg)
            for (int64_t i = i0; i < i1; ++i) {
              const float r = std::max(gp[i], 0.0f);
              dg[i] += (g[i] * up_[i]) * (2.0f * r);
            }
          if (du)
            for (int64_t i = i0; i < i1; ++i) {
              const float r = std::max(gp[i], 0.0f);
              du[i] += g[i] * (r * r);
            }
        } else {
          // exp(-g) overflows to +inf for g < -88.7: s = 0, silu = -0, both terms 0 (no NaN).
          if (dg)
            for (int64_t i = i0; i < i1; ++i) {
              const float s = 1.0f / (1.0f + std::exp(-gp[i]));
              dg[i] += (g[i] * up_[i]) * (s * (1.0f + gp[i] * (1.0f - s)));
            }
          if (du)
            for (int64_t i = i0; i < i1; ++i) du[i] += g[i] * (gp[i] / (1.0f + std::exp(-gp[i])));
        }
      });
    });
  }
  return y;
}

// Inverted dropout. The mask is drawn serially in flat element order from one xoshiro256**
// stream seeded with `seed` (the generator of bitnet::Xoshiro256ss in sampler.h: state = four
// successive SplitMix64 outputs of seed; inlined below, as the class's next() is out of line):
// element i takes the i-th output r_i, u_i = (r_i >> 11) * 2^-53 is a uniform double in [0, 1),
// and the element is
//   kept    iff u_i >= double(p):  y[i] = x[i] * k,  k = 1.0f / (1.0f - p)   (fp32)
//   dropped otherwise:             y[i] = 0
// (tested as the equivalent integer compare (r_i >> 11) >= ceil(p * 2^53), both sides exact),
// so P(kept) = 1 - p up to 2^-53 and a (seed, shape) pair always gives the same mask. The mask
// (one byte per element) is saved; backward: dx[i] += kept ? g[i] * k : 0.
// p == 0, or grad mode off (evaluation), returns x itself (no copy, nothing recorded).
Tensor dropout(const Tensor& x, float p, uint64_t seed) {
  check_arg(x.defined(), "dropout: x is an undefined tensor");
  check_arg(p >= 0.0f && p < 1.0f, "dropout: p must be in [0, 1), got ", p);
  if (p == 0.0f || !grad_enabled()) return x;
  const int64_t n = x.numel();
  const float k = 1.0f / (1.0f - p);
  // p * 2^53 is exact (p has 24 significant bits), so is its ceiling: thr in [0, 2^53).
  const uint64_t thr = uint64_t(std::ceil(double(p) * 0x1p53));
  auto mask = std::make_shared<std::vector<uint8_t>>(size_t(n));
  uint8_t* mp = mask->data();
  dropout_mask(seed, thr, n, mp);

  Tensor y = Tensor::empty(x.shape());
  const float* xp = x.data();
  float* yp = y.data();
  for_ranges(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) yp[i] = mp[i] ? xp[i] * k : 0.0f;
  });
  if (should_record({&x})) {
    record("dropout", y, [x = x, mask, k, n](const float* g) mutable {
      const uint8_t* mp = mask->data();
      float* gx = x.grad();
      for_ranges(n, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) gx[i] += mp[i] ? g[i] * k : 0.0f;
      });
    });
  }
  return y;
}

}  // namespace bitnet::autograd

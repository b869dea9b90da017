// Dense kernel tests (kernels/cpu/dense_kernels.h): every dense table available on the running CPU
// (bitnet::kernels::dense_table_for for each Isa) against the scalar reference table and against
// an independent re-implementation of the contracts in this file:
//   - the reference table equals the sequential fp32 evaluation written here, bit for bit;
//   - every table is within the fp32 summation bound of the exact (double / int64) product:
//       float types  |y - sum x w|          <= (cols + 8) 2^-24 sum |x w|
//       quantized    |y - sum_b dot_b D_b|  <= (nb + 16) 2^-24 sum_b |D_b| sum_j |q_x q_w|
//     (dense_kernels.h explains the evaluation orders; the tests/test_dense.py docstring derives
//     the bounds);
//   - extreme codes (x +-127, Q8_0 -128 / 127, Q4_0 codes 0 / 15) with unit scales give exact
//     integers below 2^24, so every table must match the int64 sum exactly: no saturation;
//   - only rows [r0, r1) of y are written (sentinels elsewhere), for several M (the M = 1 path and
//     the blocked M > 1 path with partial tiles), unaligned W and odd shapes.
// Prints "bitnet dense kernel tests: tested ISAs: ..." like test_kernels.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bitnet/formats.h"
#include "cpu_features.h"
#include "dense_kernels.h"
#include "kernels.h"

namespace bk = bitnet::kernels;
using bk::Isa;

namespace {

constexpr Isa kAllIsas[] = {Isa::ref,         Isa::avx2, Isa::avx512,
                            Isa::avx512_vnni, Isa::neon, Isa::neon_dotprod};
constexpr double kU = 1.0 / 16777216.0;  // 2^-24, the fp32 unit roundoff

// splitmix64: deterministic on every platform.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  int64_t range(int64_t lo, int64_t hi) { return lo + int64_t(next() % uint64_t(hi - lo + 1)); }
  float unit() { return float(next() >> 40) * (1.0f / 16777216.0f); }
  float normal() { return (unit() + unit() + unit() + unit() - 2.0f) * 1.7320508f; }
};

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

constexpr uint32_t kSentinel = 0x7fc0beef;  // a NaN no kernel produces

enum class Ty { f32, f16, bf16, q8_0, q4_0 };
const char* ty_name(Ty t) {
  static const char* n[] = {"f32", "f16", "bf16", "q8_0", "q4_0"};
  return n[int(t)];
}
bool quantized(Ty t) { return t == Ty::q8_0 || t == Ty::q4_0; }
int64_t row_bytes(Ty t, int64_t cols) {
  switch (t) {
    case Ty::f32:
      return 4 * cols;
    case Ty::f16:
    case Ty::bf16:
      return 2 * cols;
    case Ty::q8_0:
      return cols / 32 * 34;
    default:
      return cols / 32 * 18;
  }
}

// A weight matrix: bytes (stored one byte past an aligned start, so every load is unaligned) and
// its exact values (float types) or block scales and integer values (quantized types).
struct Weights {
  Ty ty;
  int64_t rows, cols, rb;
  std::vector<uint8_t> buf;  // 1 + rows * rb bytes; data at buf.data() + 1
  std::vector<float> val;    // [rows, cols] exact values (float types)
  std::vector<float> dw;     // [rows, nb] fp32 block scales (quantized)
  std::vector<int32_t> q;    // [rows, cols] integer values: Q8_0 q, Q4_0 code - 8
  const uint8_t* data() const { return buf.data() + 1; }
};

// Random weights. extreme: quantized codes from {-128, 127} (Q8_0) / {0, 15} (Q4_0), scale 1.
Weights make_weights(Ty ty, int64_t rows, int64_t cols, Rng& rng, bool extreme = false) {
  Weights w{ty, rows, cols, row_bytes(ty, cols), {}, {}, {}, {}};
  w.buf.assign(size_t(1 + rows * w.rb), 0);
  uint8_t* p = w.buf.data() + 1;
  if (!quantized(ty)) {
    w.val.resize(size_t(rows * cols));
    for (int64_t i = 0; i < rows * cols; ++i) {
      float v = rng.normal();
      if (ty == Ty::f32) {
        std::memcpy(p + 4 * i, &v, 4);
      } else if (ty == Ty::f16) {
        const uint16_t h = bitnet::fp32_to_fp16(v);
        std::memcpy(p + 2 * i, &h, 2);
        v = bitnet::fp16_to_fp32(h);
      } else {
        const uint16_t h = uint16_t(bits(v) >> 16);
        std::memcpy(p + 2 * i, &h, 2);
        v = from_bits(uint32_t(h) << 16);
      }
      w.val[size_t(i)] = v;
    }
    return w;
  }
  const int64_t nb = cols / 32, bb = ty == Ty::q8_0 ? 34 : 18;
  w.dw.resize(size_t(rows * nb));
  w.q.resize(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* blk = p + r * w.rb + b * bb;
      const float d = extreme ? 1.0f : (rng.range(0, 1) ? 1.0f : -1.0f) * (0.25f + rng.unit());
      const uint16_t h = bitnet::fp32_to_fp16(d * (extreme ? 1.0f : 0.01f));
      std::memcpy(blk, &h, 2);
      w.dw[size_t(r * nb + b)] = bitnet::fp16_to_fp32(h);
      int32_t* qv = &w.q[size_t(r * cols + b * 32)];
      if (ty == Ty::q8_0) {
        for (int j = 0; j < 32; ++j) {
          const int v = extreme ? (rng.range(0, 1) ? 127 : -128) : int(rng.range(-128, 127));
          blk[2 + j] = uint8_t(int8_t(v));
          qv[j] = v;
        }
      } else {
        int codes[32];
        for (int j = 0; j < 32; ++j)
          codes[j] = extreme ? (rng.range(0, 1) ? 15 : 0) : int(rng.range(0, 15));
        for (int j = 0; j < 16; ++j) blk[2 + j] = uint8_t(codes[j] | codes[j + 16] << 4);
        for (int j = 0; j < 32; ++j) qv[j] = codes[j] - 8;
      }
    }
  return w;
}

// Activations for the quantized kernels in the DenseQ8Rows layout, from codes and scales.
struct Act {
  int64_t M, cols, ld;
  std::vector<int8_t> qs;
  std::vector<float> d, d4;
  std::vector<int32_t> corr4;
  bk::DenseQ8Rows view() const {
    bk::DenseQ8Rows a;
    a.qs = qs.data();
    a.d = d.data();
    a.d4 = d4.data();
    a.corr4 = corr4.data();
    a.ld = ld;
    return a;
  }
};

// extreme: codes +-127 with d = 1.
Act make_act(int64_t M, int64_t cols, Rng& rng, bool extreme = false) {
  Act a{M, cols, (cols + 63) / 64 * 64, {}, {}, {}, {}};
  a.qs.assign(size_t(M * a.ld), 0);
  a.d.assign(size_t(M * a.ld / 32), 0.0f);
  a.d4.assign(size_t(M * a.ld / 4), 0.0f);
  a.corr4.assign(size_t(M * a.ld / 4), 0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = 0; b < cols / 32; ++b) {
      const float d =
          extreme ? 1.0f : bitnet::fp16_to_fp32(bitnet::fp32_to_fp16(0.001f + rng.unit()));
      a.d[size_t(m * a.ld / 32 + b)] = d;
      for (int g = 0; g < 8; ++g) {
        int32_t s = 0;
        for (int j = 0; j < 4; ++j) {
          const int v = extreme ? (rng.range(0, 1) ? 127 : -127) : int(rng.range(-127, 127));
          a.qs[size_t(m * a.ld + b * 32 + 4 * g + j)] = int8_t(v);
          s += v;
        }
        a.d4[size_t(m * a.ld / 4 + 8 * b + g)] = d;
        a.corr4[size_t(m * a.ld / 4 + 8 * b + g)] = -8 * s;
      }
    }
  return a;
}

// Runs a kernel over rows [r0, r1) on a sentinel-filled output [M, ldy].
std::vector<float> run_f(bk::dense_f_fn fn, const Weights& w, const std::vector<float>& x,
                         int64_t M, int64_t r0, int64_t r1, int64_t ldy) {
  std::vector<float> y(size_t(M * ldy), from_bits(kSentinel));
  fn(w.data(), w.rb, w.cols, x.data(), w.cols, M, r0, r1, y.data(), ldy);
  return y;
}

std::vector<float> run_q(bk::dense_q_fn fn, const Weights& w, const Act& a, int64_t M, int64_t r0,
                         int64_t r1, int64_t ldy) {
  std::vector<float> y(size_t(M * ldy), from_bits(kSentinel));
  fn(w.data(), w.rb, w.cols / 32, a.view(), M, r0, r1, y.data(), ldy);
  return y;
}

// The spec: exact value, magnitude (for the bound) and the sequential fp32 evaluation.
struct Spec {
  std::vector<double> exact, mag;
  std::vector<float> seq;
};

Spec spec_float(const Weights& w, const std::vector<float>& x, int64_t M) {
  Spec s;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t r = 0; r < w.rows; ++r) {
      double e = 0.0, g = 0.0;
      float acc = 0.0f;
      for (int64_t k = 0; k < w.cols; ++k) {
        const float xv = x[size_t(m * w.cols + k)], wv = w.val[size_t(r * w.cols + k)];
        e += double(xv) * double(wv);  // exact: 24 x 24-bit products, summed in double
        g += std::fabs(double(xv) * double(wv));
        const float p = xv * wv;
        acc = acc + p;
      }
      s.exact.push_back(e);
      s.mag.push_back(g);
      s.seq.push_back(acc);
    }
  return s;
}

Spec spec_quant(const Weights& w, const Act& a, int64_t M) {
  Spec s;
  const int64_t nb = w.cols / 32;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t r = 0; r < w.rows; ++r) {
      double e = 0.0, g = 0.0;
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        int64_t dot = 0, adot = 0;
        for (int j = 0; j < 32; ++j) {
          const int64_t xv = a.qs[size_t(m * a.ld + b * 32 + j)];
          const int64_t wv = w.q[size_t(r * w.cols + b * 32 + j)];
          dot += xv * wv;
          adot += std::llabs(xv * wv);
        }
        const float D = w.dw[size_t(r * nb + b)] * a.d[size_t(m * a.ld / 32 + b)];
        e += double(dot) * double(D);
        g += double(adot) * std::fabs(double(D));
        const float t = float(dot) * D;
        acc = acc + t;
      }
      s.exact.push_back(e);
      s.mag.push_back(g);
      s.seq.push_back(acc);
    }
  return s;
}

// Checks y against the spec on rows [r0, r1) (bound factor `slack`) and the sentinels elsewhere.
// bitexact: compare with the sequential fp32 evaluation bit for bit instead.
std::string check(const std::vector<float>& y, const Spec& s, int64_t M, int64_t rows, int64_t r0,
                  int64_t r1, int64_t ldy, double slack, bool bitexact) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t c = 0; c < ldy; ++c) {
      const float got = y[size_t(m * ldy + c)];
      char buf[256];
      if (c < r0 || c >= r1) {
        if (bits(got) != kSentinel) {
          std::snprintf(buf, sizeof buf, "m=%lld: wrote column %lld outside [%lld, %lld)",
                        (long long)m, (long long)c, (long long)r0, (long long)r1);
          return buf;
        }
        continue;
      }
      const size_t i = size_t(m * rows + c);
      if (bitexact) {
        if (bits(got) != bits(s.seq[i])) {
          std::snprintf(buf, sizeof buf, "m=%lld r=%lld: got %.9g, sequential spec %.9g",
                        (long long)m, (long long)c, double(got), double(s.seq[i]));
          return buf;
        }
      } else {
        const double err = std::fabs(double(got) - s.exact[i]), bound = slack * kU * s.mag[i];
        if (!(err <= bound)) {
          std::snprintf(buf, sizeof buf, "m=%lld r=%lld: got %.9g, exact %.9g, error %.3g > %.3g",
                        (long long)m, (long long)c, double(got), s.exact[i], err, bound);
          return buf;
        }
      }
    }
  return "";
}

std::vector<std::pair<int64_t, int64_t>> ranges_for(int64_t rows) {
  std::vector<std::pair<int64_t, int64_t>> r = {{0, rows}};
  if (rows > 3) r.push_back({1, rows - 2});
  r.push_back({rows - 1, rows});
  r.push_back({rows / 2, rows / 2});  // empty: writes nothing
  return r;
}

class DenseKernelTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    ref_ = bk::dense_table_for(Isa::ref);
    ASSERT_NE(ref_, nullptr);
    t_ = bk::dense_table_for(GetParam());
    if (!t_) GTEST_SKIP() << bk::isa_name(GetParam()) << " is not available on this CPU/build";
    ASSERT_EQ(t_->isa, GetParam());
    ASSERT_STREQ(t_->name, bk::isa_name(GetParam()));
  }
  static bk::dense_f_fn f_fn(const bk::DenseKernels* k, Ty t) {
    return t == Ty::f32 ? k->f32 : (t == Ty::f16 ? k->f16 : k->bf16);
  }
  static bk::dense_q_fn q_fn(const bk::DenseKernels* k, Ty t) {
    return t == Ty::q8_0 ? k->q8_0 : k->q4_0;
  }
  const bk::DenseKernels* t_ = nullptr;
  const bk::DenseKernels* ref_ = nullptr;
};

TEST_P(DenseKernelTest, FloatRandom) {
  Rng rng(77);
  const int64_t shapes[][2] = {{1, 1},   {7, 3},   {5, 17},    {23, 64},
                               {9, 100}, {3, 257}, {11, 2560}, {4, 4103}};
  for (Ty ty : {Ty::f32, Ty::f16, Ty::bf16})
    for (const auto& sh : shapes)
      for (int64_t M : {1, 2, 3, 4, 5, 7, 9}) {
        const int64_t rows = sh[0], cols = sh[1], ldy = rows + 3;
        const Weights w = make_weights(ty, rows, cols, rng);
        std::vector<float> x(size_t(M * cols));
        for (auto& v : x) v = rng.normal();
        const Spec s = spec_float(w, x, M);
        for (const auto& [r0, r1] : ranges_for(rows)) {
          const std::string what = std::string(ty_name(ty)) + " [" + std::to_string(rows) + ", " +
                                   std::to_string(cols) + "] M=" + std::to_string(M) + " rows [" +
                                   std::to_string(r0) + ", " + std::to_string(r1) + ")";
          const auto yr = run_f(f_fn(ref_, ty), w, x, M, r0, r1, ldy);
          ASSERT_EQ(check(yr, s, M, rows, r0, r1, ldy, 0, true), "") << what << ": ref vs spec";
          const auto yt = run_f(f_fn(t_, ty), w, x, M, r0, r1, ldy);
          ASSERT_EQ(check(yt, s, M, rows, r0, r1, ldy, (cols + 8) * 1.01, false), "") << what;
        }
      }
}

TEST_P(DenseKernelTest, QuantizedRandom) {
  Rng rng(4242);
  const int64_t shapes[][2] = {{1, 32}, {7, 64}, {5, 96}, {23, 320}, {3, 2560}, {6, 4160}};
  for (Ty ty : {Ty::q8_0, Ty::q4_0})
    for (const auto& sh : shapes)
      for (int64_t M : {1, 2, 3, 4, 5, 7, 9}) {
        const int64_t rows = sh[0], cols = sh[1], ldy = rows + 2;
        const Weights w = make_weights(ty, rows, cols, rng);
        const Act a = make_act(M, cols, rng);
        const Spec s = spec_quant(w, a, M);
        for (const auto& [r0, r1] : ranges_for(rows)) {
          const std::string what = std::string(ty_name(ty)) + " [" + std::to_string(rows) + ", " +
                                   std::to_string(cols) + "] M=" + std::to_string(M) + " rows [" +
                                   std::to_string(r0) + ", " + std::to_string(r1) + ")";
          const auto yr = run_q(q_fn(ref_, ty), w, a, M, r0, r1, ldy);
          ASSERT_EQ(check(yr, s, M, rows, r0, r1, ldy, 0, true), "") << what << ": ref vs spec";
          const auto yt = run_q(q_fn(t_, ty), w, a, M, r0, r1, ldy);
          ASSERT_EQ(check(yt, s, M, rows, r0, r1, ldy, (cols / 32 + 16) * 1.01, false), "") << what;
        }
      }
}

// Extreme codes with unit scales: integers, exact in fp32 (|y| < 2^24 for nb <= 31).
TEST_P(DenseKernelTest, QuantizedExtremesExact) {
  Rng rng(9);
  for (Ty ty : {Ty::q8_0, Ty::q4_0})
    for (int64_t nb : {1, 2, 3, 16, 31})
      for (int64_t M : {1, 4, 6}) {
        const int64_t rows = 5, cols = 32 * nb;
        const Weights w = make_weights(ty, rows, cols, rng, true);
        const Act a = make_act(M, cols, rng, true);
        const Spec s = spec_quant(w, a, M);
        for (const bk::DenseKernels* k : {ref_, t_}) {
          const auto y = run_q(q_fn(k, ty), w, a, M, 0, rows, rows);
          for (int64_t i = 0; i < M * rows; ++i) {
            ASSERT_LT(std::fabs(s.exact[size_t(i)]), 16777216.0);
            ASSERT_EQ(double(y[size_t(i)]), s.exact[size_t(i)])
                << ty_name(ty) << " nb=" << nb << " M=" << M << " output " << i << " (" << k->name
                << ")";
          }
        }
      }
  // The saturation case of the sign trick spelled out: w = -128, x = -127 everywhere gives
  // 32 * 16256 per block (each vpmaddubsw pair is 2 * 128 * 127 = 32512, just below 2^15).
  const int64_t cols = 64, rows = 2;
  Weights w = make_weights(Ty::q8_0, rows, cols, rng, true);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < 2; ++b) {
      std::memset(w.buf.data() + 1 + r * w.rb + b * 34 + 2, 0x80, 32);
      for (int j = 0; j < 32; ++j) w.q[size_t(r * cols + b * 32 + j)] = -128;
    }
  Act a = make_act(1, cols, rng, true);
  for (int64_t j = 0; j < cols; ++j) a.qs[size_t(j)] = -127;
  for (auto& c : a.corr4) c = -8 * -4 * 127;
  const auto y = run_q(t_->q8_0, w, a, 1, 0, rows, rows);
  EXPECT_EQ(y[0], float(2 * 32 * 128 * 127));
  EXPECT_EQ(y[1], float(2 * 32 * 128 * 127));
}

// Different x rows must give independent results: each output row of an M > 1 call equals the
// M = 1 call on that row alone within the summation bound, and a non-finite block scale in one
// W row only affects that row.
TEST_P(DenseKernelTest, RowsAreIndependent) {
  Rng rng(5);
  const int64_t rows = 6, cols = 2560 + 96, M = 6;
  for (Ty ty : {Ty::q8_0, Ty::q4_0}) {
    Weights w = make_weights(ty, rows, cols, rng);
    const int64_t bb = ty == Ty::q8_0 ? 34 : 18;
    const uint16_t inf = 0x7c00;
    std::memcpy(w.buf.data() + 1 + 3 * w.rb + 7 * bb, &inf, 2);  // row 3, block 7: d = +inf
    const Act a = make_act(M, cols, rng);
    const auto y = run_q(q_fn(t_, ty), w, a, M, 0, rows, rows);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t r = 0; r < rows; ++r)
        EXPECT_EQ(std::isfinite(y[size_t(m * rows + r)]), r != 3) << ty_name(ty) << " m=" << m;
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, DenseKernelTest, ::testing::ValuesIn(kAllIsas),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return std::string(bk::isa_name(info.param));
                         });

TEST(DenseIsaCoverage, ReportAndDispatch) {
  std::string tested, missing;
  for (Isa isa : kAllIsas) {
    const bool have = bk::dense_table_for(isa) != nullptr;
    EXPECT_EQ(have, bk::table_for(isa) != nullptr) << bk::isa_name(isa);
    (have ? tested : missing) += std::string(" ") + bk::isa_name(isa);
  }
  std::printf("bitnet dense kernel tests: tested ISAs:%s; unavailable ISAs:%s\n", tested.c_str(),
              missing.empty() ? " (none)" : missing.c_str());
  std::fflush(stdout);
  EXPECT_EQ(bk::dense_active().isa, bk::active().isa);
}

}  // namespace

// Kernel tests: every kernel table available on the running CPU (bitnet::kernels::table_for for
// each Isa) is compared bit-exactly against the scalar reference table and against an
// independent 64-bit re-implementation of the contracts in kernels.h:
//   - quantize_row_i8: random rows, exact ties, zeros, NaN/Inf -> false, k not a multiple of the
//     vector width, no write past k_pad, unaligned pointers;
//   - gemv / gemm: bit-exact float outputs (same int32 sum, same float formula) for several M,
//     block counts, weight-row ranges [n0, n1), and adversarial int8 inputs (all -128 / +127 with
//     all codes 2 or 0) whose exact int32 sums are checked against int64 sums, up to the
//     contract limit nb = 2^15 - 1;
//   - the machine probes read_bytes / int8_peak run and return sane values.
//
// Environment (used by tests/cpp/run_neon_qemu.sh):
//   BITNET_TEST_REQUIRE_ISAS=a,b,...       these ISAs must be available (else IsaCoverage fails)
//   BITNET_TEST_EXPECT_UNAVAILABLE=a,b,... these ISAs must NOT be available
// IsaCoverage prints one line "bitnet kernel tests: tested ISAs: ...; unavailable ISAs: ...".
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cpu_features.h"
#include "kernels.h"

namespace bk = bitnet::kernels;
using bk::Isa;

namespace {

constexpr Isa kAllIsas[] = {Isa::ref,         Isa::avx2, Isa::avx512,
                            Isa::avx512_vnni, Isa::neon, Isa::neon_dotprod};

// ------------------------------------------------------------------ helpers

// splitmix64: a small deterministic generator, identical on every platform.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform integer in [lo, hi].
  int64_t range(int64_t lo, int64_t hi) { return lo + int64_t(next() % uint64_t(hi - lo + 1)); }
  // Uniform float in [0, 1).
  float unit() { return float(next() >> 40) * (1.0f / 16777216.0f); }
  // Roughly normal (sum of 4 uniforms, centred), times scale.
  float normal(float scale) {
    return (unit() + unit() + unit() + unit() - 2.0f) * 1.7320508f * scale;
  }
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

int64_t pad256(int64_t k) { return (k + bk::kK256Values - 1) / bk::kK256Values * bk::kK256Values; }

// s_x of a row whose max |x| is amax (kernels.h): PyTorch's `127.0 / t` is
// `t.reciprocal() * 127`, two fp32 roundings.
float spec_scale(float amax) { return (1.0f / (amax < 1e-5f ? 1e-5f : amax)) * 127.0f; }

// Independent spec of quantize_row_i8 (formats.md section 1, kernels.h): fp32 x * s, round half
// to even, clamp. Returns false on NaN / Inf.
bool spec_quantize(const float* x, int64_t k, int8_t* q, int64_t k_pad, float* s_x,
                   int32_t* q_sum) {
  float amax = 0.0f;
  for (int64_t i = 0; i < k; ++i) {
    if (std::isnan(x[i]) || std::isinf(x[i])) return false;
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]);
  }
  const float s = spec_scale(amax);
  int64_t sum = 0;
  for (int64_t i = 0; i < k; ++i) {
    const float p = x[i] * s;
    const float r = std::nearbyint(p);
    const float c = r < -128.0f ? -128.0f : (r > 127.0f ? 127.0f : r);
    q[i] = int8_t(c);
    sum += q[i];
  }
  for (int64_t i = k; i < k_pad; ++i) q[i] = 0;
  *s_x = s;
  *q_sum = int32_t(sum);
  return true;
}

// Packs codes[n * kp + j] (values 0..2) of N rows into the K256 layout (kernels.h): value j of a
// block goes to byte j % 64 at bit shift 2 * (j / 64).
std::vector<uint8_t> pack_k256(const std::vector<uint8_t>& codes, int64_t N, int64_t kp) {
  const int64_t nb = kp / bk::kK256Values;
  std::vector<uint8_t> w(size_t(N * nb * bk::kK256Bytes), 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t j = 0; j < bk::kK256Values; ++j) {
        const uint8_t c = codes[size_t(n * kp + b * bk::kK256Values + j)];
        w[size_t((n * nb + b) * bk::kK256Bytes + j % 64)] |= uint8_t(c << (2 * (j / 64)));
      }
  return w;
}

// sum_k code[n][k] * q[m][k] in 64 bits.
int64_t dot64(const std::vector<uint8_t>& codes, const std::vector<int8_t>& q, int64_t kp,
              int64_t m, int64_t n) {
  int64_t s = 0;
  const uint8_t* c = codes.data() + n * kp;
  const int8_t* a = q.data() + m * kp;
  for (int64_t k = 0; k < kp; ++k) s += int64_t(c[k]) * a[k];
  return s;
}

// The float every kernel must produce (kernels.h): float(int32 sum - q_sum) * (w_scale / s_x).
float expected_y(int64_t sum64, int32_t q_sum, float w_scale, float s_x) {
  const int32_t acc = int32_t(sum64);
  return float(acc - q_sum) * (w_scale / s_x);
}

constexpr uint32_t kSentinel = 0x7fc0dead;  // a quiet NaN never produced by the kernels

// One product problem: M activation rows, N weight rows, nb blocks.
struct Problem {
  int64_t M = 0, N = 0, nb = 0, kp = 0, ldy = 0;
  std::vector<uint8_t> codes;  // [N, kp]
  std::vector<uint8_t> w;      // K256-packed codes
  std::vector<int8_t> q;       // [M, kp]
  std::vector<float> s_x;      // [M]
  std::vector<int32_t> q_sum;  // [M]
  float w_scale = 1.0f;

  Problem(int64_t m, int64_t n, int64_t blocks)
      : M(m),
        N(n),
        nb(blocks),
        kp(blocks * bk::kK256Values),
        ldy(n + 3),
        codes(size_t(n * kp)),
        q(size_t(m * kp)),
        s_x(size_t(m), 1.0f),
        q_sum(size_t(m), 0) {}
  void pack() { w = pack_k256(codes, N, kp); }
};

using gemm_fn = bk::gemm_k256_fn;

// Runs fn over rows [n0, n1) on a sentinel-filled output of M x ldy floats.
std::vector<float> run_gemm(gemm_fn fn, const Problem& p, int64_t n0, int64_t n1) {
  std::vector<float> y(static_cast<size_t>(p.M * p.ldy), from_bits(kSentinel));
  fn(p.w.data(), p.nb, p.q.data(), p.s_x.data(), p.q_sum.data(), p.M, n0, n1, p.w_scale, y.data(),
     p.ldy);
  return y;
}

// Compares two output buffers bit by bit; returns "" or a description of the first mismatch.
std::string diff_outputs(const std::vector<float>& got, const std::vector<float>& want,
                         int64_t ldy) {
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < got.size(); ++i)
    if (bits(got[i]) != bits(want[i])) {
      if (first < 0) first = int64_t(i);
      ++bad;
    }
  if (bad == 0) return "";
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "%lld mismatches; first at m=%lld n=%lld: got %.9g (0x%08x), "
                "want %.9g (0x%08x)",
                (long long)bad, (long long)(first / ldy), (long long)(first % ldy),
                double(got[size_t(first)]), bits(got[size_t(first)]), double(want[size_t(first)]),
                bits(want[size_t(first)]));
  return buf;
}

// The output the contract requires: sentinel outside [n0, n1), the formula inside.
std::vector<float> expected_output(const Problem& p, const std::vector<int64_t>& sums, int64_t n0,
                                   int64_t n1) {
  std::vector<float> y(static_cast<size_t>(p.M * p.ldy), from_bits(kSentinel));
  for (int64_t m = 0; m < p.M; ++m)
    for (int64_t n = n0; n < n1; ++n)
      y[size_t(m * p.ldy + n)] =
          expected_y(sums[size_t(m * p.N + n)], p.q_sum[size_t(m)], p.w_scale, p.s_x[size_t(m)]);
  return y;
}

std::vector<int64_t> all_sums(const Problem& p) {
  std::vector<int64_t> s(static_cast<size_t>(p.M * p.N));
  for (int64_t m = 0; m < p.M; ++m)
    for (int64_t n = 0; n < p.N; ++n) s[size_t(m * p.N + n)] = dot64(p.codes, p.q, p.kp, m, n);
  return s;
}

std::vector<std::string> split_env(const char* name) {
  std::vector<std::string> out;
  const char* v = std::getenv(name);
  if (!v) return out;
  std::string cur;
  for (const char* c = v;; ++c) {
    if (*c == ',' || *c == ' ' || *c == '\0') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
      if (*c == '\0') break;
    } else {
      cur += *c;
    }
  }
  return out;
}

// ------------------------------------------------------------------ fixture

class KernelTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    ref_ = bk::table_for(Isa::ref);
    ASSERT_NE(ref_, nullptr);
    t_ = bk::table_for(GetParam());
    if (!t_) GTEST_SKIP() << bk::isa_name(GetParam()) << " is not available on this CPU/build";
    ASSERT_EQ(t_->isa, GetParam());
    ASSERT_STREQ(t_->name, bk::isa_name(GetParam()));
  }

  // Quantizes x[0, k) with the table under test, the ref table and the spec; all three must
  // agree bit for bit (q bytes, s_x bits, q_sum) or all must return false. The x and q buffers
  // are deliberately misaligned by one element, and q carries guard bytes after k_pad.
  void check_quantize(const std::vector<float>& xv, int64_t k_pad, const std::string& what) {
    const int64_t k = int64_t(xv.size());
    constexpr int64_t kGuard = 40;
    std::vector<float> xbuf(static_cast<size_t>(k + 1));
    std::copy(xv.begin(), xv.end(), xbuf.begin() + 1);
    const float* x = xbuf.data() + 1;
    auto run = [&](bk::quantize_row_fn fn, std::vector<int8_t>& qbuf, float& s, int32_t& sum) {
      qbuf.assign(size_t(k_pad + kGuard + 1), int8_t(0x5a));
      s = -1.0f;
      sum = -77;
      return fn(x, k, qbuf.data() + 1, k_pad, &s, &sum);
    };
    std::vector<int8_t> q_t, q_r, q_s;
    float s_t, s_r, s_s;
    int32_t sum_t, sum_r, sum_s;
    const bool ok_t = run(t_->quantize_row, q_t, s_t, sum_t);
    const bool ok_r = run(ref_->quantize_row, q_r, s_r, sum_r);
    const bool ok_s = run(spec_quantize, q_s, s_s, sum_s);
    ASSERT_EQ(ok_r, ok_s) << what << ": ref disagrees with the spec on finiteness";
    ASSERT_EQ(ok_t, ok_r) << what << ": return value";
    if (!ok_r) return;
    EXPECT_EQ(bits(s_t), bits(s_r)) << what << ": s_x " << s_t << " vs " << s_r;
    EXPECT_EQ(bits(s_r), bits(s_s)) << what << ": ref s_x vs spec";
    EXPECT_EQ(sum_t, sum_r) << what << ": q_sum";
    EXPECT_EQ(sum_r, sum_s) << what << ": ref q_sum vs spec";
    for (int64_t i = 0; i < k_pad; ++i) {
      ASSERT_EQ(int(q_t[size_t(i + 1)]), int(q_r[size_t(i + 1)]))
          << what << ": q[" << i << "] (x = " << (i < k ? x[i] : 0.0f) << ", k = " << k << ")";
      ASSERT_EQ(int(q_r[size_t(i + 1)]), int(q_s[size_t(i + 1)]))
          << what << ": ref vs spec q[" << i << "]";
    }
    EXPECT_EQ(int(q_t[0]), 0x5a) << what << ": wrote before q";
    for (int64_t i = k_pad; i < k_pad + kGuard; ++i)
      ASSERT_EQ(int(q_t[size_t(i + 1)]), 0x5a) << what << ": wrote past k_pad at " << i;
  }

  // Checks gemv and gemm of the table under test against the ref table and the int64 spec on
  // every range [n0, n1).
  void check_product(const Problem& p, const std::vector<std::pair<int64_t, int64_t>>& ranges,
                     const std::string& what) {
    const std::vector<int64_t> sums = all_sums(p);
    for (const auto& [n0, n1] : ranges) {
      const std::vector<float> want = expected_output(p, sums, n0, n1);
      const std::vector<float> ref_y = run_gemm(ref_->gemm, p, n0, n1);
      const std::string where = what + " M=" + std::to_string(p.M) + " nb=" + std::to_string(p.nb) +
                                " n=[" + std::to_string(n0) + "," + std::to_string(n1) + ")";
      ASSERT_EQ(diff_outputs(ref_y, want, p.ldy), "") << where << ": ref vs int64 spec";
      ASSERT_EQ(diff_outputs(run_gemm(t_->gemv, p, n0, n1), ref_y, p.ldy), "")
          << where << ": gemv vs ref";
      ASSERT_EQ(diff_outputs(run_gemm(t_->gemm, p, n0, n1), ref_y, p.ldy), "")
          << where << ": gemm vs ref";
    }
  }

  const bk::CpuKernels* t_ = nullptr;
  const bk::CpuKernels* ref_ = nullptr;
};

// ------------------------------------------------------------------ quantize_row_i8

TEST_P(KernelTest, QuantizeRandomRows) {
  Rng rng(1234);
  const int64_t ks[] = {1,  2,  3,  4,  5,  7,   8,   9,   15,  16,   17,   31,
                        32, 33, 63, 64, 65, 100, 255, 256, 257, 1000, 2560, 6912};
  const float scales[] = {1.0f, 1e3f, 3e-7f, 1e-5f};
  for (int64_t k : ks)
    for (float scale : scales)
      for (int rep = 0; rep < 2; ++rep) {
        std::vector<float> x(static_cast<size_t>(k));
        for (auto& v : x) v = rng.normal(scale);
        if (rep == 1 && k > 3) x[size_t(rng.range(0, k - 1))] = 40.0f * scale;  // an outlier
        const std::string what = "k=" + std::to_string(k) + " scale=" + std::to_string(scale);
        check_quantize(x, pad256(k), what);
        if (HasFatalFailure()) return;
        check_quantize(x, k, what + " k_pad=k");
        if (HasFatalFailure()) return;
      }
}

TEST_P(KernelTest, QuantizeTies) {
  // Rows whose fp32 products x * s are exact half-integers t = n + 0.5 (ties: round to even),
  // plus their one-ulp neighbours. For a row maximum amax, s = spec_scale(amax); a tie t is hit
  // by x near t / s when fl(x * s) == t exactly (checked), with |x| <= amax so s stays the same.
  Rng rng(99);
  const float amaxes[] = {127.0f, 63.5f, 254.0f, 1.0f, 100.0f, 3.0f, 0.3f};
  const int64_t ks[] = {1, 7, 16, 17, 64, 259, 1000};
  for (float amax : amaxes) {
    const float s = spec_scale(amax);
    std::vector<float> vals;
    int ties = 0;
    for (int n = -128; n <= 127; ++n) {
      const float t = float(n) + 0.5f;
      const float x0 = t / s;
      for (float x : {x0, std::nextafter(x0, -1e9f), std::nextafter(x0, 1e9f)}) {
        if (std::fabs(x) > amax) continue;
        if (x * s == t) ++ties;
        vals.push_back(x);  // ties and near-ties alike
      }
    }
    ASSERT_GE(ties, 100) << "amax " << amax << ": too few exact ties to test";
    for (int64_t k : ks) {
      std::vector<float> x(static_cast<size_t>(k));
      for (auto& v : x) v = vals[size_t(rng.range(0, int64_t(vals.size()) - 1))];
      x[size_t(rng.range(0, k - 1))] = rng.range(0, 1) ? amax : -amax;
      check_quantize(x, pad256(k), "ties amax=" + std::to_string(amax) + " k=" + std::to_string(k));
      if (HasFatalFailure()) return;
    }
  }
  // The spec itself: half to even.
  float s = 0.0f;
  int32_t sum = 0;
  std::vector<int8_t> q(256);
  const float x[] = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f, -126.5f};
  ASSERT_TRUE(t_->quantize_row(x, 9, q.data(), 256, &s, &sum));
  EXPECT_EQ(s, 1.0f);  // (1 / 127) * 127 rounds to exactly 1 in fp32
  const int want[] = {127, 0, 2, 2, 0, -2, -2, 126, -126};
  for (int i = 0; i < 9; ++i) EXPECT_EQ(int(q[size_t(i)]), want[i]) << "x = " << x[i];
}

TEST_P(KernelTest, QuantizeZerosAndTiny) {
  for (int64_t k : {1, 5, 16, 33, 256, 2560}) {
    std::vector<float> x(size_t(k), 0.0f);
    check_quantize(x, pad256(k), "zeros k=" + std::to_string(k));
    if (HasFatalFailure()) return;
    for (size_t i = 0; i < x.size(); i += 2) x[i] = -0.0f;
    check_quantize(x, pad256(k), "signed zeros k=" + std::to_string(k));
    if (HasFatalFailure()) return;
    // Denormals and values below the 1e-5 floor of amax.
    for (size_t i = 0; i < x.size(); ++i)
      x[i] = (i % 3 == 0 ? 1e-40f : 2e-6f) * (i % 2 ? 1.0f : -1.0f);
    check_quantize(x, pad256(k), "tiny k=" + std::to_string(k));
    if (HasFatalFailure()) return;
  }
  float s = 0.0f;
  int32_t sum = 1;
  std::vector<int8_t> q(256, 1);
  const std::vector<float> z(100, 0.0f);
  ASSERT_TRUE(t_->quantize_row(z.data(), 100, q.data(), 256, &s, &sum));
  EXPECT_EQ(s, spec_scale(0.0f));
  EXPECT_EQ(sum, 0);
  for (int8_t v : q) ASSERT_EQ(v, 0);
}

TEST_P(KernelTest, QuantizeNonFiniteReturnsFalse) {
  Rng rng(7);
  const float bad[] = {
      std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
      std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()};
  for (int64_t k : {1, 3, 4, 5, 8, 16, 17, 31, 37, 64, 2560}) {
    for (int64_t pos : {int64_t(0), k / 2, k - 1}) {
      for (float b : bad) {
        std::vector<float> x(static_cast<size_t>(k));
        for (auto& v : x) v = rng.normal(1.0f);
        x[size_t(pos)] = b;
        std::vector<int8_t> q(static_cast<size_t>(pad256(k)));
        float s = 0.0f;
        int32_t sum = 0;
        EXPECT_FALSE(t_->quantize_row(x.data(), k, q.data(), pad256(k), &s, &sum))
            << "k=" << k << " pos=" << pos << " value=" << b;
        check_quantize(x, pad256(k), "non-finite k=" + std::to_string(k));
        if (HasFatalFailure()) return;
      }
    }
  }
}

// ------------------------------------------------------------------ gemv / gemm

TEST_P(KernelTest, ProductRandom) {
  Rng rng(2024);
  const int64_t N = 23;
  // [n0, n1) ranges: all rows, offset ranges whose length is not a multiple of any tile
  // (13, 7, 1), the last row alone, and an empty range (must write nothing).
  const std::vector<std::pair<int64_t, int64_t>> ranges = {{0, N}, {5, 18},    {2, 9},
                                                           {1, 2}, {N - 1, N}, {3, 3}};
  for (int64_t nb : {1, 2, 3, 10, 27}) {
    for (int64_t M : {1, 2, 3, 4, 5, 7, 17}) {
      Problem p(M, N, nb);
      // K not a multiple of 256 for most sizes: padding values hold code 1 and q = 0.
      const int64_t K = nb == 1 ? p.kp : p.kp - rng.range(1, 255);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < p.kp; ++k)
          p.codes[size_t(n * p.kp + k)] = k < K ? uint8_t(rng.range(0, 2)) : uint8_t(1);
      for (int64_t m = 0; m < M; ++m) {
        int64_t sum = 0;
        for (int64_t k = 0; k < p.kp; ++k) {
          const int8_t v = k < K ? int8_t(rng.range(-128, 127)) : int8_t(0);
          p.q[size_t(m * p.kp + k)] = v;
          sum += v;
        }
        p.q_sum[size_t(m)] = int32_t(sum);
        p.s_x[size_t(m)] = 0.01f + 100.0f * rng.unit();
      }
      p.w_scale = 0.37f;
      p.pack();
      check_product(p, ranges, "random");
      if (HasFatalFailure()) return;
    }
  }
}

TEST_P(KernelTest, ProductFromQuantizedRows) {
  // The pipeline as used by BitLinear: quantize fp32 rows, then multiply.
  Rng rng(5);
  const int64_t K = 2560 - 77, M = 3, N = 9;
  Problem p(M, N, pad256(K) / bk::kK256Values);
  for (int64_t m = 0; m < M; ++m) {
    std::vector<float> x(static_cast<size_t>(K));
    for (auto& v : x) v = rng.normal(2.0f);
    ASSERT_TRUE(t_->quantize_row(x.data(), K, p.q.data() + m * p.kp, p.kp, &p.s_x[size_t(m)],
                                 &p.q_sum[size_t(m)]));
  }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < p.kp; ++k)
      p.codes[size_t(n * p.kp + k)] = k < K ? uint8_t(rng.range(0, 2)) : uint8_t(1);
  p.w_scale = 0.8125f;
  p.pack();
  check_product(p, {{0, N}, {4, 7}}, "quantized");
}

// Adversarial inputs: the extreme int8 values with the extreme codes, for block counts around
// the int16 partial-sum limits (8 and 9 blocks), realistic K (27 blocks = 6912, 80 blocks) and
// the switch between the unpacked and packed GEMM paths (32 / 33 blocks, kUnpackMaxK = 8192).
// With s_x = 1, w_scale = 1 and q_sum = 0, y = float(int32 sum) is exact (|sum| < 2^24), so it
// is compared with the int64 sum itself.
TEST_P(KernelTest, ProductAdversarialExtremes) {
  Rng rng(31337);
  enum Pattern { kNeg2, kNeg0, kPos2, kPos0, kMixed, kRandomExtreme };
  for (int64_t nb : {1, 7, 8, 9, 16, 27, 32, 33, 64, 80}) {
    for (int pat = kNeg2; pat <= kRandomExtreme; ++pat) {
      const int64_t M = 5, N = 7;
      Problem p(M, N, nb);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < p.kp; ++k) {
          uint8_t c = 2;
          if (pat == kNeg0 || pat == kPos0) c = 0;
          if (pat == kMixed) c = uint8_t(n % 3 == 2 ? 1 : (n % 3 == 1 ? 0 : 2));
          if (pat == kRandomExtreme) c = rng.range(0, 1) ? 2 : 0;
          p.codes[size_t(n * p.kp + k)] = c;
        }
      for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < p.kp; ++k) {
          int8_t v = (pat == kNeg2 || pat == kNeg0) ? int8_t(-128) : int8_t(127);
          if (pat == kMixed) v = m % 2 ? int8_t(-128) : int8_t(127);
          if (pat == kRandomExtreme) v = rng.range(0, 1) ? int8_t(-128) : int8_t(127);
          p.q[size_t(m * p.kp + k)] = v;
        }
      p.pack();
      const std::vector<int64_t> sums = all_sums(p);
      if (pat == kNeg2) {
        EXPECT_EQ(sums[0], -256 * p.kp);
      }
      if (pat == kPos2) {
        EXPECT_EQ(sums[0], 254 * p.kp);
      }
      const std::string what = "pattern " + std::to_string(pat) + " nb=" + std::to_string(nb);
      for (gemm_fn fn : {t_->gemv, t_->gemm}) {
        const std::vector<float> y = run_gemm(fn, p, 0, N);
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) {
            const float got = y[size_t(m * p.ldy + n)];
            ASSERT_EQ(double(got), double(sums[size_t(m * N + n)]))
                << what << " m=" << m << " n=" << n << (fn == t_->gemv ? " gemv" : " gemm");
          }
      }
      check_product(p, {{0, N}, {1, 6}}, what);
      if (HasFatalFailure()) return;
    }
  }
}

// The contract limit nb = 2^15 - 1 (kernels.h): all -128 with all codes 2 gives the int32 sum
// -256 * kp = -2147418112, just above INT32_MIN; all +127 gives 254 * kp = 2130640384. q_sum is
// set to (expected sum - 12345), so an exact int32 accumulation yields y = 12345 exactly. M = 4
// and N = 4 cover the largest tiles of every ISA.
TEST_P(KernelTest, ProductContractLimit) {
  const int64_t nb = (int64_t(1) << 15) - 1, M = 4, N = 4;
  for (int pat = 0; pat < 2; ++pat) {
    Problem p(M, N, nb);
    std::fill(p.codes.begin(), p.codes.end(), uint8_t(2));
    std::fill(p.q.begin(), p.q.end(), pat == 0 ? int8_t(-128) : int8_t(127));
    p.pack();
    const int64_t want = (pat == 0 ? -256 : 254) * p.kp;
    ASSERT_EQ(dot64(p.codes, p.q, p.kp, 0, 0), want);
    ASSERT_GE(want, int64_t(std::numeric_limits<int32_t>::min()));
    ASSERT_LE(want, int64_t(std::numeric_limits<int32_t>::max()));
    std::fill(p.q_sum.begin(), p.q_sum.end(), int32_t(want - 12345));
    for (gemm_fn fn : {t_->gemv, t_->gemm}) {
      const std::vector<float> y = run_gemm(fn, p, 0, N);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n)
          ASSERT_EQ(y[size_t(m * p.ldy + n)], 12345.0f)
              << "pattern " << pat << " m=" << m << " n=" << n << " want sum " << want
              << (fn == t_->gemv ? " gemv" : " gemm");
    }
  }
}

// ------------------------------------------------------------------ probes

TEST_P(KernelTest, ReadBytes) {
  constexpr size_t kBytes = 8192;
  struct alignas(64) Line {
    uint8_t b[64];
  };
  std::vector<Line> buf(kBytes / 64);
  uint8_t* p = buf[0].b;
  ASSERT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
  Rng rng(11);
  for (size_t i = 0; i < kBytes; ++i) p[i] = uint8_t(rng.next());
  const uint64_t r0 = t_->read_bytes(p, kBytes);
  EXPECT_EQ(t_->read_bytes(p, kBytes), r0) << "not deterministic";
  // The result depends on every byte: changing any one changes it.
  for (size_t pos : {size_t(0), size_t(63), size_t(64), size_t(4097), kBytes - 1}) {
    p[pos] ^= 0x10;
    EXPECT_NE(t_->read_bytes(p, kBytes), r0) << "byte " << pos << " is not read";
    p[pos] ^= 0x10;
  }
  EXPECT_EQ(t_->read_bytes(p, kBytes), r0);
  t_->read_bytes(p, 256);
  t_->read_bytes(p, 0);
}

TEST_P(KernelTest, Int8Peak) {
  int64_t macs = -1;
  const int64_t c1 = t_->int8_peak(1000, &macs);
  EXPECT_GE(macs, 1);
  EXPECT_LE(macs, int64_t(1) << 16);
  int64_t macs2 = -1;
  EXPECT_EQ(t_->int8_peak(1000, &macs2), c1) << "checksum not deterministic";
  EXPECT_EQ(macs2, macs);
  t_->int8_peak(0, &macs2);
  EXPECT_EQ(macs2, macs);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, KernelTest, ::testing::ValuesIn(kAllIsas),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return std::string(bk::isa_name(info.param));
                         });

// ------------------------------------------------------------------ coverage and dispatch

TEST(IsaCoverage, ReportAndRequirements) {
  std::string tested, missing;
  for (Isa isa : kAllIsas)
    (bk::table_for(isa) ? tested : missing) += std::string(" ") + bk::isa_name(isa);
  std::string feats;
  for (const auto& f : bk::cpu_features().names()) feats += " " + f;
  std::printf("bitnet kernel tests: tested ISAs:%s; unavailable ISAs:%s; cpu features:%s\n",
              tested.c_str(), missing.empty() ? " (none)" : missing.c_str(), feats.c_str());
  std::fflush(stdout);
  for (const std::string& name : split_env("BITNET_TEST_REQUIRE_ISAS"))
    EXPECT_NE(bk::table_for(bk::parse_isa(name.c_str())), nullptr)
        << name << " is required (BITNET_TEST_REQUIRE_ISAS) but not available";
  for (const std::string& name : split_env("BITNET_TEST_EXPECT_UNAVAILABLE"))
    EXPECT_EQ(bk::table_for(bk::parse_isa(name.c_str())), nullptr)
        << name << " must be unavailable (BITNET_TEST_EXPECT_UNAVAILABLE) but is available";
}

TEST(IsaCoverage, ActiveIsBestAvailable) {
  const char* cap = std::getenv("BITNET_MAX_ISA");
  if (cap && *cap) GTEST_SKIP() << "BITNET_MAX_ISA is set";
  const bk::CpuKernels* best = bk::table_for(Isa::ref);
  for (Isa isa : kAllIsas)
    if (const bk::CpuKernels* t = bk::table_for(isa)) best = t;
  EXPECT_EQ(&bk::active(), best) << "active " << bk::active().name << ", best " << best->name;
}

}  // namespace

// lut_experiment: lookup-table (TL2, lut_kernels.h) vs multiply-add (K256, kernels/cpu) ternary x
// int8 products on this CPU, for decode (GEMV, M = 1) and prefill (GEMM, M = 128).
//
// Build inside the project (benchmarks/cpp/CMakeLists.txt adds this folder when it exists; that
// file needs Google Benchmark, apt-get install libbenchmark-dev):
//   cmake -S . -B build/bench -DBITNET_BUILD_BENCHMARKS=ON
//   cmake --build build/bench --target lut_experiment   (-> build/bench/benchmarks/cpp/lut/)
// Build standalone (this folder only; it adds the repository root for bitnet_core):
//   cmake -S benchmarks/cpp/lut -B /tmp/lut_build && cmake --build /tmp/lut_build -j2
// Run:
//   /tmp/lut_build/lut_experiment                 verify, then benchmark everything (~30 s)
//   /tmp/lut_build/lut_experiment --verify-only   exactness checks only (exit 1 on any mismatch)
//   options: --reps N (timed rounds, default 9; x3 for GEMV), --no-decode / --decode-only,
//            --layers L (layers of the decode set, default 30), --quick (fewer shapes / reps),
//            --prefetch-k256 D,.. / --prefetch-tl2 D,.. (software-prefetch distances in bytes,
//            0 = none; negative K256 values = tiles of 4 rows)
//
// (a) Verification: the TL2 GEMV/GEMM of every ISA built here must produce bit-identical outputs
//     to the scalar K256 reference kernel (table_for(Isa::ref)->gemm) on random and adversarial
//     inputs (all -128, all +127, +-extremes, weights aligned with the activation signs so every
//     product is +-128, all 27 group patterns), shapes from 32x24 to 2560x6912 (ragged N and K
//     included), M = 1..17, row ranges split as threads split them, with and without prefetch;
//     w_scale = s_x = 1 makes the float outputs exact integers and random scales check the float
//     formula bit for bit. The vectorised table builders are compared byte for byte with the
//     scalar one; the K256 SIMD kernels and the prefetch controls are checked too. Any mismatch:
//     message and exit status 1.
// (b) Timing: median (and min) microseconds per call, weight GB/s (bytes of the variant's own
//     layout per second) and GMAC/s, for the 2B4T shapes, M = 1 and 128, 1 and 2 threads (one
//     contiguous row range per thread via bitnet::parallel_for), variants interleaved round-robin
//     so that machine noise hits all of them alike; then one decode token over a 30-layer 2B4T
//     weight set (521 MB at 2 bits, far beyond the caches this VM really gets), per variant.
//     LUT timings include building the tables (per thread for GEMV; split over threads for
//     GEMM; in the decode token once per distinct input: q/k/v and gate/up share theirs).
//     Variants: k256_<isa> = the core's kernels as dispatched (table_for(isa)->gemv / gemm);
//     k256_<isa>_pfD = the same GEMV plus software prefetch D bytes ahead (controls in
//     k256_prefetch_*.cpp); tl2_<isa>[_pfD] = the LUT kernels of this folder.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bitnet/formats.h"
#include "bitnet/packed_weights.h"
#include "bitnet/probe.h"
#include "bitnet/threadpool.h"
#include "kernels.h"
#include "lut_kernels.h"

namespace {

using namespace bitnet;
using namespace bitnet::kernels;

// ------------------------------------------------------------------------------ small helpers

struct Free {
  void operator()(void* p) const { std::free(p); }
};
template <typename T>
using Buf = std::unique_ptr<T[], Free>;

template <typename T>
Buf<T> alloc(int64_t count) {
  const size_t bytes = (size_t(std::max<int64_t>(count, 1)) * sizeof(T) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  return Buf<T>(static_cast<T*>(p));
}

struct Rng {  // splitmix64
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int8_t i8() { return int8_t(next() & 0xFF); }
  int8_t trit() { return int8_t(int(next() % 3) - 1); }
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

bool have_avx2() { return table_for(Isa::avx2) != nullptr; }
bool have_avx512() { return table_for(Isa::avx512_vnni) != nullptr; }

// Activations of M rows in the K256 convention: q [M, kp] zero-padded, s_x, q_sum.
struct Acts {
  int64_t M = 0, k = 0, kp = 0;
  Buf<int8_t> q;
  Buf<float> s_x;
  Buf<int32_t> q_sum;
};

Acts make_acts(int64_t M, int64_t k, const std::function<int8_t(int64_t, int64_t)>& gen,
               bool unit_scale, Rng& rng) {
  Acts a;
  a.M = M;
  a.k = k;
  a.kp = (k + kK256Values - 1) / kK256Values * kK256Values;
  a.q = alloc<int8_t>(M * a.kp);
  a.s_x = alloc<float>(M);
  a.q_sum = alloc<int32_t>(M);
  for (int64_t m = 0; m < M; ++m) {
    int32_t sum = 0;
    for (int64_t i = 0; i < k; ++i) {
      a.q[m * a.kp + i] = gen(m, i);
      sum += a.q[m * a.kp + i];
    }
    a.q_sum[m] = sum;
    a.s_x[m] = unit_scale ? 1.0f : 127.0f / (0.5f + float(rng.next() % 1000) / 100.0f);
  }
  return a;
}

// ------------------------------------------------------------------------------ TL2 variants

struct Tl2Isa {
  const char* name;
  build_lut_tl2_fn build;
  gemm_tl2_fn gemv, gemm;
  int64_t lut_bytes_per_sg;
};

std::vector<Tl2Isa> tl2_isas() {
  std::vector<Tl2Isa> v;
  if (have_avx2())
    v.push_back(
        {"tl2_avx2", avx2::build_lut_tl2_i8, avx2::gemv_tl2_i8, avx2::gemm_tl2_i8, kTl2Lut16Bytes});
  if (have_avx512())
    v.push_back({"tl2_avx512", avx512::build_lut_tl2_i8, avx512::gemv_tl2_i8, avx512::gemm_tl2_i8,
                 kTl2Lut64Bytes});
  return v;
}

// The K256 GEMV controls with software prefetch (lut_kernels.h).
using k256_prefetch_fn = void (*)(const uint8_t*, int64_t, const int8_t*, const float*,
                                  const int32_t*, int64_t, int64_t, int64_t, float, float*, int64_t,
                                  int64_t);
struct K256Pf {
  const char* name;
  k256_prefetch_fn fn;
};
std::vector<K256Pf> k256_prefetch_variants() {
  std::vector<K256Pf> v;
  if (have_avx2()) v.push_back({"k256_avx2", avx2::gemv_k256_i8_prefetch});
  if (have_avx512()) v.push_back({"k256_avx512_vnni", avx512_vnni::gemv_k256_i8_prefetch});
  return v;
}

// ------------------------------------------------------------------------------ verification

int g_failures = 0;
// Software-prefetch distances (bytes) of the decode variants (--prefetch-k256 / --prefetch-tl2).
// Best distances here (tried 512 .. 10240): TL2 2048 (both ISAs), K256 2048 (VNNI) / 3072 (AVX2).
std::vector<int64_t> g_k256_prefetch = {2048, 3072};
std::vector<int64_t> g_tl2_prefetch = {0, 2048};

std::vector<int64_t> parse_list(const char* s) {
  std::vector<int64_t> v;
  for (const char* p = s; *p;) {
    char* end = nullptr;
    v.push_back(std::strtoll(p, &end, 10));
    p = *end == ',' ? end + 1 : end;
    if (end == p && *p) break;
  }
  return v;
}

void fail(const std::string& what) {
  if (g_failures < 20) std::printf("MISMATCH: %s\n", what.c_str());
  ++g_failures;
}

bool same_bits(float a, float b) {
  uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y;
}

// Checks the vectorised table builders against the scalar one on the activations of `a`.
void verify_builders(const Acts& a, const std::string& label) {
  const Tl2Shape s = tl2_shape(1, a.k);
  auto ref_lut = alloc<int8_t>(s.n_sg * kTl2Lut16Bytes);
  for (int64_t m = 0; m < a.M; ++m) {
    ref::build_lut_tl2_i8(a.q.get() + m * a.kp, a.k, s.n_sg, ref_lut.get());
    if (have_avx2()) {
      auto l = alloc<int8_t>(s.n_sg * kTl2Lut16Bytes);
      avx2::build_lut_tl2_i8(a.q.get() + m * a.kp, a.k, s.n_sg, l.get());
      if (std::memcmp(l.get(), ref_lut.get(), size_t(s.n_sg * kTl2Lut16Bytes)) != 0)
        fail("avx2 table build differs from ref (" + label + ")");
    }
    if (have_avx512()) {
      auto l = alloc<int8_t>(s.n_sg * kTl2Lut64Bytes);
      avx512::build_lut_tl2_i8(a.q.get() + m * a.kp, a.k, s.n_sg, l.get());
      for (int64_t g = 0; g < s.n_sg * kTl2SgGroups; ++g) {
        const int64_t sg = g / 8;
        const int j = int(g % 8), u = (j & 1) + 2 * (j >= 4), half = (j >> 1) & 1;
        for (int part = 0; part < 2; ++part)
          for (int lane = 0; lane < 2; ++lane) {
            const int8_t* got =
                l.get() + sg * kTl2Lut64Bytes + 128 * u + 64 * part + 32 * half + 16 * lane;
            if (std::memcmp(got, ref_lut.get() + 32 * g + 16 * part, 16) != 0) {
              fail("avx512 table build differs from ref (" + label + ")");
              return;
            }
          }
      }
    }
  }
}

// One case: weights t [n, k], activations a; compares every TL2 kernel (and the K256 SIMD
// kernels, as a sanity check of the harness) with the K256 reference, bit for bit.
void verify_case(const std::vector<int8_t>& t, int64_t n, int64_t k, const Acts& a, float w_scale,
                 const std::string& label) {
  const int64_t nb = a.kp / kK256Values, M = a.M;
  auto k256 = alloc<uint8_t>(n * nb * kK256Bytes);
  pack_k256(t.data(), n, k, k256.get());
  const Tl2Shape s = tl2_shape(n, k);
  auto tl2 = alloc<uint8_t>(s.nbytes());
  pack_tl2(t.data(), n, k, tl2.get());

  auto y_ref = alloc<float>(M * n);
  table_for(Isa::ref)->gemm(k256.get(), nb, a.q.get(), a.s_x.get(), a.q_sum.get(), M, 0, n, w_scale,
                            y_ref.get(), n);
  auto check = [&](const float* y, const std::string& who) {
    for (int64_t i = 0; i < M * n; ++i)
      if (!same_bits(y[i], y_ref[i])) {
        fail(who + " " + label + ": y[" + std::to_string(i / n) + ", " + std::to_string(i % n) +
             "] = " + std::to_string(y[i]) + ", reference " + std::to_string(y_ref[i]));
        return;
      }
  };
  // K256 SIMD kernels (sanity of the harness and the packer).
  for (Isa isa : {Isa::avx2, Isa::avx512_vnni}) {
    const CpuKernels* kt = table_for(isa);
    if (!kt) continue;
    auto y = alloc<float>(M * n);
    (M == 1 ? kt->gemv : kt->gemm)(k256.get(), nb, a.q.get(), a.s_x.get(), a.q_sum.get(), M, 0, n,
                                   w_scale, y.get(), n);
    check(y.get(), std::string("k256_") + kt->name);
  }
  if (M == 1) {
    for (const K256Pf& v : k256_prefetch_variants()) {
      for (int64_t pf : {int64_t(0), int64_t(2048), int64_t(-1)}) {
        auto y = alloc<float>(n);
        v.fn(k256.get(), nb, a.q.get(), a.s_x.get(), a.q_sum.get(), 1, 0, n, w_scale, y.get(), n,
             pf);
        check(y.get(), v.name + std::string("_prefetch"));
      }
    }
  }
  // TL2: scalar reference with lut16 tables, then each ISA with its own tables; the ISA kernels
  // are also called on split row ranges (as threads do): [0, 32 * b) and [32 * b, n).
  auto lut16 = alloc<int8_t>(M * s.n_sg * kTl2Lut16Bytes);
  for (int64_t m = 0; m < M; ++m)
    ref::build_lut_tl2_i8(a.q.get() + m * a.kp, k, s.n_sg,
                          lut16.get() + m * s.n_sg * kTl2Lut16Bytes);
  {
    auto y = alloc<float>(M * n);
    ref::gemm_tl2_i8(tl2.get(), s.n_sg, lut16.get(), s.n_sg * kTl2Lut16Bytes, a.s_x.get(), M, 0, n,
                     w_scale, y.get(), n, 0);
    check(y.get(), "tl2_ref");
  }
  for (const Tl2Isa& isa : tl2_isas()) {
    const int64_t stride = s.n_sg * isa.lut_bytes_per_sg;
    auto lut = alloc<int8_t>(M * stride);
    for (int64_t m = 0; m < M; ++m)
      isa.build(a.q.get() + m * a.kp, k, s.n_sg, lut.get() + m * stride);
    for (int which = 0; which < 4; ++which) {  // gemv, gemm; without and with prefetch
      const gemm_tl2_fn fn = which % 2 == 0 ? isa.gemv : isa.gemm;
      const int64_t pf = which < 2 ? 0 : 320;
      auto y = alloc<float>(M * n);
      const int64_t split = std::min(n, (s.n_blocks / 2) * kTl2Rows);
      fn(tl2.get(), s.n_sg, lut.get(), stride, a.s_x.get(), M, 0, split, w_scale, y.get(), n, pf);
      fn(tl2.get(), s.n_sg, lut.get(), stride, a.s_x.get(), M, split, n, w_scale, y.get(), n, pf);
      check(y.get(),
            std::string(isa.name) + (which % 2 == 0 ? "_gemv" : "_gemm") + (pf ? "_prefetch" : ""));
    }
  }
}

std::string loadavg() {
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  char buf[128] = {};
  if (f) {
    if (!std::fgets(buf, sizeof buf, f)) buf[0] = 0;
    std::fclose(f);
  }
  std::string s = buf;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s.empty() ? "n/a" : s;
}

int run_verification(bool quick) {
  Rng rng(12345);
  // Weight generators: random, constant, and aligned with the activation signs (every product
  // +128 or -128: the largest possible |partial sums| at every level).
  struct WGen {
    const char* name;
    std::function<int8_t(int64_t, int64_t, int8_t)> f;  // (row, col, activation of row 0)
  };
  const std::vector<WGen> wgens = {
      {"random", [&](int64_t, int64_t, int8_t) { return rng.trit(); }},
      {"all+1", [](int64_t, int64_t, int8_t) { return int8_t(1); }},
      {"all-1", [](int64_t, int64_t, int8_t) { return int8_t(-1); }},
      {"all0", [](int64_t, int64_t, int8_t) { return int8_t(0); }},
      {"aligned",
       [](int64_t r, int64_t, int8_t x) { return int8_t((r % 2 ? -1 : 1) * (x < 0 ? -1 : 1)); }},
      {"patterns",
       [](int64_t r, int64_t c, int8_t) {  // all 27 group patterns, shifted per row
         const int64_t p = (c / 3 + r) % 27;
         const int64_t d = c % 3 == 0 ? p % 3 : (c % 3 == 1 ? (p / 3) % 3 : p / 9);
         return int8_t(d - 1);
       }},
  };
  struct AGen {
    const char* name;
    std::function<int8_t(int64_t, int64_t)> f;
  };
  const std::vector<AGen> agens = {
      {"random", [&](int64_t, int64_t) { return rng.i8(); }},
      {"all-128", [](int64_t, int64_t) { return int8_t(-128); }},
      {"all+127", [](int64_t, int64_t) { return int8_t(127); }},
      {"extremes", [&](int64_t, int64_t) { return int8_t(rng.next() & 1 ? 127 : -128); }},
      {"alternate", [](int64_t m, int64_t i) { return int8_t((i + m) % 2 ? 127 : -128); }},
      {"small", [&](int64_t, int64_t) { return int8_t(int(rng.next() % 17) - 8); }},
  };
  struct Shape {
    int64_t n, k;
  };
  std::vector<Shape> shapes = {{32, 24},    {33, 7},     {64, 256}, {96, 300},
                               {100, 1000}, {256, 2560}, {80, 6912}};
  if (!quick) {  // the 2B4T shapes themselves (a few input kinds, M = 1 and 2)
    shapes.push_back({640, 2560});
    shapes.push_back({2560, 2560});
    shapes.push_back({2560, 6912});
  }
  const std::vector<int64_t> Ms = {1, 2, 3, 5, 17};

  // The core's own K256 packer must agree with the one used here for the big weight sets.
  {
    std::vector<int8_t> t(96 * 300);
    for (auto& v : t) v = rng.trit();
    auto pw = PackedWeights::pack(Format::native, t.data(), 96, 300, 1.0f);
    const KernelWeights& kw = pw->kernel();
    auto mine = alloc<uint8_t>(96 * kw.nb * kK256Bytes);
    pack_k256(t.data(), 96, 300, mine.get());
    if (std::memcmp(mine.get(), kw.data, size_t(96 * kw.nb * kK256Bytes)) != 0)
      fail("pack_k256 differs from PackedWeights::pack(native).kernel()");
  }

  int cases = 0;
  for (const Shape& sh : shapes) {
    for (size_t wi = 0; wi < wgens.size(); ++wi) {
      for (size_t ai = 0; ai < agens.size(); ++ai) {
        // Every (weights, activations) pair on small shapes; a subset on the larger ones.
        if (sh.n * sh.k > 100000 && wi > 2 && ai != 1 && ai != 2 && ai != 3) continue;
        for (int64_t M : Ms) {
          if (sh.n * sh.k > 100000 && M > 3) continue;
          if (sh.n * sh.k > 2000000 && (M > 2 || (ai > 3 && wi != 4) || (wi > 2 && wi != 4)))
            continue;
          const bool unit = (M + int64_t(ai)) % 2 == 0;
          Acts a = make_acts(M, sh.k, agens[ai].f, unit, rng);
          std::vector<int8_t> t(size_t(sh.n * sh.k));
          for (int64_t r = 0; r < sh.n; ++r)
            for (int64_t c = 0; c < sh.k; ++c) t[size_t(r * sh.k + c)] = wgens[wi].f(r, c, a.q[c]);
          const std::string label = std::to_string(sh.n) + "x" + std::to_string(sh.k) +
                                    " M=" + std::to_string(M) + " w=" + wgens[wi].name +
                                    " q=" + agens[ai].name + (unit ? " unit-scale" : "");
          verify_case(t, sh.n, sh.k, a, unit ? 1.0f : 0.0173f, label);
          if (wi == 0) verify_builders(a, label);
          ++cases;
        }
      }
    }
  }
  std::printf("verification: %d cases, %d mismatches (TL2 ISAs:", cases, g_failures);
  for (const Tl2Isa& isa : tl2_isas()) std::printf(" %s", isa.name);
  std::printf(")\n");
  return g_failures == 0 ? 0 : 1;
}

// ------------------------------------------------------------------------------ benchmarks

// Per-thread scratch tables, sized for the largest use.
struct LutScratch {
  std::vector<Buf<int8_t>> per_thread;
  int64_t bytes = 0;
  void ensure(int threads, int64_t b) {
    if (b > bytes || int(per_thread.size()) < threads) {
      bytes = std::max(bytes, b);
      per_thread.clear();
      for (int i = 0; i < std::max(threads, 2); ++i) per_thread.push_back(alloc<int8_t>(bytes));
    }
  }
};

// A variant = a callable computing y = W q for the whole matrix on `threads` threads.
struct Variant {
  std::string name;
  int64_t weight_bytes;
  std::function<void(int threads)> run;
};

// Splits [0, n) into one contiguous range per thread, in multiples of `align` rows.
void split_rows(int threads, int64_t n, int64_t align,
                const std::function<void(int64_t n0, int64_t n1, int thread)>& fn) {
  const int64_t units = (n + align - 1) / align;
  const int64_t per = (units + threads - 1) / threads;
  parallel_for(threads, [&](int64_t t, int) {
    const int64_t n0 = std::min(n, t * per * align), n1 = std::min(n, (t + 1) * per * align);
    if (n0 < n1) fn(n0, n1, int(t));
  });
}

struct Matrix {  // one weight matrix in both layouts
  int64_t n = 0, k = 0, nb = 0;
  Tl2Shape s;
  Buf<uint8_t> k256, tl2;
};

Matrix make_matrix(int64_t n, int64_t k, Rng& rng) {
  Matrix w;
  w.n = n;
  w.k = k;
  w.nb = (k + kK256Values - 1) / kK256Values;
  w.s = tl2_shape(n, k);
  std::vector<int8_t> t(size_t(n * k));
  for (auto& v : t) v = rng.trit();
  w.k256 = alloc<uint8_t>(n * w.nb * kK256Bytes);
  pack_k256(t.data(), n, k, w.k256.get());
  w.tl2 = alloc<uint8_t>(w.s.nbytes());
  pack_tl2(t.data(), n, k, w.tl2.get());
  return w;
}

// K256 call on rows split over threads (multiples of 16 rows, as bitlinear.cpp does).
void run_k256(gemm_k256_fn fn, const Matrix& w, const Acts& a, float* y, int threads) {
  split_rows(threads, w.n, 16, [&](int64_t n0, int64_t n1, int) {
    fn(w.k256.get(), w.nb, a.q.get(), a.s_x.get(), a.q_sum.get(), a.M, n0, n1, 1.0f, y, w.n);
  });
}

// A K256 GEMV with software prefetch (control experiment), rows split as run_k256.
void run_k256_prefetch(k256_prefetch_fn fn, const Matrix& w, const Acts& a, float* y, int threads,
                       int64_t prefetch) {
  split_rows(threads, w.n, 16, [&](int64_t n0, int64_t n1, int) {
    fn(w.k256.get(), w.nb, a.q.get(), a.s_x.get(), a.q_sum.get(), 1, n0, n1, 1.0f, y, w.n,
       prefetch);
  });
}

// TL2 GEMV: every thread builds the tables of the one activation row (unless `fresh` is false:
// the tables of this input are already built) and computes its rows.
void run_tl2_gemv(const Tl2Isa& isa, const Matrix& w, const Acts& a, float* y, int threads,
                  LutScratch& scratch, bool fresh, int64_t prefetch = 0) {
  const int64_t stride = w.s.n_sg * isa.lut_bytes_per_sg;
  split_rows(threads, w.n, kTl2Rows, [&](int64_t n0, int64_t n1, int t) {
    int8_t* lut = scratch.per_thread[size_t(t)].get();
    if (fresh) isa.build(a.q.get(), w.k, w.s.n_sg, lut);
    isa.gemv(w.tl2.get(), w.s.n_sg, lut, stride, a.s_x.get(), 1, n0, n1, 1.0f, y, w.n, prefetch);
  });
}

// TL2 GEMM: the tables of all M rows are built once (rows split over threads), then the rows
// of the weights are split over threads.
void run_tl2_gemm(const Tl2Isa& isa, const Matrix& w, const Acts& a, float* y, int threads,
                  int8_t* lut) {
  const int64_t stride = w.s.n_sg * isa.lut_bytes_per_sg;
  parallel_for(threads, [&](int64_t t, int) {
    for (int64_t m = t; m < a.M; m += threads)
      isa.build(a.q.get() + m * a.kp, w.k, w.s.n_sg, lut + m * stride);
  });
  split_rows(threads, w.n, kTl2Rows, [&](int64_t n0, int64_t n1, int) {
    isa.gemm(w.tl2.get(), w.s.n_sg, lut, stride, a.s_x.get(), a.M, n0, n1, 1.0f, y, w.n, 0);
  });
}

struct Result {
  std::string variant;
  double med_us, min_us, gbps, gmacs;
};

// Times the variants round-robin: `reps` rounds, each round one batch per variant of `inner`
// calls (inner chosen so that a batch takes >= ~2 ms). Returns median / min per call.
std::vector<Result> time_variants(const std::vector<Variant>& vs, int threads, int reps,
                                  double macs) {
  std::vector<int> inner(vs.size(), 1);
  for (size_t i = 0; i < vs.size(); ++i) {
    vs[i].run(threads);  // warm-up (pages, caches, pool)
    const double t0 = now_s();
    vs[i].run(threads);
    const double dt = now_s() - t0;
    inner[i] = int(std::clamp(0.002 / std::max(dt, 1e-9), 1.0, 2000.0));
  }
  std::vector<std::vector<double>> per(vs.size());
  for (int r = 0; r < reps; ++r) {
    for (size_t i = 0; i < vs.size(); ++i) {
      const double t0 = now_s();
      for (int j = 0; j < inner[i]; ++j) vs[i].run(threads);
      per[i].push_back((now_s() - t0) / inner[i]);
    }
  }
  std::vector<Result> out;
  for (size_t i = 0; i < vs.size(); ++i) {
    const double med = median(per[i]);
    const double mn = *std::min_element(per[i].begin(), per[i].end());
    out.push_back({vs[i].name, med * 1e6, mn * 1e6, double(vs[i].weight_bytes) / med * 1e-9,
                   macs / med * 1e-9});
  }
  return out;
}

void print_results(const char* shape, int64_t M, int threads, const std::vector<Result>& rs) {
  double best = 1e300;
  for (const Result& r : rs) best = std::min(best, r.med_us);
  for (const Result& r : rs)
    std::printf("| %-10s | %4lld | %d | %-16s | %10.1f | %10.1f | %7.2f | %7.1f | %5.2fx |\n",
                shape, (long long)M, threads, r.variant.c_str(), r.med_us, r.min_us, r.gbps,
                r.gmacs, r.med_us / best);
  std::fflush(stdout);
}

void bench_shapes(int reps, bool quick) {
  Rng rng(777);
  struct Shape {
    const char* name;
    int64_t n, k;
  };
  const std::vector<Shape> shapes = {{"2560x2560", 2560, 2560},
                                     {"640x2560", 640, 2560},
                                     {"6912x2560", 6912, 2560},
                                     {"2560x6912", 2560, 6912}};
  const std::vector<Tl2Isa> tl2 = tl2_isas();
  LutScratch scratch;
  std::printf("\n## TL2 table build, one activation row (median of 201)\n\n");
  for (int64_t k : {int64_t(2560), int64_t(6912)}) {
    Acts a = make_acts(
        1, k, [&](int64_t, int64_t) { return rng.i8(); }, false, rng);
    const int64_t n_sg = tl2_shape(1, k).n_sg;
    for (const Tl2Isa& isa : tl2) {
      auto lut = alloc<int8_t>(n_sg * isa.lut_bytes_per_sg);
      std::vector<double> ts;
      for (int r = 0; r < 201; ++r) {
        const double t0 = now_s();
        isa.build(a.q.get(), k, n_sg, lut.get());
        ts.push_back(now_s() - t0);
      }
      std::printf("- K = %lld, %s: %.2f us (%lld table bytes)\n", (long long)k, isa.name,
                  median(ts) * 1e6, (long long)(n_sg * isa.lut_bytes_per_sg));
    }
  }
  std::printf(
      "\n## Per-shape kernels (weights stay in L2/L3 between calls; LUT timings include "
      "the table build)\n\n");
  std::printf(
      "| shape NxK  |    M | T | variant          | median us  |   min us   | w GB/s  | GMAC/s  | "
      "vs best |\n");
  std::printf(
      "|------------|------|---|------------------|------------|------------|---------|---------|--"
      "------|\n");
  for (const Shape& sh : shapes) {
    Matrix w = make_matrix(sh.n, sh.k, rng);
    const int64_t k256_bytes = w.n * w.nb * kK256Bytes, tl2_bytes = w.s.nbytes();
    for (int64_t M : {int64_t(1), int64_t(128)}) {
      if (quick && M == 128 && sh.n != 2560) continue;
      Acts a = make_acts(
          M, sh.k, [&](int64_t, int64_t) { return rng.i8(); }, false, rng);
      auto y = alloc<float>(M * sh.n);
      int64_t max_stride = 0;
      for (const Tl2Isa& isa : tl2)
        max_stride = std::max(max_stride, w.s.n_sg * isa.lut_bytes_per_sg);
      auto lut_all = alloc<int8_t>(M * max_stride);
      scratch.ensure(2, max_stride);
      std::vector<Variant> vs;
      for (Isa isa : {Isa::avx2, Isa::avx512, Isa::avx512_vnni}) {
        const CpuKernels* kt = table_for(isa);
        if (!kt) continue;
        const gemm_k256_fn fn = M == 1 ? kt->gemv : kt->gemm;
        vs.push_back({std::string("k256_") + kt->name, k256_bytes,
                      [&, fn](int th) { run_k256(fn, w, a, y.get(), th); }});
      }
      if (M == 1) {
        for (const K256Pf& v : k256_prefetch_variants())
          for (int64_t pf : g_k256_prefetch)
            vs.push_back({v.name + std::string("_pf") + std::to_string(pf), k256_bytes,
                          [&, v, pf](int th) { run_k256_prefetch(v.fn, w, a, y.get(), th, pf); }});
      }
      for (const Tl2Isa& isa : tl2) {
        if (M == 1) {
          for (int64_t pf : g_tl2_prefetch)
            vs.push_back({std::string(isa.name) + (pf ? "_pf" + std::to_string(pf) : ""), tl2_bytes,
                          [&, isa, pf](int th) {
                            run_tl2_gemv(isa, w, a, y.get(), th, scratch, true, pf);
                          }});
        } else
          vs.push_back({isa.name, tl2_bytes,
                        [&, isa](int th) { run_tl2_gemm(isa, w, a, y.get(), th, lut_all.get()); }});
      }
      for (int threads : {1, 2}) {
        set_num_threads(threads);
        const int r = M == 1 ? reps * 3 : reps;
        print_results(sh.name, M, threads,
                      time_variants(vs, threads, r, double(M) * double(sh.n) * double(sh.k)));
      }
    }
  }
}

// One decode token over `layers` layers of 2B4T (q, k, v, o, gate, up, down): every matrix is
// a distinct allocation (the packed bytes of 7 random matrices copied per layer), 521 MB at
// 2 bits for 30 layers. LUT tables are built once per distinct input (q/k/v share one, gate/up
// another), as an integration would; every thread builds its own copy.
void bench_decode(int layers, int reps) {
  Rng rng(4242);
  struct Proj {
    const char* name;
    int64_t n, k;
    int input;  // which activation vector (0: attn in, 1: o in, 2: ffn in, 3: down in)
  };
  const std::vector<Proj> projs = {
      {"q", 2560, 2560, 0},    {"k", 640, 2560, 0},   {"v", 640, 2560, 0},    {"o", 2560, 2560, 1},
      {"gate", 6912, 2560, 2}, {"up", 6912, 2560, 2}, {"down", 2560, 6912, 3}};
  std::vector<Matrix> proto;
  for (const Proj& p : projs) proto.push_back(make_matrix(p.n, p.k, rng));
  std::vector<Matrix> all;  // layers x 7
  int64_t k256_total = 0, tl2_total = 0;
  double macs = 0;
  for (int l = 0; l < layers; ++l) {
    for (size_t i = 0; i < projs.size(); ++i) {
      Matrix w;
      const Matrix& p = proto[i];
      w.n = p.n;
      w.k = p.k;
      w.nb = p.nb;
      w.s = p.s;
      const int64_t kb = p.n * p.nb * kK256Bytes, tb = p.s.nbytes();
      w.k256 = alloc<uint8_t>(kb);
      std::memcpy(w.k256.get(), p.k256.get(), size_t(kb));
      w.tl2 = alloc<uint8_t>(tb);
      std::memcpy(w.tl2.get(), p.tl2.get(), size_t(tb));
      k256_total += kb;
      tl2_total += tb;
      macs += double(p.n) * double(p.k);
      all.push_back(std::move(w));
    }
  }
  std::vector<Acts> inputs;
  for (int64_t k : {2560, 2560, 2560, 6912})
    inputs.push_back(make_acts(
        1, k, [&](int64_t, int64_t) { return rng.i8(); }, false, rng));
  auto y = alloc<float>(6912);
  const std::vector<Tl2Isa> tl2 = tl2_isas();
  // Per-thread tables per input kind: a separate scratch per input so q/k/v reuse theirs.
  std::vector<LutScratch> per_input(4);
  for (auto& s : per_input) s.ensure(2, tl2_shape(1, 6912).n_sg * kTl2Lut64Bytes);

  std::vector<Variant> vs;
  for (Isa isa : {Isa::avx2, Isa::avx512, Isa::avx512_vnni}) {
    const CpuKernels* kt = table_for(isa);
    if (!kt) continue;
    vs.push_back({std::string("k256_") + kt->name, k256_total, [&, kt](int th) {
                    for (size_t i = 0; i < all.size(); ++i)
                      run_k256(kt->gemv, all[i], inputs[size_t(projs[i % 7].input)], y.get(), th);
                  }});
  }
  for (const K256Pf& v : k256_prefetch_variants()) {
    for (int64_t pf : g_k256_prefetch) {
      vs.push_back(
          {v.name + std::string("_pf") + std::to_string(pf), k256_total, [&, v, pf](int th) {
             for (size_t i = 0; i < all.size(); ++i)
               run_k256_prefetch(v.fn, all[i], inputs[size_t(projs[i % 7].input)], y.get(), th, pf);
           }});
    }
  }
  for (const Tl2Isa& isa : tl2) {
    for (int64_t pf : g_tl2_prefetch) {
      vs.push_back({std::string(isa.name) + (pf ? "_pf" + std::to_string(pf) : ""), tl2_total,
                    [&, isa, pf](int th) {
                      for (size_t i = 0; i < all.size(); ++i) {
                        const size_t j = i % 7;
                        const bool fresh = j == 0 || j == 3 || j == 4 || j == 6;
                        run_tl2_gemv(isa, all[i], inputs[size_t(projs[j].input)], y.get(), th,
                                     per_input[size_t(projs[j].input)], fresh, pf);
                      }
                    }});
    }
  }
  std::printf("\n## Decode token: %d layers x 7 projections, M = 1 (K256 %.0f MB, TL2 %.0f MB)\n\n",
              layers, k256_total / 1e6, tl2_total / 1e6);
  std::printf(
      "| set        |    M | T | variant          | median us  |   min us   | w GB/s  | GMAC/s  | "
      "vs best |\n");
  std::printf(
      "|------------|------|---|------------------|------------|------------|---------|---------|--"
      "------|\n");
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    const double bw = measure_read_bandwidth(512ll << 20, threads, 3);
    print_results("decode", 1, threads, time_variants(vs, threads, reps, macs));
    std::printf(
        "|   (streaming read of 512 MB on %d thread(s): %.2f GB/s -> roofline %.0f us at 2 bits, "
        "%.0f us at 1.67 bits) |\n",
        threads, bw, k256_total / bw * 1e-3, tl2_total / bw * 1e-3);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool verify_only = false, decode = true, quick = false, shapes = true;
  int reps = 9, layers = 30;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--verify-only")
      verify_only = true;
    else if (a == "--decode-only")
      shapes = false;
    else if (a == "--no-decode")
      decode = false;
    else if (a == "--quick")
      quick = true;
    else if (a == "--reps" && i + 1 < argc)
      reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--layers" && i + 1 < argc)
      layers = std::max(1, std::atoi(argv[++i]));
    else if (a == "--prefetch-k256" && i + 1 < argc)
      g_k256_prefetch = parse_list(argv[++i]);
    else if (a == "--prefetch-tl2" && i + 1 < argc)
      g_tl2_prefetch = parse_list(argv[++i]);
    else {
      std::fprintf(stderr,
                   "usage: %s [--verify-only] [--no-decode] [--decode-only] [--quick] [--reps N] "
                   "[--layers L] [--prefetch-k256 D,..] [--prefetch-tl2 D,..]\n",
                   argv[0]);
      return 2;
    }
  }
  if (quick) reps = std::min(reps, 5);
  std::printf("lut_experiment: K256 tables:");
  for (Isa isa : {Isa::ref, Isa::avx2, Isa::avx512, Isa::avx512_vnni})
    if (table_for(isa)) std::printf(" %s", isa_name(isa));
  std::printf("; physical cores %d\n", physical_core_count());
  const int rc = run_verification(quick);
  if (rc != 0) {
    std::printf("FAILED: the LUT kernels are not exact\n");
    return rc;
  }
  if (verify_only) return 0;
  std::printf("load average before benchmarks: %s\n", loadavg().c_str());
  if (shapes) bench_shapes(reps, quick);
  if (decode) bench_decode(layers, std::max(3, reps / 2));
  std::printf("\nload average after benchmarks: %s\n", loadavg().c_str());
  return 0;
}

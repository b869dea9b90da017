// Google Benchmark of the ternary x int8 kernels at the BitNet b1.58 2B4T shapes.
//
// Build and run (see docs/performance.md):
//   cmake -S . -B build/gbench -G Ninja -DBITNET_BUILD_BENCHMARKS=ON -DCMAKE_BUILD_TYPE=Release
//   ninja -C build/gbench && build/gbench/benchmarks/cpp/bench_kernels --benchmark_filter=GEMV
//
// Benchmarks (filter with --benchmark_filter=REGEX; the probes run first so the ratios below
// reuse their values, otherwise they are measured on first use):
//   Probe/read_bandwidth/threads:T       streaming read bandwidth, bitnet::measure_read_bandwidth
//                                        over max(1 GiB, 2 x L3) bytes (counter GB/s)
//   Probe/int8_peak/<isa>/threads:T      int8 multiply-add peak of the ISA, measure_int8_peak
//                                        (counter GMAC/s)
//   GEMV/<isa>/N/K/M:1/threads:T         bitnet::bitlinear_quantized (pre-quantized activations)
//   GEMM/<isa>/N/K/M:128/threads:T       the same with 128 activation rows (prefill)
//   Decode30/<isa>/threads:T             one decode step: a GEMV through every matrix of all 30
//                                        layers (q k v o gate up down), in layer order, ~521 MB
//   Bitlinear/<isa>/N/K/M/threads:T      bitnet::bitlinear end to end (fp32 x, quantization
//                                        included), best ISA only
// <isa> is every entry of bitnet::kernels::table_for() that this CPU runs; each benchmark forces
// its ISA with setenv("BITNET_MAX_ISA") + bitnet::kernels::reload(), and its thread count with
// bitnet::set_num_threads. Shapes N x K: 2560x2560 (q, o), 640x2560 (k, v), 6912x2560 (gate, up),
// 2560x6912 (down). Weights are random ternary codes generated directly in the kernel layout.
//
// Counters (over wall-clock time, UseRealTime; the percentages are plain numbers):
//   W_B/s         weight bytes per second, kernel layout N*K/4 bytes per product (1e9 = G)
//   MAC/s         int8 multiply-adds M*N*K per second
//   pct_bw        W_B/s as % of the measured read bandwidth at the same thread count
//   pct_peak      MAC/s as % of the measured int8 peak of the best ISA (the machine's), same
//                 thread count; pct_peak_isa: of the peak of the ISA that ran
//   others        CPUs kept busy by other processes during the measurement (0 on an idle
//                 machine; -1 if /proc/stat is unavailable)
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "bitnet/bitlinear.h"
#include "bitnet/common.h"
#include "bitnet/formats.h"
#include "bitnet/packed_weights.h"
#include "bitnet/probe.h"
#include "bitnet/quant.h"
#include "bitnet/threadpool.h"
#include "kernels.h"

namespace {

using bitnet::KernelWeights;
using bitnet::PackedWeights;
using bitnet::kernels::Isa;

constexpr int64_t kPrefillM = 128;
constexpr int kLayers = 30;
constexpr int kThreads[] = {1, 2};
constexpr int kProbeRepeats = 5;
constexpr double kPeakSeconds = 0.2;

struct Matrix {
  const char* name;
  int64_t n, k;
};
// One 2B4T layer's BitLinear matrices in decode order.
constexpr Matrix kLayer[] = {{"q", 2560, 2560},   {"k", 640, 2560},     {"v", 640, 2560},
                             {"o", 2560, 2560},   {"gate", 6912, 2560}, {"up", 6912, 2560},
                             {"down", 2560, 6912}};
// The distinct shapes (N, K).
constexpr int64_t kShapes[][2] = {{2560, 2560}, {640, 2560}, {6912, 2560}, {2560, 6912}};

// ------------------------------------------------------------------------------ ISAs

std::vector<Isa> available_isas() {
  std::vector<Isa> out;
  for (int i = 0; i <= int(Isa::neon_dotprod); ++i)
    if (bitnet::kernels::table_for(Isa(i))) out.push_back(Isa(i));
  return out;
}

Isa best_isa() { return available_isas().back(); }

// Makes `isa` the active kernel table; false if the dispatcher picked another.
bool use_isa(Isa isa) {
  setenv("BITNET_MAX_ISA", bitnet::kernels::isa_name(isa), 1);
  return bitnet::kernels::reload().isa == isa;
}

// ------------------------------------------------------------------------------ data

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Random ternary weights [n, k] generated directly in the K256 layout (kernels.h) and wrapped
// with PackedWeights::view (format native); the kernel layout is prepared. Every 2-bit code 3
// is remapped to 1 (t = 0): P(t = 0) = 1/2, P(t = +-1) = 1/4. Padding values get code 1.
std::shared_ptr<PackedWeights> random_weights(int64_t n, int64_t k, uint64_t seed) {
  const int64_t nb = bitnet::ceil_div(k, 256);
  const int64_t nbytes = n * nb * 64;
  void* raw = std::aligned_alloc(64, size_t(bitnet::round_up(nbytes, 64)));
  if (!raw) throw std::bad_alloc();
  std::shared_ptr<uint8_t> buf(static_cast<uint8_t*>(raw), [](uint8_t* p) { std::free(p); });
  uint64_t s = seed;
  for (int64_t i = 0; i < nbytes; i += 8) {
    uint64_t x = splitmix64(s);
    x ^= ((x >> 1) & x & 0x5555555555555555ull) << 1;  // 0b11 -> 0b01 in every 2-bit field
    std::memcpy(buf.get() + i, &x, size_t(std::min<int64_t>(8, nbytes - i)));
  }
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = k - (nb - 1) * 256; j < 256; ++j) {
      uint8_t& b = buf.get()[(r * nb + nb - 1) * 64 + j % 64];
      const int sh = int(2 * (j / 64));
      b = uint8_t((b & ~(3 << sh)) | (1 << sh));
    }
  auto p = PackedWeights::view(bitnet::Format::native, n, k, buf.get(), nbytes, buf, 0.02f);
  p->kernel();
  return p;
}

// 64-byte aligned storage, so activation rows start on a cache line whatever malloc returns.
template <typename T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <typename U>
  Aligned64(const Aligned64<U>&) {}
  T* allocate(size_t n) {
    void* p = std::aligned_alloc(64, size_t(bitnet::round_up(int64_t(n * sizeof(T)), 64)));
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <typename U>
  bool operator==(const Aligned64<U>&) const {
    return true;
  }
  template <typename U>
  bool operator!=(const Aligned64<U>&) const {
    return false;
  }
};

// Pre-quantized activations [m, kp] from standard-normal fp32 rows (64-byte aligned).
struct Activations {
  int64_t m = 0, k = 0, kp = 0;
  std::vector<float, Aligned64<float>> x;
  std::vector<int8_t, Aligned64<int8_t>> q;
  std::vector<float> s_x;
  std::vector<int32_t> q_sum;
};

Activations random_activations(int64_t m, int64_t k, uint32_t seed) {
  Activations a;
  a.m = m;
  a.k = k;
  a.kp = bitnet::round_up(k, 256);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  a.x.resize(size_t(m * k));
  for (float& v : a.x) v = nd(rng);
  a.q.resize(size_t(m * a.kp));
  a.s_x.resize(size_t(m));
  a.q_sum.resize(size_t(m));
  bitnet::quantize_activations(a.x.data(), m, k, a.q.data(), a.kp, a.s_x.data(), a.q_sum.data());
  return a;
}

// Lazily built, cached by shape. Benchmarks run one at a time on the main thread.
const PackedWeights& weights(int64_t n, int64_t k) {
  static std::map<std::pair<int64_t, int64_t>, std::shared_ptr<PackedWeights>> cache;
  auto& p = cache[{n, k}];
  if (!p) p = random_weights(n, k, uint64_t(n) * 1000003u + uint64_t(k));
  return *p;
}

const Activations& activations(int64_t m, int64_t k) {
  static std::map<std::pair<int64_t, int64_t>, Activations> cache;
  auto it = cache.find({m, k});
  if (it == cache.end())
    it = cache.emplace(std::make_pair(m, k), random_activations(m, k, uint32_t(m * 7 + k))).first;
  return it->second;
}

// All 30 layers, each matrix with its own random weights (~521 MB in the kernel layout, plus
// the same again for the packed source bytes the views keep alive).
struct DecodeSet {
  std::vector<std::shared_ptr<PackedWeights>> mats;  // layer-major, kLayer order
  double bytes = 0, macs = 0;
};

const DecodeSet& decode_set() {
  static const DecodeSet set = [] {
    DecodeSet s;
    uint64_t seed = 12345;
    for (int l = 0; l < kLayers; ++l)
      for (const Matrix& m : kLayer) {
        s.mats.push_back(random_weights(m.n, m.k, seed++));
        s.bytes += double(m.n) * double(m.k) / 4;
        s.macs += double(m.n) * double(m.k);
      }
    return s;
  }();
  return set;
}

// ------------------------------------------------------------------------------ probes

int64_t bandwidth_bytes() {
  int64_t bytes = int64_t(1) << 30;
#ifdef _SC_LEVEL3_CACHE_SIZE
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (l3 > 0) bytes = std::max<int64_t>(bytes, 2 * int64_t(l3));
#endif
  return bytes;
}

// Read bandwidth in GB/s at `threads` threads, with the best ISA's read kernel (a machine
// property); cached unless `fresh`.
double bandwidth(int threads, bool fresh = false) {
  static std::map<int, double> cache;
  auto it = cache.find(threads);
  if (it != cache.end() && !fresh) return it->second;
  const Isa prev = bitnet::kernels::active().isa;
  use_isa(best_isa());
  const double v = bitnet::measure_read_bandwidth(bandwidth_bytes(), threads, kProbeRepeats);
  use_isa(prev);
  return cache[threads] = v;
}

// int8 multiply-add peak in GMAC/s of `isa` at `threads` threads; cached unless `fresh`.
double peak(Isa isa, int threads, bool fresh = false) {
  static std::map<std::pair<int, int>, double> cache;
  const std::pair<int, int> key{int(isa), threads};
  auto it = cache.find(key);
  if (it != cache.end() && !fresh) return it->second;
  const Isa prev = bitnet::kernels::active().isa;
  use_isa(isa);
  const double v = bitnet::measure_int8_peak(threads, kPeakSeconds, kProbeRepeats);
  use_isa(prev);
  return cache[key] = v;
}

struct Limits {
  double bw, peak, peak_isa;  // GB/s, GMAC/s, GMAC/s
};

Limits limits(Isa isa, int threads) {
  return {bandwidth(threads), peak(best_isa(), threads), peak(isa, threads)};
}

// Steady-clock seconds. The timed loops are also timed with it (their own start/stop cost is
// negligible next to one product), so the ratio counters can be plain percentages.
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU-seconds all CPUs spent busy since boot (/proc/stat, steal included); -1 if unknown.
double system_busy_seconds() {
  FILE* f = std::fopen("/proc/stat", "r");
  if (!f) return -1;
  unsigned long long v[8] = {};
  const int got = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                              &v[3], &v[4], &v[5], &v[6], &v[7]);
  std::fclose(f);
  if (got < 5) return -1;
  unsigned long long busy = 0;
  for (int i = 0; i < 8; ++i)
    if (i != 3 && i != 4) busy += v[i];  // all but idle and iowait
  return double(busy) / double(sysconf(_SC_CLK_TCK));
}

double own_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);  // this process, all threads
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         1e-6 * double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

// Wall clock and CPU use around a timed loop. others(): the average number of CPUs kept busy by
// anything but this process (other processes, hypervisor steal) meanwhile; a value well above 0
// means the measurement (2-thread ones above all) was disturbed.
struct Watch {
  double t0 = now_s(), busy0 = system_busy_seconds(), own0 = own_cpu_seconds();
  double seconds() const { return now_s() - t0; }
  double others() const {
    const double wall = seconds(), busy = system_busy_seconds();
    if (busy < 0 || busy0 < 0 || wall <= 0) return -1;
    return std::max(0.0, (busy - busy0) - (own_cpu_seconds() - own0)) / wall;
  }
};

// Counters for `bytes` weight bytes and `macs` multiply-adds per iteration of the loop `watch`
// timed.
void report(benchmark::State& st, double bytes, double macs, const Watch& watch,
            const Limits& lim) {
  using C = benchmark::Counter;
  const double it = double(st.iterations()), secs = watch.seconds();
  st.counters["others"] = watch.others();
  st.counters["W_B/s"] = C(bytes * it, C::kIsRate);
  st.counters["MAC/s"] = C(macs * it, C::kIsRate);
  if (secs <= 0 || it == 0) return;
  st.counters["pct_bw"] = 100.0 * bytes * it / secs / (lim.bw * 1e9);
  st.counters["pct_peak"] = 100.0 * macs * it / secs / (lim.peak * 1e9);
  st.counters["pct_peak_isa"] = 100.0 * macs * it / secs / (lim.peak_isa * 1e9);
}

// ------------------------------------------------------------------------------ benchmarks

void BM_ReadBandwidth(benchmark::State& st) {
  const int threads = int(st.range(0));
  double v = 0;
  const Watch watch;
  for (auto _ : st) v = bandwidth(threads, /*fresh=*/true);
  st.counters["GB/s"] = v;
  st.counters["others"] = watch.others();
  st.counters["buffer_MiB"] = double(bandwidth_bytes()) / double(1 << 20);
}

void BM_Int8Peak(benchmark::State& st, Isa isa) {
  const int threads = int(st.range(0));
  double v = 0;
  const Watch watch;
  for (auto _ : st) v = peak(isa, threads, /*fresh=*/true);
  st.counters["GMAC/s"] = v;
  st.counters["others"] = watch.others();
}

// GEMV (M = 1) or GEMM (M > 1) through bitlinear_quantized on one cached matrix.
void BM_Product(benchmark::State& st, Isa isa) {
  const int64_t n = st.range(0), k = st.range(1), m = st.range(2);
  const int threads = int(st.range(3));
  const Limits lim = limits(isa, threads);
  if (!use_isa(isa)) {
    st.SkipWithError("ISA not available");
    return;
  }
  bitnet::set_num_threads(threads);
  const KernelWeights& w = weights(n, k).kernel();
  const Activations& a = activations(m, k);
  std::vector<float> y(size_t(m * n));
  const Watch watch;
  for (auto _ : st) {
    bitnet::bitlinear_quantized(a.q.data(), a.s_x.data(), a.q_sum.data(), m, w, y.data(), n);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  report(st, double(n) * double(k) / 4, double(m) * double(n) * double(k), watch, lim);
}

// One decode step over the 30-layer set: 210 GEMVs in layer order.
void BM_Decode(benchmark::State& st, Isa isa) {
  const int threads = int(st.range(0));
  const Limits lim = limits(isa, threads);
  if (!use_isa(isa)) {
    st.SkipWithError("ISA not available");
    return;
  }
  bitnet::set_num_threads(threads);
  const DecodeSet& set = decode_set();
  struct Call {
    const KernelWeights* w;
    const Activations* a;
    float* y;
  };
  std::map<int64_t, std::vector<float>> ys;
  std::vector<Call> calls;
  for (const auto& p : set.mats) {
    auto& y = ys[p->rows()];
    y.resize(size_t(p->rows()));
    calls.push_back({&p->kernel(), &activations(1, p->cols()), nullptr});
  }
  for (size_t i = 0; i < calls.size(); ++i) calls[i].y = ys[set.mats[i]->rows()].data();
  const Watch watch;
  for (auto _ : st) {
    for (const Call& c : calls)
      bitnet::bitlinear_quantized(c.a->q.data(), c.a->s_x.data(), c.a->q_sum.data(), 1, *c.w, c.y,
                                  c.w->rows);
    benchmark::ClobberMemory();
  }
  report(st, set.bytes, set.macs, watch, lim);
  st.counters["tok/s"] = benchmark::Counter(double(st.iterations()), benchmark::Counter::kIsRate);
}

// bitnet::bitlinear end to end: fp32 activations quantized on every call.
void BM_Bitlinear(benchmark::State& st, Isa isa) {
  const int64_t n = st.range(0), k = st.range(1), m = st.range(2);
  const int threads = int(st.range(3));
  const Limits lim = limits(isa, threads);
  if (!use_isa(isa)) {
    st.SkipWithError("ISA not available");
    return;
  }
  bitnet::set_num_threads(threads);
  const PackedWeights& w = weights(n, k);
  const Activations& a = activations(m, k);
  std::vector<float> y(size_t(m * n));
  const Watch watch;
  for (auto _ : st) {
    bitnet::bitlinear(a.x.data(), m, k, w, y.data(), n);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  report(st, double(n) * double(k) / 4, double(m) * double(n) * double(k), watch, lim);
}

void register_all() {
  const std::vector<Isa> isas = available_isas();
  const Isa best = best_isa();
  for (int t : kThreads)
    benchmark::RegisterBenchmark("Probe/read_bandwidth", BM_ReadBandwidth)
        ->ArgName("threads")
        ->Arg(t)
        ->Iterations(1)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  for (Isa isa : isas)
    for (int t : kThreads)
      benchmark::RegisterBenchmark(
          (std::string("Probe/int8_peak/") + bitnet::kernels::isa_name(isa)).c_str(), BM_Int8Peak,
          isa)
          ->ArgName("threads")
          ->Arg(t)
          ->Iterations(1)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
  for (const char* op : {"GEMV", "GEMM"}) {
    const int64_t m = std::strcmp(op, "GEMV") == 0 ? 1 : kPrefillM;
    for (Isa isa : isas) {
      auto* b = benchmark::RegisterBenchmark(
          (std::string(op) + "/" + bitnet::kernels::isa_name(isa)).c_str(), BM_Product, isa);
      b->ArgNames({"N", "K", "M", "threads"})
          ->UseRealTime()
          ->Unit(m == 1 ? benchmark::kMicrosecond : benchmark::kMillisecond);
      for (const auto& s : kShapes)
        for (int t : kThreads) b->Args({s[0], s[1], m, t});
    }
  }
  for (Isa isa : isas)
    benchmark::RegisterBenchmark(
        (std::string("Decode30/") + bitnet::kernels::isa_name(isa)).c_str(), BM_Decode, isa)
        ->ArgName("threads")
        ->Arg(1)
        ->Arg(2)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  auto* b = benchmark::RegisterBenchmark(
      (std::string("Bitlinear/") + bitnet::kernels::isa_name(best)).c_str(), BM_Bitlinear, best);
  b->ArgNames({"N", "K", "M", "threads"})->UseRealTime()->Unit(benchmark::kMicrosecond);
  for (int64_t n : {2560, 6912})
    for (int64_t m : {int64_t(1), kPrefillM})
      for (int t : kThreads) b->Args({n, 2560, m, t});
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  std::string names;
  for (Isa isa : available_isas())
    names += std::string(names.empty() ? "" : " ") + bitnet::kernels::isa_name(isa);
  benchmark::AddCustomContext("bitnet_isas", names);
  benchmark::AddCustomContext("bitnet_bandwidth_buffer_MiB",
                              std::to_string(bandwidth_bytes() >> 20));
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

#include "bitnet/probe.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "bitnet/common.h"
#include "bitnet/memory.h"
#include "bitnet/threadpool.h"
#include "kernels.h"

namespace bitnet {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Runs fn on exactly `threads` pool threads (growing the pool for the duration if needed).
template <typename Fn>
void on_threads(int threads, Fn&& fn) {
  const int saved = get_num_threads();
  if (saved < threads) set_num_threads(threads);
  try {
    parallel_for(threads, [&](int64_t t, int) { fn(int(t)); });
  } catch (...) {
    if (saved < threads) set_num_threads(saved);
    throw;
  }
  if (saved < threads) set_num_threads(saved);
}

std::atomic<uint64_t> g_sink{0};

}  // namespace

double measure_read_bandwidth(int64_t bytes, int threads, int repeats) {
  check_arg(threads >= 1 && repeats >= 1,
            "measure_read_bandwidth: threads and repeats must be >= 1");
  const int64_t part = round_up(std::max<int64_t>(bytes / threads, 4096), 4096);
  const int64_t total = part * threads;
  // Same allocator (and page size) as the repacked weights, so the two are comparable.
  std::shared_ptr<uint8_t> buf = alloc_buffer(total);
  const kernels::CpuKernels& kern = kernels::active();
  on_threads(threads, [&](int t) { std::memset(buf.get() + t * part, t + 1, size_t(part)); });
  std::vector<double> rates;
  for (int r = 0; r < repeats + 1; ++r) {
    const double t0 = now_s();
    on_threads(threads, [&](int t) {
      g_sink.fetch_add(kern.read_bytes(buf.get() + t * part, size_t(part)),
                       std::memory_order_relaxed);
    });
    const double dt = now_s() - t0;
    if (r > 0) rates.push_back(double(total) / dt / 1e9);  // the first run warms up
  }
  return median(rates);
}

double measure_int8_peak(int threads, double seconds, int repeats) {
  check_arg(threads >= 1 && repeats >= 1, "measure_int8_peak: threads and repeats must be >= 1");
  const kernels::CpuKernels& kern = kernels::active();
  int64_t macs = 0;
  // Calibrate the iteration count on one thread.
  int64_t iters = 1 << 12;
  for (;;) {
    const double t0 = now_s();
    g_sink.fetch_add(uint64_t(kern.int8_peak(iters, &macs)), std::memory_order_relaxed);
    const double dt = now_s() - t0;
    if (dt > 0.02 || iters > (int64_t(1) << 40)) {
      iters = std::max<int64_t>(1, int64_t(double(iters) * seconds / std::max(dt, 1e-9)));
      break;
    }
    iters *= 4;
  }
  std::vector<double> rates;
  for (int r = 0; r < repeats; ++r) {
    const double t0 = now_s();
    on_threads(threads, [&](int) {
      int64_t m = 0;
      g_sink.fetch_add(uint64_t(kern.int8_peak(iters, &m)), std::memory_order_relaxed);
    });
    const double dt = now_s() - t0;
    rates.push_back(double(threads) * double(iters) * double(macs) / dt / 1e9);
  }
  return median(rates);
}

}  // namespace bitnet

// Benchmark probes of bitnet/cuda.h (timed with CUDA events).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <vector>

#include "bitnet/cuda.h"
#include "gemm_w2a8.cuh"
#include "gemv_w2a8.cuh"
#include "w2_layout.cuh"

namespace bitnet::cuda {

namespace {

void require() {
  if (!available()) throw std::runtime_error("CUDA is not available: " + unavailable_reason());
}

// RAII pair of events.
struct Events {
  cudaEvent_t a = nullptr, b = nullptr;
  Events() {
    BITNET_CUDA_CHECK(cudaEventCreate(&a));
    BITNET_CUDA_CHECK(cudaEventCreate(&b));
  }
  ~Events() {
    (void)cudaEventDestroy(a);
    (void)cudaEventDestroy(b);
  }
  double elapsed_us() const {
    float ms = 0.0f;
    BITNET_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    return double(ms) * 1e3;
  }
};

}  // namespace

std::vector<double> time_w2a8(int64_t M, int64_t N, int64_t K, bool gemm, int iters) {
  require();
  if (M < 1 || N < 1 || K < 1 || iters < 1)
    throw std::invalid_argument("time_w2a8: M, N, K and iters must be >= 1");
  const int64_t words = w2g_row_words(K), kp = w2g_kpad(K);
  std::mt19937 gen(1234);
  std::vector<int8_t> t(static_cast<size_t>(N * K));
  for (auto& v : t) v = static_cast<int8_t>(int(gen() % 3) - 1);
  std::vector<uint32_t> w(static_cast<size_t>(N * words));
  w2g_from_ternary(t.data(), N, K, w.data());
  std::vector<int8_t> q(static_cast<size_t>(M * kp), 0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k)
      q[size_t(m * kp + k)] = static_cast<int8_t>(int(gen() % 255) - 127);
  std::vector<float> s(static_cast<size_t>(M), 1.0f);
  std::vector<int32_t> qs(static_cast<size_t>(M), 0);
  DeviceBuffer dw(w.size() * 4), dq(q.size()), ds(s.size() * 4), dqs(qs.size() * 4),
      dy(static_cast<size_t>(M * N) * 4);
  dw.upload(w.data(), dw.size());
  dq.upload(q.data(), dq.size());
  ds.upload(s.data(), ds.size());
  dqs.upload(qs.data(), dqs.size());
  auto launch = [&] {
    if (gemm)
      launch_gemm_w2a8(dw.as<uint32_t>(), N, K, dq.as<int8_t>(), ds.as<float>(), M, 1.0f,
                       dy.as<float>(), N, nullptr);
    else
      launch_gemv_w2a8(dw.as<uint32_t>(), N, K, dq.as<int8_t>(), ds.as<float>(), dqs.as<int32_t>(),
                       M, 1.0f, dy.as<float>(), N, nullptr);
  };
  for (int i = 0; i < 3; ++i) launch();
  synchronize();
  std::vector<double> us;
  us.reserve(static_cast<size_t>(iters));
  Events ev;
  for (int i = 0; i < iters; ++i) {
    BITNET_CUDA_CHECK(cudaEventRecord(ev.a));
    launch();
    BITNET_CUDA_CHECK(cudaEventRecord(ev.b));
    BITNET_CUDA_CHECK(cudaEventSynchronize(ev.b));
    us.push_back(ev.elapsed_us());
  }
  return us;
}

double device_copy_bandwidth(int64_t bytes, int iters) {
  require();
  if (bytes < 1 || iters < 1)
    throw std::invalid_argument("device_copy_bandwidth: bytes and iters must be >= 1");
  DeviceBuffer a(static_cast<size_t>(bytes)), b(static_cast<size_t>(bytes));
  a.fill(1);
  BITNET_CUDA_CHECK(cudaMemcpy(b.data(), a.data(), size_t(bytes), cudaMemcpyDeviceToDevice));
  synchronize();
  std::vector<double> us;
  Events ev;
  for (int i = 0; i < iters; ++i) {
    BITNET_CUDA_CHECK(cudaEventRecord(ev.a));
    BITNET_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), size_t(bytes), cudaMemcpyDeviceToDevice));
    BITNET_CUDA_CHECK(cudaEventRecord(ev.b));
    BITNET_CUDA_CHECK(cudaEventSynchronize(ev.b));
    us.push_back(ev.elapsed_us());
  }
  std::sort(us.begin(), us.end());
  const double med = us[us.size() / 2];
  return 2.0 * double(bytes) / (med * 1e-6) / 1e9;
}

}  // namespace bitnet::cuda

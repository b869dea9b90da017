// The CUDA runtime layer of bitnet-ext (docs/cuda.md): device discovery that never aborts, an
// error-checking macro, and an RAII device buffer. Compiled only when the build has CUDA
// (BITNET_HAVE_CUDA, CMake option BITNET_CUDA); this header itself includes no CUDA header, so
// plain C++ translation units (the Python bindings) can use it. The CUDA runtime is linked
// statically: a machine without a driver still loads the module, and available() then returns
// false with the reason instead of failing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

// cudaStream_t is `struct CUstream_st*` in the CUDA runtime; declared here so that launchers can
// take a stream without including cuda_runtime.h. nullptr is the legacy default stream.
struct CUstream_st;

namespace bitnet::cuda {

using Stream = CUstream_st*;

// True when the CUDA runtime finds a driver and at least one device. Probed once (thread-safe)
// with cudaGetDeviceCount; never throws or aborts.
bool available();
// Why available() is false: "no CUDA driver or device: <cudaGetErrorString>" or "no CUDA device
// found"; empty when available.
std::string unavailable_reason();

struct DeviceInfo {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;  // compute capability
  int sm_count = 0;
  int64_t total_memory = 0;         // bytes
  int64_t shared_memory_optin = 0;  // max dynamic shared memory per block (bytes, opt-in)
};
// Properties of device `index` (the current device is 0 unless changed). Throws
// std::runtime_error when CUDA is unavailable.
DeviceInfo device_info(int index = 0);

// Throws std::runtime_error("<call> failed: <cudaGetErrorString(code)> (cudaError <code>) at
// <file>:<line>"). `code` is a cudaError_t.
[[noreturn]] void throw_error(int code, const char* call, const char* file, int line);

inline void check_status(int code, const char* call, const char* file, int line) {
  if (code != 0) throw_error(code, call, file, line);
}

// Waits for all work on the current device; throws on an asynchronous error (a kernel fault).
void synchronize();

// Device memory owned by one object (cudaMalloc / cudaFree), move-only. Size 0 holds nullptr.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t size() const { return bytes_; }

  // Synchronous copies (cudaMemcpy) of `bytes` <= size() bytes; throw std::invalid_argument when
  // bytes > size().
  void upload(const void* src, size_t bytes);
  void download(void* dst, size_t bytes) const;
  // cudaMemset of the whole buffer to `byte`.
  void fill(int byte);

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace bitnet::cuda

// Checks a CUDA runtime call: BITNET_CUDA_CHECK(cudaMalloc(&p, n)); throws std::runtime_error
// naming the call, file and line.
#define BITNET_CUDA_CHECK(call) \
  ::bitnet::cuda::check_status(static_cast<int>(call), #call, __FILE__, __LINE__)

namespace bitnet::cuda {

// ---- benchmark probes (benchmarks/cuda) -------------------------------------------------------
// Times `iters` launches of the W2A8 kernel on random data (weights [N, K] in W2G, int8
// activations [M, Kp]) with CUDA events, one event pair per launch, after 3 warm-up launches.
// gemm == false: launch_gemv_w2a8, else launch_gemm_w2a8. Returns the per-launch times in
// microseconds. Throws std::runtime_error when CUDA is unavailable.
std::vector<double> time_w2a8(int64_t M, int64_t N, int64_t K, bool gemm, int iters);
// Device-to-device cudaMemcpy bandwidth over a `bytes` buffer: the median of `iters` copies, in
// GB/s counting bytes read + bytes written (2 * bytes per copy).
double device_copy_bandwidth(int64_t bytes, int iters);

}  // namespace bitnet::cuda

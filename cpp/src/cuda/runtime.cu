// bitnet/cuda.h: device discovery, errors, device buffers.
#include <cuda_runtime.h>

#include <mutex>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "bitnet/cuda.h"

namespace bitnet::cuda {

namespace {

struct Probe {
  bool ok = false;
  std::string reason;
};

const Probe& probe() {
  static Probe p;
  static std::once_flag once;
  std::call_once(once, [] {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      p.reason = std::string("no CUDA driver or device: ") + cudaGetErrorString(err);
      (void)cudaGetLastError();  // clear the sticky-free error state for later calls
    } else if (n < 1) {
      p.reason = "no CUDA device found";
    } else {
      p.ok = true;
    }
  });
  return p;
}

}  // namespace

bool available() { return probe().ok; }

std::string unavailable_reason() { return probe().reason; }

void throw_error(int code, const char* call, const char* file, int line) {
  std::ostringstream s;
  s << call << " failed: " << cudaGetErrorString(static_cast<cudaError_t>(code)) << " (cudaError "
    << code << ") at " << file << ":" << line;
  throw std::runtime_error(s.str());
}

DeviceInfo device_info(int index) {
  if (!available()) throw std::runtime_error("CUDA is not available: " + unavailable_reason());
  cudaDeviceProp prop{};
  BITNET_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  DeviceInfo d;
  d.index = index;
  d.name = prop.name;
  d.cc_major = prop.major;
  d.cc_minor = prop.minor;
  d.sm_count = prop.multiProcessorCount;
  d.total_memory = static_cast<int64_t>(prop.totalGlobalMem);
  d.shared_memory_optin = static_cast<int64_t>(prop.sharedMemPerBlockOptin);
  return d;
}

void synchronize() { BITNET_CUDA_CHECK(cudaDeviceSynchronize()); }

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes > 0) BITNET_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) (void)cudaFree(ptr_);  // never throws from a destructor
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) (void)cudaFree(ptr_);
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

void DeviceBuffer::upload(const void* src, size_t bytes) {
  if (bytes > bytes_)
    throw std::invalid_argument("DeviceBuffer::upload: " + std::to_string(bytes) +
                                " bytes into a buffer of " + std::to_string(bytes_));
  if (bytes > 0) BITNET_CUDA_CHECK(cudaMemcpy(ptr_, src, bytes, cudaMemcpyHostToDevice));
}

void DeviceBuffer::download(void* dst, size_t bytes) const {
  if (bytes > bytes_)
    throw std::invalid_argument("DeviceBuffer::download: " + std::to_string(bytes) +
                                " bytes from a buffer of " + std::to_string(bytes_));
  if (bytes > 0) BITNET_CUDA_CHECK(cudaMemcpy(dst, ptr_, bytes, cudaMemcpyDeviceToHost));
}

void DeviceBuffer::fill(int byte) {
  if (bytes_ > 0) BITNET_CUDA_CHECK(cudaMemset(ptr_, byte, bytes_));
}

}  // namespace bitnet::cuda

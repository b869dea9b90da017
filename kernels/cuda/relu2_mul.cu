#include <stdexcept>
#include <string>

#include "device_util.cuh"
#include "relu2_mul.cuh"

namespace bitnet::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    relu2_mul_kernel(const float* g, int64_t ldg, const float* u, int64_t ldu, int64_t n, float* h,
                     int64_t ldh) {
  const int64_t m = blockIdx.y;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float gv = g[m * ldg + i];
    const float r = gv < 0.0f ? 0.0f : gv;
    h[m * ldh + i] = __fmul_rn(__fmul_rn(r, r), u[m * ldu + i]);
  }
}

}  // namespace

void launch_relu2_mul(const float* g, int64_t ldg, const float* u, int64_t ldu, int64_t M,
                      int64_t n, float* h, int64_t ldh, Stream stream) {
  if (M <= 0 || n <= 0) return;
  if (M > 65535)
    throw std::invalid_argument("launch_relu2_mul: M = " + std::to_string(M) + " > 65535 rows");
  const unsigned bx = detail::ceil_div_u(n, kThreads);
  const dim3 grid(bx < 1024u ? bx : 1024u, static_cast<unsigned>(M));
  relu2_mul_kernel<<<grid, kThreads, 0, stream>>>(g, ldg, u, ldu, n, h, ldh);
  BITNET_CUDA_CHECK_LAUNCH();
}

}  // namespace bitnet::cuda

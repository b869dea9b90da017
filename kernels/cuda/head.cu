#include <cuda_fp16.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "device_util.cuh"
#include "head.cuh"

namespace bitnet::cuda {

namespace {

constexpr int kWarps = 8;  // rows per block

__global__ void __launch_bounds__(kWarps * 32)
    head_f16_kernel(const __half* __restrict__ w, int64_t rows, int64_t cols,
                    const float* __restrict__ x, float* __restrict__ y, int64_t ldy) {
  const int lane = threadIdx.x & 31;
  const int64_t r = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5), m = blockIdx.y;
  if (r >= rows) return;
  const __half* wr = w + r * cols;
  const float* xm = x + m * cols;
  float acc = 0.0f;
  if (cols % 8 == 0) {
    // 8 halves (16 bytes) per lane per step: a warp reads 512 contiguous bytes of the row.
    const uint4* w4 = reinterpret_cast<const uint4*>(wr);
    const float4* x4 = reinterpret_cast<const float4*>(xm);
    for (int64_t c = lane; c < cols / 8; c += 32) {
      const uint4 wv = __ldg(w4 + c);
      const float4 xa = __ldg(x4 + 2 * c), xb = __ldg(x4 + 2 * c + 1);
      __half2 h[4];
      std::memcpy(h, &wv, sizeof wv);
      const float2 f0 = __half22float2(h[0]), f1 = __half22float2(h[1]);
      const float2 f2 = __half22float2(h[2]), f3 = __half22float2(h[3]);
      acc += xa.x * f0.x + xa.y * f0.y + xa.z * f1.x + xa.w * f1.y;
      acc += xb.x * f2.x + xb.y * f2.y + xb.z * f3.x + xb.w * f3.y;
    }
  } else {
    for (int64_t c = lane; c < cols; c += 32) acc += xm[c] * __half2float(wr[c]);
  }
  acc = detail::warp_sum(acc);
  if (lane == 0) y[m * ldy + r] = acc;
}

// One warp per 32-value block: lane j holds value j.
__global__ void quantize_q8_0_kernel(const float* __restrict__ x, int64_t M, int64_t cols,
                                     int8_t* __restrict__ xq, float* __restrict__ xd,
                                     int32_t* bad_row) {
  const int lane = threadIdx.x & 31;
  const int64_t nb = cols / 32;
  const int64_t blk = int64_t(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
  if (blk >= M * nb) return;
  const int64_t m = blk / nb;
  const float v = x[blk * 32 + lane];
  const bool bad_value = __any_sync(detail::kFullMask, !isfinite(v));
  const float amax = detail::warp_max(fabsf(v));
  const float dd = __fdiv_rn(amax, 127.0f);
  const __half dh = __float2half_rn(dd);
  if (bad_value || __hisinf(dh) || __hisnan(dh)) {
    if (lane == 0 && bad_row) atomicMin(bad_row, static_cast<int32_t>(m));
    return;
  }
  const float id = dd != 0.0f ? __frcp_rn(dd) : 0.0f;
  float s = __fmul_rn(v, id);
  s = isnan(s) ? 0.0f : fminf(127.0f, fmaxf(-127.0f, s));
  xq[blk * 32 + lane] = static_cast<int8_t>(roundf(s));
  if (lane == 0) xd[blk] = __half2float(dh);
}

__global__ void __launch_bounds__(kWarps * 32)
    head_q8_0_kernel(const int8_t* __restrict__ wq, const float* __restrict__ wd, int64_t rows,
                     int64_t cols, const int8_t* __restrict__ xq, const float* __restrict__ xd,
                     float* __restrict__ y, int64_t ldy) {
  const int lane = threadIdx.x & 31;
  const int64_t r = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5), m = blockIdx.y;
  if (r >= rows) return;
  const int64_t nb = cols / 32;
  const int4* wr = reinterpret_cast<const int4*>(wq + r * cols);
  const int4* xr = reinterpret_cast<const int4*>(xq + m * cols);
  float acc = 0.0f;
  for (int64_t b = lane; b < nb; b += 32) {
    const int4 w0 = __ldg(wr + 2 * b), w1 = __ldg(wr + 2 * b + 1);
    const int4 x0 = __ldg(xr + 2 * b), x1 = __ldg(xr + 2 * b + 1);
    int dot = 0;  // |dot| <= 32 * 127 * 128 < 2^24: exact in int32 and in fp32
    dot = __dp4a(w0.x, x0.x, dot);
    dot = __dp4a(w0.y, x0.y, dot);
    dot = __dp4a(w0.z, x0.z, dot);
    dot = __dp4a(w0.w, x0.w, dot);
    dot = __dp4a(w1.x, x1.x, dot);
    dot = __dp4a(w1.y, x1.y, dot);
    dot = __dp4a(w1.z, x1.z, dot);
    dot = __dp4a(w1.w, x1.w, dot);
    acc += static_cast<float>(dot) * __fmul_rn(wd[r * nb + b], xd[m * nb + b]);
  }
  acc = detail::warp_sum(acc);
  if (lane == 0) y[m * ldy + r] = acc;
}

void check_m(const char* what, int64_t M) {
  if (M > 65535)
    throw std::invalid_argument(std::string(what) + ": M = " + std::to_string(M) +
                                " > 65535 rows (grid.y)");
}

}  // namespace

void launch_head_f16(const uint16_t* w, int64_t rows, int64_t cols, const float* x, int64_t M,
                     float* y, int64_t ldy, Stream stream) {
  if (M <= 0 || rows <= 0) return;
  check_m("launch_head_f16", M);
  const dim3 grid(detail::ceil_div_u(rows, kWarps), static_cast<unsigned>(M));
  head_f16_kernel<<<grid, kWarps * 32, 0, stream>>>(reinterpret_cast<const __half*>(w), rows, cols,
                                                    x, y, ldy);
  BITNET_CUDA_CHECK_LAUNCH();
}

void q8g_from_q8_0(const uint8_t* blocks, int64_t rows, int64_t cols, int8_t* qs, float* d) {
  if (rows < 1 || cols < 32 || cols % 32 != 0)
    throw std::invalid_argument("q8g_from_q8_0: bad shape [" + std::to_string(rows) + ", " +
                                std::to_string(cols) +
                                "] (cols must be a positive multiple of 32)");
  const int64_t nb = cols / 32;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = blocks + (r * nb + b) * 34;
      uint16_t bits;
      std::memcpy(&bits, blk, 2);
      if ((bits & 0x7c00u) == 0x7c00u)
        throw std::invalid_argument("q8g_from_q8_0: block " + std::to_string(b) + " of row " +
                                    std::to_string(r) + " has a non-finite scale");
      d[r * nb + b] = __half2float(__ushort_as_half(bits));
      std::memcpy(qs + r * cols + b * 32, blk + 2, 32);
    }
}

void launch_quantize_q8_0(const float* x, int64_t M, int64_t cols, int8_t* xq, float* xd,
                          int32_t* bad_row, Stream stream) {
  if (M <= 0 || cols <= 0) return;
  const int64_t blocks = M * (cols / 32);
  quantize_q8_0_kernel<<<detail::ceil_div_u(blocks, 8), 256, 0, stream>>>(x, M, cols, xq, xd,
                                                                          bad_row);
  BITNET_CUDA_CHECK_LAUNCH();
}

void launch_head_q8_0(const int8_t* w_qs, const float* w_d, int64_t rows, int64_t cols,
                      const int8_t* xq, const float* xd, int64_t M, float* y, int64_t ldy,
                      Stream stream) {
  if (M <= 0 || rows <= 0) return;
  check_m("launch_head_q8_0", M);
  const dim3 grid(detail::ceil_div_u(rows, kWarps), static_cast<unsigned>(M));
  head_q8_0_kernel<<<grid, kWarps * 32, 0, stream>>>(w_qs, w_d, rows, cols, xq, xd, y, ldy);
  BITNET_CUDA_CHECK_LAUNCH();
}

}  // namespace bitnet::cuda

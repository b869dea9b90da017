#include <stdexcept>
#include <string>

#include "device_util.cuh"
#include "gemm_w2a8.cuh"
#include "w2_layout.cuh"

namespace bitnet::cuda {

namespace {

constexpr int kBM = 64, kBN = 64, kBK = 64;
constexpr int kThreads = 128;  // 4 warps in a 2 x 2 grid, each a 32 x 32 tile of the output
// Shared-memory row stride in bytes: 64 + 16 so that the fragment loads of a warp (8 rows g,
// 4 words t each) hit 32 distinct banks: word (g * 20 + t) % 32 is a permutation.
constexpr int kLds = kBK + 16;

// D += A * B for one m16n8k32 tile; fragment layouts (PTX ISA "Matrix Fragments for
// mma.m16n8k32", g = lane / 4, t = lane % 4):
//   a0: row g,   k 4t..4t+3   a1: row g+8, k 4t..4t+3   a2: row g, k 16+4t..   a3: row g+8, k
//   16+4t.. b0: col g,   k 4t..4t+3   b1: col g,   k 16+4t.. c0, c1: row g, cols 2t, 2t+1   c2, c3:
//   row g+8, cols 2t, 2t+1
__device__ __forceinline__ void mma_s8_16832(int (&c)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__global__ void __launch_bounds__(kThreads)
    gemm_w2a8_kernel(const uint4* __restrict__ w, int64_t N, int64_t chunks,
                     const int8_t* __restrict__ q, const float* __restrict__ s_x, int64_t M,
                     float w_scale, float* __restrict__ y, int64_t ldy) {
  __shared__ __align__(16) int8_t sA[kBM * kLds];  // activations [m][k]
  __shared__ __align__(16) int8_t sB[kBN * kLds];  // decoded weights t [n][k]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;  // warp tile origin in the block tile
  const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
  const int64_t kp = chunks * 64;

  int acc[2][4][4] = {};
  for (int64_t kt = 0; kt < chunks; ++kt) {
    // A tile: 64 rows x 64 bytes = 256 int4, two per thread; rows past M are zeros.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int idx = tid + r * kThreads, row = idx >> 2, col = (idx & 3) * 16;
      const int64_t m = m0 + row;
      int4 v = make_int4(0, 0, 0, 0);
      if (m < M) v = __ldg(reinterpret_cast<const int4*>(q + m * kp + kt * 64 + col));
      *reinterpret_cast<int4*>(sA + row * kLds + col) = v;
    }
    // B tile: 64 weight rows x 64 values = one uint4 each (threads 0..63), decoded to t = code - 1
    // per byte (__vsub4: no borrow across bytes). Rows past N are zeros.
    if (tid < kBN) {
      const int64_t n = n0 + tid;
      int8_t* dst = sB + tid * kLds;
      if (n < N) {
        const uint4 wv = __ldg(w + n * chunks + kt);
        const uint32_t words[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int i = 0; i < 4; ++i)
            *reinterpret_cast<uint32_t*>(dst + 16 * j + 4 * i) =
                __vsub4((words[j] >> (2 * i)) & 0x03030303u, 0x01010101u);
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j) *reinterpret_cast<int4*>(dst + 16 * j) = make_int4(0, 0, 0, 0);
      }
    }
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < kBK; ks += 32) {
      uint32_t a[2][4], b[4][2];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) {
        const int8_t* base = sA + (wm + mi * 16 + g) * kLds + ks + 4 * t;
        a[mi][0] = *reinterpret_cast<const uint32_t*>(base);
        a[mi][1] = *reinterpret_cast<const uint32_t*>(base + 8 * kLds);
        a[mi][2] = *reinterpret_cast<const uint32_t*>(base + 16);
        a[mi][3] = *reinterpret_cast<const uint32_t*>(base + 8 * kLds + 16);
      }
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
        const int8_t* base = sB + (wn + ni * 8 + g) * kLds + ks + 4 * t;
        b[ni][0] = *reinterpret_cast<const uint32_t*>(base);
        b[ni][1] = *reinterpret_cast<const uint32_t*>(base + 16);
      }
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) mma_s8_16832(acc[mi][ni], a[mi], b[ni]);
    }
    __syncthreads();
  }
  // Epilogue: the same fp32 formula as the CPU kernels.
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t m = m0 + wm + mi * 16 + g + 8 * h;
      if (m >= M) continue;
      const float f = __fdiv_rn(w_scale, s_x[m]);
#pragma unroll
      for (int ni = 0; ni < 4; ++ni)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t n = n0 + wn + ni * 8 + 2 * t + e;
          if (n < N) y[m * ldy + n] = __fmul_rn(static_cast<float>(acc[mi][ni][2 * h + e]), f);
        }
    }
}

}  // namespace

void launch_gemm_w2a8(const uint32_t* w, int64_t N, int64_t K, const int8_t* q, const float* s_x,
                      int64_t M, float w_scale, float* y, int64_t ldy, Stream stream) {
  if (M <= 0 || N <= 0) return;
  if ((M + kBM - 1) / kBM > 65535)
    throw std::invalid_argument("launch_gemm_w2a8: M = " + std::to_string(M) +
                                " rows exceed the grid.y limit (65535 tiles of 64)");
  const int64_t chunks = w2g_kpad(K) / 64;
  const dim3 grid(detail::ceil_div_u(N, kBN), detail::ceil_div_u(M, kBM));
  gemm_w2a8_kernel<<<grid, kThreads, 0, stream>>>(reinterpret_cast<const uint4*>(w), N, chunks, q,
                                                  s_x, M, w_scale, y, ldy);
  BITNET_CUDA_CHECK_LAUNCH();
}

}  // namespace bitnet::cuda

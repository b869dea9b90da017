// Scalar reference kernels: the specification every ISA kernel is tested against.
// Compiled without ISA flags (and never with -ffast-math): nearbyint rounds half to even in the
// default rounding mode, as torch.round does.
#include <algorithm>
#include <cmath>

#include "kernels.h"

namespace bitnet::kernels::ref {

bool quantize_row_i8(const float* x, int64_t k, int8_t* q, int64_t k_pad, float* s_x,
                     int32_t* q_sum) {
  float amax = 0.0f;
  for (int64_t i = 0; i < k; ++i) {
    if (!std::isfinite(x[i])) return false;
    amax = std::max(amax, std::fabs(x[i]));
  }
  // PyTorch evaluates `127.0 / t` as reciprocal(t) * 127: two fp32 roundings, reproduced here.
  const float s = (1.0f / std::max(amax, 1e-5f)) * 127.0f;
  int32_t sum = 0;
  for (int64_t i = 0; i < k; ++i) {
    // x * s is computed in fp32 first, then rounded half-to-even, then clamped.
    float v = std::nearbyint(x[i] * s);
    v = std::min(127.0f, std::max(-128.0f, v));
    q[i] = int8_t(v);
    sum += q[i];
  }
  for (int64_t i = k; i < k_pad; ++i) q[i] = 0;
  *s_x = s;
  *q_sum = sum;
  return true;
}

void gemm_k256_i8(const uint8_t* w, int64_t nb, const int8_t* q, const float* s_x,
                  const int32_t* q_sum, int64_t M, int64_t n0, int64_t n1, float w_scale, float* y,
                  int64_t ldy) {
  const int64_t kp = nb * kK256Values;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w + n * nb * kK256Bytes;
    for (int64_t m = 0; m < M; ++m) {
      const int8_t* qm = q + m * kp;
      // |acc| <= 2 * 128 * kp < 2^31 for nb < 2^15 (see kernels.h).
      int32_t acc = 0;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = row + b * kK256Bytes;
        for (int j = 0; j < kK256Values; ++j) {
          const int code = (blk[j % 64] >> (2 * (j / 64))) & 3;
          acc += code * qm[b * kK256Values + j];
        }
      }
      y[m * ldy + n] = float(acc - q_sum[m]) * (w_scale / s_x[m]);
    }
  }
}

void gemv_k256_i8(const uint8_t* w, int64_t nb, const int8_t* q, const float* s_x,
                  const int32_t* q_sum, int64_t M, int64_t n0, int64_t n1, float w_scale, float* y,
                  int64_t ldy) {
  gemm_k256_i8(w, nb, q, s_x, q_sum, M, n0, n1, w_scale, y, ldy);
}

}  // namespace bitnet::kernels::ref

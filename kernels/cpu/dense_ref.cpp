// Scalar reference kernels of the dense matrices (dense_kernels.h), compiled without ISA flags
// (and, like the whole project, with -ffp-contract=off: no fused multiply-add).
//
// They are the executable specification the SIMD tables are tested against, so their evaluation
// order is fixed and simple enough to reproduce bit for bit in numpy (tests/test_dense.py):
//   float types: acc = 0; for k in order: acc = fp32(acc + fp32(x_k * w_k)); y = acc
//   quantized:   acc = 0; for b in order: acc = fp32(acc + fp32(fp32(dot_b) * fp32(d_w * d_x)))
// with dot_b the exact int32 block dot product (|dot_b| <= 32 * 128 * 127 < 2^24, so fp32(dot_b)
// is exact). One sequential sum per output: error <= cols * 2^-24 * sum |terms| (Higham, recursive
// summation), the bound the tests apply to every table.
#include <cstring>

#include "dense_kernels.h"

namespace bitnet::kernels::ref {

namespace {

using dense_detail::ElemBF16;
using dense_detail::ElemF16;
using dense_detail::ElemF32;
using dense_detail::Q4;
using dense_detail::Q8;

template <class Elem>
void f_rows(const uint8_t* w, int64_t row_bytes, int64_t cols, const float* x, int64_t ldx,
            int64_t M, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* wr = w + r * row_bytes;
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * ldx;
      float acc = 0.0f;
      for (int64_t k = 0; k < cols; ++k) acc += xm[k] * Elem::scalar(wr + k * Elem::kSize);
      y[m * ldy + r] = acc;
    }
  }
}

template <class Q>
void q_rows(const uint8_t* w, int64_t row_bytes, int64_t nb, const DenseQ8Rows& x, int64_t M,
            int64_t r0, int64_t r1, float* y, int64_t ldy) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* wr = w + r * row_bytes;
    for (int64_t m = 0; m < M; ++m) {
      const int8_t* qm = x.qs + m * x.ld;
      const float* dm = x.d + m * (x.ld / 32);
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = wr + b * Q::kBytes;
        const float dd = dense_detail::block_d(blk) * dm[b];
        acc += float(Q::scalar_dot(blk, qm + b * 32)) * dd;
      }
      y[m * ldy + r] = acc;
    }
  }
}

}  // namespace

void dense_f32(const uint8_t* w, int64_t row_bytes, int64_t cols, const float* x, int64_t ldx,
               int64_t M, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  f_rows<ElemF32>(w, row_bytes, cols, x, ldx, M, r0, r1, y, ldy);
}

void dense_f16(const uint8_t* w, int64_t row_bytes, int64_t cols, const float* x, int64_t ldx,
               int64_t M, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  f_rows<ElemF16>(w, row_bytes, cols, x, ldx, M, r0, r1, y, ldy);
}

void dense_bf16(const uint8_t* w, int64_t row_bytes, int64_t cols, const float* x, int64_t ldx,
                int64_t M, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  f_rows<ElemBF16>(w, row_bytes, cols, x, ldx, M, r0, r1, y, ldy);
}

void dense_q8_0(const uint8_t* w, int64_t row_bytes, int64_t nb, const DenseQ8Rows& x, int64_t M,
                int64_t r0, int64_t r1, float* y, int64_t ldy) {
  q_rows<Q8>(w, row_bytes, nb, x, M, r0, r1, y, ldy);
}

void dense_q4_0(const uint8_t* w, int64_t row_bytes, int64_t nb, const DenseQ8Rows& x, int64_t M,
                int64_t r0, int64_t r1, float* y, int64_t ldy) {
  q_rows<Q4>(w, row_bytes, nb, x, M, r0, r1, y, ldy);
}

#include "attention_f32.inc"  // attention_f32, compiled with this file's ISA flags

}  // namespace bitnet::kernels::ref

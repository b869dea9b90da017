// Packers (TL2, K256) and the scalar reference of the TL2 tables and product. Compiled without
// ISA flags.
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels.h"
#include "lut_kernels.h"

namespace bitnet::kernels {

namespace {

void check_ternary(int8_t v, int64_t n, int64_t k) {
  if (v < -1 || v > 1)
    throw std::invalid_argument("pack: t[" + std::to_string(n) + ", " + std::to_string(k) +
                                "] = " + std::to_string(int(v)) + " is not in {-1, 0, 1}");
}

// Balanced-ternary digit i (0..2) of m in [0, 13]: m = d0 + 3 d1 + 9 d2, d in {-1, 0, 1}.
int bt_digit(int m, int i) {
  int r = m, d = 0;
  for (int j = 0; j <= i; ++j) {
    d = ((r + 1) % 3) - 1;  // r >= 0 throughout: (r + 1) % 3 is in {0, 1, 2}
    r = (r - d) / 3;
  }
  return d;
}

}  // namespace

Tl2Shape tl2_shape(int64_t n, int64_t k) {
  if (n <= 0 || k <= 0) throw std::invalid_argument("tl2_shape: n and k must be positive");
  Tl2Shape s;
  s.n = n;
  s.k = k;
  s.n_blocks = (n + kTl2Rows - 1) / kTl2Rows;
  s.n_sg = (k + kTl2SgValues - 1) / kTl2SgValues;
  return s;
}

void pack_tl2(const int8_t* t, int64_t n, int64_t k, uint8_t* out) {
  const Tl2Shape s = tl2_shape(n, k);
  std::memset(out, 0, size_t(s.nbytes()));  // zero rows / groups: mag 0, sign 0
  for (int64_t r = 0; r < n; ++r) {
    const int8_t* row = t + r * k;
    for (int64_t sg = 0; sg < s.n_sg; ++sg) {
      block_tl2* blk = reinterpret_cast<block_tl2*>(out) + (r / kTl2Rows) * s.n_sg + sg;
      const int64_t lane = r % kTl2Rows;
      for (int j = 0; j < kTl2SgGroups; ++j) {
        int v = 0, p3 = 1;
        for (int i = 0; i < kTl2GroupValues; ++i, p3 *= 3) {
          const int64_t kk = sg * kTl2SgValues + j * kTl2GroupValues + i;
          if (kk < k) {
            check_ternary(row[kk], r, kk);
            v += p3 * row[kk];
          }
        }
        const int mag = v < 0 ? -v : v;  // 0..13
        blk->mag[j / 2][lane] |= uint8_t(mag << (4 * (j % 2)));
        if (v < 0) blk->sign[lane] |= uint8_t(1u << j);
      }
    }
  }
}

void pack_k256(const int8_t* t, int64_t n, int64_t k, uint8_t* out) {
  const int64_t nb = (k + kK256Values - 1) / kK256Values;
  for (int64_t r = 0; r < n; ++r) {
    uint8_t* row = out + r * nb * kK256Bytes;
    // Code 1 (t = 0) everywhere, padding included: 0b01010101.
    std::memset(row, 0x55, size_t(nb * kK256Bytes));
    for (int64_t kk = 0; kk < k; ++kk) {
      const int8_t v = t[r * k + kk];
      check_ternary(v, r, kk);
      const int64_t b = kk / kK256Values, j = kk % kK256Values;
      uint8_t& byte = row[b * kK256Bytes + j % 64];
      const int shift = int(2 * (j / 64));
      byte = uint8_t((byte & ~(3u << shift)) | (unsigned(v + 1) << shift));
    }
  }
}

namespace ref {

void build_lut_tl2_i8(const int8_t* q, int64_t k, int64_t n_sg, int8_t* lut) {
  for (int64_t g = 0; g < n_sg * kTl2SgGroups; ++g) {
    int h[3], l[3];
    for (int i = 0; i < 3; ++i) {
      const int64_t kk = g * kTl2GroupValues + i;
      const int x = kk < k ? q[kk] : 0;
      // floor((x + 8) / 16) without relying on >> of negative numbers.
      h[i] = (x + 8 + 128) / 16 - 8;  // x + 136 in [8, 263] is non-negative
      l[i] = x - 16 * h[i];
    }
    int8_t* th = lut + g * 32;
    int8_t* tl = th + 16;
    for (int m = 0; m < 16; ++m) {
      int sh = 0, sl = 0;
      if (m <= 13) {
        for (int i = 0; i < 3; ++i) {
          sh += bt_digit(m, i) * h[i];
          sl += bt_digit(m, i) * l[i];
        }
      }
      th[m] = int8_t(sh);  // |sh|, |sl| <= 3 * 8 = 24
      tl[m] = int8_t(sl);
    }
  }
}

void gemm_tl2_i8(const uint8_t* w, int64_t n_sg, const int8_t* lut, int64_t lut_stride,
                 const float* s_x, int64_t M, int64_t n0, int64_t n1, float w_scale, float* y,
                 int64_t ldy, int64_t /*prefetch*/) {
  const block_tl2* blocks = reinterpret_cast<const block_tl2*>(w);
  for (int64_t n = n0; n < n1; ++n) {
    const block_tl2* rb = blocks + (n / kTl2Rows) * n_sg;
    const int64_t lane = n % kTl2Rows;
    for (int64_t m = 0; m < M; ++m) {
      const int8_t* lm = lut + m * lut_stride;
      int32_t acc = 0;  // |acc| <= 128 * 24 * n_sg
      for (int64_t sg = 0; sg < n_sg; ++sg) {
        for (int j = 0; j < kTl2SgGroups; ++j) {
          const int mag = (rb[sg].mag[j / 2][lane] >> (4 * (j % 2))) & 15;
          const int neg = (rb[sg].sign[lane] >> j) & 1;
          const int8_t* tg = lm + (sg * kTl2SgGroups + j) * 32;
          const int v = 16 * tg[mag] + tg[16 + mag];
          acc += neg ? -v : v;
        }
      }
      y[m * ldy + n] = float(acc) * (w_scale / s_x[m]);
    }
  }
}

}  // namespace ref

}  // namespace bitnet::kernels

// NEON machine probes (kernels.h): streaming read bandwidth and the int8 multiply-accumulate
// throughput of the instruction the NEON (non-dotprod) kernel uses, smlal / smlal2.
#include <arm_neon.h>

#include "kernels.h"

namespace bitnet::kernels::neon {

uint64_t read_bytes(const uint8_t* p, size_t bytes) {
  // 128 bytes per iteration into 8 independent 64-bit-lane sums (bytes is a multiple of 256).
  uint64x2_t a[8];
  for (int j = 0; j < 8; ++j) a[j] = vdupq_n_u64(0);
  for (size_t i = 0; i + 128 <= bytes; i += 128)
    for (int j = 0; j < 8; ++j)
      a[j] = vaddq_u64(a[j], vreinterpretq_u64_u8(vld1q_u8(p + i + 16 * j)));
  uint64x2_t s = a[0];
  for (int j = 1; j < 8; ++j) s = vaddq_u64(s, a[j]);
  return vgetq_lane_u64(s, 0) + vgetq_lane_u64(s, 1);
}

int64_t int8_peak(int64_t iters, int64_t* macs_per_iter) {
  // 16 independent int16x8 chains x = smlal(x, a, b) / smlal2(x, a, b): enough to cover a
  // 4-cycle accumulate latency at 2 or more per cycle. The empty asm keeps each accumulator a
  // live register value, so the compiler cannot fold the loop (x += a * b is linear in it).
  constexpr int kChains = 16;
  volatile int8_t seed = 3;
  const int8x16_t a = vdupq_n_s8(seed), b = vdupq_n_s8(int8_t(seed + 1));
  int16x8_t x[kChains];
  for (int i = 0; i < kChains; ++i) x[i] = vdupq_n_s16(int16_t(i));
  for (int64_t it = 0; it < iters; ++it) {
    for (int i = 0; i < kChains; i += 2) {
      x[i] = vmlal_s8(x[i], vget_low_s8(a), vget_low_s8(b));
      x[i + 1] = vmlal_high_s8(x[i + 1], a, b);
    }
    for (int i = 0; i < kChains; ++i) __asm__("" : "+w"(x[i]));
  }
  *macs_per_iter = int64_t(kChains) * 8;  // 8 s8 x s8 products per instruction
  int16x8_t s = x[0];
  for (int i = 1; i < kChains; ++i) s = veorq_s16(s, x[i]);
  return vaddlvq_s16(s);
}

}  // namespace bitnet::kernels::neon

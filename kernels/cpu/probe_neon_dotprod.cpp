// NEON dot-product machine probe (kernels.h), compiled with -march=armv8.2-a+dotprod: the int8
// multiply-accumulate throughput of sdot (vdotq_s32), the instruction the neon_dotprod kernel
// uses. Read bandwidth reuses neon::read_bytes (dispatch.cpp).
#include <arm_neon.h>

#include "kernels.h"

namespace bitnet::kernels::neon_dotprod {

int64_t int8_peak(int64_t iters, int64_t* macs_per_iter) {
  // 16 independent int32x4 chains x = sdot(x, a, b): enough to cover a 3-4 cycle accumulate
  // latency at 2 or more per cycle. The empty asm keeps each accumulator a live register value,
  // so the compiler cannot fold the loop (x += dot(a, b) is linear in it).
  constexpr int kChains = 16;
  volatile int8_t seed = 3;
  const int8x16_t a = vdupq_n_s8(seed), b = vdupq_n_s8(int8_t(seed + 1));
  int32x4_t x[kChains];
  for (int i = 0; i < kChains; ++i) x[i] = vdupq_n_s32(i);
  for (int64_t it = 0; it < iters; ++it) {
    for (int i = 0; i < kChains; ++i) x[i] = vdotq_s32(x[i], a, b);
    for (int i = 0; i < kChains; ++i) __asm__("" : "+w"(x[i]));
  }
  *macs_per_iter = int64_t(kChains) * 16;  // 16 s8 x s8 products per instruction
  int32x4_t s = x[0];
  for (int i = 1; i < kChains; ++i) s = veorq_s32(s, x[i]);
  return vaddlvq_s32(s);
}

}  // namespace bitnet::kernels::neon_dotprod

// Scalar machine probes: read bandwidth and int8 multiply-add throughput (see kernels.h).
#include <cstring>

#include "kernels.h"

namespace bitnet::kernels::ref {

uint64_t read_bytes(const uint8_t* p, size_t bytes) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  for (size_t i = 0; i + 32 <= bytes; i += 32) {
    uint64_t v[4];
    std::memcpy(v, p + i, 32);
    a += v[0];
    b ^= v[1];
    c += v[2];
    d ^= v[3];
  }
  return a + b + c + d;
}

int64_t int8_peak(int64_t iters, int64_t* macs_per_iter) {
  // Eight independent chains acc = acc * w + c of int8-range operands: the loop-carried
  // dependency keeps the compiler from hoisting the products out of the loop.
  int32_t acc[8];
  volatile int32_t seed = 3;
  for (int i = 0; i < 8; ++i) acc[i] = seed + i;
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 8; ++i) acc[i] = int32_t(int8_t(acc[i])) * int32_t(int8_t(i + 1)) + 1;
  *macs_per_iter = 8;
  int64_t s = 0;
  for (int i = 0; i < 8; ++i) s += acc[i];
  return s;
}

}  // namespace bitnet::kernels::ref

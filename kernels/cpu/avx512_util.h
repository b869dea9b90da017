// Small AVX-512 helpers shared by the AVX-512 kernel files. static inline: each including file
// (compiled with AVX-512 flags) gets its own copy.
#pragma once

#include <immintrin.h>

#include <cstdint>

// GCC 12 reports -Wuninitialized inside its own _mm512_reduce_add_epi32 (through
// _mm256_undefined_si256): a false positive in the compiler's header, silenced for the files that
// include this one. Hand-written shuffle or store-based reductions avoid the warning but made GCC
// keep the callers' accumulator arrays in memory (a 2x slowdown of the GEMM tile).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// Sum of the 16 int32 lanes.
static inline int32_t hsum_epi32_avx512(__m512i v) { return _mm512_reduce_add_epi32(v); }

// The 512-bit K256 loads, unpack and stores shared by the AVX-512 Ops structs (k256_gemm.inc):
// one 64-byte chunk per step; code i of a chunk is (raw >> 2i) & 3 (16-bit shifts, then the
// byte mask drops the bits that crossed from the neighbouring byte).
// In an unnamed namespace on purpose: files built with different ISA flags include this header,
// and each must get its own copy (internal linkage), never one the linker picked from another.
namespace {
struct Avx512K256Base {
  static constexpr int kChunk = 64;
  using Raw = __m512i;
  using Q = __m512i;
  using Acc = __m512i;
  static Raw load_w(const uint8_t* p) { return _mm512_loadu_si512(p); }
  static Raw code(Raw raw, int i) {
    return _mm512_and_si512(_mm512_srli_epi16(raw, 2 * i), _mm512_set1_epi8(3));
  }
  static void store(uint8_t* p, Raw v) { _mm512_storeu_si512(p, v); }
  static Q load_q(const int8_t* p) { return _mm512_loadu_si512(p); }
  static Acc acc_zero() { return _mm512_setzero_si512(); }
  static int32_t hsum(Acc a) { return hsum_epi32_avx512(a); }
};
}  // namespace

// Interface between the C++ core and the CPU kernels. Kernels are leaf functions: no allocation,
// no threading, no global state. Each ISA file defines the functions of its namespace
// bitnet::kernels::<isa>; dispatch.cpp gathers them into tables.
//
// The kernel weight layout "K256" (Python format name "native"):
//   A weight matrix [N, K] of ternary t in {-1, 0, +1} is stored row by row; each row is
//   Kp / 256 blocks (Kp = K rounded up to 256) of 64 bytes:
//
//     byte:   0        1        ...  63
//     bits:   [7:6] value 192+m  [5:4] value 128+m  [3:2] value 64+m  [1:0] value m   (m = byte)
//
//   i.e. value j of a block lives in byte j % 64 at bit shift 2 * (j / 64), as the code
//   t + 1 in {0, 1, 2}. Padding values (K <= j < Kp) hold code 1 (t = 0). One 64-byte load and
//   a shift by 2n plus a mask by 3 gives the codes of 64 consecutive values n*64 .. n*64+63; a
//   32-byte half (AVX2) or a 16-byte quarter (NEON) gives 32 or 16 consecutive values. So every
//   ISA reads the activations as contiguous vectors.
//
// The integer identity used by all kernels: sum_k t_k q_k = sum_k code_k q_k - sum_k q_k, with
// code_k in {0, 1, 2} unsigned (the u8 operand of maddubs / vpdpbusd) and q_k signed int8.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bitnet::kernels {

constexpr int64_t kK256Values = 256;  // values per K256 block
constexpr int64_t kK256Bytes = 64;    // bytes per K256 block

// One K256 block; see the layout drawing above.
struct block_k256 {
  uint8_t qs[64];
};
static_assert(sizeof(block_k256) == 64, "K256 block is 64 bytes");

// Quantizes one activation row x[0, k) (fp32) to int8 per BitNet b1.58:
//   s_x = 127 / max(max|x|, 1e-5),  q = clamp(nearbyint(x * s_x), -128, 127)   (fp32 math)
// where, to be bit-exact with PyTorch (whose `127.0 / t` is `t.reciprocal() * 127`), s_x is
// computed as (1.0f / max(...)) * 127.0f: two fp32 roundings, not one division.
// Writes q[0, k_pad) with zeros after k, *s_x, and *q_sum = sum of q (|q_sum| <= 127 * k).
// Returns false (outputs unspecified) when x holds a NaN or an infinity.
using quantize_row_fn = bool (*)(const float* x, int64_t k, int8_t* q, int64_t k_pad, float* s_x,
                                 int32_t* q_sum);

// Ternary x int8 product over the K256 layout, rows n in [n0, n1) of the weights:
//   y[m * ldy + n] = float(sum_k code[n][k] * q[m][k] - q_sum[m]) * (w_scale / s_x[m])
// for m in [0, M). w points at row 0 of the weights; each row is nb blocks (nb * 64 bytes);
// q is [M, nb * 256] int8, zero-padded. Requires nb * 256 * 2 * 128 < 2^31 (nb < 2^15), so the
// int32 accumulators cannot overflow for any int8 input.
using gemm_k256_fn = void (*)(const uint8_t* w, int64_t nb, const int8_t* q, const float* s_x,
                              const int32_t* q_sum, int64_t M, int64_t n0, int64_t n1,
                              float w_scale, float* y, int64_t ldy);

// Reads `bytes` bytes (a multiple of 256, 64-byte aligned) and returns a value depending on all of
// them, so the loads cannot be optimised away. Used to measure read bandwidth.
using read_bytes_fn = uint64_t (*)(const uint8_t* p, size_t bytes);

// Runs `iters` iterations of independent int8 multiply-accumulate instructions of the ISA
// (register operands only) and returns a checksum. *macs_per_iter receives the number of int8
// multiply-adds one iteration performs. Used to measure this core's int8 peak.
using int8_peak_fn = int64_t (*)(int64_t iters, int64_t* macs_per_iter);

#define BITNET_DECLARE_KERNELS(ns)                                                          \
  namespace ns {                                                                            \
  bool quantize_row_i8(const float* x, int64_t k, int8_t* q, int64_t k_pad, float* s_x,     \
                       int32_t* q_sum);                                                     \
  void gemv_k256_i8(const uint8_t* w, int64_t nb, const int8_t* q, const float* s_x,        \
                    const int32_t* q_sum, int64_t M, int64_t n0, int64_t n1, float w_scale, \
                    float* y, int64_t ldy);                                                 \
  void gemm_k256_i8(const uint8_t* w, int64_t nb, const int8_t* q, const float* s_x,        \
                    const int32_t* q_sum, int64_t M, int64_t n0, int64_t n1, float w_scale, \
                    float* y, int64_t ldy);                                                 \
  uint64_t read_bytes(const uint8_t* p, size_t bytes);                                      \
  int64_t int8_peak(int64_t iters, int64_t* macs_per_iter);                                 \
  }

// Each namespace defines the subset its table uses (dispatch.cpp); tables may share functions
// of a lower ISA (e.g. avx512_vnni reuses avx512's quantizer).
BITNET_DECLARE_KERNELS(ref)           // portable C++, compiled without ISA flags
BITNET_DECLARE_KERNELS(avx2)          // AVX2 + FMA + F16C
BITNET_DECLARE_KERNELS(avx512)        // AVX-512 F/BW/VL/DQ
BITNET_DECLARE_KERNELS(avx512_vnni)   // AVX-512 F/BW/VL/DQ + VNNI
BITNET_DECLARE_KERNELS(neon)          // ARMv8-A NEON
BITNET_DECLARE_KERNELS(neon_dotprod)  // ARMv8.2-A NEON + dot product (sdot/udot)

// Ordered: a cap of BITNET_MAX_ISA=X allows every ISA of the same architecture up to X.
enum class Isa : int { ref = 0, avx2 = 1, avx512 = 2, avx512_vnni = 3, neon = 4, neon_dotprod = 5 };

// One ISA's kernels. The dispatcher picks the best table the CPU and OS support, capped by the
// environment variable BITNET_MAX_ISA = ref | avx2 | avx512 | neon.
struct CpuKernels {
  Isa isa;
  const char* name;
  quantize_row_fn quantize_row;
  gemm_k256_fn gemv;  // tuned for M == 1 (decode); correct for any M
  gemm_k256_fn gemm;  // tuned for M > 1 (prefill)
  read_bytes_fn read_bytes;
  int8_peak_fn int8_peak;
};

// The active table (chosen once, on first use).
const CpuKernels& active();
// Re-reads BITNET_MAX_ISA and chooses again; returns the new table. Not thread-safe against
// concurrent kernel calls; meant for tests and benchmarks.
const CpuKernels& reload();
// The table of one ISA, or nullptr when it is not compiled in or this CPU/OS cannot run it.
const CpuKernels* table_for(Isa isa);
// The name of an ISA ("ref", "avx2", ...).
const char* isa_name(Isa isa);
// Parses an ISA name (see Isa); throws std::invalid_argument otherwise.
Isa parse_isa(const char* name);

}  // namespace bitnet::kernels

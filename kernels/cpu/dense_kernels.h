// Kernels of the dense (non-ternary) matrices: the products of the token embedding / LM head
// (cpp/include/bitnet/dense.h) for weights stored as F32, F16, BF16, Q8_0 or Q4_0.
//
// Like the ternary kernels (kernels.h) these are leaf functions: no allocation, no threading, no
// global state. Each ISA file defines the functions of its namespace bitnet::kernels::<isa>;
// bitnet::kernels::dense_table_for gathers them into tables (cpp/src/dense.cpp). The dense
// table in use follows the ternary dispatcher: dense_active() is the table of
// kernels::active().isa, so BITNET_MAX_ISA caps both the same way.
//
// Weights W [rows, cols] are row-major, each row `row_bytes` bytes, read in place (unaligned;
// e.g. the mmap'd GGUF tensor):
//   F32  : cols fp32                      F16: cols IEEE half      BF16: cols bfloat16 (the top
//   Q8_0 : cols / 32 blocks of 34 bytes   Q4_0: cols / 32 blocks of 18 bytes    half of an fp32)
// (block layouts drawn in cpp/include/bitnet/ggml_quants.h).
//
// Float kernels (F32/F16/BF16): y[m][r] = sum_k x[m][k] * w[r][k] in fp32. Widening f16/bf16 to
// fp32 is exact; the SIMD kernels accumulate with FMA in several lane-wise partial sums, the
// scalar reference in one sequential sum of rounded products (see dense_ref.cpp). Either way the
// error versus the exact sum is at most about cols * 2^-24 * sum_k |x_k * w_k|.
//
// Quantized kernels (Q8_0/Q4_0): as ggml does, x is first quantized per 32-block to Q8_0
// (DenseQ8Rows below, built by DenseMatrix::matmul with ggml's quantize_row_q8_0), then per block
// b the int32 dot product of the codes is exact and
//   y[m][r] = sum_b dot_b * D_b,   D_b = d_w(b) * d_x(b)   (fp32 product of the two fp32 scales)
// accumulated in fp32. The reference forms fp32(dot_b) * D_b per block and adds the terms in
// block order; the SIMD kernels split each block's exact dot into int32 lane partials (each the
// dot of 4 consecutive values), scale each lane by D_b and accumulate lane-wise with FMA. Both
// equal the exact sum up to fp32 rounding: |error| <= (nb + 16) * 2^-24 * sum_b D_b * sum_j
// |q_x(j) q_w(j)| (nb = blocks per row), the bound the tests check.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "bitnet/formats.h"
#include "kernels.h"

namespace bitnet::kernels {

constexpr int64_t kDenseQ8Bytes = 34;  // sizeof(block_q8_0): fp16 d, int8 qs[32]
constexpr int64_t kDenseQ4Bytes = 18;  // sizeof(block_q4_0): fp16 d, uint8 qs[16]

// Activations of the quantized products: M rows of x quantized per 32-block to Q8_0 exactly as
// ggml's quantize_row_q8_0 (d = absmax / 127, codes rounded half away from zero, d stored as fp16
// and used here as its fp32 value), unpacked into flat arrays for aligned SIMD loads. For row m
// and block b (nb = cols / 32 blocks):
//   qs   [m * ld + 32 b + j]        code of value j of block b, in [-127, 127] (the quantizer's
//                                   range; -128 never occurs, which the overflow proofs use)
//   d    [m * (ld / 32) + b]        fp32 value of block b's fp16 scale d_x(b)
//   d4   [m * (ld / 4) + 8 b + g]   d_x(b) again, once per group g (0..7) of 4 values: the lane
//                                   scales of the SIMD kernels, loaded as vectors
//   corr4[m * (ld / 4) + 8 b + g]   -8 * (sum of the 4 codes of group g), |.| <= 8 * 4 * 127:
//                                   the Q4_0 offset correction (sum_j (c_j - 8) x_j =
//                                   sum_j c_j x_j - 8 sum_j x_j), per lane
// ld >= cols is a multiple of 64 (so rows of qs stay 64-byte aligned when qs is).
struct DenseQ8Rows {
  const int8_t* qs = nullptr;
  const float* d = nullptr;
  const float* d4 = nullptr;
  const int32_t* corr4 = nullptr;
  int64_t ld = 0;
};

// Float product over W rows [r0, r1): for m in [0, M), r in [r0, r1)
//   y[m * ldy + r] = sum_{k < cols} x[m * ldx + k] * w_r[k]
// w points at row 0; row r starts at w + r * row_bytes. Writes nothing outside [r0, r1).
using dense_f_fn = void (*)(const uint8_t* w, int64_t row_bytes, int64_t cols, const float* x,
                            int64_t ldx, int64_t M, int64_t r0, int64_t r1, float* y, int64_t ldy);

// Quantized product over W rows [r0, r1) (nb = cols / 32 blocks per row): for m < M, r in [r0, r1)
//   y[m * ldy + r] = sum_b dot(W_r block b, x_m block b) * (d_w(r, b) * x.d[m][b])
// (see the top of this file for the fp32 evaluation). Requires the codes of x in [-127, 127].
// A non-finite d_w gives a non-finite y (the caller checks). |dot| <= 32 * 128 * 127 < 2^24, so
// every int32 partial and its fp32 conversion are exact.
using dense_q_fn = void (*)(const uint8_t* w, int64_t row_bytes, int64_t nb, const DenseQ8Rows& x,
                            int64_t M, int64_t r0, int64_t r1, float* y, int64_t ldy);

// One query's attention for G query heads sharing a kv head (kernels/cpu/attention_f32.inc states
// the formula, layouts and exp accuracy): q [G, hd], keys/values j < n at k/v + j * kv_stride,
// scratch [G * n], out [G, hd]. Identical results on every ISA.
using attention_fn = void (*)(const float* q, int64_t G, int64_t hd, const float* k, const float* v,
                              int64_t kv_stride, int64_t n, float scale, float* scratch,
                              float* out);
// Its first half alone: scratch [G * n] <- the probabilities p_g,j (the same bits attention_fn
// leaves in its scratch). The training backward recomputes them with it.
using attention_probs_fn = void (*)(const float* q, int64_t G, int64_t hd, const float* k,
                                    int64_t kv_stride, int64_t n, float scale, float* p);

#define BITNET_DECLARE_DENSE_KERNELS(ns)                                                          \
  namespace ns {                                                                                  \
  void dense_f32(const uint8_t* w, int64_t row_bytes, int64_t cols, const float* x, int64_t ldx,  \
                 int64_t M, int64_t r0, int64_t r1, float* y, int64_t ldy);                       \
  void dense_f16(const uint8_t* w, int64_t row_bytes, int64_t cols, const float* x, int64_t ldx,  \
                 int64_t M, int64_t r0, int64_t r1, float* y, int64_t ldy);                       \
  void dense_bf16(const uint8_t* w, int64_t row_bytes, int64_t cols, const float* x, int64_t ldx, \
                  int64_t M, int64_t r0, int64_t r1, float* y, int64_t ldy);                      \
  void dense_q8_0(const uint8_t* w, int64_t row_bytes, int64_t nb, const DenseQ8Rows& x,          \
                  int64_t M, int64_t r0, int64_t r1, float* y, int64_t ldy);                      \
  void dense_q4_0(const uint8_t* w, int64_t row_bytes, int64_t nb, const DenseQ8Rows& x,          \
                  int64_t M, int64_t r0, int64_t r1, float* y, int64_t ldy);                      \
  void attention_f32(const float* q, int64_t G, int64_t hd, const float* k, const float* v,       \
                     int64_t kv_stride, int64_t n, float scale, float* scratch, float* out);      \
  void attention_probs_f32(const float* q, int64_t G, int64_t hd, const float* k,                 \
                           int64_t kv_stride, int64_t n, float scale, float* p);                  \
  }

// Each namespace defines the subset its table uses (cpp/src/dense.cpp); a table may reuse the
// functions of a lower ISA of the same family.
BITNET_DECLARE_DENSE_KERNELS(ref)           // portable C++, compiled without ISA flags
BITNET_DECLARE_DENSE_KERNELS(avx2)          // AVX2 + FMA + F16C
BITNET_DECLARE_DENSE_KERNELS(avx512)        // AVX-512 F/BW/VL/DQ
BITNET_DECLARE_DENSE_KERNELS(avx512_vnni)   // AVX-512 + VNNI
BITNET_DECLARE_DENSE_KERNELS(neon)          // ARMv8-A NEON
BITNET_DECLARE_DENSE_KERNELS(neon_dotprod)  // ARMv8.2-A NEON + dot product

// One ISA's dense kernels.
struct DenseKernels {
  Isa isa;
  const char* name;
  dense_f_fn f32;
  dense_f_fn f16;
  dense_f_fn bf16;
  dense_q_fn q8_0;
  dense_q_fn q4_0;
  attention_fn attention;
  attention_probs_fn attention_probs;
};

// The table of kernels::active().isa (re-read on every call, so kernels::reload() switches both).
const DenseKernels& dense_active();
// The table of one ISA, or nullptr when table_for(isa) is (not compiled in, or not runnable here).
const DenseKernels* dense_table_for(Isa isa);

// ------------------------------------------------------------------------------------------------
// The ISA-independent loop structure, as templates over a per-ISA `Ops` struct. They are only
// instantiated inside the ISA files, with Ops types from those files' unnamed namespaces, so every
// instantiation has internal linkage and is compiled with its own file's flags: no code built for
// one ISA can be picked by the linker for another. The helpers below are in an unnamed namespace
// for the same reason.
namespace dense_detail {
namespace {

// Software prefetch of W ahead of the loops (decode streams W once, from an mmap'd file: 4 KiB
// pages, where the hardware prefetcher stops at every page boundary). Two distances: into L2 far
// ahead (the L2 tracks more outstanding misses than the L1 fill buffers, enough to cover DRAM
// latency at full per-core bandwidth) and into L1 shortly before use. Measured on the 2B4T head
// at 2 threads (Sapphire Rapids, 4 KiB pages): Q4_0 went from 65% of the read bandwidth without
// software prefetch and ~83% with L1 prefetch alone (2..8 KiB ahead) to ~92% with these.
constexpr int64_t kPrefetchBytes = 1024;    // prefetcht0 / prfm pldl1keep
constexpr int64_t kPrefetchL2Bytes = 8192;  // prefetcht1 / prfm pldl2keep
// M > 1: W rows are processed in chunks of about this many bytes, each chunk against all tiles of
// x rows, so a chunk is read from memory once and then from L2 (and W once per call overall).
constexpr int64_t kChunkBytes = 192 * 1024;
// Rows of x per tile when M > 1 (register blocking: W is loaded and widened once per 4 rows).
constexpr int kTileM = 4;
// M > 1: columns per slice (a multiple of every ISA's vector step and of the 32-value block):
// 4 rows of x are 32 KiB of fp32 (8 KiB of Q8_0 codes), kept in L1/L2 while a chunk of W rows
// passes over them. (512..4096 measured within a few % of each other on Sapphire Rapids.)
constexpr int64_t kSliceValues = 2048;

// Prefetches the lines of the kBytes bytes at p, at both distances.
template <class Ops, int kBytes>
inline void prefetch_range(const uint8_t* p) {
  for (int i = 0; i < kBytes; i += 64) {
    if constexpr (kPrefetchBytes > 0) Ops::prefetch(p + kPrefetchBytes + i);
    if constexpr (kPrefetchL2Bytes > 0) Ops::prefetch_l2(p + kPrefetchL2Bytes + i);
  }
}

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// fp32 value of the fp16 scale d at the start of a Q8_0 / Q4_0 block.
inline float block_d(const uint8_t* blk) { return fp16_to_fp32(load_u16(blk)); }

// --- float types ----------------------------------------------------------------------------
// Ops: using F; static constexpr int kLanes; static F zero(); static F fma(F a, F b, F c)
// (a * b + c, fused); static F add(F, F); static float hsum(F); static F load_x(const float*);
// static F load_f32(const uint8_t*), load_f16(const uint8_t*), load_bf16(const uint8_t*) (kLanes
// elements widened to fp32); static void prefetch(const void*), prefetch_l2(const void*).
// Elem: static constexpr int kSize; template <class Ops> static F load(p); static float scalar(p).

struct ElemF32 {
  static constexpr int kSize = 4;
  template <class Ops>
  static typename Ops::F load(const uint8_t* p) {
    return Ops::load_f32(p);
  }
  static float scalar(const uint8_t* p) {
    float v;
    std::memcpy(&v, p, 4);
    return v;
  }
};

struct ElemF16 {
  static constexpr int kSize = 2;
  template <class Ops>
  static typename Ops::F load(const uint8_t* p) {
    return Ops::load_f16(p);
  }
  static float scalar(const uint8_t* p) { return fp16_to_fp32(load_u16(p)); }
};

struct ElemBF16 {
  static constexpr int kSize = 2;
  template <class Ops>
  static typename Ops::F load(const uint8_t* p) {
    return Ops::load_bf16(p);
  }
  // bfloat16 is the top half of an fp32: widening is a 16-bit shift (exact, NaN/Inf kept).
  static float scalar(const uint8_t* p) {
    const uint32_t bits = uint32_t(load_u16(p)) << 16;
    float v;
    std::memcpy(&v, &bits, 4);
    return v;
  }
};

// NT consecutive W rows (wrow, wrow + row_bytes, ...) against MT rows of x over columns [k0, k1):
// y[m * ldy + n] (+)= the partial dot of x row m and W row n (`accumulate`: add to y, else
// overwrite). Register tile MT x NT: each step loads NT W vectors and MT x vectors for MT * NT
// FMAs. The vector loop starts at k0 (a multiple of every step below) and ends with a scalar tail
// when k1 - k0 is not a multiple of kLanes.
template <class Ops, class Elem, int MT, int NT>
inline void f_tile(const uint8_t* wrow, int64_t row_bytes, int64_t k0, int64_t k1, const float* x,
                   int64_t ldx, float* y, int64_t ldy, bool accumulate) {
  using F = typename Ops::F;
  constexpr int L = Ops::kLanes;
  // Vectors per step: <= 8 accumulators. U depends on MT only, never on NT, so the summation
  // order of an output does not depend on how the W rows were paired (which depends on where a
  // thread's row range starts): results are the same for every thread count.
  constexpr int U = MT == 1 ? 4 : (MT == 2 ? 2 : 1);
  constexpr int kStep = U * L;
  F acc[MT][NT][U];
  for (int m = 0; m < MT; ++m)
    for (int n = 0; n < NT; ++n)
      for (int u = 0; u < U; ++u) acc[m][n][u] = Ops::zero();
  int64_t k = k0;
  for (; k + kStep <= k1; k += kStep) {
    F wv[NT][U];
    for (int n = 0; n < NT; ++n) {
      const uint8_t* p = wrow + n * row_bytes + k * Elem::kSize;
      prefetch_range<Ops, kStep * Elem::kSize>(p);
      for (int u = 0; u < U; ++u) wv[n][u] = Elem::template load<Ops>(p + u * L * Elem::kSize);
    }
    for (int m = 0; m < MT; ++m)
      for (int u = 0; u < U; ++u) {
        const F xv = Ops::load_x(x + m * ldx + k + u * L);
        for (int n = 0; n < NT; ++n) acc[m][n][u] = Ops::fma(wv[n][u], xv, acc[m][n][u]);
      }
  }
  for (; k + L <= k1; k += L) {
    F wv[NT];
    for (int n = 0; n < NT; ++n)
      wv[n] = Elem::template load<Ops>(wrow + n * row_bytes + k * Elem::kSize);
    for (int m = 0; m < MT; ++m) {
      const F xv = Ops::load_x(x + m * ldx + k);
      for (int n = 0; n < NT; ++n) acc[m][n][0] = Ops::fma(wv[n], xv, acc[m][n][0]);
    }
  }
  for (int m = 0; m < MT; ++m)
    for (int n = 0; n < NT; ++n) {
      F s = acc[m][n][0];
      for (int u = 1; u < U; ++u) s = Ops::add(s, acc[m][n][u]);
      float t = Ops::hsum(s);
      const uint8_t* wr = wrow + n * row_bytes;
      for (int64_t j = k; j < k1; ++j) t += x[m * ldx + j] * Elem::scalar(wr + j * Elem::kSize);
      float& out = y[m * ldy + n];
      out = accumulate ? out + t : t;
    }
}

// The M > 1 loop nest shared by the float and quantized kernels: W rows [r0, r1) in chunks of
// about kChunkBytes (read from memory once, then from cache), the row in slices of `kc` units
// (values, or blocks for the quantized types; a multiple of every vector step) so the x tile
// slice stays in cache while the chunk's rows pass over it, x rows in tiles of kTileM and W rows
// in tiles of up to kNT. tile(MT, NT, r, k0, k1, m0, accumulate) does W rows [r, r + NT) against
// x rows [m0, m0 + MT) (MT and NT are std::integral_constant, template constants in the tile).
template <int kNT, class Tile>
void blocked_rows(int64_t row_bytes, int64_t cols, int64_t kc, int64_t M, int64_t r0, int64_t r1,
                  const Tile& tile) {
  static_assert(kNT == 1 || kNT == 2, "W row tiles of 1 or 2 rows");
  const int64_t rc = row_bytes >= kChunkBytes ? 1 : kChunkBytes / row_bytes;
  auto rows = [&](auto mt, int64_t c0, int64_t c1, int64_t k0, int64_t k1, int64_t m0) {
    int64_t r = c0;
    if constexpr (kNT == 2)
      for (; r + 2 <= c1; r += 2) tile(mt, std::integral_constant<int, 2>(), r, k0, k1, m0, k0 > 0);
    for (; r < c1; ++r) tile(mt, std::integral_constant<int, 1>(), r, k0, k1, m0, k0 > 0);
  };
  for (int64_t c0 = r0; c0 < r1; c0 += rc) {
    const int64_t c1 = c0 + rc < r1 ? c0 + rc : r1;
    for (int64_t k0 = 0; k0 < cols; k0 += kc) {
      const int64_t k1 = k0 + kc < cols ? k0 + kc : cols;
      for (int64_t m0 = 0; m0 < M; m0 += kTileM) {
        switch (M - m0 < kTileM ? M - m0 : kTileM) {
          case 4:
            rows(std::integral_constant<int, 4>(), c0, c1, k0, k1, m0);
            break;
          case 3:
            rows(std::integral_constant<int, 3>(), c0, c1, k0, k1, m0);
            break;
          case 2:
            rows(std::integral_constant<int, 2>(), c0, c1, k0, k1, m0);
            break;
          default:
            rows(std::integral_constant<int, 1>(), c0, c1, k0, k1, m0);
            break;
        }
      }
    }
  }
}

// Rows [r0, r1) of W against all M rows of x.
template <class Ops, class Elem>
void f_rows(const uint8_t* w, int64_t row_bytes, int64_t cols, const float* x, int64_t ldx,
            int64_t M, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  if (M == 1) {
    for (int64_t r = r0; r < r1; ++r)
      f_tile<Ops, Elem, 1, 1>(w + r * row_bytes, row_bytes, 0, cols, x, ldx, y + r, ldy, false);
    return;
  }
  blocked_rows<2>(row_bytes, cols, kSliceValues, M, r0, r1,
                  [&](auto mt, auto nt, int64_t r, int64_t k0, int64_t k1, int64_t m0, bool acc) {
                    f_tile<Ops, Elem, decltype(mt)::value, decltype(nt)::value>(
                        w + r * row_bytes, row_bytes, k0, k1, x + m0 * ldx, ldx, y + m0 * ldy + r,
                        ldy, acc);
                  });
}

// --- quantized types ------------------------------------------------------------------------
// Ops: static constexpr int kBlocks (blocks per step); using F (fp32 lanes, 8 per block) and I
// (int32 lanes, 8 per block: lane g of a block holds the dot of its values 4g..4g+3);
// static F zero(); static F add(F, F); static float hsum(F); prefetch, prefetch_l2 as above;
// struct Q8W, Q4W; static Q8W q8_load(const uint8_t* blk), static Q4W q4_load(const uint8_t* blk)
// (kBlocks consecutive blocks); static I q8_dot(const Q8W&, const int8_t* x, const int32_t* corr4),
// static I q4_dot(const Q4W&, const int8_t* x, const int32_t* corr4) (exact lane dots, Q4_0 with
// the -8 offset applied); template <int BS> static F load_dw(const uint8_t* blk) (fp32 d_w of
// kBlocks blocks of BS bytes, each in its block's lanes); static F scale_acc(F acc, I dot, F dw,
// const float* d4): acc + fp32(dot) * (dw * d4) lane-wise, the product fused into the sum;
// static constexpr int kGroupSteps: when > 1, the scales of kGroupSteps consecutive steps are
// loaded together (one gather + one fp16 conversion instead of one per step):
// template <int BS> static DwGroup load_dw_group(const uint8_t* blk) (the group's d_w),
// static DwGroup group_scale(const DwGroup&, const float* dx) (times the group's d_x: D),
// static F dw_of(const DwGroup&, int step) (the lanes of one step), static F fma_lanes(F acc,
// I dot, F D): acc + fp32(dot) * D fused (so the same D = fp32(d_w * d_x) as scale_acc).
// Q: static constexpr int kBytes; W; load/dot forwarding to Ops; static int32_t scalar_dot(blk, x).

struct Q8 {
  static constexpr int kBytes = int(kDenseQ8Bytes);
  template <class Ops>
  using W = typename Ops::Q8W;
  template <class Ops>
  static W<Ops> load(const uint8_t* blk) {
    return Ops::q8_load(blk);
  }
  template <class Ops>
  static typename Ops::I dot(const W<Ops>& w, const int8_t* x, const int32_t* corr4) {
    return Ops::q8_dot(w, x, corr4);
  }
  // Exact dot of one block with 32 codes of x: |.| <= 32 * 128 * 127.
  static int32_t scalar_dot(const uint8_t* blk, const int8_t* x) {
    const int8_t* q = reinterpret_cast<const int8_t*>(blk + 2);
    int32_t s = 0;
    for (int j = 0; j < 32; ++j) s += int32_t(q[j]) * int32_t(x[j]);
    return s;
  }
};

struct Q4 {
  static constexpr int kBytes = int(kDenseQ4Bytes);
  template <class Ops>
  using W = typename Ops::Q4W;
  template <class Ops>
  static W<Ops> load(const uint8_t* blk) {
    return Ops::q4_load(blk);
  }
  template <class Ops>
  static typename Ops::I dot(const W<Ops>& w, const int8_t* x, const int32_t* corr4) {
    return Ops::q4_dot(w, x, corr4);
  }
  // Exact dot of one block (codes - 8 in [-8, 7]) with 32 codes of x: |.| <= 32 * 8 * 127.
  static int32_t scalar_dot(const uint8_t* blk, const int8_t* x) {
    const uint8_t* qs = blk + 2;
    int32_t s = 0;
    for (int j = 0; j < 16; ++j) {
      s += (int32_t(qs[j] & 0x0f) - 8) * int32_t(x[j]);
      s += (int32_t(qs[j] >> 4) - 8) * int32_t(x[j + 16]);
    }
    return s;
  }
};

// One W row against MT rows of x over blocks [b0, b1): y[m * ldy] (+)= the partial sum, m < MT
// (`accumulate`: add to y, else overwrite). Blocks past the last full step (b1 - b0 not a
// multiple of kBlocks) are done in scalar code with the reference's formula.
template <class Ops, class Q, int MT>
inline void q_tile(const uint8_t* wrow, int64_t b0, int64_t b1, const DenseQ8Rows& x, int64_t m0,
                   float* y, int64_t ldy, bool accumulate) {
  using F = typename Ops::F;
  constexpr int KB = Ops::kBlocks;
  constexpr int U = MT == 1 ? 2 : 1;  // steps per iteration: 2 independent chains when M = 1
  constexpr int kStepBytes = U * KB * Q::kBytes;
  const int64_t ld4 = x.ld / 4;
  F acc[MT][U];
  for (int m = 0; m < MT; ++m)
    for (int u = 0; u < U; ++u) acc[m][u] = Ops::zero();
  // One step: W blocks at `blk` against the MT rows; scale(m) gives the lane scales of row m.
  auto step = [&](int u, int64_t blk, const auto& scale) {
    const auto wv = Q::template load<Ops>(wrow + blk * Q::kBytes);
    for (int m = 0; m < MT; ++m) {
      const int64_t row = m0 + m;
      const auto dot =
          Q::template dot<Ops>(wv, x.qs + row * x.ld + blk * 32, x.corr4 + row * ld4 + blk * 8);
      acc[m][u] = scale(m, acc[m][u], dot);
    }
  };
  int64_t b = b0;
  if constexpr (Ops::kGroupSteps > 1) {
    // Groups of kGroupSteps steps: D = d_w * d_x for all the group's blocks at once (one gather
    // and conversion of d_w, one product per x row), then one lane broadcast per step.
    constexpr int G = Ops::kGroupSteps;
    static_assert(G % U == 0, "a scale group holds whole iterations");
    for (; b + G * KB <= b1; b += G * KB) {
      const auto g = Ops::template load_dw_group<Q::kBytes>(wrow + b * Q::kBytes);
      typename Ops::DwGroup dg[MT];
      for (int m = 0; m < MT; ++m) dg[m] = Ops::group_scale(g, x.d + (m0 + m) * (x.ld / 32) + b);
      for (int s = 0; s < G; s += U) {
        prefetch_range<Ops, kStepBytes>(wrow + (b + s * KB) * Q::kBytes);
        for (int u = 0; u < U; ++u) {
          step(u, b + (s + u) * KB, [&](int m, const F& a, const auto& dot) {
            return Ops::fma_lanes(a, dot, Ops::dw_of(dg[m], s + u));
          });
        }
      }
    }
  }
  for (; b + KB <= b1; b += KB) {
    if ((b - b0) % (U * KB) == 0) prefetch_range<Ops, kStepBytes>(wrow + b * Q::kBytes);
    const F dw = Ops::template load_dw<Q::kBytes>(wrow + b * Q::kBytes);
    const int u = int((b - b0) / KB) % U;
    step(u, b, [&](int m, const F& a, const auto& dot) {
      return Ops::scale_acc(a, dot, dw, x.d4 + (m0 + m) * ld4 + b * 8);
    });
  }
  for (int m = 0; m < MT; ++m) {
    F s = acc[m][0];
    for (int u = 1; u < U; ++u) s = Ops::add(s, acc[m][u]);
    float t = Ops::hsum(s);
    const int64_t row = m0 + m;
    for (int64_t j = b; j < b1; ++j) {
      const uint8_t* p = wrow + j * Q::kBytes;
      const float dd = block_d(p) * x.d[row * (x.ld / 32) + j];
      t += float(Q::scalar_dot(p, x.qs + row * x.ld + j * 32)) * dd;
    }
    y[m * ldy] = accumulate ? y[m * ldy] + t : t;
  }
}

template <class Ops, class Q>
void q_rows(const uint8_t* w, int64_t row_bytes, int64_t nb, const DenseQ8Rows& x, int64_t M,
            int64_t r0, int64_t r1, float* y, int64_t ldy) {
  if (M == 1) {
    for (int64_t r = r0; r < r1; ++r)
      q_tile<Ops, Q, 1>(w + r * row_bytes, 0, nb, x, 0, y + r, ldy, false);
    return;
  }
  blocked_rows<1>(row_bytes, nb, kSliceValues / 32, M, r0, r1,
                  [&](auto mt, auto, int64_t r, int64_t b0, int64_t b1, int64_t m0, bool acc) {
                    q_tile<Ops, Q, decltype(mt)::value>(w + r * row_bytes, b0, b1, x, m0,
                                                        y + m0 * ldy + r, ldy, acc);
                  });
}

}  // namespace
}  // namespace dense_detail

}  // namespace bitnet::kernels

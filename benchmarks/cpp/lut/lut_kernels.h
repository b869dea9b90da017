// Lookup-table (LUT) ternary x int8 kernels: an experiment measured against the multiply-add
// kernels over the K256 layout (kernels/cpu/kernels.h). Not part of the core library.
//
// ------------------------------------------------------------------------------------------------
// The weight layout "TL2" (3 weights in 5 bits = 1.67 bits per weight, after bitnet.cpp's TL2)
// ------------------------------------------------------------------------------------------------
// A ternary matrix t [N, K] is cut into groups of 3 consecutive values along K (group g holds
// k = 3g, 3g + 1, 3g + 2). A group's pattern (t0, t1, t2) is the balanced-ternary number
//     v = t0 + 3 t1 + 9 t2  in [-13, 13],
// stored as a 4-bit magnitude mag = |v| in [0, 13] plus a sign bit (v < 0). The balanced-ternary
// digits of mag are sign(v) * (t0, t1, t2), so
//     t0 x0 + t1 x1 + t2 x2 = sign(v) * T[mag],   T[m] = sum_i digit_i(m) * x_i,
// and one 16-entry table per activation group (entries 14, 15 unused, zero) serves all 27 patterns.
//
// Rows are stored in row blocks of 32 (N padded to a multiple of 32 with zero rows), K in
// super-groups of 8 groups = 24 values (K padded to Kp3, a multiple of 24, with zeros). A row
// block is n_sg = Kp3 / 24 consecutive 160-byte blocks, one per super-group:
//
//     byte:   0 .. 31      32 .. 63     64 .. 95     96 .. 127    128 .. 159
//             mag[0][r]    mag[1][r]    mag[2][r]    mag[3][r]    sign[r]        (r = row 0..31)
//     mag[p][r]: bits [3:0] = mag of group 2p, bits [7:4] = mag of group 2p + 1 (of row r)
//     sign[r]:   bit j = sign of group j (1: negative), j = 0..7
//
// 8 groups x 5 bits x 32 rows = 160 bytes for 768 weights. One 32-byte load of mag[p] gives the
// lookup indices of 32 rows for 2 groups (vpshufb looks up 32 rows at once: every byte lane of a
// 128-bit lane uses the same table, i.e. the same activation group, so the rows sit in the lanes).
//
// ------------------------------------------------------------------------------------------------
// Exactness: split activations, int8 tables
// ------------------------------------------------------------------------------------------------
// Sums of 3 products reach |384|, too wide for vpshufb's int8 entries. Each activation is split
//     q = 16 h + l,   h = floor((q + 8) / 16) in [-8, 8],   l = q - 16 h in [-8, 7],
// and each group gets two int8 tables T_h (digits . h) and T_l (digits . l): |T_h|, |T_l| <= 24.
// A kernel looks up both, applies the sign (negation is exact on each part), and sums
//     sum_k t_k q_k = 16 * sum(T_h lookups) + sum(T_l lookups)     (exact integer identity).
//
// Bounds (every int8 input, including all -128 and all +127):
//   * int8 part accumulators: 4 signed lookups of |.| <= 24 per lane  -> |.| <= 96 <= 127.
//   * combine with vpmaddubsw(u8 {1, 16}, s8 {l, h}) -> l + 16 h per row, |.| <= 96 + 16 * 96
//     = 1632 < 32767: the instruction never saturates.
//   * the int16 row accumulator holds the exact partial dot product of at most 240 weights
//     (10 super-groups) before it is widened into int32: |.| <= 240 * 128 = 30720 <= 32767.
//   * int32 totals: |sum| <= 128 * Kp3 < 2^31 for Kp3 < 2^24.
//
// ------------------------------------------------------------------------------------------------
// The lookup tables (one set per activation row, built by build_lut_tl2_i8 of the ISA)
// ------------------------------------------------------------------------------------------------
//   AVX2 layout ("lut16"): group g at byte 32 g: T_h[0..15] then T_l[0..15]  (32 bytes per group,
//       n_sg * 256 bytes per activation row). Kernels load each half with vbroadcasti128.
//   AVX-512 layout ("lut64"): super-group s at byte 512 s: 8 vectors of 64 bytes
//       [h(0,2) l(0,2) h(1,3) l(1,3) h(4,6) l(4,6) h(5,7) l(5,7)],  h(a,b) = T_h of group 8s+a in
//       128-bit lanes 0 and 1, T_h of group 8s+b in lanes 2 and 3 (n_sg * 512 bytes per row):
//       a 64-byte weight load covers mag[p] and mag[p+1], i.e. groups (2p, 2p+2) in the low
//       nibbles and (2p+1, 2p+3) in the high nibbles.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bitnet::kernels {

constexpr int64_t kTl2Rows = 32;         // rows per row block
constexpr int64_t kTl2GroupValues = 3;   // weights per group (one table lookup)
constexpr int64_t kTl2SgGroups = 8;      // groups per super-group
constexpr int64_t kTl2SgValues = 24;     // weights per super-group
constexpr int64_t kTl2FlushSg = 10;      // super-groups per int16 accumulator (240 weights)
constexpr int64_t kTl2Lut16Bytes = 256;  // AVX2 table bytes per super-group per activation row
constexpr int64_t kTl2Lut64Bytes = 512;  // AVX-512 table bytes per super-group per activation row

// One super-group of one 32-row block; see the drawing above.
struct block_tl2 {
  uint8_t mag[4][32];  // bytes 0..127: two 4-bit magnitudes per byte
  uint8_t sign[32];    // bytes 128..159: 8 sign bits per row
};
static_assert(sizeof(block_tl2) == 160, "TL2 block is 160 bytes (768 weights, 1.67 bits each)");

// Shape bookkeeping of a TL2 matrix.
struct Tl2Shape {
  int64_t n = 0, k = 0;
  int64_t n_blocks = 0;  // row blocks: ceil(n / 32)
  int64_t n_sg = 0;      // super-groups per row: ceil(k / 24)
  int64_t nbytes() const { return n_blocks * n_sg * int64_t(sizeof(block_tl2)); }
};
Tl2Shape tl2_shape(int64_t n, int64_t k);

// Packs ternary t [n, k] (row-major, values in {-1, 0, 1}; throws std::invalid_argument on any
// other value) into out[tl2_shape(n, k).nbytes()], zero-padding rows and columns.
void pack_tl2(const int8_t* t, int64_t n, int64_t k, uint8_t* out);

// Packs ternary t [n, k] into the K256 kernel layout (kernels.h) with nb = ceil(k / 256):
// out[n * nb * 64]. Used for the large decode weight set (PackedWeights::kernel() is checked to
// produce the same bytes).
void pack_k256(const int8_t* t, int64_t n, int64_t k, uint8_t* out);

// Contract of the TL2 product (every ISA): for activation rows m in [0, M) and weight rows
// n in [n0, n1) (n0 a multiple of 32, n1 <= N):
//   y[m * ldy + n] = float(sum_k t[n][k] * q[m][k]) * (w_scale / s_x[m])
// which equals the K256 kernels' float(sum_k code * q - q_sum) * (w_scale / s_x[m]) bit for bit.
// Rows of the last 32-row block past n1 are computed but not stored. Requires k < 2^23 (int32
// totals, see the bounds above).
// w points at row block 0; lut at the tables of activation row 0, lut_stride bytes per row
// (n_sg * kTl2Lut16Bytes for AVX2 / ref, n_sg * kTl2Lut64Bytes for AVX-512).
// prefetch: when > 0, the kernel prefetches the weight bytes that far ahead of the block it
// reads (never past row n1's block); 0 leaves it to the hardware prefetchers.
using gemm_tl2_fn = void (*)(const uint8_t* w, int64_t n_sg, const int8_t* lut, int64_t lut_stride,
                             const float* s_x, int64_t M, int64_t n0, int64_t n1, float w_scale,
                             float* y, int64_t ldy, int64_t prefetch);
// Builds the tables of one activation row q[0, k) (values past k read as 0) for n_sg
// super-groups into lut (the ISA's layout, see above).
using build_lut_tl2_fn = void (*)(const int8_t* q, int64_t k, int64_t n_sg, int8_t* lut);

namespace ref {  // portable scalar code: the specification of the tables and the TL2 product
void build_lut_tl2_i8(const int8_t* q, int64_t k, int64_t n_sg, int8_t* lut);  // lut16 layout
void gemm_tl2_i8(const uint8_t* w, int64_t n_sg, const int8_t* lut, int64_t lut_stride,
                 const float* s_x, int64_t M, int64_t n0, int64_t n1, float w_scale, float* y,
                 int64_t ldy, int64_t prefetch);
}  // namespace ref

namespace avx2 {  // AVX2: vpshufb ymm + vpsignb; lut16 tables
void build_lut_tl2_i8(const int8_t* q, int64_t k, int64_t n_sg, int8_t* lut);
void gemv_tl2_i8(const uint8_t* w, int64_t n_sg, const int8_t* lut, int64_t lut_stride,
                 const float* s_x, int64_t M, int64_t n0, int64_t n1, float w_scale, float* y,
                 int64_t ldy, int64_t prefetch);
void gemm_tl2_i8(const uint8_t* w, int64_t n_sg, const int8_t* lut, int64_t lut_stride,
                 const float* s_x, int64_t M, int64_t n0, int64_t n1, float w_scale, float* y,
                 int64_t ldy, int64_t prefetch);
}  // namespace avx2

namespace avx512 {  // AVX-512 F/BW/VL: vpshufb zmm + masked negation; lut64 tables
void build_lut_tl2_i8(const int8_t* q, int64_t k, int64_t n_sg, int8_t* lut);
void gemv_tl2_i8(const uint8_t* w, int64_t n_sg, const int8_t* lut, int64_t lut_stride,
                 const float* s_x, int64_t M, int64_t n0, int64_t n1, float w_scale, float* y,
                 int64_t ldy, int64_t prefetch);
void gemm_tl2_i8(const uint8_t* w, int64_t n_sg, const int8_t* lut, int64_t lut_stride,
                 const float* s_x, int64_t M, int64_t n0, int64_t n1, float w_scale, float* y,
                 int64_t ldy, int64_t prefetch);
}  // namespace avx512

// Controls for the multiply-add side: the core's K256 GEMV (k256_gemm<1, 4>) plus software
// prefetch of the weights, `prefetch` bytes ahead (< 0: -prefetch tiles of 4 rows); M == 1 only.
namespace avx2 {
void gemv_k256_i8_prefetch(const uint8_t* w, int64_t nb, const int8_t* q, const float* s_x,
                           const int32_t* q_sum, int64_t M, int64_t n0, int64_t n1, float w_scale,
                           float* y, int64_t ldy, int64_t prefetch);
}  // namespace avx2
namespace avx512_vnni {
void gemv_k256_i8_prefetch(const uint8_t* w, int64_t nb, const int8_t* q, const float* s_x,
                           const int32_t* q_sum, int64_t M, int64_t n0, int64_t n1, float w_scale,
                           float* y, int64_t ldy, int64_t prefetch);
}  // namespace avx512_vnni

}  // namespace bitnet::kernels

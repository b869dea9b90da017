// ggml's Q8_0 and Q4_0 block quantization (docs/formats.md section 2), used for the tied
// embedding / LM head. The rounding is exactly that of ggml's reference quantizer
// (quantize_row_q8_0_ref / quantize_row_q4_0_ref), which the `gguf` python package reproduces in
// gguf.quants; python/bitnet/quant/reference.py holds the numpy reference and the tests check all
// three agree bit for bit.
//
// Both types cut every row into blocks of 32 consecutive values; no block crosses a row, so a row
// of k values (k a multiple of 32) is k / 32 blocks and a [rows, k] matrix is exactly the GGUF
// tensor data: rows * (k / 32) blocks, row-major. Multi-byte fields are little-endian (the host
// order on every platform the package builds for).
#pragma once

#include <cstdint>
#include <string>

namespace bitnet {

constexpr int64_t kGgmlBlockValues = 32;  // QK8_0 == QK4_0 == 32

// --- Q8_0 (ggml type 8): 32 values per 34-byte block ------------------------------------------
//
//   byte:  0      1      2      3      4            33
//        +------+------+------+------+------+ ... +------+
//        |  d (fp16)   | q[0] | q[1] | q[2] |     | q[31]|     q[j]: int8 in [-127, 127]
//        +------+------+------+------+------+ ... +------+
//
//   value j = fp16_to_fp32(d) * q[j].
//   Quantizer (all fp32): amax = max_j |x_j|; d = amax / 127; id = d != 0 ? 1 / d : 0;
//   q[j] = round_half_away_from_zero(x_j * id); the block stores fp16(d) (round to nearest even).
//   Note that q is computed with the fp32 d, not with the stored fp16 d.
struct block_q8_0 {
  uint16_t d;     // IEEE fp16 bits of the scale
  int8_t qs[32];  // quants
};
static_assert(sizeof(block_q8_0) == 34, "Q8_0 block is 34 bytes");

// --- Q4_0 (ggml type 2): 32 values per 18-byte block ------------------------------------------
//
//   byte:  0      1      2         3                 17
//        +------+------+---------+---------+ ... +---------+
//        |  d (fp16)   | qs[0]   | qs[1]   |     | qs[15]  |
//        +------+------+---------+---------+ ... +---------+
//   qs[m] bits 0..3 = code of value m, bits 4..7 = code of value m + 16 (m = 0..15)
//
//   value j = fp16_to_fp32(d) * (code_j - 8), codes in [0, 15].
//   Quantizer (all fp32): max = the x_j of largest |x_j| (signed; the first one on ties);
//   d = max / -8; id = d != 0 ? 1 / d : 0; code_j = min(15, trunc(x_j * id + 8.5)). The value of
//   largest magnitude thus maps to code 0 (-8 * d = max) and the opposite extreme to 15 (+7 d).
struct block_q4_0 {
  uint16_t d;      // IEEE fp16 bits of the scale
  uint8_t qs[16];  // nibbles
};
static_assert(sizeof(block_q4_0) == 18, "Q4_0 block is 18 bytes");

// Degenerate blocks: when amax is so small (below about 3.7e-37 for Q8_0, 2.4e-38 for Q4_0, both
// far below fp16's range, so the stored d is 0 and the block dequantizes to zeros) that 1 / d
// overflows fp32 to infinity, ggml's casts of the infinite x * id are undefined behaviour. Here
// they are defined: a NaN product (0 * inf) gives the quant of 0 (Q8_0 q = 0, Q4_0 code 8) and an
// infinite one saturates (Q8_0 +-127, Q4_0 codes 0 / 15). In every other case the clamps are
// no-ops (|x * id| <= 127 * (1 + 2^-24)^3 for Q8_0, so no rounding ever reaches 128).

// The two ggml block types (values are ggml's type ids).
enum class GgmlQuant : int { q4_0 = 2, q8_0 = 8 };

const char* ggml_quant_name(GgmlQuant t);
// "q8_0" | "q4_0" (case-insensitive); throws std::invalid_argument naming the string otherwise.
GgmlQuant parse_ggml_quant(const std::string& name);
// Bytes per 32-value block: 34 (Q8_0) or 18 (Q4_0).
int64_t ggml_quant_block_bytes(GgmlQuant t);
// Bytes of one quantized row of k values. Throws std::invalid_argument naming the type when k is
// not a positive multiple of 32.
int64_t ggml_quant_row_bytes(GgmlQuant t, int64_t k);

// --- one row --------------------------------------------------------------------------------
// x: k floats (k a positive multiple of 32, checked); y: k / 32 blocks. `row` is used only in
// error messages. Throw std::invalid_argument naming the row and column when x holds a NaN or an
// infinity, and naming the row and block when the block's scale d does not fit fp16 (fp16(d) is
// infinite: amax > 65504 * 127 for Q8_0, |max| > 65504 * 8 for Q4_0, up to rounding), which would
// make the block unreadable.
void quantize_row_q8_0(const float* x, block_q8_0* y, int64_t k, int64_t row = 0);
void quantize_row_q4_0(const float* x, block_q4_0* y, int64_t k, int64_t row = 0);

// x: k / 32 blocks; y: k floats, value = fp32(d) * q computed as one fp32 product (exact: at most
// 11 + 8 significant bits). Throw std::invalid_argument naming the row and block when a block's
// d is infinite or NaN (corrupt data).
void dequantize_row_q8_0(const block_q8_0* x, float* y, int64_t k, int64_t row = 0);
void dequantize_row_q4_0(const block_q4_0* x, float* y, int64_t k, int64_t row = 0);

// --- whole matrices [rows, k], row-major, split by rows over the thread pool ----------------
// Results do not depend on the thread count. On bad input the error names the smallest bad row.

// Element type of a matrix to quantize; f16 / bf16 are raw 16-bit patterns, widened exactly.
enum class SrcType : int { f32 = 0, f16 = 1, bf16 = 2 };
const char* src_type_name(SrcType s);

// x: rows * k elements of type `src`; out: rows * ggml_quant_row_bytes(t, k) bytes (no
// alignment required). Throws std::invalid_argument on an empty shape, k not a multiple of 32, a
// size overflow, non-finite input or an fp16 overflow of a scale (see the row functions).
void ggml_quantize(GgmlQuant t, const void* x, SrcType src, int64_t rows, int64_t k, uint8_t* out);

// data: rows * ggml_quant_row_bytes(t, k) bytes (no alignment required); out: rows * k floats.
// Throws std::invalid_argument on a bad shape or a non-finite block scale.
void ggml_dequantize(GgmlQuant t, const uint8_t* data, int64_t rows, int64_t k, float* out);

// Typed conveniences over the two above (fp32 input).
void quantize_q8_0(const float* x, int64_t rows, int64_t k, block_q8_0* y);
void quantize_q4_0(const float* x, int64_t rows, int64_t k, block_q4_0* y);
void dequantize_q8_0(const block_q8_0* x, int64_t rows, int64_t k, float* y);
void dequantize_q4_0(const block_q4_0* x, int64_t rows, int64_t k, float* y);

}  // namespace bitnet

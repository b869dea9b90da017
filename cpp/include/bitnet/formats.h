// Ternary storage formats: the file formats I2_S, TQ1_0, TQ2_0 and the kernel layout K256
// ("native"). One C++ pack/unpack per format; python/bitnet/quant/reference.py holds the numpy
// reference of each, and the tests check they agree bit for bit.
#pragma once

#include <cstdint>
#include <string>

namespace bitnet {

enum class Format : int { i2_s = 0, tq1_0 = 1, tq2_0 = 2, native = 3 };

const char* format_name(Format f);
// "i2_s" | "tq1_0" | "tq2_0" | "native" (case-insensitive); throws std::invalid_argument.
Format parse_format(const std::string& name);

// The row length K must be a multiple of this (I2_S 128, TQ types 256, native any).
int64_t format_row_multiple(Format f);
// Bytes of a packed [n, k] matrix, including I2_S's 32-byte scale tail. Throws
// std::invalid_argument naming the format when k is not a multiple of the block or the size
// overflows.
int64_t packed_nbytes(Format f, int64_t n, int64_t k);

// --- TQ2_0 (ggml type 35): 256 values per 66-byte block ---------------------------------------
//   bytes 0..63  qs: qs[h*32 + m] holds values h*128 + j*32 + m at bits 2j (j = 0..3), code t+1
//   bytes 64..65 d: fp16 scale (block absmax; the tensor scale for ternary weights, 0 if all 0)
struct block_tq2_0 {
  uint8_t qs[64];
  uint16_t d;  // IEEE fp16 bits
};
static_assert(sizeof(block_tq2_0) == 66, "TQ2_0 block is 66 bytes");

// --- TQ1_0 (ggml type 34): 256 values per 54-byte block ---------------------------------------
//   bytes 0..31  qs[m]:    5 trits, values m + 32j (j = 0..4, j = 0 most significant, base 3)
//   bytes 32..47 qs[32+m]: 5 trits, values 160 + m + 16j
//   bytes 48..51 qh[m]:    4 trits, values 240 + m + 4j, times 3 (a 5th trit of 0)
//   bytes 52..53 d:        fp16 scale
//   each base-3 number b in [0, 242] is stored as ceil(b * 256 / 243); trit j reads back as
//   ((uint8_t)(byte * 3^j) * 3) >> 8.
struct block_tq1_0 {
  uint8_t qs[48];
  uint8_t qh[4];
  uint16_t d;
};
static_assert(sizeof(block_tq1_0) == 54, "TQ1_0 block is 54 bytes");

// --- I2_S (bitnet.cpp, type 36): the tensor flattened row-major in blocks of 128 values -------
//   32 bytes per block: value j of a block at byte j % 32, bit shift 6 - 2 * (j / 32), code t+1;
//   after all blocks a 32-byte tail: fp32 scale s_w in bytes 0..3, zeros after.
constexpr int64_t kI2sBlockValues = 128;
constexpr int64_t kI2sBlockBytes = 32;
constexpr int64_t kI2sTailBytes = 32;

// Packs ternary t[n*k] (row-major, values in {-1, 0, 1}, validated) with scale `scale` (> 0,
// finite) into out[packed_nbytes(f, n, k)]. For TQ types every block stores d = fp16(scale), or
// 0 for an all-zero block, exactly as ggml's quantizer does on the dequantized tensor t * scale.
void pack_ternary(Format f, const int8_t* t, int64_t n, int64_t k, float scale, uint8_t* out);

// Unpacks into t[n*k] and returns the tensor scale. TQ blocks with d == 0 unpack as zeros; TQ
// blocks must otherwise share one d (BitNet's one scale per tensor), else std::invalid_argument.
// Codes of 3 (I2_S, TQ2_0, native) are invalid and rejected with std::invalid_argument.
float unpack_ternary(Format f, const uint8_t* data, int64_t n, int64_t k, int8_t* t);

// Converts packed data of any format into the kernel layout K256 (kernels.h):
// out[n * ceil(k / 256) * 64], returning the tensor scale. Same validation as unpack_ternary.
float repack_native(Format f, const uint8_t* data, int64_t n, int64_t k, uint8_t* out);

// IEEE half <-> float (round to nearest even), independent of the CPU's F16C support.
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);

}  // namespace bitnet

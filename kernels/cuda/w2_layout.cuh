// The GPU weight layout of ternary matrices, "W2G" (docs/cuda.md), and its host-side repackers.
// Plain C++ declarations: included by the kernels and by the Python bindings.
//
// A ternary matrix t [N, K] (t in {-1, 0, +1}) is stored as N rows of Kp / 16 uint32 words,
// Kp = K rounded up to a multiple of 64 (kW2gKAlign). Word w of a row holds the 16 values
// k = 16 w + 4 i + b (i, b in 0..3) as the 2-bit code t + 1 in {0, 1, 2} at bit 8 b + 2 i.
// So `(word >> 2 i) & 0x03030303` is four bytes holding the codes of the four consecutive values
// 16 w + 4 i .. 16 w + 4 i + 3: exactly the operand of one __dp4a against four consecutive
// int8 activations, and, after a per-byte subtraction of 1 (__vsub4), four int8 t values for a
// tensor-core fragment. Padding values (K <= k < Kp) hold code 1 (t = 0). A row is Kp / 4 bytes,
// so every row starts 16-byte aligned: a uint4 load gives 64 consecutive values.
//
// The activations that meet these weights are int8 rows of Kp values, zero-padded (act_quant).
#pragma once

#include <cstdint>

namespace bitnet::cuda {

constexpr int64_t kW2gKAlign = 64;  // Kp is a multiple of this

inline int64_t w2g_kpad(int64_t K) { return (K + kW2gKAlign - 1) / kW2gKAlign * kW2gKAlign; }
// uint32 words per row.
inline int64_t w2g_row_words(int64_t K) { return w2g_kpad(K) / 16; }

// t [N, K] int8 in {-1, 0, 1} -> out [N, w2g_row_words(K)] uint32. Throws std::invalid_argument
// naming the flat index of a value outside {-1, 0, 1}.
void w2g_from_ternary(const int8_t* t, int64_t N, int64_t K, uint32_t* out);

// The CPU kernel layout K256 (kernels/cpu/kernels.h: rows of ceil(K / 256) blocks of 64 bytes,
// value j of a block in byte j % 64 at bit shift 2 (j / 64), code t + 1) -> W2G. This is the
// load-time repack of a model's matrices. Throws std::invalid_argument on a code 3.
void w2g_from_k256(const uint8_t* k256, int64_t N, int64_t K, uint32_t* out);

}  // namespace bitnet::cuda

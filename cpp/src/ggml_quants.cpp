// ggml's Q8_0 and Q4_0 block quantization (layouts and formulas drawn in ggml_quants.h).
//
// Bit-exactness with ggml's reference quantizer rests on three points:
//  * every intermediate is one correctly rounded fp32 operation, in ggml's order (d = amax / 127,
//    id = 1 / d, x * id, + 8.5), with no fused multiply-add: Q4_0's `x * id + 8.5f` must round
//    the product before the sum, so contraction is switched off for this file below (GCC's
//    default for gnu++17 is -ffp-contract=fast, which fuses on targets with FMA such as aarch64);
//  * Q8_0 rounds half away from zero (like C's roundf), not to nearest even;
//  * the stored d is fp16(d) rounded to nearest even (fp32_to_fp16), while q uses the fp32 d.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "bitnet/ggml_quants.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "bitnet/common.h"
#include "bitnet/formats.h"
#include "bitnet/threadpool.h"

namespace bitnet {

namespace {

constexpr int64_t kQK = kGgmlBlockValues;

// Outcome of quantizing one block; `col` is the offending column within the block.
struct BlockStatus {
  enum Kind { ok, non_finite, scale_overflow } kind = ok;
  int col = 0;
  float value = 0.0f;  // the non-finite input, or the fp32 scale that overflows fp16
};

bool fp16_is_finite(uint16_t h) { return (h & 0x7c00) != 0x7c00; }

BlockStatus check_finite(const float* x) {
  for (int j = 0; j < kQK; ++j)
    if (!std::isfinite(x[j])) return {BlockStatus::non_finite, j, x[j]};
  return {};
}

// Q8_0 of 32 values x[0..31] into b. Never throws; reports bad input in the status.
BlockStatus quantize_block_q8_0(const float* x, block_q8_0& b) {
  BlockStatus st = check_finite(x);
  if (st.kind != BlockStatus::ok) return st;
  float amax = 0.0f;
  for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  b.d = fp32_to_fp16(d);
  if (!fp16_is_finite(b.d)) return {BlockStatus::scale_overflow, 0, d};
  for (int j = 0; j < kQK; ++j) {
    float v = x[j] * id;
    // No-op unless 1 / d overflowed (see the header): NaN (0 * inf) -> 0, +-inf -> +-127.
    v = std::isnan(v) ? 0.0f : std::min(127.0f, std::max(-127.0f, v));
    // roundf(v), i.e. half away from zero, inlined: v - trunc(v) is exact for |v| <= 127.
    const int i = int(v);
    const float frac = v - float(i);
    b.qs[j] = int8_t(i + (frac >= 0.5f) - (frac <= -0.5f));
  }
  return {};
}

// Q4_0 of 32 values x[0..31] into b. Never throws; reports bad input in the status.
BlockStatus quantize_block_q4_0(const float* x, block_q4_0& b) {
  BlockStatus st = check_finite(x);
  if (st.kind != BlockStatus::ok) return st;
  // The first value of largest magnitude, sign included (so a block of -0.0 has max = -0.0).
  float amax = std::fabs(x[0]), max = x[0];
  for (int j = 1; j < kQK; ++j) {
    if (amax < std::fabs(x[j])) {  // strict: the first of equal magnitudes wins
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  const float d = max / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  b.d = fp32_to_fp16(d);
  if (!fp16_is_finite(b.d)) return {BlockStatus::scale_overflow, 0, d};
  uint8_t code[kQK];
  for (int j = 0; j < kQK; ++j) {
    const float p = x[j] * id;  // rounded to fp32 first (contraction is off in this file)
    const float v = p + 8.5f;   // in [0.5 - 2^-20, 16.5 + 2^-19] unless 1 / d overflowed
    // min(15, trunc(v)) as ggml (the float -> uint8 cast truncates); max(0, .) and NaN -> 8
    // only act when 1 / d overflowed.
    code[j] = std::isnan(v) ? uint8_t(8) : uint8_t(std::min(15.0f, std::max(0.0f, v)));
  }
  for (int m = 0; m < kQK / 2; ++m) b.qs[m] = uint8_t(code[m] | code[m + kQK / 2] << 4);
  return {};
}

bool dequantize_block_q8_0(const block_q8_0& b, float* y) {
  if (!fp16_is_finite(b.d)) return false;
  const float d = fp16_to_fp32(b.d);
  for (int j = 0; j < kQK; ++j) y[j] = d * float(b.qs[j]);
  return true;
}

bool dequantize_block_q4_0(const block_q4_0& b, float* y) {
  if (!fp16_is_finite(b.d)) return false;
  const float d = fp16_to_fp32(b.d);
  for (int m = 0; m < kQK / 2; ++m) {
    y[m] = d * float(int(b.qs[m] & 0x0f) - 8);
    y[m + kQK / 2] = d * float(int(b.qs[m] >> 4) - 8);
  }
  return true;
}

[[noreturn]] void throw_quantize_error(GgmlQuant t, const BlockStatus& st, int64_t row,
                                       int64_t block) {
  const char* name = ggml_quant_name(t);
  if (st.kind == BlockStatus::non_finite)
    throw std::invalid_argument(str_cat(name, ": row ", row, " holds a non-finite value (",
                                        st.value, ") at column ", block * kQK + st.col));
  throw std::invalid_argument(
      str_cat(name, ": row ", row, ", block ", block, " (columns ", block * kQK, "..",
              block * kQK + kQK - 1, "): scale d = ", st.value, " overflows fp16 (max 65504); ",
              name, " holds |x| up to about ", t == GgmlQuant::q8_0 ? "65504 * 127" : "65504 * 8",
              ", use f16/f32 for this tensor"));
}

[[noreturn]] void throw_dequantize_error(GgmlQuant t, uint16_t d, int64_t row, int64_t block) {
  throw std::invalid_argument(str_cat(ggml_quant_name(t), ": row ", row, ", block ", block,
                                      " has a non-finite scale d (fp16 bits 0x", std::hex, d,
                                      std::dec, "); corrupt data?"));
}

void check_k(GgmlQuant t, int64_t k) {
  check_arg(k > 0 && k % kQK == 0, ggml_quant_name(t), ": row length k = ", k,
            " is not a positive multiple of ", kQK, " (the block size)");
}

void check_shape(GgmlQuant t, int64_t rows, int64_t k) {
  check_arg(rows > 0 && k > 0, ggml_quant_name(t), ": shape [", rows, ", ", k,
            "] must be non-empty");
  check_k(t, k);
  check_arg(rows <= std::numeric_limits<int64_t>::max() / 8 / k, ggml_quant_name(t), ": shape [",
            rows, ", ", k, "] is too large");
}

// Rows per pool task: enough values per task (>= 32k) to pay for waking a thread.
int64_t rows_per_task(int64_t k) { return std::max<int64_t>(1, (int64_t(1) << 15) / k); }

}  // namespace

// ------------------------------------------------------------------------------ names, sizes
const char* ggml_quant_name(GgmlQuant t) { return t == GgmlQuant::q8_0 ? "q8_0" : "q4_0"; }

GgmlQuant parse_ggml_quant(const std::string& name) {
  std::string s = name;
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  if (s == "q8_0") return GgmlQuant::q8_0;
  if (s == "q4_0") return GgmlQuant::q4_0;
  throw std::invalid_argument(
      str_cat("unknown ggml block type '", name, "'; expected one of q8_0, q4_0"));
}

int64_t ggml_quant_block_bytes(GgmlQuant t) {
  return t == GgmlQuant::q8_0 ? int64_t(sizeof(block_q8_0)) : int64_t(sizeof(block_q4_0));
}

int64_t ggml_quant_row_bytes(GgmlQuant t, int64_t k) {
  check_k(t, k);
  return k / kQK * ggml_quant_block_bytes(t);
}

const char* src_type_name(SrcType s) {
  switch (s) {
    case SrcType::f32:
      return "float32";
    case SrcType::f16:
      return "float16";
    case SrcType::bf16:
      return "bfloat16";
  }
  return "?";
}

// ------------------------------------------------------------------------------ rows
void quantize_row_q8_0(const float* x, block_q8_0* y, int64_t k, int64_t row) {
  check_k(GgmlQuant::q8_0, k);
  for (int64_t b = 0; b < k / kQK; ++b) {
    const BlockStatus st = quantize_block_q8_0(x + b * kQK, y[b]);
    if (st.kind != BlockStatus::ok) throw_quantize_error(GgmlQuant::q8_0, st, row, b);
  }
}

void quantize_row_q4_0(const float* x, block_q4_0* y, int64_t k, int64_t row) {
  check_k(GgmlQuant::q4_0, k);
  for (int64_t b = 0; b < k / kQK; ++b) {
    const BlockStatus st = quantize_block_q4_0(x + b * kQK, y[b]);
    if (st.kind != BlockStatus::ok) throw_quantize_error(GgmlQuant::q4_0, st, row, b);
  }
}

void dequantize_row_q8_0(const block_q8_0* x, float* y, int64_t k, int64_t row) {
  check_k(GgmlQuant::q8_0, k);
  for (int64_t b = 0; b < k / kQK; ++b)
    if (!dequantize_block_q8_0(x[b], y + b * kQK))
      throw_dequantize_error(GgmlQuant::q8_0, x[b].d, row, b);
}

void dequantize_row_q4_0(const block_q4_0* x, float* y, int64_t k, int64_t row) {
  check_k(GgmlQuant::q4_0, k);
  for (int64_t b = 0; b < k / kQK; ++b)
    if (!dequantize_block_q4_0(x[b], y + b * kQK))
      throw_dequantize_error(GgmlQuant::q4_0, x[b].d, row, b);
}

// ------------------------------------------------------------------------------ matrices
namespace {

// Widens n 16-bit floats (fp16 or bf16 bit patterns) to fp32, exactly.
void widen_row(const uint16_t* x, SrcType src, int64_t n, float* out) {
  if (src == SrcType::f16) {
    for (int64_t i = 0; i < n; ++i) out[i] = fp16_to_fp32(x[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t bits = uint32_t(x[i]) << 16;
      std::memcpy(&out[i], &bits, 4);
    }
  }
}

// Runs row_fn(r, scratch) for every row in [0, rows) on the pool, `per_task` rows per task.
// row_fn may throw std::invalid_argument; the message of the smallest failing row is rethrown
// (tasks cover increasing row ranges and stop at their first failure).
template <typename Scratch, typename MakeScratch, typename RowFn>
void for_rows(int64_t rows, int64_t per_task, const MakeScratch& make_scratch,
              const RowFn& row_fn) {
  const int64_t n_tasks = ceil_div(rows, per_task);
  std::vector<std::string> errors(static_cast<size_t>(n_tasks));
  parallel_for(n_tasks, [&](int64_t task, int) {
    Scratch scratch = make_scratch();
    const int64_t lo = task * per_task, hi = std::min(rows, lo + per_task);
    for (int64_t r = lo; r < hi; ++r) {
      try {
        row_fn(r, scratch);
      } catch (const std::invalid_argument& e) {
        errors[size_t(task)] = e.what();
        return;
      }
    }
  });
  for (const std::string& e : errors)
    if (!e.empty()) throw std::invalid_argument(e);
}

// Quantizes through the typed row function into an aligned row of blocks, then copies the row
// to `out` (which needs no alignment).
template <typename Block, typename QuantRow>
void quantize_matrix(const void* x, SrcType src, int64_t rows, int64_t k, uint8_t* out,
                     QuantRow quant_row) {
  struct Scratch {
    std::vector<float> xrow;  // widened input row (fp16 / bf16 sources only)
    std::vector<Block> yrow;  // k / 32 blocks
  };
  const int64_t rb = k / kQK * int64_t(sizeof(Block));
  for_rows<Scratch>(
      rows, rows_per_task(k),
      [&] {
        return Scratch{std::vector<float>(src == SrcType::f32 ? 0 : static_cast<size_t>(k)),
                       std::vector<Block>(static_cast<size_t>(k / kQK))};
      },
      [&](int64_t r, Scratch& s) {
        const float* xr;
        if (src == SrcType::f32) {
          xr = static_cast<const float*>(x) + r * k;
        } else {
          widen_row(static_cast<const uint16_t*>(x) + r * k, src, k, s.xrow.data());
          xr = s.xrow.data();
        }
        quant_row(xr, s.yrow.data(), k, r);
        std::memcpy(out + r * rb, s.yrow.data(), size_t(rb));
      });
}

// Copies each row of blocks into an aligned scratch row, then runs the typed row function.
template <typename Block, typename DequantRow>
void dequantize_matrix(const uint8_t* data, int64_t rows, int64_t k, float* out,
                       DequantRow dequant_row) {
  const int64_t rb = k / kQK * int64_t(sizeof(Block));
  for_rows<std::vector<Block>>(
      rows, rows_per_task(k), [&] { return std::vector<Block>(static_cast<size_t>(k / kQK)); },
      [&](int64_t r, std::vector<Block>& blocks) {
        std::memcpy(blocks.data(), data + r * rb, size_t(rb));
        dequant_row(blocks.data(), out + r * k, k, r);
      });
}

}  // namespace

void ggml_quantize(GgmlQuant t, const void* x, SrcType src, int64_t rows, int64_t k, uint8_t* out) {
  check_shape(t, rows, k);
  if (t == GgmlQuant::q8_0)
    quantize_matrix<block_q8_0>(x, src, rows, k, out, quantize_row_q8_0);
  else
    quantize_matrix<block_q4_0>(x, src, rows, k, out, quantize_row_q4_0);
}

void ggml_dequantize(GgmlQuant t, const uint8_t* data, int64_t rows, int64_t k, float* out) {
  check_shape(t, rows, k);
  if (t == GgmlQuant::q8_0)
    dequantize_matrix<block_q8_0>(data, rows, k, out, dequantize_row_q8_0);
  else
    dequantize_matrix<block_q4_0>(data, rows, k, out, dequantize_row_q4_0);
}

void quantize_q8_0(const float* x, int64_t rows, int64_t k, block_q8_0* y) {
  ggml_quantize(GgmlQuant::q8_0, x, SrcType::f32, rows, k, reinterpret_cast<uint8_t*>(y));
}

void quantize_q4_0(const float* x, int64_t rows, int64_t k, block_q4_0* y) {
  ggml_quantize(GgmlQuant::q4_0, x, SrcType::f32, rows, k, reinterpret_cast<uint8_t*>(y));
}

void dequantize_q8_0(const block_q8_0* x, int64_t rows, int64_t k, float* y) {
  ggml_dequantize(GgmlQuant::q8_0, reinterpret_cast<const uint8_t*>(x), rows, k, y);
}

void dequantize_q4_0(const block_q4_0* x, int64_t rows, int64_t k, float* y) {
  ggml_dequantize(GgmlQuant::q4_0, reinterpret_cast<const uint8_t*>(x), rows, k, y);
}

}  // namespace bitnet

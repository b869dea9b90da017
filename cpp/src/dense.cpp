// DenseMatrix (bitnet/dense.h): validation, row lookup, and the product split over the thread
// pool; plus the dense kernel tables (kernels/cpu/dense_kernels.h). Compiled without ISA flags:
// it only takes the addresses of the ISA kernels and calls them after the dispatcher's checks.
#include "bitnet/dense.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "bitnet/common.h"
#include "bitnet/formats.h"
#include "bitnet/ggml_quants.h"
#include "bitnet/memory.h"
#include "bitnet/threadpool.h"
#include "dense_kernels.h"

namespace bitnet {

// ============================================================================ kernel tables
namespace kernels {

namespace {

const DenseKernels kDenseRef{
    Isa::ref,        "ref",           ref::dense_f32,     ref::dense_f16,          ref::dense_bf16,
    ref::dense_q8_0, ref::dense_q4_0, ref::attention_f32, ref::attention_probs_f32};
#if defined(BITNET_HAVE_X86)
const DenseKernels kDenseAvx2{Isa::avx2,
                              "avx2",
                              avx2::dense_f32,
                              avx2::dense_f16,
                              avx2::dense_bf16,
                              avx2::dense_q8_0,
                              avx2::dense_q4_0,
                              avx2::attention_f32,
                              avx2::attention_probs_f32};
const DenseKernels kDenseAvx512{Isa::avx512,
                                "avx512",
                                avx512::dense_f32,
                                avx512::dense_f16,
                                avx512::dense_bf16,
                                avx512::dense_q8_0,
                                avx512::dense_q4_0,
                                avx512::attention_f32,
                                avx512::attention_probs_f32};
// VNNI only changes the int8 dot products; the float kernels are AVX-512's.
const DenseKernels kDenseAvx512Vnni{
    Isa::avx512_vnni,        "avx512_vnni",         avx512::dense_f32,
    avx512::dense_f16,       avx512::dense_bf16,    avx512_vnni::dense_q8_0,
    avx512_vnni::dense_q4_0, avx512::attention_f32, avx512::attention_probs_f32};
#endif
#if defined(BITNET_HAVE_NEON)
const DenseKernels kDenseNeon{Isa::neon,
                              "neon",
                              neon::dense_f32,
                              neon::dense_f16,
                              neon::dense_bf16,
                              neon::dense_q8_0,
                              neon::dense_q4_0,
                              neon::attention_f32,
                              neon::attention_probs_f32};
// The dot-product extension only changes the int8 dot products.
const DenseKernels kDenseNeonDot{
    Isa::neon_dotprod,        "neon_dotprod",      neon::dense_f32,
    neon::dense_f16,          neon::dense_bf16,    neon_dotprod::dense_q8_0,
    neon_dotprod::dense_q4_0, neon::attention_f32, neon::attention_probs_f32};
#endif

}  // namespace

const DenseKernels* dense_table_for(Isa isa) {
  if (table_for(isa) == nullptr) return nullptr;  // not compiled in, or not runnable here
  switch (isa) {
    case Isa::ref:
      return &kDenseRef;
#if defined(BITNET_HAVE_X86)
    case Isa::avx2:
      return &kDenseAvx2;
    case Isa::avx512:
      return &kDenseAvx512;
    case Isa::avx512_vnni:
      return &kDenseAvx512Vnni;
#endif
#if defined(BITNET_HAVE_NEON)
    case Isa::neon:
      return &kDenseNeon;
    case Isa::neon_dotprod:
      return &kDenseNeonDot;
#endif
    default:
      return nullptr;
  }
}

const DenseKernels& dense_active() {
  const DenseKernels* t = dense_table_for(active().isa);
  if (t == nullptr) throw std::logic_error("dense kernels: no table for the active ISA");
  return *t;
}

}  // namespace kernels

// ============================================================================ DenseMatrix
namespace {

using kernels::DenseQ8Rows;

// The kernels address blocks with these strides; they must be the ggml block sizes.
static_assert(kernels::kDenseQ8Bytes == sizeof(block_q8_0), "Q8_0 block stride");
static_assert(kernels::kDenseQ4Bytes == sizeof(block_q4_0), "Q4_0 block stride");

bool is_quantized(gguf::GgmlType t) {
  return t == gguf::GgmlType::Q8_0 || t == gguf::GgmlType::Q4_0;
}

// Bytes of one row of `cols` values, or -1 when the type is not a dense type.
int64_t dense_row_bytes(gguf::GgmlType t, int64_t cols) {
  switch (t) {
    case gguf::GgmlType::F32:
      return cols * 4;
    case gguf::GgmlType::F16:
    case gguf::GgmlType::BF16:
      return cols * 2;
    case gguf::GgmlType::Q8_0:
      return cols / kGgmlBlockValues * kernels::kDenseQ8Bytes;
    case gguf::GgmlType::Q4_0:
      return cols / kGgmlBlockValues * kernels::kDenseQ4Bytes;
    default:
      return -1;
  }
}

float bf16_to_fp32(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// The activation scratch of the quantized products (DenseQ8Rows), per calling thread and reused
// across calls.
struct Q8Scratch {
  std::shared_ptr<uint8_t> buf;
  int64_t bytes = 0;
};

// Writable views of the DenseQ8Rows arrays for M rows of `cols` values, carved from `scratch`
// (grown when needed): qs, d, d4, corr4, each starting 64-byte aligned.
struct Q8Buffers {
  int8_t* qs;
  float* d;
  float* d4;
  int32_t* corr4;
  int64_t ld;

  Q8Buffers(Q8Scratch& scratch, int64_t M, int64_t cols) {
    ld = round_up(cols, 64);
    const int64_t qs_bytes = round_up(M * ld, 64);
    const int64_t d_bytes = round_up(M * (ld / 32) * 4, 64);
    const int64_t g_bytes = M * (ld / 4) * 4;  // d4 and corr4 (64-byte multiples: ld % 64 == 0)
    const int64_t need = qs_bytes + d_bytes + 2 * g_bytes;
    if (need > scratch.bytes) {
      scratch.buf = alloc_buffer(need);
      scratch.bytes = need;
    }
    uint8_t* base = scratch.buf.get();
    qs = reinterpret_cast<int8_t*>(base);
    d = reinterpret_cast<float*>(base + qs_bytes);
    d4 = reinterpret_cast<float*>(base + qs_bytes + d_bytes);
    corr4 = reinterpret_cast<int32_t*>(base + qs_bytes + d_bytes + g_bytes);
  }

  DenseQ8Rows view() const {
    DenseQ8Rows a;
    a.qs = qs;
    a.d = d;
    a.d4 = d4;
    a.corr4 = corr4;
    a.ld = ld;
    return a;
  }

  // Quantizes rows [m0, m1) of x [M, cols] (finite, checked by the caller): ggml's
  // quantize_row_q8_0 per row into `blocks`, then unpacked into the flat arrays.
  void quantize_rows(const float* x, int64_t cols, int64_t m0, int64_t m1,
                     std::vector<block_q8_0>& blocks) const {
    const int64_t nb = cols / kGgmlBlockValues;
    blocks.resize(size_t(nb));
    for (int64_t m = m0; m < m1; ++m) {
      quantize_row_q8_0(x + m * cols, blocks.data(), cols, m);
      int8_t* qm = qs + m * ld;
      for (int64_t b = 0; b < nb; ++b) {
        const block_q8_0& blk = blocks[size_t(b)];
        const float db = fp16_to_fp32(blk.d);
        std::memcpy(qm + b * 32, blk.qs, 32);
        d[m * (ld / 32) + b] = db;
        for (int g = 0; g < 8; ++g) {
          int32_t s = 0;
          for (int j = 0; j < 4; ++j) s += blk.qs[4 * g + j];
          d4[m * (ld / 4) + 8 * b + g] = db;
          corr4[m * (ld / 4) + 8 * b + g] = -8 * s;
        }
      }
      std::memset(qm + cols, 0, size_t(ld - cols));
    }
  }
};

}  // namespace

std::shared_ptr<DenseMatrix> DenseMatrix::view(gguf::GgmlType type, int64_t rows, int64_t cols,
                                               const uint8_t* data, int64_t nbytes,
                                               std::shared_ptr<const void> owner,
                                               const std::string& name) {
  const char* tname = gguf::type_name(type);
  const std::string what = str_cat("DenseMatrix '", name, "' (", tname ? tname : "?", ")");
  check_arg(dense_row_bytes(type, 1 * kGgmlBlockValues) > 0, "DenseMatrix '", name, "': type ",
            tname ? tname : "?", " (ggml id ", uint32_t(type),
            ") is not supported; expected f32, f16, bf16, q8_0 or q4_0");
  check_arg(rows >= 1 && cols >= 1, what, ": shape [", rows, ", ", cols, "] must be non-empty");
  if (is_quantized(type))
    check_arg(cols % kGgmlBlockValues == 0, what, ": shape [", rows, ", ", cols,
              "]: the row length is not a multiple of ", kGgmlBlockValues, " (the block size)");
  // Bounds keep every product below 2^62 (kernels use int64 offsets) and the int32 / fp32 lane
  // arithmetic of the quantized kernels exact (a block dot is at most 32 * 128 * 127 < 2^24).
  check_arg(cols <= (int64_t(1) << 31) && rows <= (int64_t(1) << 40), what, ": shape [", rows, ", ",
            cols, "] is too large");
  const int64_t rb = dense_row_bytes(type, cols);
  check_arg(rows <= (int64_t(1) << 62) / rb, what, ": shape [", rows, ", ", cols, "] is too large");
  check_arg(nbytes == rows * rb, what, ": shape [", rows, ", ", cols, "] needs ", rows, " x ", rb,
            " = ", rows * rb, " bytes, got ", nbytes);
  check_arg(data != nullptr, what, ": data is null");
  std::shared_ptr<DenseMatrix> m(new DenseMatrix());
  m->type_ = type;
  m->rows_ = rows;
  m->cols_ = cols;
  m->row_bytes_ = rb;
  m->data_ = data;
  m->owner_ = std::move(owner);
  m->name_ = name;
  return m;
}

std::string DenseMatrix::describe() const {
  return str_cat("DenseMatrix '", name_, "' (", gguf::type_name(type_), " [", rows_, ", ", cols_,
                 "])");
}

void DenseMatrix::row(int64_t r, float* out) const {
  check_arg(r >= 0 && r < rows_, describe(), ": row ", r, " is out of range [0, ", rows_, ")");
  const uint8_t* p = data_ + r * row_bytes_;
  switch (type_) {
    case gguf::GgmlType::F32:
      std::memcpy(out, p, size_t(cols_) * 4);
      break;
    case gguf::GgmlType::F16:
      for (int64_t k = 0; k < cols_; ++k) out[k] = fp16_to_fp32(load_u16(p + 2 * k));
      break;
    case gguf::GgmlType::BF16:
      for (int64_t k = 0; k < cols_; ++k) out[k] = bf16_to_fp32(load_u16(p + 2 * k));
      break;
    case gguf::GgmlType::Q8_0:
    case gguf::GgmlType::Q4_0:
      try {
        // Copied into block structs first: their fp16 d is 2-byte aligned, mmap'd data need not be.
        const int64_t nb = cols_ / kGgmlBlockValues;
        if (type_ == gguf::GgmlType::Q8_0) {
          std::vector<block_q8_0> blocks(static_cast<size_t>(nb));
          std::memcpy(blocks.data(), p, size_t(row_bytes_));
          dequantize_row_q8_0(blocks.data(), out, cols_, r);
        } else {
          std::vector<block_q4_0> blocks(static_cast<size_t>(nb));
          std::memcpy(blocks.data(), p, size_t(row_bytes_));
          dequantize_row_q4_0(blocks.data(), out, cols_, r);
        }
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(describe() + ": " + e.what());
      }
      return;  // finite by construction: d finite (checked) times a small integer
    default:
      throw std::logic_error(describe() + ": unsupported type");
  }
  for (int64_t k = 0; k < cols_; ++k)
    check_arg(std::isfinite(out[k]), describe(), ": row ", r, " holds a non-finite value (", out[k],
              ") at column ", k, "; corrupt data?");
}

void DenseMatrix::throw_bad_output(const float* x, int64_t m, int64_t r) const {
  // y[m][r] is not finite although x is finite: find the cause in row r of W.
  const uint8_t* p = data_ + r * row_bytes_;
  if (is_quantized(type_)) {
    const int64_t bb =
        type_ == gguf::GgmlType::Q8_0 ? kernels::kDenseQ8Bytes : kernels::kDenseQ4Bytes;
    for (int64_t b = 0; b < cols_ / kGgmlBlockValues; ++b) {
      const uint16_t d = load_u16(p + b * bb);
      check_arg((d & 0x7c00) != 0x7c00, describe(), ": row ", r, ", block ", b,
                " has a non-finite scale d (fp16 bits 0x", std::hex, d, std::dec,
                "); corrupt data?");
    }
  } else {
    for (int64_t k = 0; k < cols_; ++k) {
      float v;
      if (type_ == gguf::GgmlType::F32)
        std::memcpy(&v, p + 4 * k, 4);
      else if (type_ == gguf::GgmlType::F16)
        v = fp16_to_fp32(load_u16(p + 2 * k));
      else
        v = bf16_to_fp32(load_u16(p + 2 * k));
      check_arg(std::isfinite(v), describe(), ": row ", r, " holds a non-finite value (", v,
                ") at column ", k, "; corrupt data?");
    }
  }
  double s = 0.0;
  for (int64_t k = 0; k < cols_; ++k) s = std::max(s, double(std::fabs(x[m * cols_ + k])));
  throw std::invalid_argument(str_cat(describe(), ": matmul: the product of x row ", m,
                                      " (max |x| = ", s, ") and row ", r, " overflows fp32"));
}

void DenseMatrix::matmul(const float* x, int64_t M, float* y, int64_t ldy) const {
  check_arg(M >= 1, describe(), ": matmul: x has no rows");
  check_arg(ldy >= rows_, describe(), ": matmul: output row stride ", ldy, " < rows = ", rows_);
  check_arg(x != nullptr && y != nullptr, describe(), ": matmul: null x or y");
  for (int64_t m = 0; m < M; ++m) {
    const float* xm = x + m * cols_;
    for (int64_t k = 0; k < cols_; ++k)
      if (!std::isfinite(xm[k]))
        throw std::invalid_argument(str_cat(describe(), ": matmul: x row ", m,
                                            " holds a non-finite value (", xm[k], ") at column ",
                                            k));
  }
  const kernels::DenseKernels& kern = kernels::dense_active();

  // Quantized types: x to Q8_0 once per call (per-calling-thread scratch, reused).
  DenseQ8Rows a;
  if (is_quantized(type_)) {
    thread_local Q8Scratch scratch;
    const Q8Buffers q8(scratch, M, cols_);
    try {
      // Split by rows when there is enough work to pay for waking threads (~32k values a task).
      const int64_t per = std::max<int64_t>(1, (int64_t(1) << 15) / cols_);
      const int64_t tasks = ceil_div(M, per);
      if (tasks == 1) {
        std::vector<block_q8_0> blocks;
        q8.quantize_rows(x, cols_, 0, M, blocks);
      } else {
        parallel_for(tasks, [&](int64_t t, int) {
          std::vector<block_q8_0> blocks;
          q8.quantize_rows(x, cols_, t * per, std::min(M, (t + 1) * per), blocks);
        });
      }
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(describe() + ": matmul: x: " + e.what());
    }
    a = q8.view();
  }

  // One contiguous range of W rows per thread: each thread streams its part of W once.
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(get_num_threads(), rows_));
  const int64_t per = ceil_div(rows_, threads);
  std::vector<int64_t> bad(static_cast<size_t>(threads), -1);  // first non-finite y: m * rows + r
  parallel_for(threads, [&](int64_t t, int) {
    const int64_t r0 = std::min(rows_, t * per), r1 = std::min(rows_, r0 + per);
    if (r0 >= r1) return;
    switch (type_) {
      case gguf::GgmlType::F32:
        kern.f32(data_, row_bytes_, cols_, x, cols_, M, r0, r1, y, ldy);
        break;
      case gguf::GgmlType::F16:
        kern.f16(data_, row_bytes_, cols_, x, cols_, M, r0, r1, y, ldy);
        break;
      case gguf::GgmlType::BF16:
        kern.bf16(data_, row_bytes_, cols_, x, cols_, M, r0, r1, y, ldy);
        break;
      case gguf::GgmlType::Q8_0:
        kern.q8_0(data_, row_bytes_, cols_ / kGgmlBlockValues, a, M, r0, r1, y, ldy);
        break;
      default:
        kern.q4_0(data_, row_bytes_, cols_ / kGgmlBlockValues, a, M, r0, r1, y, ldy);
        break;
    }
    // Corrupt weights (an Inf/NaN value or block scale) or an fp32 overflow show up as a
    // non-finite output; checking the slice while it is in cache costs M * (r1 - r0) reads.
    for (int64_t m = 0; m < M; ++m)
      for (int64_t r = r0; r < r1; ++r)
        if (!std::isfinite(y[m * ldy + r])) {
          bad[size_t(t)] = m * rows_ + r;
          return;
        }
  });
  for (int64_t b : bad)
    if (b >= 0) throw_bad_output(x, b / rows_, b % rows_);
}

}  // namespace bitnet

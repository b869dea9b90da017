// Dense (non-ternary) matrices in a stored ggml type: the token embedding and the LM head.
//
// The head is read once per generated token (128256 x 2560 for 2B4T: 657 MB in f16, 349 MB in
// q8_0, 185 MB in q4_0), so its product is a bandwidth-bound GEMV with its own kernels per ISA
// (kernels/cpu/dense_*.cpp), dispatched like the ternary kernels and capped by BITNET_MAX_ISA.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "bitnet/gguf.h"

namespace bitnet {

// A [rows, cols] matrix W in one of F32, F16, BF16, Q8_0, Q4_0 (row-major, each row `row_bytes`
// bytes; Q8_0/Q4_0 rows are cols/32 blocks, cols % 32 == 0). Zero-copy over `data` (e.g. the
// mmap'd GGUF tensor), which `owner` keeps alive.
class DenseMatrix {
 public:
  // Validates type, shape and byte count (std::invalid_argument naming `name`).
  static std::shared_ptr<DenseMatrix> view(gguf::GgmlType type, int64_t rows, int64_t cols,
                                           const uint8_t* data, int64_t nbytes,
                                           std::shared_ptr<const void> owner,
                                           const std::string& name);

  gguf::GgmlType type() const { return type_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t row_bytes() const { return row_bytes_; }
  const uint8_t* data() const { return data_; }
  // The tensor name given to view(), used in error messages.
  const std::string& name() const { return name_; }
  // "DenseMatrix 'name' (type [rows, cols])", the prefix of every error message.
  std::string describe() const;

  // out[cols] = W[r, :] dequantized to fp32 (embedding lookup), exactly: f16/bf16 widened,
  // Q8_0 d * q, Q4_0 d * (code - 8). Throws std::invalid_argument when r is out of range or the
  // row holds a non-finite value or block scale (corrupt data).
  // matmul and row are const and may run concurrently (scratch is per calling thread).
  void row(int64_t r, float* out) const;

  // y[M, rows] (row stride ldy >= rows) = x[M, cols] @ W^T, fp32 in and out, rows split across
  // the thread pool. F32/F16/BF16: fp32 products (F16C / FMA). Q8_0/Q4_0: as ggml does, x is
  // quantized per 32-block to Q8_0 (d = absmax/127, round half away from zero) and the block
  // products are int8 dot products scaled by d_w * d_x; documented error versus fp32, tested
  // (evaluation order and error bounds: kernels/cpu/dense_kernels.h).
  // Throws std::invalid_argument on NaN/Inf in x (naming the row and column), and when an output
  // is not finite: a corrupt row of W (an Inf/NaN value or block scale, named) or an fp32
  // overflow of the product. x is [M, cols] contiguous; y rows [0, rows) are written.
  void matmul(const float* x, int64_t M, float* y, int64_t ldy) const;

 private:
  DenseMatrix() = default;
  // Diagnoses a non-finite y[m][r] (finite x): names the bad value / block scale of W row r, or
  // reports an fp32 overflow. Always throws std::invalid_argument.
  [[noreturn]] void throw_bad_output(const float* x, int64_t m, int64_t r) const;
  gguf::GgmlType type_ = gguf::GgmlType::F32;
  int64_t rows_ = 0, cols_ = 0, row_bytes_ = 0;
  const uint8_t* data_ = nullptr;
  std::shared_ptr<const void> owner_;
  std::string name_;
};

}  // namespace bitnet

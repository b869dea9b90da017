// A ternary weight matrix [N, K] in one storage format, plus its kernel layout (K256), built once
// on first use and cached.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>

#include "bitnet/formats.h"

namespace bitnet {

// The K256 kernel layout of a weight matrix (kernels/cpu/kernels.h): rows * nb blocks of 64
// bytes, 64-byte aligned, and the tensor scale.
struct KernelWeights {
  const uint8_t* data = nullptr;
  int64_t rows = 0, nb = 0;
  float scale = 0.0f;
};

class PackedWeights {
 public:
  // Packs ternary t[n*k] (values in {-1, 0, 1}) with the tensor scale into format f.
  static std::shared_ptr<PackedWeights> pack(Format f, const int8_t* t, int64_t n, int64_t k,
                                             float scale);
  // Wraps existing packed bytes without copying them (e.g. a memory-mapped GGUF tensor);
  // `owner` keeps them alive. `scale` is used only for the native format, which stores none.
  // Validates the size and reads the tensor scale (I2_S tail, TQ block scales).
  static std::shared_ptr<PackedWeights> view(Format f, int64_t n, int64_t k, const uint8_t* data,
                                             int64_t nbytes, std::shared_ptr<const void> owner,
                                             float scale = 1.0f);

  Format format() const { return format_; }
  int64_t rows() const { return rows_; }  // N (output features)
  int64_t cols() const { return cols_; }  // K (input features)
  float scale() const { return scale_; }
  const uint8_t* data() const { return data_; }
  int64_t nbytes() const { return nbytes_; }

  // The kernel layout; the first call repacks (and validates every code), later calls are free.
  // Thread-safe.
  const KernelWeights& kernel() const;

 private:
  PackedWeights() = default;
  Format format_ = Format::native;
  int64_t rows_ = 0, cols_ = 0, nbytes_ = 0;
  float scale_ = 0.0f;
  const uint8_t* data_ = nullptr;
  std::shared_ptr<const void> owner_;
  mutable std::once_flag kernel_once_;
  mutable std::shared_ptr<uint8_t> kernel_buf_;
  mutable KernelWeights kernel_;
};

}  // namespace bitnet

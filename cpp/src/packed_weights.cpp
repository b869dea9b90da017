#include "bitnet/packed_weights.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "bitnet/common.h"
#include "bitnet/memory.h"

namespace bitnet {

namespace {

// The tensor scale of a TQ tensor from its block scales only (codes are checked at repack).
float tq_scale(Format f, const uint8_t* data, int64_t n, int64_t k) {
  const int64_t block =
      f == Format::tq1_0 ? int64_t(sizeof(block_tq1_0)) : int64_t(sizeof(block_tq2_0));
  const int64_t blocks = n * (k / 256);
  uint16_t d = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    uint16_t bits;
    std::memcpy(&bits, data + b * block + block - 2, 2);
    if ((bits & 0x7fff) == 0) continue;
    if (d == 0) {
      d = bits;
      const float v = fp16_to_fp32(bits);
      check_arg(std::isfinite(v) && v > 0, format_name(f), ": block scale ", v, " at row ",
                b / (k / 256), " is not a positive finite number");
    } else {
      check_arg(bits == d, format_name(f), ": block scales differ (", fp16_to_fp32(d), " and ",
                fp16_to_fp32(bits), " at row ", b / (k / 256), ", block ", b % (k / 256),
                "); BitNet kernels need one scale per tensor");
    }
  }
  return d ? fp16_to_fp32(d) : 0.0f;
}

}  // namespace

std::shared_ptr<PackedWeights> PackedWeights::pack(Format f, const int8_t* t, int64_t n, int64_t k,
                                                   float scale) {
  const int64_t nbytes = packed_nbytes(f, n, k);
  auto buf = alloc_buffer(nbytes);
  pack_ternary(f, t, n, k, scale, buf.get());
  auto p = std::shared_ptr<PackedWeights>(new PackedWeights());
  p->format_ = f;
  p->rows_ = n;
  p->cols_ = k;
  p->nbytes_ = nbytes;
  p->data_ = buf.get();
  p->owner_ = buf;
  // The scale the format stores: fp16-rounded for TQ types (0 if every weight is zero).
  if (f == Format::tq1_0 || f == Format::tq2_0)
    p->scale_ = tq_scale(f, p->data_, n, k);
  else
    p->scale_ = scale;
  return p;
}

std::shared_ptr<PackedWeights> PackedWeights::view(Format f, int64_t n, int64_t k,
                                                   const uint8_t* data, int64_t nbytes,
                                                   std::shared_ptr<const void> owner, float scale) {
  const int64_t expect = packed_nbytes(f, n, k);
  check_arg(nbytes == expect, format_name(f), ": [", n, ", ", k, "] needs ", expect, " bytes, got ",
            nbytes);
  auto p = std::shared_ptr<PackedWeights>(new PackedWeights());
  p->format_ = f;
  p->rows_ = n;
  p->cols_ = k;
  p->nbytes_ = nbytes;
  p->data_ = data;
  p->owner_ = std::move(owner);
  switch (f) {
    case Format::i2_s: {
      float s;
      std::memcpy(&s, data + n * (k / 4), 4);
      check_arg(std::isfinite(s) && s >= 0, "i2_s: tensor scale ", s,
                " in the 32-byte tail is not a non-negative finite number");
      p->scale_ = s;
      break;
    }
    case Format::tq1_0:
    case Format::tq2_0:
      p->scale_ = tq_scale(f, data, n, k);
      break;
    case Format::native:
      check_arg(std::isfinite(scale) && scale >= 0, "native: scale must be finite and >= 0, got ",
                scale);
      p->scale_ = scale;
      break;
  }
  return p;
}

const KernelWeights& PackedWeights::kernel() const {
  std::call_once(kernel_once_, [this] {
    const int64_t nb = ceil_div(cols_, 256);
    auto buf = alloc_buffer(rows_ * nb * 64);
    repack_native(format_, data_, rows_, cols_, buf.get());
    kernel_buf_ = buf;
    kernel_ = KernelWeights{buf.get(), rows_, nb, scale_};
  });
  return kernel_;
}

}  // namespace bitnet

// Pack / unpack of the ternary formats (layouts drawn in formats.h and kernels/cpu/kernels.h).
// Every function works row by row (no block crosses a row for any format), so repacking a
// tensor needs only one row of scratch.
#include "bitnet/formats.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "bitnet/common.h"

namespace bitnet {

namespace {

constexpr int64_t kQK = 256;  // values per TQ / K256 block
constexpr uint8_t kPow3[5] = {1, 3, 9, 27, 81};

}  // namespace

// ------------------------------------------------------------------------------ fp16
float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      uint32_t m = man;
      do {
        ++e;
        m <<= 1;
      } while ((m & 0x400) == 0);
      bits = sign | uint32_t(127 - 15 - e) << 23 | (m & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | man << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t fp32_to_fp16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0);  // inf / nan
  if (ax >= 0x477ff000u) return sign | 0x7c00;  // rounds to >= 65520: overflow to inf
  if (ax < 0x38800000u) {                       // below the smallest normal half: subnormal
    if (ax < 0x33000000u) return sign;          // < 2^-25 rounds to zero
    const uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
    const uint32_t shift = 126 - e;  // 14 + (113 - e)
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return sign | uint16_t(r);
  }
  uint32_t r = ((ax >> 13) - ((127 - 15) << 10));
  const uint32_t rem = ax & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) ++r;
  return sign | uint16_t(r);
}

// ------------------------------------------------------------------------------ names, sizes
const char* format_name(Format f) {
  switch (f) {
    case Format::i2_s:
      return "i2_s";
    case Format::tq1_0:
      return "tq1_0";
    case Format::tq2_0:
      return "tq2_0";
    case Format::native:
      return "native";
  }
  return "?";
}

Format parse_format(const std::string& name) {
  std::string s = name;
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  for (Format f : {Format::i2_s, Format::tq1_0, Format::tq2_0, Format::native})
    if (s == format_name(f)) return f;
  throw std::invalid_argument(
      str_cat("unknown ternary format '", name, "'; expected one of i2_s, tq1_0, tq2_0, native"));
}

int64_t format_row_multiple(Format f) {
  switch (f) {
    case Format::i2_s:
      return kI2sBlockValues;
    case Format::tq1_0:
    case Format::tq2_0:
      return kQK;
    case Format::native:
      return 1;
  }
  return 1;
}

namespace {

int64_t row_bytes(Format f, int64_t k) {
  switch (f) {
    case Format::i2_s:
      return k / 4;
    case Format::tq1_0:
      return k / kQK * int64_t(sizeof(block_tq1_0));
    case Format::tq2_0:
      return k / kQK * int64_t(sizeof(block_tq2_0));
    case Format::native:
      return ceil_div(k, kQK) * 64;
  }
  return 0;
}

void check_shape(Format f, int64_t n, int64_t k) {
  check_arg(n > 0 && k > 0, format_name(f), ": shape [", n, ", ", k, "] must be non-empty");
  const int64_t mult = format_row_multiple(f);
  check_arg(k % mult == 0, format_name(f), ": row length K = ", k, " is not a multiple of ", mult,
            " (the format's block); use another format (e.g. 'native' or i2_s) or pad the rows");
  check_arg(n <= std::numeric_limits<int64_t>::max() / 8 / std::max<int64_t>(1, row_bytes(f, k)),
            format_name(f), ": shape [", n, ", ", k, "] is too large");
}

uint8_t code_of(int8_t v, int64_t n, int64_t j) {
  if (v < -1 || v > 1)
    throw std::invalid_argument(
        str_cat("ternary weights must be -1, 0 or 1; found ", int(v), " at [", n, ", ", j, "]"));
  return uint8_t(v + 1);
}

int8_t value_of(unsigned code, Format f, int64_t n, int64_t j) {
  if (code > 2)
    throw std::invalid_argument(
        str_cat(format_name(f), ": invalid 2-bit code 3 at [", n, ", ", j, "] (corrupt data?)"));
  return int8_t(int(code) - 1);
}

// Tracks the one scale shared by the non-zero blocks of a TQ tensor.
struct ScaleTracker {
  Format f;
  bool have = false;
  uint16_t d = 0;
  void see(uint16_t bits, int64_t n, int64_t blk) {
    if ((bits & 0x7fff) == 0) return;
    if (!have) {
      have = true;
      d = bits;
      const float v = fp16_to_fp32(bits);
      check_arg(std::isfinite(v) && v > 0, format_name(f), ": block scale ", v, " at row ", n,
                ", block ", blk, " is not a positive finite number");
    } else if (bits != d) {
      throw std::invalid_argument(str_cat(
          format_name(f), ": block scales differ (", fp16_to_fp32(d), " and ", fp16_to_fp32(bits),
          " at row ", n, ", block ", blk,
          "); BitNet kernels need one scale per tensor (is this a ternary BitNet weight?)"));
    }
  }
  float value() const { return have ? fp16_to_fp32(d) : 0.0f; }
};

void pack_row(Format f, const int8_t* t, int64_t n, int64_t k, uint16_t d16, uint8_t* out) {
  switch (f) {
    case Format::i2_s:
      for (int64_t b = 0; b < k / kI2sBlockValues; ++b) {
        uint8_t* o = out + b * kI2sBlockBytes;
        std::memset(o, 0, kI2sBlockBytes);
        for (int j = 0; j < kI2sBlockValues; ++j) {
          const int64_t col = b * kI2sBlockValues + j;
          o[j % 32] |= uint8_t(code_of(t[col], n, col) << (6 - 2 * (j / 32)));
        }
      }
      break;
    case Format::tq2_0:
      for (int64_t b = 0; b < k / kQK; ++b) {
        block_tq2_0 blk{};
        bool any = false;
        for (int j = 0; j < kQK; ++j) {
          const int64_t col = b * kQK + j;
          const uint8_t c = code_of(t[col], n, col);
          any |= c != 1;
          const int h = j / 128, jj = (j % 128) / 32, m = j % 32;
          blk.qs[h * 32 + m] |= uint8_t(c << (2 * jj));
        }
        blk.d = any ? d16 : 0;
        std::memcpy(out + b * int64_t(sizeof(blk)), &blk, sizeof(blk));
      }
      break;
    case Format::tq1_0:
      for (int64_t b = 0; b < k / kQK; ++b) {
        const int8_t* tb = t + b * kQK;
        uint8_t c[kQK];
        bool any = false;
        for (int j = 0; j < kQK; ++j) {
          c[j] = code_of(tb[j], n, b * kQK + j);
          any |= c[j] != 1;
        }
        block_tq1_0 blk{};
        auto store = [](unsigned v) { return uint8_t((v * 256 + 242) / 243); };  // ceil(v*256/243)
        for (int m = 0; m < 32; ++m) {
          unsigned v = 0;
          for (int j = 0; j < 5; ++j) v = v * 3 + c[m + 32 * j];
          blk.qs[m] = store(v);
        }
        for (int m = 0; m < 16; ++m) {
          unsigned v = 0;
          for (int j = 0; j < 5; ++j) v = v * 3 + c[160 + m + 16 * j];
          blk.qs[32 + m] = store(v);
        }
        for (int m = 0; m < 4; ++m) {
          unsigned v = 0;
          for (int j = 0; j < 4; ++j) v = v * 3 + c[240 + m + 4 * j];
          blk.qh[m] = store(v * 3);
        }
        blk.d = any ? d16 : 0;
        std::memcpy(out + b * int64_t(sizeof(blk)), &blk, sizeof(blk));
      }
      break;
    case Format::native:
      for (int64_t b = 0; b < ceil_div(k, kQK); ++b) {
        uint8_t* o = out + b * 64;
        std::memset(o, 0x55, 64);  // code 1 (t = 0) in all four slots: the padding value
        for (int j = 0; j < kQK && b * kQK + j < k; ++j) {
          const int64_t col = b * kQK + j;
          const int shift = 2 * (j / 64);
          o[j % 64] = uint8_t((o[j % 64] & ~(3 << shift)) | code_of(t[col], n, col) << shift);
        }
      }
      break;
  }
}

void unpack_row(Format f, const uint8_t* in, int64_t n, int64_t k, int8_t* t,
                ScaleTracker& scales) {
  switch (f) {
    case Format::i2_s:
      for (int64_t b = 0; b < k / kI2sBlockValues; ++b) {
        const uint8_t* p = in + b * kI2sBlockBytes;
        for (int j = 0; j < kI2sBlockValues; ++j) {
          const int64_t col = b * kI2sBlockValues + j;
          t[col] = value_of((p[j % 32] >> (6 - 2 * (j / 32))) & 3, f, n, col);
        }
      }
      break;
    case Format::tq2_0:
      for (int64_t b = 0; b < k / kQK; ++b) {
        block_tq2_0 blk;
        std::memcpy(&blk, in + b * int64_t(sizeof(blk)), sizeof(blk));
        scales.see(blk.d, n, b);
        const bool zero = (blk.d & 0x7fff) == 0;
        for (int j = 0; j < kQK; ++j) {
          const int h = j / 128, jj = (j % 128) / 32, m = j % 32;
          const int8_t v = value_of((blk.qs[h * 32 + m] >> (2 * jj)) & 3, f, n, b * kQK + j);
          t[b * kQK + j] = zero ? 0 : v;
        }
      }
      break;
    case Format::tq1_0:
      for (int64_t b = 0; b < k / kQK; ++b) {
        block_tq1_0 blk;
        std::memcpy(&blk, in + b * int64_t(sizeof(blk)), sizeof(blk));
        scales.see(blk.d, n, b);
        const bool zero = (blk.d & 0x7fff) == 0;
        int8_t* tb = t + b * kQK;
        auto trit = [](uint8_t byte, int j) {
          return int8_t(((uint16_t(uint8_t(byte * kPow3[j])) * 3) >> 8) - 1);
        };
        for (int m = 0; m < 32; ++m)
          for (int j = 0; j < 5; ++j) tb[m + 32 * j] = trit(blk.qs[m], j);
        for (int m = 0; m < 16; ++m)
          for (int j = 0; j < 5; ++j) tb[160 + m + 16 * j] = trit(blk.qs[32 + m], j);
        for (int m = 0; m < 4; ++m)
          for (int j = 0; j < 4; ++j) tb[240 + m + 4 * j] = trit(blk.qh[m], j);
        if (zero) std::memset(tb, 0, kQK);
      }
      break;
    case Format::native:
      for (int64_t b = 0; b < ceil_div(k, kQK); ++b)
        for (int j = 0; j < kQK && b * kQK + j < k; ++j) {
          const int64_t col = b * kQK + j;
          t[col] = value_of((in[b * 64 + j % 64] >> (2 * (j / 64))) & 3, f, n, col);
        }
      break;
  }
}

float i2s_scale(const uint8_t* data, int64_t n, int64_t k) {
  float s;
  std::memcpy(&s, data + n * (k / 4), 4);
  check_arg(std::isfinite(s) && s >= 0, "i2_s: tensor scale ", s,
            " in the 32-byte tail is not a non-negative finite number");
  return s;
}

}  // namespace

int64_t packed_nbytes(Format f, int64_t n, int64_t k) {
  check_shape(f, n, k);
  return n * row_bytes(f, k) + (f == Format::i2_s ? kI2sTailBytes : 0);
}

void pack_ternary(Format f, const int8_t* t, int64_t n, int64_t k, float scale, uint8_t* out) {
  check_shape(f, n, k);
  check_arg(std::isfinite(scale) && scale > 0, format_name(f), ": scale must be positive and ",
            "finite, got ", scale);
  const uint16_t d16 = fp32_to_fp16(scale);
  if (f == Format::tq1_0 || f == Format::tq2_0)
    check_arg((d16 & 0x7fff) != 0 && (d16 & 0x7c00) != 0x7c00, format_name(f), ": scale ", scale,
              " is not representable in fp16");
  const int64_t rb = row_bytes(f, k);
  for (int64_t r = 0; r < n; ++r) pack_row(f, t + r * k, r, k, d16, out + r * rb);
  if (f == Format::i2_s) {
    uint8_t* tail = out + n * rb;
    std::memset(tail, 0, kI2sTailBytes);
    std::memcpy(tail, &scale, 4);
  }
}

float unpack_ternary(Format f, const uint8_t* data, int64_t n, int64_t k, int8_t* t) {
  check_shape(f, n, k);
  ScaleTracker scales{f};
  const int64_t rb = row_bytes(f, k);
  for (int64_t r = 0; r < n; ++r) unpack_row(f, data + r * rb, r, k, t + r * k, scales);
  if (f == Format::i2_s) return i2s_scale(data, n, k);
  return scales.value();
}

float repack_native(Format f, const uint8_t* data, int64_t n, int64_t k, uint8_t* out) {
  check_shape(f, n, k);
  ScaleTracker scales{f};
  const int64_t rb = row_bytes(f, k), ob = row_bytes(Format::native, k);
  if (f == Format::native) {
    // Validate the codes (a code of 3 would silently count as 2 in the kernels).
    std::vector<int8_t> row(static_cast<size_t>(k));
    for (int64_t r = 0; r < n; ++r) unpack_row(f, data + r * rb, r, k, row.data(), scales);
    std::memcpy(out, data, size_t(n * ob));
    return 1.0f;
  }
  std::vector<int8_t> row(static_cast<size_t>(k));
  for (int64_t r = 0; r < n; ++r) {
    unpack_row(f, data + r * rb, r, k, row.data(), scales);
    pack_row(Format::native, row.data(), r, k, 0, out + r * ob);
  }
  if (f == Format::i2_s) return i2s_scale(data, n, k);
  return scales.value();
}

}  // namespace bitnet

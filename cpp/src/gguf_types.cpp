// GGUF type tables (ggml tensor types, metadata value types) and the metadata Value helpers.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>

#include "bitnet/common.h"
#include "bitnet/formats.h"
#include "bitnet/gguf.h"

namespace bitnet::gguf {

namespace {

// Indexed by ggml type id; name == nullptr marks ids ggml never defined or has removed
// (4, 5: Q4_2/Q4_3; 31-33: Q4_0_4_4 & co; 37, 38: IQ4_NL_4_4 & co). Values from ggml.c's
// type_traits, as the `gguf` package's GGML_QUANT_SIZES states them (checked by a test).
// I2_S is bitnet.cpp's: block 1, size 1 "for shape purposes"; its byte count is special
// (tensor_nbytes).
constexpr TypeTraits kTypes[] = {
    {"f32", 1, 4},         // 0
    {"f16", 1, 2},         // 1
    {"q4_0", 32, 18},      // 2
    {"q4_1", 32, 20},      // 3
    {nullptr, 0, 0},       // 4
    {nullptr, 0, 0},       // 5
    {"q5_0", 32, 22},      // 6
    {"q5_1", 32, 24},      // 7
    {"q8_0", 32, 34},      // 8
    {"q8_1", 32, 40},      // 9
    {"q2_k", 256, 84},     // 10
    {"q3_k", 256, 110},    // 11
    {"q4_k", 256, 144},    // 12
    {"q5_k", 256, 176},    // 13
    {"q6_k", 256, 210},    // 14
    {"q8_k", 256, 292},    // 15
    {"iq2_xxs", 256, 66},  // 16
    {"iq2_xs", 256, 74},   // 17
    {"iq3_xxs", 256, 98},  // 18
    {"iq1_s", 256, 50},    // 19
    {"iq4_nl", 32, 18},    // 20
    {"iq3_s", 256, 110},   // 21
    {"iq2_s", 256, 82},    // 22
    {"iq4_xs", 256, 136},  // 23
    {"i8", 1, 1},          // 24
    {"i16", 1, 2},         // 25
    {"i32", 1, 4},         // 26
    {"i64", 1, 8},         // 27
    {"f64", 1, 8},         // 28
    {"iq1_m", 256, 56},    // 29
    {"bf16", 1, 2},        // 30
    {nullptr, 0, 0},       // 31
    {nullptr, 0, 0},       // 32
    {nullptr, 0, 0},       // 33
    {"tq1_0", 256, 54},    // 34
    {"tq2_0", 256, 66},    // 35
    {"i2_s", 1, 1},        // 36 (bitnet.cpp)
    {nullptr, 0, 0},       // 37
    {nullptr, 0, 0},       // 38
    {"mxfp4", 32, 17},     // 39
    {"nvfp4", 64, 36},     // 40
    {"q1_0", 128, 18},     // 41
};
constexpr uint32_t kNumTypes = sizeof(kTypes) / sizeof(kTypes[0]);

constexpr const char* kValueTypeNames[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                           "bool", "string", "array", "u64", "i64", "f64"};

// Inclusive range of each integer value type (bool: 0..1).
void int_range(ValueType t, int64_t* lo, uint64_t* hi) {
  switch (t) {
    case ValueType::u8:
      *lo = 0, *hi = 0xff;
      return;
    case ValueType::i8:
      *lo = -128, *hi = 127;
      return;
    case ValueType::u16:
      *lo = 0, *hi = 0xffff;
      return;
    case ValueType::i16:
      *lo = -32768, *hi = 32767;
      return;
    case ValueType::u32:
      *lo = 0, *hi = 0xffffffffu;
      return;
    case ValueType::i32:
      *lo = std::numeric_limits<int32_t>::min(), *hi = 0x7fffffff;
      return;
    case ValueType::u64:
      *lo = 0, *hi = std::numeric_limits<uint64_t>::max();
      return;
    case ValueType::i64:
      *lo = std::numeric_limits<int64_t>::min(),
      *hi = uint64_t(std::numeric_limits<int64_t>::max());
      return;
    case ValueType::boolean:
      *lo = 0, *hi = 1;
      return;
    default:
      throw std::invalid_argument(str_cat("gguf: ", value_type_name(t), " is not an integer type"));
  }
}

bool is_unsigned_type(ValueType t) {
  return t == ValueType::u8 || t == ValueType::u16 || t == ValueType::u32 || t == ValueType::u64 ||
         t == ValueType::boolean;
}
bool is_signed_type(ValueType t) {
  return t == ValueType::i8 || t == ValueType::i16 || t == ValueType::i32 || t == ValueType::i64;
}
bool is_float_type(ValueType t) { return t == ValueType::f32 || t == ValueType::f64; }

// Appends `v` (already range-checked for `t`) little-endian in value_type_size(t) bytes.
void append_packed(std::vector<uint8_t>& raw, const Value& v) {
  uint8_t b[8];
  const size_t n = size_t(value_type_size(v.type));
  if (is_unsigned_type(v.type)) {
    const uint64_t u = v.u;
    std::memcpy(b, &u, 8);  // little-endian host (checked in gguf_reader.cpp)
  } else if (is_signed_type(v.type)) {
    const int64_t i = v.i;
    std::memcpy(b, &i, 8);
  } else if (v.type == ValueType::f32) {
    const float f = float(v.f);
    std::memcpy(b, &f, 4);
  } else {
    const double f = v.f;
    std::memcpy(b, &f, 8);
  }
  raw.insert(raw.end(), b, b + n);
}

}  // namespace

// ------------------------------------------------------------------------------ ggml types
const TypeTraits* type_traits(uint32_t id) {
  if (id >= kNumTypes || kTypes[id].name == nullptr) return nullptr;
  return &kTypes[id];
}

const char* type_name(GgmlType t) {
  const TypeTraits* tr = type_traits(uint32_t(t));
  return tr ? tr->name : "?";
}

GgmlType parse_type(const std::string& name) {
  std::string s = name;
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  std::string known;
  for (uint32_t id = 0; id < kNumTypes; ++id) {
    if (!kTypes[id].name) continue;
    if (s == kTypes[id].name) return GgmlType(id);
    known += known.empty() ? "" : ", ";
    known += kTypes[id].name;
  }
  throw std::invalid_argument(str_cat("unknown ggml type '", name, "'; known types: ", known));
}

int64_t tensor_nbytes(GgmlType t, const std::vector<int64_t>& shape, const std::string& what) {
  const TypeTraits* tr = type_traits(uint32_t(t));
  check_arg(tr != nullptr, what, ": unknown ggml type id ", uint32_t(t));
  check_arg(!shape.empty() && shape.size() <= 4, what, ": a tensor has 1 to 4 dimensions, got ",
            shape.size());
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t n = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    check_arg(shape[d] >= 0, what, ": dimension ", d, " is negative (", shape[d], ")");
    check_arg(shape[d] == 0 || n <= kMax / shape[d], what,
              ": the element count overflows int64 (dimension ", d, " = ", shape[d], ")");
    n *= shape[d];
  }
  const int64_t inner = shape.back();
  if (t == GgmlType::I2_S) {
    // The whole tensor is one flat stream of 128-value blocks; bitnet.cpp writes rows of a
    // multiple of 128 (docs/formats.md section 2).
    check_arg(inner % kI2sBlockValues == 0, what, ": i2_s row length ", inner,
              " is not a multiple of ", kI2sBlockValues);
    return n / 4 + kI2sTailBytes;  // n / 4 <= kMax / 4: no overflow
  }
  check_arg(inner % tr->block_size == 0, what, ": ", tr->name, " row length ", inner,
            " is not a multiple of the block size ", tr->block_size);
  const int64_t blocks = n / tr->block_size;
  check_arg(blocks <= kMax / tr->type_size, what, ": the byte count overflows int64 (", blocks,
            " blocks of ", tr->type_size, " bytes)");
  return blocks * tr->type_size;
}

// ------------------------------------------------------------------------------ value types
const char* value_type_name(ValueType t) {
  const auto id = uint32_t(t);
  return id < 13 ? kValueTypeNames[id] : "?";
}

bool parse_value_type(const std::string& name, ValueType* out) {
  for (uint32_t id = 0; id < 13; ++id)
    if (name == kValueTypeNames[id]) {
      *out = ValueType(id);
      return true;
    }
  return false;
}

int64_t value_type_size(ValueType t) {
  switch (t) {
    case ValueType::u8:
    case ValueType::i8:
    case ValueType::boolean:
      return 1;
    case ValueType::u16:
    case ValueType::i16:
      return 2;
    case ValueType::u32:
    case ValueType::i32:
    case ValueType::f32:
      return 4;
    case ValueType::u64:
    case ValueType::i64:
    case ValueType::f64:
      return 8;
    case ValueType::string:
    case ValueType::array:
      return 0;
  }
  return 0;
}

bool is_value_type(uint32_t id) { return id <= 12; }

// ------------------------------------------------------------------------------ Value
Value Value::unsigned_(ValueType t, uint64_t v) {
  check_arg(is_unsigned_type(t), "gguf: ", value_type_name(t), " is not an unsigned type");
  int64_t lo;
  uint64_t hi;
  int_range(t, &lo, &hi);
  check_arg(v <= hi, "gguf: value ", v, " is out of range for ", value_type_name(t), " (0..", hi,
            ")");
  Value out;
  out.type = t;
  out.u = v;
  return out;
}

Value Value::signed_(ValueType t, int64_t v) {
  check_arg(is_signed_type(t), "gguf: ", value_type_name(t), " is not a signed type");
  int64_t lo;
  uint64_t hi;
  int_range(t, &lo, &hi);
  check_arg(v >= lo && (v < 0 || uint64_t(v) <= hi), "gguf: value ", v, " is out of range for ",
            value_type_name(t), " (", lo, "..", hi, ")");
  Value out;
  out.type = t;
  out.i = v;
  return out;
}

Value Value::float_(ValueType t, double v) {
  check_arg(is_float_type(t), "gguf: ", value_type_name(t), " is not a float type");
  // NaN and infinities are kept; a finite value that f32 cannot hold is an error, not inf.
  check_arg(t == ValueType::f64 || !std::isfinite(v) || std::isfinite(float(v)), "gguf: value ", v,
            " is out of range for f32");
  Value out;
  out.type = t;
  out.f = t == ValueType::f32 ? double(float(v)) : v;
  return out;
}

Value Value::string(std::string v) {
  Value out;
  out.type = ValueType::string;
  out.s = std::move(v);
  return out;
}

Value Value::array(ValueType elem_type, std::vector<Value> items) {
  check_arg(is_value_type(uint32_t(elem_type)), "gguf: invalid array element type ",
            uint32_t(elem_type));
  Value out;
  out.type = ValueType::array;
  out.elem_type = elem_type;
  const int64_t esize = value_type_size(elem_type);
  if (esize > 0) out.raw.reserve(items.size() * size_t(esize));
  if (elem_type == ValueType::string) out.str_ends.reserve(items.size());
  for (size_t k = 0; k < items.size(); ++k) {
    const Value& v = items[k];
    check_arg(v.type == elem_type, "gguf: array of ", value_type_name(elem_type), ": item ", k,
              " has type ", value_type_name(v.type));
    if (elem_type == ValueType::string) {
      out.push_string(v.s.data(), v.s.size());
    } else if (esize > 0) {
      // Re-check the range: a Value built by hand may hold anything in u/i.
      if (is_unsigned_type(elem_type)) (void)unsigned_(elem_type, v.u);
      if (is_signed_type(elem_type)) (void)signed_(elem_type, v.i);
      append_packed(out.raw, v);
    }
  }
  if (elem_type == ValueType::array) out.items = std::move(items);
  return out;
}

void Value::push_string(const char* data, size_t n) {
  raw.insert(raw.end(), reinterpret_cast<const uint8_t*>(data),
             reinterpret_cast<const uint8_t*>(data) + n);
  str_ends.push_back(raw.size());
}

Value Value::packed_array(ValueType elem_type, std::vector<uint8_t> raw) {
  const int64_t esize = value_type_size(elem_type);
  check_arg(esize > 0, "gguf: packed_array needs a fixed-size element type, got ",
            value_type_name(elem_type));
  check_arg(raw.size() % size_t(esize) == 0, "gguf: packed array of ", value_type_name(elem_type),
            ": ", raw.size(), " bytes is not a multiple of ", esize);
  if (elem_type == ValueType::boolean)
    for (size_t k = 0; k < raw.size(); ++k)
      check_arg(raw[k] <= 1, "gguf: bool array item ", k, " is ", int(raw[k]), ", not 0 or 1");
  Value out;
  out.type = ValueType::array;
  out.elem_type = elem_type;
  out.raw = std::move(raw);
  return out;
}

size_t Value::size() const {
  if (type != ValueType::array) return 0;
  if (elem_type == ValueType::string) return str_ends.size();
  if (elem_type == ValueType::array) return items.size();
  return raw.size() / size_t(value_type_size(elem_type));
}

std::string_view Value::string_at(size_t k) const {
  if (type != ValueType::array || elem_type != ValueType::string || k >= str_ends.size())
    throw std::out_of_range(str_cat("gguf: string array index ", k, " out of range"));
  const uint64_t begin = k == 0 ? 0 : str_ends[k - 1];
  return std::string_view(reinterpret_cast<const char*>(raw.data()) + begin,
                          size_t(str_ends[k] - begin));
}

Value Value::element(size_t k) const {
  if (k >= size()) throw std::out_of_range(str_cat("gguf: array index ", k, " out of range"));
  if (elem_type == ValueType::string) return string(std::string(string_at(k)));
  if (elem_type == ValueType::array) return items[k];
  const int64_t esize = value_type_size(elem_type);
  const uint8_t* p = raw.data() + k * size_t(esize);
  Value v;
  v.type = elem_type;
  switch (elem_type) {
    case ValueType::u8:
    case ValueType::boolean:
      v.u = p[0];
      break;
    case ValueType::i8:
      v.i = int8_t(p[0]);
      break;
    case ValueType::u16: {
      uint16_t x;
      std::memcpy(&x, p, 2);
      v.u = x;
      break;
    }
    case ValueType::i16: {
      int16_t x;
      std::memcpy(&x, p, 2);
      v.i = x;
      break;
    }
    case ValueType::u32: {
      uint32_t x;
      std::memcpy(&x, p, 4);
      v.u = x;
      break;
    }
    case ValueType::i32: {
      int32_t x;
      std::memcpy(&x, p, 4);
      v.i = x;
      break;
    }
    case ValueType::f32: {
      float x;
      std::memcpy(&x, p, 4);
      v.f = x;
      break;
    }
    case ValueType::u64:
      std::memcpy(&v.u, p, 8);
      break;
    case ValueType::i64:
      std::memcpy(&v.i, p, 8);
      break;
    case ValueType::f64:
      std::memcpy(&v.f, p, 8);
      break;
    default:
      break;
  }
  return v;
}

std::string Value::type_string() const {
  if (type != ValueType::array) return value_type_name(type);
  if (elem_type != ValueType::array) return str_cat("array[", value_type_name(elem_type), "]");
  // Nested: GGUF stores an element type per inner array, so inner arrays may differ; the string
  // names the common inner type, or just "array" when they differ or there are none.
  std::string inner;
  for (size_t k = 0; k < items.size(); ++k) {
    std::string t = items[k].type_string();
    if (k == 0) {
      inner = std::move(t);
    } else if (t != inner) {
      inner.clear();
      break;
    }
  }
  return str_cat("array[", inner.empty() ? std::string("array") : inner, "]");
}

}  // namespace bitnet::gguf

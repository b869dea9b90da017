// libFuzzer target for the GGUF reader (bitnet::gguf::File::parse).
//
// Contract under test (cpp/include/bitnet/gguf.h): for ANY byte string, File::parse either throws
// FormatError (which Python sees as bitnet.gguf.GGUFError) or returns a File whose every view lies
// inside the input. Any other std::exception escaping parse (std::invalid_argument would reach
// Python as a bare ValueError, std::length_error / std::out_of_range as something else again) is
// reported as a finding, like a crash, a sanitizer report, a hang or an absurd allocation. On
// success the harness walks every metadata value (recursively, every array element through
// Value::element) and every tensor, reads the first and last byte of each tensor's data (so
// AddressSanitizer catches an out-of-bounds view), and checks the invariants the header promises; a
// violated invariant aborts with a message, which libFuzzer records as a crash like any other.
//
// Build: tests/fuzz/CMakeLists.txt (clang, -fsanitize=fuzzer,address,undefined).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <string_view>

#include "bitnet/gguf.h"

namespace {

namespace gg = bitnet::gguf;

[[noreturn]] void violated(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_gguf: invariant violated: %s (%s)\n", what, detail.c_str());
  std::abort();
}

#define FUZZ_CHECK(cond, detail)          \
  do {                                    \
    if (!(cond)) violated(#cond, detail); \
  } while (0)

// Sinks reads so the compiler keeps them (a volatile store per touched byte).
volatile uint64_t g_sink;

// Walks one metadata value; `depth` guards against a reader that accepted unbounded nesting
// (the reader caps it at 16, so 64 is a violation, not a limit of the harness).
void walk_value(const gg::Value& v, const std::string& key, int depth) {
  FUZZ_CHECK(depth <= 64, key);
  FUZZ_CHECK(gg::is_value_type(uint32_t(v.type)), key);
  const std::string ts = v.type_string();
  FUZZ_CHECK(!ts.empty() && ts.find('?') == std::string::npos, key + ": " + ts);
  switch (v.type) {
    case gg::ValueType::string:
      for (char ch : v.s) g_sink = g_sink + static_cast<unsigned char>(ch);
      return;
    case gg::ValueType::array: {
      FUZZ_CHECK(gg::is_value_type(uint32_t(v.elem_type)), key);
      // Storage forms (gguf.h): fixed-size elements packed in raw; strings back to back in raw
      // with str_ends[k] the end of string k; arrays as items.
      const int64_t esize = gg::value_type_size(v.elem_type);
      const size_t n = v.size();
      if (esize > 0) {
        FUZZ_CHECK(v.items.empty() && v.raw.size() == n * size_t(esize), key);
      } else if (v.elem_type == gg::ValueType::string) {
        FUZZ_CHECK(v.items.empty() && v.str_ends.size() == n, key);
        FUZZ_CHECK(n == 0 ? v.raw.empty() : v.str_ends.back() == v.raw.size(), key);
        for (size_t k = 1; k < n; ++k) FUZZ_CHECK(v.str_ends[k - 1] <= v.str_ends[k], key);
        for (size_t k = 0; k < n; ++k) {
          const std::string_view sv = v.string_at(k);
          const uint64_t begin = k == 0 ? 0 : v.str_ends[k - 1];
          const std::string_view expect(reinterpret_cast<const char*>(v.raw.data()) + begin,
                                        size_t(v.str_ends[k] - begin));
          FUZZ_CHECK(sv == expect, key + " item " + std::to_string(k));
          FUZZ_CHECK(v.element(k).s == sv, key + " item " + std::to_string(k));
        }
      } else {
        FUZZ_CHECK(v.raw.empty() && v.items.size() == n, key);
      }
      for (size_t k = 0; k < n; ++k) {
        const gg::Value e = v.element(k);
        FUZZ_CHECK(e.type == v.elem_type, key + " item " + std::to_string(k));
        walk_value(e, key, depth + 1);
      }
      return;
    }
    case gg::ValueType::boolean:
      FUZZ_CHECK(v.u <= 1, key);
      g_sink = g_sink + v.u;
      return;
    default:
      g_sink = g_sink + v.u + uint64_t(v.i) + static_cast<uint64_t>(v.f != v.f);
      return;
  }
}

void walk_file(const gg::File& f, const uint8_t* data, size_t size) {
  FUZZ_CHECK(f.version() == 2 || f.version() == 3, std::to_string(f.version()));
  FUZZ_CHECK(f.bytes() == data && f.size() == size, "mapping");
  const uint64_t align = f.alignment();
  FUZZ_CHECK(align != 0 && (align & (align - 1)) == 0, std::to_string(align));
  FUZZ_CHECK(f.data_offset() % align == 0, std::to_string(f.data_offset()));

  for (const auto& [key, value] : f.metadata()) {
    FUZZ_CHECK(!key.empty(), "empty key");
    FUZZ_CHECK(f.find(key) == &value, key);
    walk_value(value, key, 0);
  }

  for (const gg::TensorInfo& t : f.tensors()) {
    FUZZ_CHECK(!t.name.empty(), "empty tensor name");
    FUZZ_CHECK(f.tensor(t.name) == &t, t.name);
    FUZZ_CHECK(gg::type_traits(uint32_t(t.type)) != nullptr, t.name);
    FUZZ_CHECK(!t.shape.empty() && t.shape.size() <= 4, t.name);
    // The recorded size must be what the type table says for this shape.
    FUZZ_CHECK(gg::tensor_nbytes(t.type, t.shape, t.name) == t.nbytes, t.name);
    FUZZ_CHECK(t.offset % align == 0, t.name);
    FUZZ_CHECK(f.data_offset() <= size, t.name);
    FUZZ_CHECK(t.data == data + f.data_offset() + t.offset, t.name);
    // Within the input, computed without forming an out-of-range pointer.
    const auto start = uint64_t(t.data - data);
    FUZZ_CHECK(start <= size && uint64_t(t.nbytes) <= size - start, t.name);
    if (t.nbytes > 0) {
      g_sink = g_sink + t.data[0] + t.data[t.nbytes - 1];  // ASan checks both ends
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The owner does not own the input (libFuzzer does); a no-op deleter keeps the File's contract
  // (views valid while the owner lives) trivially true inside this call.
  std::shared_ptr<const void> owner(data, [](const void*) {});
  std::shared_ptr<const gg::File> f;
  try {
    f = gg::File::parse(owner, data, size, "fuzz");
  } catch (const gg::FormatError& e) {
    // The expected outcome for almost every mutated input; the message must name the file.
    FUZZ_CHECK(std::string_view(e.what()).substr(0, 6) == "fuzz: ", e.what());
    return 0;
  } catch (const std::exception& e) {
    violated("parse threw an exception that is not gguf::FormatError", e.what());
  }
  walk_file(*f, data, size);
  return 0;
}

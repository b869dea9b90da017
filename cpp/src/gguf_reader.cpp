// The GGUF reader: memory-maps a file and validates every byte of its header before use.
//
// Memory bound: every count is checked against the bytes left before anything is reserved, using
// the smallest encoding of one item (a metadata entry >= 13 bytes, a tensor info >= 32 bytes, an
// array element >= its fixed size, 8 bytes for a string, 12 for a nested array). Fixed-size array
// elements are kept packed (Value::raw), so the parsed header costs at most about
// sizeof(Value) / 8 (~15) times the file's header bytes (for an array of empty strings).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "bitnet/common.h"
#include "bitnet/gguf.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host (GGUF files are little-endian)"
#endif

namespace bitnet::gguf {

namespace {

constexpr int kMaxArrayDepth = 16;        // nesting cap: bounds the parser's recursion
constexpr uint64_t kMinKvBytes = 13;      // key length (8) + value type (4) + a 1-byte value
constexpr uint64_t kMinTensorBytes = 32;  // name length (8) + n_dims (4) + 1 dim (8) + type (4)
                                          // + offset (8)

// True when s[0..n) is well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF).
bool valid_utf8(const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp, min;
    if ((c & 0xe0) == 0xc0) {
      len = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xc0) != 0x80) return false;
      cp = cp << 6 | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

// Printable form of a name for messages: bytes outside printable ASCII (and the quote and
// backslash) as \xNN, at most 256 input bytes (then "..."), so a NUL cannot end what() early and
// a hostile name cannot blow up the message.
std::string printable(const std::string& s) {
  constexpr size_t kMax = 256;
  std::string out;
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += char(c);
    } else {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (s.size() > kMax) out += "...";
  return out;
}

// A bounds-checked little-endian reader over [data, data + size). Every failure throws
// FormatError "<file>: <context>: <problem>" with the byte offset at fault.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& file)
      : data_(data), size_(size), file_(file) {}

  size_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  void set_context(std::string ctx) { ctx_ = std::move(ctx); }

  [[noreturn]] void fail(const std::string& msg) const {
    throw FormatError(ctx_.empty() ? str_cat(file_, ": ", msg)
                                   : str_cat(file_, ": ", ctx_, ": ", msg));
  }

  template <typename T>
  T read(const char* what) {
    if (remaining() < sizeof(T))
      fail(str_cat("unexpected end of file at byte ", pos_, " reading ", what, " (", sizeof(T),
                   " bytes; file size ", size_, ")"));
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  // A u64 length then that many bytes.
  std::string read_string(const char* what) {
    const size_t at = pos_;
    const uint64_t len = read<uint64_t>(what);
    if (len > remaining())
      fail(str_cat(what, " at byte ", at, " has length ", len, " but only ", remaining(),
                   " bytes remain in the file (size ", size_, ")"));
    std::string s(reinterpret_cast<const char*>(data_ + pos_), size_t(len));
    pos_ += size_t(len);
    return s;
  }

  // A name (key or tensor name): a string that must be non-empty, valid UTF-8.
  std::string read_name(const char* what) {
    const size_t at = pos_;
    std::string s = read_string(what);
    if (s.empty()) fail(str_cat("empty ", what, " at byte ", at));
    if (!valid_utf8(reinterpret_cast<const uint8_t*>(s.data()), s.size()))
      fail(str_cat(what, " '", printable(s), "' at byte ", at, " is not valid UTF-8"));
    return s;
  }

  const uint8_t* take(size_t n) {  // caller checked n <= remaining()
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& file_;
  std::string ctx_;
};

Value parse_value(Cursor& c, uint32_t type_id, int depth);

// Reads an array's element type, count and elements; `depth` is this array's nesting level (1
// for a top-level array).
Value parse_array(Cursor& c, int depth) {
  if (depth > kMaxArrayDepth)
    c.fail(str_cat("arrays nested deeper than ", kMaxArrayDepth, " levels at byte ", c.pos()));
  const size_t at = c.pos();
  const uint32_t elem_id = c.read<uint32_t>("array element type");
  if (!is_value_type(elem_id))
    c.fail(str_cat("invalid array element type ", elem_id, " at byte ", at, " (valid: 0..12)"));
  const auto elem = ValueType(elem_id);
  const size_t count_at = c.pos();
  const uint64_t count = c.read<uint64_t>("array length");
  const int64_t esize = value_type_size(elem);
  const uint64_t min_bytes = esize > 0 ? uint64_t(esize) : elem == ValueType::string ? 8 : 12;
  if (count > c.remaining() / min_bytes)
    c.fail(str_cat("array of ", value_type_name(elem), " at byte ", count_at, " claims ", count,
                   " items (at least ", min_bytes, " bytes each) but only ", c.remaining(),
                   " bytes remain"));
  Value v;
  v.type = ValueType::array;
  v.elem_type = elem;
  if (esize > 0) {
    const size_t n = size_t(count) * size_t(esize);
    const uint8_t* p = c.take(n);
    if (elem == ValueType::boolean)
      for (size_t k = 0; k < n; ++k)
        if (p[k] > 1)
          c.fail(str_cat("bool array item ", k, " at byte ", count_at + 8 + k, " is ", int(p[k]),
                         ", not 0 or 1"));
    v.raw.assign(p, p + n);
    return v;
  }
  if (elem == ValueType::string) {
    v.str_ends.reserve(size_t(count));  // count <= remaining / 8
    for (uint64_t k = 0; k < count; ++k) {
      const size_t len_at = c.pos();
      const uint64_t len = c.read<uint64_t>("string array item length");
      if (len > c.remaining())
        c.fail(str_cat("string array item ", k, " at byte ", len_at, " has length ", len,
                       " but only ", c.remaining(), " bytes remain in the file"));
      v.push_string(reinterpret_cast<const char*>(c.take(size_t(len))), size_t(len));
    }
    return v;
  }
  v.items.reserve(size_t(count));
  for (uint64_t k = 0; k < count; ++k) v.items.push_back(parse_array(c, depth + 1));
  return v;
}

Value parse_value(Cursor& c, uint32_t type_id, int depth) {
  const size_t at = c.pos();
  switch (ValueType(type_id)) {
    case ValueType::u8:
      return Value::unsigned_(ValueType::u8, c.read<uint8_t>("u8 value"));
    case ValueType::i8:
      return Value::signed_(ValueType::i8, c.read<int8_t>("i8 value"));
    case ValueType::u16:
      return Value::unsigned_(ValueType::u16, c.read<uint16_t>("u16 value"));
    case ValueType::i16:
      return Value::signed_(ValueType::i16, c.read<int16_t>("i16 value"));
    case ValueType::u32:
      return Value::unsigned_(ValueType::u32, c.read<uint32_t>("u32 value"));
    case ValueType::i32:
      return Value::signed_(ValueType::i32, c.read<int32_t>("i32 value"));
    case ValueType::u64:
      return Value::unsigned_(ValueType::u64, c.read<uint64_t>("u64 value"));
    case ValueType::i64:
      return Value::signed_(ValueType::i64, c.read<int64_t>("i64 value"));
    case ValueType::f32:
      return Value::float_(ValueType::f32, c.read<float>("f32 value"));
    case ValueType::f64:
      return Value::float_(ValueType::f64, c.read<double>("f64 value"));
    case ValueType::boolean: {
      const uint8_t b = c.read<uint8_t>("bool value");
      if (b > 1) c.fail(str_cat("bool value at byte ", at, " is ", int(b), ", not 0 or 1"));
      return Value::unsigned_(ValueType::boolean, b);
    }
    case ValueType::string:
      return Value::string(c.read_string("string value"));
    case ValueType::array:
      return parse_array(c, depth + 1);
  }
  c.fail(str_cat("invalid value type ", type_id, " at byte ", at, " (valid: 0..12)"));
}

}  // namespace

// ------------------------------------------------------------------------------ File
std::shared_ptr<const File> File::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    throw IoError(e, str_cat(path, ": cannot open: ", std::strerror(e)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw IoError(e, str_cat(path, ": cannot stat: ", std::strerror(e)));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw IoError(EISDIR, str_cat(path, ": is a directory, not a GGUF file"));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IoError(EINVAL, str_cat(path, ": not a regular file"));
  }
  const auto size = size_t(st.st_size);
  if (size == 0) {
    ::close(fd);
    throw FormatError(str_cat(path, ": the file is empty (0 bytes), not a GGUF file"));
  }
  // MAP_PRIVATE read-only: pages come from the page cache on demand and are never written.
  // (A file truncated by another process while mapped would fault on access; nothing can
  // defend against that short of copying the file.)
  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);  // the mapping keeps its own reference to the file
  if (addr == MAP_FAILED)
    throw IoError(map_errno, str_cat(path, ": cannot memory-map ", size,
                                     " bytes: ", std::strerror(map_errno)));
  std::shared_ptr<const void> owner(
      addr, [size](const void* p) { ::munmap(const_cast<void*>(p), size); });
  return parse(std::move(owner), static_cast<const uint8_t*>(addr), size, path);
}

std::shared_ptr<const File> File::parse(std::shared_ptr<const void> owner, const uint8_t* data,
                                        size_t size, const std::string& name) {
  std::shared_ptr<File> f(new File());
  f->path_ = name;
  f->owner_ = std::move(owner);
  f->base_ = data;
  f->size_ = size;
  Cursor c(data, size, f->path_);

  // ---- header
  if (size == 0) c.fail("the file is empty (0 bytes), not a GGUF file");
  if (size < 4 || std::memcmp(data, "GGUF", 4) != 0) {
    std::string magic;
    for (size_t k = 0; k < 4 && k < size; ++k)
      magic += str_cat(k ? " " : "", "0x", "0123456789abcdef"[data[k] >> 4],
                       "0123456789abcdef"[data[k] & 15]);
    c.fail(str_cat("not a GGUF file (magic bytes ", magic, ", expected \"GGUF\")"));
  }
  c.take(4);
  const uint32_t version = c.read<uint32_t>("the version");
  if (version == 1)
    c.fail(
        "GGUF version 1 is not supported (an obsolete layout with 32-bit counts); "
        "re-convert the model with a current tool");
  if (version == 0x02000000u || version == 0x03000000u)
    c.fail(str_cat("big-endian GGUF files are not supported (version field ", version, ")"));
  if (version != 2 && version != 3)
    c.fail(str_cat("unsupported GGUF version ", version, " (supported: 2 and 3)"));
  f->version_ = version;
  const uint64_t n_tensors = c.read<uint64_t>("the tensor count");
  const uint64_t n_kv = c.read<uint64_t>("the metadata count");
  // Reject counts that cannot fit before reserving anything for them.
  if (n_kv > c.remaining() / kMinKvBytes)
    c.fail(str_cat("the metadata count ", n_kv, " cannot fit in the ", c.remaining(),
                   " bytes after the header (at least ", kMinKvBytes, " bytes per entry)"));
  if (n_tensors > c.remaining() / kMinTensorBytes ||
      n_kv * kMinKvBytes + n_tensors * kMinTensorBytes > c.remaining())
    c.fail(str_cat("the tensor count ", n_tensors, " cannot fit in the ", c.remaining(),
                   " bytes after the header (at least ", kMinTensorBytes,
                   " bytes per tensor info)"));

  // ---- metadata
  f->metadata_.reserve(size_t(n_kv));
  f->key_index_.reserve(size_t(n_kv));
  for (uint64_t k = 0; k < n_kv; ++k) {
    c.set_context(str_cat("metadata entry ", k));
    std::string key = c.read_name("key");
    c.set_context(str_cat("key '", printable(key), "'"));
    if (f->key_index_.count(key)) c.fail("duplicate key");
    const size_t at = c.pos();
    const uint32_t type_id = c.read<uint32_t>("the value type");
    if (!is_value_type(type_id))
      c.fail(str_cat("invalid value type ", type_id, " at byte ", at, " (valid: 0..12)"));
    Value v = parse_value(c, type_id, 0);
    f->key_index_.emplace(key, f->metadata_.size());
    f->metadata_.emplace_back(std::move(key), std::move(v));
  }

  // ---- alignment
  c.set_context("key 'general.alignment'");
  if (const Value* a = f->find("general.alignment")) {
    if (a->type != ValueType::u32) c.fail(str_cat("must be a u32, got ", a->type_string()));
    if (a->u == 0 || (a->u & (a->u - 1)) != 0)
      c.fail(str_cat("alignment ", a->u, " is not a nonzero power of two"));
    f->alignment_ = a->u;
  }

  // ---- tensor infos
  f->tensors_.reserve(size_t(n_tensors));
  f->tensor_index_.reserve(size_t(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    c.set_context(str_cat("tensor info ", k));
    TensorInfo t;
    t.name = c.read_name("tensor name");
    c.set_context(str_cat("tensor '", printable(t.name), "'"));
    if (f->tensor_index_.count(t.name)) c.fail("duplicate tensor name");
    const size_t dims_at = c.pos();
    const uint32_t n_dims = c.read<uint32_t>("n_dims");
    if (n_dims < 1 || n_dims > 4)
      c.fail(str_cat("n_dims ", n_dims, " at byte ", dims_at, " is not in 1..4"));
    t.shape.assign(n_dims, 0);
    for (uint32_t d = 0; d < n_dims; ++d) {
      const size_t at = c.pos();
      const uint64_t ne = c.read<uint64_t>("a dimension");
      if (ne > uint64_t(std::numeric_limits<int64_t>::max()))
        c.fail(
            str_cat("dimension ", d, " at byte ", at, " is ", int64_t(ne), " as int64 (negative)"));
      t.shape[n_dims - 1 - d] = int64_t(ne);  // file: innermost first; shape: numpy order
    }
    const size_t type_at = c.pos();
    const uint32_t type_id = c.read<uint32_t>("the ggml type");
    if (!type_traits(type_id))
      c.fail(str_cat("unknown or removed ggml type id ", type_id, " at byte ", type_at));
    t.type = GgmlType(type_id);
    t.offset = c.read<uint64_t>("the data offset");
    try {
      t.nbytes = tensor_nbytes(t.type, t.shape, str_cat(f->path_, ": tensor '", t.name, "'"));
    } catch (const std::invalid_argument& e) {
      throw FormatError(e.what());
    }
    f->tensor_index_.emplace(t.name, f->tensors_.size());
    f->tensors_.push_back(std::move(t));
  }

  // ---- data section
  c.set_context("");
  const uint64_t align = f->alignment_;
  const uint64_t data_offset = (uint64_t(c.pos()) + align - 1) / align * align;  // < 2^33
  f->data_offset_ = data_offset;
  if (n_tensors > 0 && data_offset > size)
    c.fail(str_cat("the data section starts at byte ", data_offset, " (header end ", c.pos(),
                   " aligned to ", align, "), past the end of the file (size ", size, ")"));
  const uint64_t data_size = data_offset <= size ? size - data_offset : 0;
  for (TensorInfo& t : f->tensors_) {
    c.set_context(str_cat("tensor '", printable(t.name), "'"));
    if (t.offset % align != 0)
      c.fail(str_cat("data offset ", t.offset, " is not a multiple of the alignment ", align));
    const uint64_t nb = uint64_t(t.nbytes);
    if (t.offset > data_size || nb > data_size - t.offset) {
      const bool fits = t.offset <= std::numeric_limits<uint64_t>::max() - data_offset;
      c.fail(str_cat("data [offset ", fits ? t.offset + data_offset : t.offset,
                     fits ? "" : " in the data section", ", ", nb,
                     " bytes] extends past the end of the file (size ", size, ")"));
    }
    t.data = data + data_offset + t.offset;
  }
  return f;
}

const Value* File::find(const std::string& key) const {
  auto it = key_index_.find(key);
  return it == key_index_.end() ? nullptr : &metadata_[it->second].second;
}

const TensorInfo* File::tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace bitnet::gguf

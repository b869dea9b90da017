// The streaming GGUF v3 writer (contract in gguf.h).
//
// I/O: the header is serialized into one buffer and written at once; tensor data go straight from
// the caller's buffer through a 4 MiB stdio buffer (fwrite passes large blocks through without
// copying), so there is no per-element syscall. Every write, flush, fsync, close and rename is
// checked; a failure (disk full, ...) throws IoError naming the path.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "bitnet/common.h"
#include "bitnet/gguf.h"

namespace bitnet::gguf {

namespace {

constexpr size_t kIoBuffer = size_t(4) << 20;
constexpr size_t kMaxNameBytes = 63;  // llama.cpp's GGML_MAX_NAME (64) minus the terminator

void put_u32(std::string& b, uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); }
void put_u64(std::string& b, uint64_t v) { b.append(reinterpret_cast<const char*>(&v), 8); }
void put_str(std::string& b, const std::string& s) {
  put_u64(b, s.size());
  b.append(s);
}

// Serializes a value's payload (not its type id) in GGUF encoding.
void put_value(std::string& b, const Value& v) {
  switch (v.type) {
    case ValueType::u8:
    case ValueType::i8:
    case ValueType::u16:
    case ValueType::i16:
    case ValueType::u32:
    case ValueType::i32:
    case ValueType::u64:
    case ValueType::i64:
    case ValueType::boolean: {
      // Range-checked at construction; the low bytes of the two's complement are the encoding.
      const uint64_t bits = (v.type == ValueType::i8 || v.type == ValueType::i16 ||
                             v.type == ValueType::i32 || v.type == ValueType::i64)
                                ? uint64_t(v.i)
                                : v.u;
      b.append(reinterpret_cast<const char*>(&bits), size_t(value_type_size(v.type)));
      break;
    }
    case ValueType::f32: {
      const float f = float(v.f);
      b.append(reinterpret_cast<const char*>(&f), 4);
      break;
    }
    case ValueType::f64:
      b.append(reinterpret_cast<const char*>(&v.f), 8);
      break;
    case ValueType::string:
      put_str(b, v.s);
      break;
    case ValueType::array:
      put_u32(b, uint32_t(v.elem_type));
      put_u64(b, v.size());
      if (v.elem_type == ValueType::string) {
        for (size_t k = 0; k < v.size(); ++k) {
          const std::string_view sv = v.string_at(k);
          put_u64(b, sv.size());
          b.append(sv.data(), sv.size());
        }
      } else if (value_type_size(v.elem_type) > 0) {
        b.append(reinterpret_cast<const char*>(v.raw.data()), v.raw.size());
      } else {
        for (const Value& item : v.items) put_value(b, item);
      }
      break;
  }
}

// Checks a Value tree built by hand (the constructors already check what they build).
void check_value(const Value& v, const std::string& key, int depth) {
  check_arg(is_value_type(uint32_t(v.type)), "gguf: key '", key, "': invalid value type ",
            uint32_t(v.type));
  if (v.type != ValueType::array) return;
  check_arg(depth < 16, "gguf: key '", key, "': arrays nested deeper than 16 levels");
  check_arg(is_value_type(uint32_t(v.elem_type)), "gguf: key '", key,
            "': invalid array element type ", uint32_t(v.elem_type));
  const int64_t esize = value_type_size(v.elem_type);
  if (esize > 0) {
    check_arg(v.items.empty() && v.str_ends.empty() && v.raw.size() % size_t(esize) == 0,
              "gguf: key '", key, "': an array of ", value_type_name(v.elem_type),
              " must hold its elements packed in `raw` (use Value::array)");
    return;
  }
  if (v.elem_type == ValueType::string) {
    bool ok = v.items.empty();
    for (size_t k = 0; ok && k < v.str_ends.size(); ++k)
      ok = v.str_ends[k] >= (k ? v.str_ends[k - 1] : 0);
    ok = ok && (v.str_ends.empty() ? v.raw.empty() : v.str_ends.back() == v.raw.size());
    check_arg(ok, "gguf: key '", key,
              "': an array of strings must hold them in `raw` / `str_ends` (use Value::array)");
    return;
  }
  for (const Value& item : v.items) {
    check_arg(item.type == v.elem_type, "gguf: key '", key, "': array of ",
              value_type_name(v.elem_type), " holds a ", value_type_name(item.type));
    check_value(item, key, depth + 1);
  }
}

}  // namespace

Writer::Writer(std::string path, uint32_t alignment)
    : path_(std::move(path)), tmp_path_(path_ + ".partial"), alignment_(alignment) {
  check_arg(alignment > 0 && (alignment & (alignment - 1)) == 0, path_,
            ": alignment must be a nonzero power of two, got ", alignment);
  fp_ = std::fopen(tmp_path_.c_str(), "wb");
  if (!fp_) {
    const int e = errno;
    throw IoError(e, str_cat(tmp_path_, ": cannot create: ", std::strerror(e)));
  }
  std::setvbuf(fp_, nullptr, _IOFBF, kIoBuffer);
}

Writer::~Writer() {
  if (!committed_) abort();
}

void Writer::abort() {
  if (fp_) {
    std::fclose(fp_);
    fp_ = nullptr;
  }
  if (!committed_ && !tmp_path_.empty()) {
    std::remove(tmp_path_.c_str());
    tmp_path_.clear();
  }
}

void Writer::check_open(const char* what) const {
  if (committed_ || !fp_)
    throw std::logic_error(
        str_cat(path_, ": ", what, " after the writer was ", committed_ ? "committed" : "aborted"));
}

void Writer::add_metadata(const std::string& key, Value value) {
  check_open("add_metadata");
  check_arg(!header_written_, path_, ": key '", key, "' added after the header was written");
  check_arg(!key.empty(), path_, ": empty metadata key");
  for (const auto& kv : metadata_)
    check_arg(kv.first != key, path_, ": duplicate metadata key '", key, "'");
  check_value(value, key, 0);
  if (key == "general.alignment")
    check_arg(value.type == ValueType::u32 && value.u == alignment_, path_,
              ": general.alignment must be the writer's alignment, a u32 ", alignment_, ", got ",
              value.type_string(), " ",
              value.type == ValueType::u32 ? std::to_string(value.u) : std::string("value"));
  metadata_.emplace_back(key, std::move(value));
}

void Writer::add_tensor(const std::string& name, const std::vector<int64_t>& shape, GgmlType type) {
  check_open("add_tensor");
  check_arg(!header_written_, path_, ": tensor '", name, "' added after the header was written");
  check_arg(!name.empty(), path_, ": empty tensor name");
  check_arg(name.size() <= kMaxNameBytes, path_, ": tensor name '", name, "' is ", name.size(),
            " bytes; llama.cpp allows at most ", kMaxNameBytes);
  for (const Decl& d : tensors_)
    check_arg(d.name != name, path_, ": duplicate tensor name '", name, "'");
  const int64_t nbytes = gguf::tensor_nbytes(type, shape, str_cat(path_, ": tensor '", name, "'"));
  constexpr uint64_t kMax = uint64_t(std::numeric_limits<int64_t>::max());
  check_arg(data_pos_ <= kMax - alignment_ && uint64_t(nbytes) <= kMax - alignment_ - data_pos_,
            path_, ": tensor '", name, "': the data section would exceed 2^63 bytes");
  const uint64_t offset = uint64_t(round_up(int64_t(data_pos_), alignment_));
  data_pos_ = offset + uint64_t(nbytes);
  tensors_.push_back(Decl{name, shape, type, nbytes, offset});
}

void Writer::put(const void* p, size_t n) {
  if (n == 0) return;
  if (std::fwrite(p, 1, n, fp_) != n) {
    const int e = errno ? errno : EIO;
    throw IoError(e, str_cat(tmp_path_, ": write failed: ", std::strerror(e)));
  }
}

void Writer::pad_to_alignment(uint64_t written) {
  static const char zeros[256] = {};
  uint64_t pad = (alignment_ - written % alignment_) % alignment_;
  while (pad > 0) {
    const size_t n = size_t(std::min<uint64_t>(pad, sizeof(zeros)));
    put(zeros, n);
    pad -= n;
  }
}

void Writer::write_header() {
  check_open("write_header");
  check_arg(!header_written_, path_, ": the header was already written");
  bool has_alignment = false;
  for (const auto& kv : metadata_) has_alignment |= kv.first == "general.alignment";
  if (!has_alignment && alignment_ != 32)
    metadata_.emplace_back("general.alignment", Value::unsigned_(ValueType::u32, alignment_));

  std::string b;
  b.append("GGUF", 4);
  put_u32(b, 3);
  put_u64(b, tensors_.size());
  put_u64(b, metadata_.size());
  for (const auto& kv : metadata_) {
    put_str(b, kv.first);
    put_u32(b, uint32_t(kv.second.type));
    put_value(b, kv.second);
  }
  for (const Decl& d : tensors_) {
    put_str(b, d.name);
    put_u32(b, uint32_t(d.shape.size()));
    for (size_t k = d.shape.size(); k-- > 0;) put_u64(b, uint64_t(d.shape[k]));  // innermost first
    put_u32(b, uint32_t(d.type));
    put_u64(b, d.offset);
  }
  put(b.data(), b.size());
  pad_to_alignment(b.size());
  header_written_ = true;
  metadata_.clear();  // no longer needed: free e.g. the vocabulary before the tensors stream
  metadata_.shrink_to_fit();
}

const std::string& Writer::write_tensor_data(const void* data, size_t nbytes) {
  check_open("write_tensor_data");
  check_arg(header_written_, path_, ": write_header() must come before the tensor data");
  check_arg(n_written_ < tensors_.size(), path_, ": all ", tensors_.size(),
            " declared tensors were already written");
  const Decl& d = tensors_[n_written_];
  check_arg(uint64_t(nbytes) == uint64_t(d.nbytes), path_, ": tensor '", d.name, "' (",
            type_name(d.type), ") was declared with ", d.nbytes, " bytes, got ", nbytes);
  put(data, nbytes);
  pad_to_alignment(uint64_t(d.nbytes));  // offsets are aligned, so position % align == size
  ++n_written_;
  return d.name;
}

void Writer::commit() {
  check_open("commit");
  check_arg(header_written_, path_, ": commit() before write_header()");
  check_arg(n_written_ == tensors_.size(), path_, ": commit() after ", n_written_, " of ",
            tensors_.size(), " tensors; next is '",
            n_written_ < tensors_.size() ? tensors_[n_written_].name : std::string(), "'");
  auto fail = [this](const char* what) {
    const int e = errno ? errno : EIO;
    throw IoError(e, str_cat(tmp_path_, ": ", what, " failed: ", std::strerror(e)));
  };
  errno = 0;
  if (std::fflush(fp_) != 0) fail("flush");
  if (::fsync(fileno(fp_)) != 0 && errno != EINVAL && errno != EROFS) fail("fsync");
  std::FILE* fp = fp_;
  fp_ = nullptr;
  if (std::fclose(fp) != 0) fail("close");
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    const int e = errno;
    throw IoError(e, str_cat(path_, ": cannot rename ", tmp_path_, " onto it: ", std::strerror(e)));
  }
  committed_ = true;
}

}  // namespace bitnet::gguf

// GGUF files (v2 and v3): a validated, memory-mapped reader and a streaming writer.
//
// File layout (little-endian; docs/formats.md section 3):
//   "GGUF" u32 version, u64 n_tensors, u64 n_kv
//   n_kv   x { string key, u32 value_type, value }          string = u64 length + bytes
//   n_tens x { string name, u32 n_dims, u64 ne[n_dims] (innermost first), u32 ggml_type,
//              u64 offset (relative to the data section, multiple of the alignment) }
//   padding to general.alignment (default 32), then the data section.
// GGUF v1 (u32 counts and lengths) is rejected with a message saying so.
//
// Trust model: a file is hostile until proven otherwise. `File::parse` validates every count,
// length, dimension, type id, offset and extent against the bytes actually present before it
// reserves memory or forms a pointer, so a truncated, corrupted or malicious file raises
// `gguf::FormatError` (naming the file and the key or tensor at fault) and never crashes, hangs,
// or allocates more than a small multiple of the file size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace bitnet::gguf {

// A malformed or unsupported file; what() names the file and the key/tensor/offset at fault.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An operating-system failure (cannot open, map, write, rename; disk full); `error` is the errno
// and what() names the path. The bindings raise it as Python's OSError (FileNotFoundError, ...).
class IoError : public std::runtime_error {
 public:
  IoError(int error, const std::string& what) : std::runtime_error(what), error(error) {}
  int error;
};

// ------------------------------------------------------------------ ggml tensor types
// Ids are ggml's (`enum ggml_type`); I2_S = 36 exists only in bitnet.cpp's fork.
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  I2_S = 36,
  MXFP4 = 39,
  NVFP4 = 40,
  Q1_0 = 41,
};

struct TypeTraits {
  const char* name;    // lower case, as ggml prints it: "f32", "tq2_0", "i2_s"
  int64_t block_size;  // values per block along the innermost dimension
  int64_t type_size;   // bytes per block
};

// Traits of a known type id, or nullptr for ids ggml does not define (or has removed: 4, 5,
// 31-33, 37, 38). Sizes follow ggml (the `gguf` package's GGML_QUANT_SIZES states them). Every
// defined id is known so `bitnet info` can describe any llama.cpp file; only some types can be
// dequantized (python: bitnet.gguf).
const TypeTraits* type_traits(uint32_t id);
const char* type_name(GgmlType t);
// Parses a type name ("tq2_0", case-insensitive); throws std::invalid_argument listing the names.
GgmlType parse_type(const std::string& name);

// Bytes of a tensor of numpy shape `shape` (outermost first) and type `t`. Checks that the
// innermost dimension is a multiple of the block size and that no product overflows int64;
// `what` names the tensor in the error (std::invalid_argument). I2_S: elements / 4 + 32 (the
// packed 2-bit values, then a 32-byte tail whose first 4 bytes are the fp32 scale).
int64_t tensor_nbytes(GgmlType t, const std::vector<int64_t>& shape, const std::string& what);

// ------------------------------------------------------------------ metadata values
enum class ValueType : uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};
const char* value_type_name(ValueType t);  // "u8" ... "f64", "bool", "string", "array"
// Parses a value type name as value_type_name prints it; false if it is not one.
bool parse_value_type(const std::string& name, ValueType* out);
// Bytes of one value of a fixed-size type (1, 2, 4 or 8); 0 for string and array.
int64_t value_type_size(ValueType t);
// True for the ids 0..12 that GGUF defines.
bool is_value_type(uint32_t id);

// One metadata value. Exactly one storage member is meaningful, chosen by `type`:
//   u8/u16/u32/u64/bool -> u;  i8/i16/i32/i64 -> i;  f32/f64 -> f;  string -> s (raw bytes, not
//   necessarily UTF-8);
//   array of fixed-size elements (any elem_type but string/array) -> elem_type + raw: the elements
//     packed little-endian, value_type_size(elem_type) bytes each (bools are 0 or 1), so a
//     million-entry u8 array costs a million bytes, not a million Values;
//   array of strings -> raw: the strings' bytes back to back, str_ends[k]: the end of string k in
//     raw (a 128k-token vocabulary costs its bytes plus 8 per token, not a Value per token);
//   array of arrays -> items (each an array; GGUF lets inner arrays differ in element type).
// size(), element(i) and string_at(i) read every array form.
struct Value {
  ValueType type = ValueType::u32;
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0.0;
  std::string s;
  ValueType elem_type = ValueType::u8;
  std::vector<Value> items;
  std::vector<uint8_t> raw;
  std::vector<uint64_t> str_ends;

  static Value unsigned_(ValueType t, uint64_t v);  // u8/u16/u32/u64/bool; range-checked
  static Value signed_(ValueType t, int64_t v);     // i8/i16/i32/i64; range-checked
  static Value float_(ValueType t, double v);       // f32/f64
  static Value string(std::string v);
  // Items checked against elem_type (and range-checked), then stored in the form above.
  static Value array(ValueType elem_type, std::vector<Value> items);
  // An array of fixed-size elements from their packed little-endian bytes; the size must be a
  // multiple of the element size and bools must be 0 or 1 (std::invalid_argument otherwise).
  static Value packed_array(ValueType elem_type, std::vector<uint8_t> raw);
  // Appends one string to an array of strings (elem_type string).
  void push_string(const char* data, size_t n);

  size_t size() const;            // element count of an array; 0 for a scalar or string
  Value element(size_t i) const;  // the i-th element of an array (std::out_of_range past the end)
  // The i-th string of an array of strings, without a copy (valid while this Value is).
  std::string_view string_at(size_t i) const;
  std::string type_string() const;  // "u32", "string", "array[i32]", "array[array[u8]]", ...
};

// ------------------------------------------------------------------ reader
struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // numpy order (outermost first): ne reversed
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;  // relative to the data section
  int64_t nbytes = 0;
  const uint8_t* data = nullptr;  // into the mapping; valid while the File is alive
};

class File {
 public:
  // Memory-maps `path` read-only and parses it. Throws FormatError (bad file, including an empty
  // one) or IoError (cannot open or map; a directory; not a regular file), both naming the path.
  static std::shared_ptr<const File> open(const std::string& path);
  // Parses `size` bytes at `data` (kept alive by `owner`); `name` is used in messages. Used for
  // in-memory buffers and the fuzzer.
  static std::shared_ptr<const File> parse(std::shared_ptr<const void> owner, const uint8_t* data,
                                           size_t size, const std::string& name);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  // Absolute, aligned; within the file whenever there are tensors (a file without tensors may
  // end before it).
  uint64_t data_offset() const { return data_offset_; }
  const uint8_t* bytes() const { return base_; }
  size_t size() const { return size_; }
  // The mapping's owner: hand it to zero-copy views so they outlive this File object.
  const std::shared_ptr<const void>& owner() const { return owner_; }

  // In file order; keys are unique (a duplicate key is a FormatError).
  const std::vector<std::pair<std::string, Value>>& metadata() const { return metadata_; }
  const Value* find(const std::string& key) const;  // nullptr when absent
  // In file order; names are unique.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* tensor(const std::string& name) const;  // nullptr when absent

 private:
  File() = default;
  std::string path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  std::shared_ptr<const void> owner_;
  std::vector<std::pair<std::string, Value>> metadata_;
  std::unordered_map<std::string, size_t> key_index_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

// ------------------------------------------------------------------ writer
// Streams a GGUF v3 file: declare metadata and tensors, write the header, then each tensor's bytes
// in declaration order, then commit. The data go to `path + ".partial"` and are renamed onto
// `path` by commit(); a Writer destroyed without commit() (an exception on the way) deletes the
// partial file, so a failed conversion never leaves a truncated model behind. At most one tensor
// is ever buffered (by the caller): nothing is copied here.
//
// The constructor creates the partial file at once (a missing directory fails early, IoError);
// write_header() adds `general.alignment` (u32) when the alignment is not 32 and no such key was
// given. Every I/O failure (disk full, ...) throws IoError naming the file.
class Writer {
 public:
  // `alignment`: a nonzero power of two (std::invalid_argument otherwise).
  explicit Writer(std::string path, uint32_t alignment = 32);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Before write_header(). Duplicate keys/names, empty names, tensor names over 63 bytes
  // (llama.cpp's limit), shapes that tensor_nbytes rejects (rank 1..4, block multiples), and keys
  // that contradict the writer (general.alignment other than the constructor's) throw
  // std::invalid_argument.
  void add_metadata(const std::string& key, Value value);
  void add_tensor(const std::string& name, const std::vector<int64_t>& shape, GgmlType type);

  void write_header();
  // Bytes of a declared tensor (by declaration index), as the header records them.
  int64_t tensor_nbytes(size_t index) const { return tensors_.at(index).nbytes; }
  const std::string& tensor_name(size_t index) const { return tensors_.at(index).name; }
  // Exactly the declared byte count of the next declared tensor (checked, naming it); pads to the
  // alignment after it. Returns that tensor's name.
  const std::string& write_tensor_data(const void* data, size_t nbytes);
  // Requires every declared tensor to have been written; flushes, closes and renames.
  void commit();
  // Closes and deletes the partial file now (what the destructor does when not committed); safe
  // to call twice. After it, every other call throws.
  void abort();

  const std::string& path() const { return path_; }
  size_t n_tensors() const { return tensors_.size(); }
  size_t n_written() const { return n_written_; }

 private:
  struct Decl {
    std::string name;
    std::vector<int64_t> shape;
    GgmlType type;
    int64_t nbytes;
    uint64_t offset;
  };
  void put(const void* p, size_t n);
  void pad_to_alignment(uint64_t written);
  void check_open(const char* what) const;
  std::string path_, tmp_path_;
  uint32_t alignment_;
  std::FILE* fp_ = nullptr;
  bool header_written_ = false, committed_ = false;
  std::vector<std::pair<std::string, Value>> metadata_;
  std::vector<Decl> tensors_;
  size_t n_written_ = 0;
  uint64_t data_pos_ = 0;
};

}  // namespace bitnet::gguf

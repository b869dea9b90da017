#include "bitnet/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

#include "bitnet/bitlinear.h"
#include "bitnet/common.h"
#include "bitnet/dense.h"
#include "bitnet/formats.h"
#include "bitnet/gguf.h"
#include "bitnet/kv_cache.h"
#include "bitnet/memory.h"
#include "bitnet/packed_weights.h"  // KernelWeights
#include "bitnet/quant.h"
#include "bitnet/threadpool.h"

#if defined(__linux__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace bitnet {

namespace gg = gguf;

namespace {

// ------------------------------------------------------------------ metadata
[[noreturn]] void bad_file(const std::string& path, const std::string& msg) {
  throw gg::FormatError(path + ": " + msg);
}

// An integer key (any GGUF integer type, >= 0); false when absent.
bool meta_int(const gg::File& f, const std::string& key, int64_t* out) {
  const gg::Value* v = f.find(key);
  if (!v) return false;
  switch (v->type) {
    case gg::ValueType::u8:
    case gg::ValueType::u16:
    case gg::ValueType::u32:
    case gg::ValueType::u64:
      if (v->u > uint64_t(int64_t(1) << 40))
        bad_file(f.path(), str_cat(key, " = ", v->u, " is too large"));
      *out = int64_t(v->u);
      return true;
    case gg::ValueType::i8:
    case gg::ValueType::i16:
    case gg::ValueType::i32:
    case gg::ValueType::i64:
      if (v->i < 0 || v->i > (int64_t(1) << 40))
        bad_file(f.path(), str_cat(key, " = ", v->i, " is out of range"));
      *out = v->i;
      return true;
    default:
      bad_file(f.path(), str_cat(key, " has type ", v->type_string(), ", expected an integer"));
  }
}

int64_t meta_int_required(const gg::File& f, const std::string& key) {
  int64_t out = 0;
  if (!meta_int(f, key, &out)) bad_file(f.path(), str_cat("missing metadata key ", key));
  if (out <= 0) bad_file(f.path(), str_cat(key, " = ", out, " must be positive"));
  return out;
}

// A float key (f32/f64, or an integer); false when absent.
bool meta_float(const gg::File& f, const std::string& key, double* out) {
  const gg::Value* v = f.find(key);
  if (!v) return false;
  if (v->type == gg::ValueType::f32 || v->type == gg::ValueType::f64) {
    *out = v->f;
  } else {
    int64_t i = 0;
    meta_int(f, key, &i);
    *out = double(i);
  }
  return true;
}

// ------------------------------------------------------------------ tensors
std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string type_list(const std::vector<gg::GgmlType>& types) {
  std::string out;
  for (size_t i = 0; i < types.size(); ++i)
    out += (i ? ", " : "") + std::string(gg::type_name(types[i]));
  return out;
}

// The tensor `name` with exactly `shape` and one of `types`, else FormatError naming it.
const gg::TensorInfo& expect_tensor(const gg::File& f, const std::string& name,
                                    const std::vector<int64_t>& shape,
                                    const std::vector<gg::GgmlType>& types) {
  const gg::TensorInfo* t = f.tensor(name);
  if (!t)
    bad_file(f.path(), str_cat("missing tensor '", name, "' (expected shape ", shape_str(shape),
                               ", type ", type_list(types), ")"));
  if (t->shape != shape)
    bad_file(f.path(), str_cat("tensor '", name, "' has shape ", shape_str(t->shape), ", expected ",
                               shape_str(shape)));
  if (std::find(types.begin(), types.end(), t->type) == types.end())
    bad_file(f.path(), str_cat("tensor '", name, "' has type ", gg::type_name(t->type),
                               ", expected one of ", type_list(types)));
  return *t;
}

const std::vector<gg::GgmlType> kTernaryTypes = {gg::GgmlType::I2_S, gg::GgmlType::TQ1_0,
                                                 gg::GgmlType::TQ2_0, gg::GgmlType::F16,
                                                 gg::GgmlType::F32};
const std::vector<gg::GgmlType> kDenseTypes = {gg::GgmlType::F32, gg::GgmlType::F16,
                                               gg::GgmlType::BF16, gg::GgmlType::Q8_0,
                                               gg::GgmlType::Q4_0};
const std::vector<gg::GgmlType> kNormTypes = {gg::GgmlType::F32, gg::GgmlType::F16};

std::vector<float> load_norm(const gg::TensorInfo& t) {
  const size_t n = size_t(t.shape[0]);
  std::vector<float> out(n);
  if (t.type == gg::GgmlType::F32) {
    std::memcpy(out.data(), t.data, n * 4);
  } else {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, t.data + 2 * i, 2);
      out[i] = fp16_to_fp32(h);
    }
  }
  return out;
}

// Bytes of a [n, k] matrix in the kernel layout K256 (kernels/cpu/kernels.h): rows of
// ceil(k / 256) blocks of 64 bytes.
int64_t kernel_bytes(int64_t n, int64_t k) { return n * ceil_div(k, 256) * 64; }

// An F16/F32 matrix holding t * s_w (our converter's float output): recovers t and s_w exactly
// (s_w = the one nonzero magnitude), packs t into the kernel layout at `out` and returns s_w.
float recover_ternary(const gg::File& f, const gg::TensorInfo& t, int64_t n, int64_t k,
                      uint8_t* out) {
  const int64_t count = n * k;
  std::vector<int8_t> tern(static_cast<size_t>(count));
  const bool f16 = t.type == gg::GgmlType::F16;
  float s = 0.0f;
  for (int64_t i = 0; i < count; ++i) {
    float v;
    if (f16) {
      uint16_t h;
      std::memcpy(&h, t.data + 2 * i, 2);
      v = fp16_to_fp32(h);
    } else {
      std::memcpy(&v, t.data + 4 * i, 4);
    }
    if (v == 0.0f) {
      tern[size_t(i)] = 0;
      continue;
    }
    const float a = std::fabs(v);
    if (s == 0.0f && std::isfinite(a)) s = a;
    if (a != s)
      bad_file(f.path(), str_cat("tensor '", t.name, "' is not ternary: value ", v, " at [", i / k,
                                 ", ", i % k, "] is not 0 or +-", s,
                                 " (F16/F32 BitLinear weights must hold t * s_w)"));
    tern[size_t(i)] = v > 0 ? 1 : -1;
  }
  if (s == 0.0f) s = 1.0f;  // all zero: any scale
  pack_ternary(Format::native, tern.data(), n, k, s, out);
  return s;
}

// A BitLinear matrix [n, k] of any accepted type, repacked into the kernel layout at `out`
// (kernel_bytes(n, k) bytes, 64-byte aligned), every code validated (formats.h repack_native:
// a 2-bit code 3, TQ blocks with different scales, a bad I2_S scale are errors naming the tensor).
KernelWeights load_ternary(const gg::File& f, const gg::TensorInfo& t, uint8_t* out) {
  const int64_t n = t.shape[0], k = t.shape[1];
  float scale = 0.0f;
  try {
    switch (t.type) {
      case gg::GgmlType::I2_S:
      case gg::GgmlType::TQ1_0:
      case gg::GgmlType::TQ2_0: {
        const Format fmt = t.type == gg::GgmlType::I2_S    ? Format::i2_s
                           : t.type == gg::GgmlType::TQ1_0 ? Format::tq1_0
                                                           : Format::tq2_0;
        check_arg(t.nbytes == packed_nbytes(fmt, n, k), format_name(fmt), ": [", n, ", ", k,
                  "] needs ", packed_nbytes(fmt, n, k), " bytes, got ", t.nbytes);
        scale = repack_native(fmt, t.data, n, k, out);
        break;
      }
      default:
        scale = recover_ternary(f, t, n, k, out);
        break;
    }
  } catch (const std::invalid_argument& e) {
    bad_file(f.path(), str_cat("tensor '", t.name, "': ", e.what()));
  }
  return KernelWeights{out, n, ceil_div(k, 256), scale};
}

// Drops the resident pages that lie entirely inside [data, data + nbytes) of the read-only
// private file mapping; later reads would fault them in again from the file (none happen: the
// repacked copy is used). Advice only, failures are ignored.
void release_pages(const uint8_t* data, int64_t nbytes) {
#if defined(__linux__) && defined(MADV_DONTNEED)
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t lo = (uintptr_t(data) + page - 1) / page * page;
  const uintptr_t hi = (uintptr_t(data) + uintptr_t(nbytes)) / page * page;
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
#else
  (void)data;
  (void)nbytes;
#endif
}

enum Proj : int { kQ = 0, kK, kV, kO, kGate, kUp, kDown, kNumProj };
const char* const kProjName[kNumProj] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                         "ffn_gate", "ffn_up", "ffn_down"};

struct Layer {
  std::vector<float> attn_norm, attn_sub_norm, ffn_norm, ffn_sub_norm;
  KernelWeights kw[kNumProj];  // into Model::Impl::weights
};

}  // namespace

// ------------------------------------------------------------------ state
struct Model::Impl {
  std::shared_ptr<const gg::File> file;
  ModelConfig cfg;
  int64_t n_ctx = 0, n_seq = 0;
  int64_t q_dim = 0, kv_dim = 0;
  std::shared_ptr<DenseMatrix> embd, head;
  std::vector<float> output_norm;
  std::vector<Layer> layers;
  // Every BitLinear matrix in the kernel layout, back to back (each 64-byte aligned) in one
  // buffer: one allocation rounds up to a 2 MiB huge page once, not once per matrix (which
  // would cost ~170 MB, 14% of the file, for the 210 matrices of 2B4T).
  std::shared_ptr<uint8_t> weights;
  std::unique_ptr<KvCache> cache;
  mutable std::mutex mu;  // one call at a time (the bindings release the GIL)

  // Scratch, grown to `cap` rows on demand (at most max_batch()); never shrunk.
  int64_t cap = 0;
  int64_t kp_max = 0;  // widest zero-padded activation row of any BitLinear (a multiple of 256)
  std::vector<float> rope_inv_freq;  // [head_dim / 2]
  std::vector<char> seen;            // [n_seq], eval_batch's duplicate check
  std::vector<float> x, nrm, qkv, att, y, gu, h, rope_cos, rope_sin;
  std::shared_ptr<uint8_t> q8;  // [cap, kp_max] int8, 64-byte aligned rows
  std::vector<float> s_x;
  std::vector<int32_t> q_sum;
  std::vector<int64_t> pos;
  std::vector<int32_t> seq;
  std::vector<nn::AttentionQuery> queries;

  void reserve(int64_t rows);
  void quantize(const float* in, int64_t M, int64_t K, int64_t kp);
  void forward(const int32_t* tokens, int64_t M, int64_t first_logit, float* logits);
  void check_tokens(const int32_t* tokens, int64_t n, const char* what) const;
};

void Model::Impl::reserve(int64_t rows) {
  if (rows <= cap) return;
  const ModelConfig& c = cfg;
  const auto sz = [rows](int64_t per_row) { return size_t(rows * per_row); };
  x.resize(sz(c.n_embd));
  nrm.resize(sz(c.n_embd));
  qkv.resize(sz(q_dim + 2 * kv_dim));
  att.resize(sz(q_dim));
  y.resize(sz(c.n_embd));
  gu.resize(sz(2 * c.n_ff));
  h.resize(sz(c.n_ff));
  rope_cos.resize(sz(c.head_dim / 2));
  rope_sin.resize(sz(c.head_dim / 2));
  q8 = alloc_buffer(rows * kp_max);
  s_x.resize(size_t(rows));
  q_sum.resize(size_t(rows));
  pos.resize(size_t(rows));
  seq.resize(size_t(rows));
  queries.resize(size_t(rows));
  cap = rows;
}

void Model::Impl::quantize(const float* in, int64_t M, int64_t K, int64_t kp) {
  quantize_activations(in, M, K, reinterpret_cast<int8_t*>(q8.get()), kp, s_x.data(), q_sum.data());
}

void Model::Impl::check_tokens(const int32_t* tokens, int64_t n, const char* what) const {
  for (int64_t i = 0; i < n; ++i)
    check_arg(tokens[i] >= 0 && tokens[i] < cfg.vocab_size, what, ": token id ", tokens[i],
              " at index ", i, " is out of range [0, ", cfg.vocab_size, ")");
}

// Runs rows [0, M) (tokens, with seq[m] / pos[m] already filled in) through the network, storing
// their keys and values in the cache, and writes the logits of rows [first_logit, M) to
// logits [M - first_logit, vocab]. Does not change any sequence length.
void Model::Impl::forward(const int32_t* tokens, int64_t M, int64_t first_logit, float* logits) {
  const ModelConfig& c = cfg;
  const int64_t E = c.n_embd, F = c.n_ff, hd = c.head_dim, ld_qkv = q_dim + 2 * kv_dim;
  const float eps = c.rms_eps;
  const int8_t* q = reinterpret_cast<const int8_t*>(q8.get());
  for (int64_t m = 0; m < M; ++m) embd->row(tokens[m], x.data() + m * E);
  nn::rope_tables(pos.data(), M, hd, rope_inv_freq.data(), rope_cos.data(), rope_sin.data());
  const nn::AttentionShape shape{c.n_head, c.n_head_kv, hd, 1.0f / std::sqrt(float(hd))};

  for (int64_t l = 0; l < c.n_layer; ++l) {
    const Layer& L = layers[size_t(l)];
    // Attention block.
    nn::rmsnorm(x.data(), E, M, E, L.attn_norm.data(), eps, nrm.data(), E);
    quantize(nrm.data(), M, E, L.kw[kQ].nb * 256);
    const BitLinearTarget qkv_out[3] = {{&L.kw[kQ], qkv.data(), ld_qkv},
                                        {&L.kw[kK], qkv.data() + q_dim, ld_qkv},
                                        {&L.kw[kV], qkv.data() + q_dim + kv_dim, ld_qkv}};
    bitlinear_quantized_multi(q, s_x.data(), q_sum.data(), M, qkv_out, 3);
    nn::rope_neox(qkv.data(), ld_qkv, M, c.n_head, hd, rope_cos.data(), rope_sin.data());
    nn::rope_neox(qkv.data() + q_dim, ld_qkv, M, c.n_head_kv, hd, rope_cos.data(), rope_sin.data());
    for (int64_t m = 0; m < M; ++m) {
      const float* row = qkv.data() + m * ld_qkv;
      std::memcpy(cache->k(l, seq[size_t(m)], pos[size_t(m)]), row + q_dim, size_t(kv_dim) * 4);
      std::memcpy(cache->v(l, seq[size_t(m)], pos[size_t(m)]), row + q_dim + kv_dim,
                  size_t(kv_dim) * 4);
    }
    // In the last layer only the rows whose logits are wanted need anything past their keys and
    // values; earlier rows stop here.
    const int64_t r0 = l + 1 == c.n_layer ? first_logit : 0, R = M - r0;
    if (R == 0) break;
    for (int64_t m = r0; m < M; ++m) {
      const int32_t s = seq[size_t(m)];
      queries[size_t(m - r0)] =
          nn::AttentionQuery{qkv.data() + m * ld_qkv, cache->k(l, s, 0), cache->v(l, s, 0),
                             pos[size_t(m)] + 1, att.data() + (m - r0) * q_dim};
    }
    nn::attention(queries.data(), R, shape, n_ctx);
    float* xr = x.data() + r0 * E;
    nn::rmsnorm(att.data(), q_dim, R, q_dim, L.attn_sub_norm.data(), eps, att.data(), q_dim);
    quantize(att.data(), R, q_dim, L.kw[kO].nb * 256);
    bitlinear_quantized(q, s_x.data(), q_sum.data(), R, L.kw[kO], y.data(), E);
    nn::add_inplace(xr, E, y.data(), E, R, E);
    // Feed-forward block.
    nn::rmsnorm(xr, E, R, E, L.ffn_norm.data(), eps, nrm.data(), E);
    quantize(nrm.data(), R, E, L.kw[kGate].nb * 256);
    const BitLinearTarget gu_out[2] = {{&L.kw[kGate], gu.data(), 2 * F},
                                       {&L.kw[kUp], gu.data() + F, 2 * F}};
    bitlinear_quantized_multi(q, s_x.data(), q_sum.data(), R, gu_out, 2);
    nn::gated_activation(c.hidden_act, gu.data(), 2 * F, gu.data() + F, 2 * F, R, F, h.data(), F);
    nn::rmsnorm(h.data(), F, R, F, L.ffn_sub_norm.data(), eps, h.data(), F);
    quantize(h.data(), R, F, L.kw[kDown].nb * 256);
    bitlinear_quantized(q, s_x.data(), q_sum.data(), R, L.kw[kDown], y.data(), E);
    nn::add_inplace(xr, E, y.data(), E, R, E);
  }
  const int64_t R = M - first_logit;
  if (R == 0) return;
  nn::rmsnorm(x.data() + first_logit * E, E, R, E, output_norm.data(), eps, nrm.data(), E);
  head->matmul(nrm.data(), R, logits, c.vocab_size);
}

// ------------------------------------------------------------------ loading
Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

std::unique_ptr<Model> Model::load(const std::string& path, int64_t n_ctx, int64_t n_seq) {
  check_arg(n_ctx >= 0, "Model: n_ctx must be >= 0 (0: the file's context length), got ", n_ctx);
  check_arg(n_seq >= 1, "Model: n_seq must be >= 1, got ", n_seq);
  auto impl = std::make_unique<Impl>();
  impl->file = gg::File::open(path);
  const gg::File& f = *impl->file;
  ModelConfig& c = impl->cfg;

  // Configuration.
  const gg::Value* arch_v = f.find("general.architecture");
  if (!arch_v || arch_v->type != gg::ValueType::string)
    bad_file(path, "missing string key general.architecture");
  c.architecture = arch_v->s;
  if (c.architecture != "bitnet" && c.architecture != "bitnet-b1.58" &&
      c.architecture != "bitnet-25")
    bad_file(path, str_cat("architecture '", c.architecture,
                           "' is not supported; expected one of bitnet, bitnet-b1.58, bitnet-25"));
  const std::string p = c.architecture + ".";
  c.n_embd = meta_int_required(f, p + "embedding_length");
  c.n_layer = meta_int_required(f, p + "block_count");
  c.n_ff = meta_int_required(f, p + "feed_forward_length");
  c.n_head = meta_int_required(f, p + "attention.head_count");
  c.n_ctx_train = meta_int_required(f, p + "context_length");
  c.n_head_kv = c.n_head;
  if (meta_int(f, p + "attention.head_count_kv", &c.n_head_kv) && c.n_head_kv <= 0)
    bad_file(path, str_cat(p, "attention.head_count_kv = ", c.n_head_kv, " must be positive"));
  if (c.n_head % c.n_head_kv)
    bad_file(path,
             str_cat("head_count ", c.n_head, " is not a multiple of head_count_kv ", c.n_head_kv));
  // Head size: attention.key_length, else rope.dimension_count (our converter writes the head
  // size there), else n_embd / n_head.
  if (!meta_int(f, p + "attention.key_length", &c.head_dim) &&
      !meta_int(f, p + "rope.dimension_count", &c.head_dim)) {
    if (c.n_embd % c.n_head)
      bad_file(path, str_cat("embedding_length ", c.n_embd, " is not a multiple of head_count ",
                             c.n_head, " and attention.key_length is missing"));
    c.head_dim = c.n_embd / c.n_head;
  }
  int64_t other = 0;
  if (meta_int(f, p + "attention.value_length", &other) && other != c.head_dim)
    bad_file(path, str_cat(p, "attention.value_length = ", other, " differs from the key length ",
                           c.head_dim, " (not supported)"));
  if (meta_int(f, p + "rope.dimension_count", &other) && other != c.head_dim)
    bad_file(path, str_cat(p, "rope.dimension_count = ", other, " differs from the head size ",
                           c.head_dim, " (partial RoPE is not supported)"));
  if (c.head_dim <= 0 || c.head_dim % 2)
    bad_file(path, str_cat("head size ", c.head_dim, " must be even and positive for RoPE"));
  double d = 0.0;
  if (!meta_float(f, p + "attention.layer_norm_rms_epsilon", &d))
    bad_file(path, str_cat("missing metadata key ", p, "attention.layer_norm_rms_epsilon"));
  if (!(d >= 0.0 && d < 1.0))
    bad_file(path, str_cat(p, "attention.layer_norm_rms_epsilon = ", d, " is out of range"));
  c.rms_eps = float(d);
  d = 10000.0;
  meta_float(f, p + "rope.freq_base", &d);
  if (!(d > 0.0 && std::isfinite(float(d))))
    bad_file(path, str_cat(p, "rope.freq_base = ", d, " must be positive and finite"));
  c.rope_theta = float(d);
  std::string act = c.architecture == "bitnet" ? "silu" : "relu2";
  if (const gg::Value* a = f.find(p + "hidden_act")) {
    if (a->type != gg::ValueType::string)
      bad_file(path, str_cat(p, "hidden_act has type ", a->type_string(), ", expected a string"));
    act = a->s;
  }
  try {
    c.hidden_act = nn::parse_activation(act);
  } catch (const std::invalid_argument& e) {
    bad_file(path, str_cat(p, "hidden_act: ", e.what()));
  }
  const int64_t E = c.n_embd, F = c.n_ff;
  impl->q_dim = c.n_head * c.head_dim;
  impl->kv_dim = c.n_head_kv * c.head_dim;
  const int64_t qd = impl->q_dim, kvd = impl->kv_dim;
  for (int64_t k : {E, F, qd})
    if (k >= (int64_t(1) << 23)) bad_file(path, str_cat("row length ", k, " is too large"));

  // Every tensor: presence, type and shape, before anything large is allocated.
  const gg::TensorInfo* te = f.tensor("token_embd.weight");
  if (!te) bad_file(path, "missing tensor 'token_embd.weight'");
  if (te->shape.size() != 2 || te->shape[1] != E)
    bad_file(path, str_cat("tensor 'token_embd.weight' has shape ", shape_str(te->shape),
                           ", expected [vocab, ", E, "]"));
  c.vocab_size = te->shape[0];
  int64_t vocab_meta = 0;
  if (meta_int(f, p + "vocab_size", &vocab_meta) && vocab_meta != c.vocab_size)
    bad_file(path, str_cat(p, "vocab_size = ", vocab_meta, " but token_embd.weight has ",
                           c.vocab_size, " rows"));
  expect_tensor(f, "token_embd.weight", {c.vocab_size, E}, kDenseTypes);
  const gg::TensorInfo& tn = expect_tensor(f, "output_norm.weight", {E}, kNormTypes);
  const gg::TensorInfo* th = f.tensor("output.weight");
  c.tied = th == nullptr;
  if (th) th = &expect_tensor(f, "output.weight", {c.vocab_size, E}, kDenseTypes);
  c.head_type = gg::type_name((th ? th : te)->type);
  for (const gg::TensorInfo& t : f.tensors()) {
    const std::string& name = t.name;
    if (name.size() > 6 && name.compare(name.size() - 6, 6, ".scale") == 0)
      bad_file(path, str_cat("tensor '", name,
                             "': separate weight-scale tensors are not supported (the scale must "
                             "be inside the ternary format, or the F16/F32 values t * s_w)"));
  }
  std::vector<const gg::TensorInfo*> mats;   // [layer * kNumProj + proj]
  std::vector<const gg::TensorInfo*> norms;  // [layer * 4 + i]
  const std::vector<int64_t> mat_shape[kNumProj] = {{qd, E}, {kvd, E}, {kvd, E}, {E, qd},
                                                    {F, E},  {F, E},   {E, F}};
  const char* const norm_name[4] = {"attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm"};
  const int64_t norm_len[4] = {E, qd, E, F};
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    for (int i = 0; i < kNumProj; ++i)
      mats.push_back(&expect_tensor(f, b + kProjName[i] + ".weight", mat_shape[i], kTernaryTypes));
    for (int i = 0; i < 4; ++i)
      norms.push_back(&expect_tensor(f, b + norm_name[i] + ".weight", {norm_len[i]}, kNormTypes));
  }
  c.weight_type = gg::type_name(mats[0]->type);
  for (const gg::TensorInfo* t : mats)
    if (t->type != mats[0]->type) c.weight_type = "mixed";
  c.file_size = int64_t(f.size());

  impl->n_seq = n_seq;
  impl->n_ctx = n_ctx > 0 ? n_ctx : c.n_ctx_train;
  check_arg(impl->n_ctx < (int64_t(1) << 24), "Model: n_ctx = ", impl->n_ctx,
            " is too large (max 2^24 - 1)");
  impl->cache = std::make_unique<KvCache>(c.n_layer, n_seq, impl->n_ctx, c.n_head_kv, c.head_dim);
  impl->seen.assign(size_t(n_seq), 0);
  impl->rope_inv_freq.resize(size_t(c.head_dim / 2));
  nn::rope_inv_freq(c.head_dim, c.rope_theta, impl->rope_inv_freq.data());

  // Weights. The embedding/head stay memory-mapped; the BitLinear matrices are repacked (one
  // task per matrix across the thread pool), then their file pages are released.
  impl->embd = DenseMatrix::view(te->type, c.vocab_size, E, te->data, te->nbytes, f.owner(),
                                 "token_embd.weight");
  impl->head = th ? DenseMatrix::view(th->type, c.vocab_size, E, th->data, th->nbytes, f.owner(),
                                      "output.weight")
                  : impl->embd;
  impl->output_norm = load_norm(tn);
  impl->layers.resize(size_t(c.n_layer));
  for (int64_t l = 0; l < c.n_layer; ++l) {
    Layer& L = impl->layers[size_t(l)];
    L.attn_norm = load_norm(*norms[size_t(l * 4 + 0)]);
    L.attn_sub_norm = load_norm(*norms[size_t(l * 4 + 1)]);
    L.ffn_norm = load_norm(*norms[size_t(l * 4 + 2)]);
    L.ffn_sub_norm = load_norm(*norms[size_t(l * 4 + 3)]);
  }
  std::vector<int64_t> offset(mats.size() + 1, 0);
  for (size_t i = 0; i < mats.size(); ++i)
    offset[i + 1] = offset[i] + kernel_bytes(mats[i]->shape[0], mats[i]->shape[1]);
  impl->weights = alloc_buffer(offset.back());
  parallel_for(int64_t(mats.size()), [&](int64_t i, int) {
    const gg::TensorInfo& t = *mats[size_t(i)];
    Layer& L = impl->layers[size_t(i / kNumProj)];
    L.kw[i % kNumProj] = load_ternary(f, t, impl->weights.get() + offset[size_t(i)]);
    // At once, so the file pages and the repacked copy of all matrices are never resident
    // together (peak RSS ~ file size, not file size + repacked weights).
    release_pages(t.data, t.nbytes);
  });
  for (const Layer& L : impl->layers)
    for (int j = 0; j < kNumProj; ++j) impl->kp_max = std::max(impl->kp_max, L.kw[j].nb * 256);
  return std::unique_ptr<Model>(new Model(std::move(impl)));
}

// ------------------------------------------------------------------ public API
const ModelConfig& Model::config() const { return impl_->cfg; }
int64_t Model::n_ctx() const { return impl_->n_ctx; }
int64_t Model::n_seq() const { return impl_->n_seq; }

void Model::eval(const int32_t* tokens, int64_t T, int64_t seq, bool all_logits, float* logits) {
  Impl& I = *impl_;
  std::lock_guard<std::mutex> lock(I.mu);
  I.cache->check_seq(seq, "eval");
  check_arg(T >= 1, "eval: no tokens");
  I.check_tokens(tokens, T, "eval");
  const int64_t len = I.cache->len(seq);
  check_arg(len + T <= I.n_ctx, "context full: ", len, " + ", T, " > n_ctx = ", I.n_ctx,
            " (sequence ", seq, "); reset() or load with a larger n_ctx");
  const int64_t V = I.cfg.vocab_size;
  for (int64_t c0 = 0; c0 < T; c0 += max_batch()) {
    const int64_t M = std::min(max_batch(), T - c0);
    I.reserve(M);
    for (int64_t m = 0; m < M; ++m) {
      I.pos[size_t(m)] = len + c0 + m;
      I.seq[size_t(m)] = int32_t(seq);
    }
    if (all_logits)
      I.forward(tokens + c0, M, 0, logits + c0 * V);
    else
      I.forward(tokens + c0, M, c0 + M == T ? M - 1 : M, logits);
  }
  I.cache->set_len(seq, len + T);
}

void Model::eval_batch(const int32_t* tokens, const int32_t* seqs, int64_t B, float* logits) {
  Impl& I = *impl_;
  std::lock_guard<std::mutex> lock(I.mu);
  check_arg(B >= 1, "eval_batch: no tokens");
  std::vector<char>& seen = I.seen;
  std::fill(seen.begin(), seen.end(), 0);
  for (int64_t b = 0; b < B; ++b) {
    I.cache->check_seq(seqs[b], "eval_batch");
    check_arg(!seen[size_t(seqs[b])], "eval_batch: sequence ", seqs[b],
              " appears more than once (index ", b, "); one token per sequence");
    seen[size_t(seqs[b])] = 1;
    const int64_t len = I.cache->len(seqs[b]);
    check_arg(len + 1 <= I.n_ctx, "context full: ", len, " + 1 > n_ctx = ", I.n_ctx, " (sequence ",
              seqs[b], "); reset() or load with a larger n_ctx");
  }
  I.check_tokens(tokens, B, "eval_batch");
  const int64_t V = I.cfg.vocab_size;
  for (int64_t c0 = 0; c0 < B; c0 += max_batch()) {
    const int64_t M = std::min(max_batch(), B - c0);
    I.reserve(M);
    for (int64_t m = 0; m < M; ++m) {
      I.seq[size_t(m)] = seqs[c0 + m];
      I.pos[size_t(m)] = I.cache->len(seqs[c0 + m]);
    }
    I.forward(tokens + c0, M, 0, logits + c0 * V);
  }
  for (int64_t b = 0; b < B; ++b) I.cache->set_len(seqs[b], I.cache->len(seqs[b]) + 1);
}

int64_t Model::seq_len(int64_t seq) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->cache->len(seq);
}

void Model::reset(int64_t seq) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->cache->reset(seq);
}

void Model::truncate(int64_t seq, int64_t n) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->cache->truncate(seq, n);
}

}  // namespace bitnet

// A BitNet b1.58 language model loaded from a GGUF file: configuration from the metadata,
// weights repacked once into the kernel layout, and the forward pass with a KV cache.
//
// Architecture (docs/formats.md section 4), per layer, for the rows x [M, n_embd] of a batch:
//   n = rmsnorm(x) * attn_norm
//   q, k, v = BitLinear_{q,k,v}(n)          one int8 quantization of n shared by the three
//   q, k = RoPE-NEOX(q, k) at each row's position;  k, v -> the row's sequence in the KV cache
//   a = attention(q, cached k, v)           causal, GQA (group n_head / n_head_kv)
//   x += BitLinear_o(rmsnorm(a) * attn_sub_norm)
//   n = rmsnorm(x) * ffn_norm
//   g, u = BitLinear_{gate,up}(n)           shared quantization
//   x += BitLinear_down(rmsnorm(act(g) * u) * ffn_sub_norm)     act: relu2 or silu
// then logits = head(rmsnorm(x) * output_norm), head = output.weight, or token_embd when tied.
//
// A batch is either a run of consecutive tokens of one sequence (prefill: the BitLinears run as
// GEMMs with M = tokens) or one token for each of several sequences (batch decode). Every row's
// computation is independent of the others apart from attention reading the cache, so a token's
// logits do not depend on how it was batched (bit for bit: the GEMM and GEMV kernels both form the
// exact int32 product and scale it the same way).
//
// Accepted files: general.architecture bitnet | bitnet-b1.58 | bitnet-25; BitLinear matrices in
// I2_S, TQ1_0, TQ2_0 (repacked), or F16/F32 holding t * s_w (ternary values are recovered exactly);
// token embedding / head in F32, F16, BF16, Q8_0 or Q4_0 (memory-mapped, used in place); norms F32
// or F16. The file pages of repacked matrices are released after loading (madvise DONTNEED), so
// resident memory stays about file size + KV cache.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "bitnet/nn.h"

namespace bitnet {

struct ModelConfig {
  std::string architecture;  // general.architecture
  int64_t vocab_size = 0;    // rows of token_embd
  int64_t n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_ff = 0;
  int64_t n_ctx_train = 0;  // <arch>.context_length
  float rope_theta = 10000.0f, rms_eps = 1e-5f;
  nn::Activation hidden_act = nn::Activation::relu2;
  std::string weight_type;  // ggml type name of the BitLinear matrices ("i2_s", ...) or "mixed"
  std::string head_type;    // ggml type name of the LM head ("f16", "q4_0", ...)
  bool tied = true;         // no output.weight: the head is token_embd
  int64_t file_size = 0;    // bytes
};

class Model {
 public:
  // Loads `path`. n_ctx: KV cache length per sequence (0: the file's context_length); n_seq:
  // number of independent sequences (cache slots). Every metadata key and tensor (presence, type,
  // shape) is checked before anything large is allocated; a bad file throws gguf::FormatError
  // (Python: GGUFError, a ValueError) naming the file and the key or tensor, with the expected
  // and actual values; OS errors throw gguf::IoError; bad arguments std::invalid_argument.
  static std::unique_ptr<Model> load(const std::string& path, int64_t n_ctx = 0, int64_t n_seq = 1);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const;
  int64_t n_ctx() const;
  int64_t n_seq() const;

  // Appends tokens[0, T) to sequence `seq` at positions [len, len + T) and writes the logits of
  // every token (all_logits: logits [T, vocab]) or of the last one (logits [1, vocab]).
  // Long inputs run in chunks of max_batch() tokens. Throws std::invalid_argument, before any
  // state changes, on T < 1, a bad sequence, a token id outside [0, vocab) (naming its index), or
  // when the sequence would pass n_ctx ("context full: ..."). If the forward pass itself fails
  // (e.g. non-finite activations), the sequence keeps its old length.
  void eval(const int32_t* tokens, int64_t T, int64_t seq, bool all_logits, float* logits);

  // One new token for each of B distinct sequences seqs[0, B) in one pass (BitLinears as GEMMs
  // with M = B, attention per sequence); logits [B, vocab]. Same checks as eval, per sequence;
  // a repeated sequence is an error.
  void eval_batch(const int32_t* tokens, const int32_t* seqs, int64_t B, float* logits);

  int64_t seq_len(int64_t seq) const;
  void reset(int64_t seq = -1);           // -1: every sequence
  void truncate(int64_t seq, int64_t n);  // keep the first n tokens (0 <= n <= seq_len)

  // Rows per forward pass; longer inputs are split (the scratch buffers hold this many rows).
  static constexpr int64_t max_batch() { return 256; }

  struct Impl;

 private:
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace bitnet

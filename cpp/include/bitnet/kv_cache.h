// The key/value cache of the attention layers: fp32, one slot per independent sequence.
//
// Layout (K and V are two separate buffers of the same shape):
//
//   [n_layer][n_seq][n_ctx][n_head_kv][head_dim]   fp32, row-major
//
// so the keys of one (layer, sequence) are a contiguous [n_ctx, n_head_kv * head_dim] matrix whose
// first len(seq) rows are valid, and attention over a sequence streams them front to back. Every
// sequence has its own length; positions are 0 .. len - 1. The buffers are allocated once, and
// uninitialised: pages are touched (and count towards RSS) only as tokens are stored.
//
// Sizes: 2 * n_layer * n_seq * n_ctx * n_head_kv * head_dim * 4 bytes; for BitNet b1.58 2B4T
// (30 layers, 5 x 128 kv) that is 150 KiB per token and sequence, 600 MiB at n_ctx = 4096.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace bitnet {

class KvCache {
 public:
  // Throws std::invalid_argument on a non-positive size or one whose byte count overflows, and
  // std::runtime_error (naming the size) when the buffers cannot be allocated.
  KvCache(int64_t n_layer, int64_t n_seq, int64_t n_ctx, int64_t n_head_kv, int64_t head_dim);

  int64_t n_layer() const { return n_layer_; }
  int64_t n_seq() const { return n_seq_; }
  int64_t n_ctx() const { return n_ctx_; }
  int64_t row_floats() const { return row_; }  // n_head_kv * head_dim: floats per position
  int64_t nbytes() const { return 2 * n_layer_ * n_seq_ * n_ctx_ * row_ * 4; }

  // Row `pos` of the keys / values of (layer, seq): row_floats() floats. Not range-checked
  // (hot path); callers check with check_seq and the lengths.
  float* k(int64_t layer, int64_t seq, int64_t pos) { return k_ + offset(layer, seq, pos); }
  float* v(int64_t layer, int64_t seq, int64_t pos) { return v_ + offset(layer, seq, pos); }
  const float* k(int64_t layer, int64_t seq, int64_t pos) const {
    return k_ + offset(layer, seq, pos);
  }
  const float* v(int64_t layer, int64_t seq, int64_t pos) const {
    return v_ + offset(layer, seq, pos);
  }

  // Throws std::invalid_argument naming `what` unless 0 <= seq < n_seq.
  void check_seq(int64_t seq, const char* what) const;
  // Number of valid positions of a sequence (checked).
  int64_t len(int64_t seq) const;
  // Sets the length of a sequence after its rows [old len, n) were written (0 <= n <= n_ctx).
  void set_len(int64_t seq, int64_t n);
  // Forgets every position of one sequence, or of all of them for seq == -1.
  void reset(int64_t seq);
  // Keeps the first n positions of a sequence (0 <= n <= len(seq)); the rest are forgotten.
  void truncate(int64_t seq, int64_t n);

 private:
  int64_t offset(int64_t layer, int64_t seq, int64_t pos) const {
    return ((layer * n_seq_ + seq) * n_ctx_ + pos) * row_;
  }
  int64_t n_layer_, n_seq_, n_ctx_, row_;
  std::shared_ptr<uint8_t> k_buf_, v_buf_;
  float* k_ = nullptr;
  float* v_ = nullptr;
  std::vector<int64_t> len_;
};

}  // namespace bitnet

#include "bitnet/kv_cache.h"

#include <new>
#include <stdexcept>

#include "bitnet/common.h"
#include "bitnet/memory.h"

namespace bitnet {

KvCache::KvCache(int64_t n_layer, int64_t n_seq, int64_t n_ctx, int64_t n_head_kv, int64_t head_dim)
    : n_layer_(n_layer), n_seq_(n_seq), n_ctx_(n_ctx), row_(n_head_kv * head_dim) {
  check_arg(n_layer > 0 && n_seq > 0 && n_ctx > 0 && n_head_kv > 0 && head_dim > 0,
            "KV cache: every size must be positive (n_layer ", n_layer, ", n_seq ", n_seq,
            ", n_ctx ", n_ctx, ", n_head_kv ", n_head_kv, ", head_dim ", head_dim, ")");
  // Each factor is positive; bound the product by 2^60 bytes per buffer step by step so no
  // intermediate overflows int64.
  constexpr int64_t kMax = int64_t(1) << 60;
  int64_t bytes = 4;
  for (int64_t f : {n_head_kv, head_dim, n_ctx, n_seq, n_layer}) {
    check_arg(f <= kMax / bytes, "KV cache: n_layer ", n_layer, " x n_seq ", n_seq, " x n_ctx ",
              n_ctx, " x ", n_head_kv, " x ", head_dim, " floats is too large");
    bytes *= f;
  }
  try {
    k_buf_ = alloc_buffer(bytes);
    v_buf_ = alloc_buffer(bytes);
  } catch (const std::bad_alloc&) {
    throw std::runtime_error(str_cat("KV cache: cannot allocate 2 x ", bytes, " bytes (n_ctx ",
                                     n_ctx, ", n_seq ", n_seq,
                                     "); load the model with a smaller n_ctx or n_seq"));
  }
  k_ = reinterpret_cast<float*>(k_buf_.get());
  v_ = reinterpret_cast<float*>(v_buf_.get());
  len_.assign(size_t(n_seq), 0);
}

void KvCache::check_seq(int64_t seq, const char* what) const {
  check_arg(seq >= 0 && seq < n_seq_, what, ": sequence ", seq, " out of range [0, ", n_seq_,
            ") (the model was loaded with n_seq = ", n_seq_, ")");
}

int64_t KvCache::len(int64_t seq) const {
  check_seq(seq, "seq_len");
  return len_[size_t(seq)];
}

void KvCache::set_len(int64_t seq, int64_t n) {
  check_seq(seq, "set_len");
  check_arg(n >= 0 && n <= n_ctx_, "set_len: length ", n, " out of range [0, ", n_ctx_, "]");
  len_[size_t(seq)] = n;
}

void KvCache::reset(int64_t seq) {
  if (seq == -1) {
    for (auto& l : len_) l = 0;
    return;
  }
  check_seq(seq, "reset");
  len_[size_t(seq)] = 0;
}

void KvCache::truncate(int64_t seq, int64_t n) {
  check_seq(seq, "truncate");
  const int64_t cur = len_[size_t(seq)];
  check_arg(n >= 0 && n <= cur, "truncate: n = ", n, " out of range [0, ", cur, "] (sequence ", seq,
            " holds ", cur, " tokens)");
  len_[size_t(seq)] = n;
}

}  // namespace bitnet

// Tape op bitlinear_frozen (bitnet/autograd_frozen.h): a frozen packed ternary BitLinear.
//
// Forward is bitnet::bitlinear on the weights' cached K256 kernel layout, so it equals inference
// bit for bit. Backward computes dx += dy @ (s_w * T) without ever holding an fp32 copy of the
// weights between calls:
//
//   Memory/time trade-off. Keeping W = s_w * T in fp32 would cost 4 bytes per weight for the
//   whole training run (16x the 2-bit packed size: ~9.6 GB for a 2.4B-parameter base), which
//   is what LoRA on a frozen base is meant to avoid. Instead every backward call unpacks the
//   codes from the K256 layout block of rows by block of rows into one transient fp32 buffer
//   of at most kMaxBlockBytes (8 MiB) and feeds each block to sgemm:
//       dx[M, K] += dy[:, n0:n1] @ W[n0:n1, K]      (sgemm NN, beta = 1)
//   The unpack costs O(N * K) simple operations per call against the product's 2 * M * N * K
//   flops, i.e. about 1 / M of the product for a batch of M tokens (M is hundreds to thousands
//   in fine-tuning), and the buffer comes from the tape's caching pool, so steady-state steps
//   allocate nothing. When N * K * 4 bytes fit in one block (small layers) the call is a single
//   sgemm with the same operands as the tape's bitlinear backward (w_eff = float(t) * s_w),
//   hence the same dx bit for bit.
#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

#include "bitnet/autograd_frozen.h"
#include "bitnet/bitlinear.h"
#include "bitnet/common.h"
#include "bitnet/formats.h"
#include "bitnet/packed_weights.h"
#include "bitnet/sgemm.h"
#include "bitnet/threadpool.h"

namespace bitnet::autograd {

namespace {

// Upper bound of the transient fp32 weight block of one backward call (bytes).
constexpr int64_t kMaxBlockBytes = int64_t(8) << 20;

// Rows of W unpacked per block: as many as fit kMaxBlockBytes, at least 16 (one K256 row tile),
// at most N.
int64_t block_rows(int64_t N, int64_t K) {
  const int64_t fit = kMaxBlockBytes / (K * int64_t(sizeof(float)));
  return std::min(N, std::max<int64_t>(16, fit));
}

// dst[(r1 - r0), K] = s_w * T[r0:r1, :] from the K256 layout `kw` (rows of nb * 64 bytes), split
// across the pool by rows. `tmp` is int8 scratch of (r1 - r0) * K values (the format's unpacker
// writes int8, converted here to fp32 exactly: t in {-1, 0, 1}, so float(t) * s_w is one
// rounding-free product).
void unpack_rows(const KernelWeights& kw, int64_t K, int64_t r0, int64_t r1, int8_t* tmp,
                 float* dst) {
  const int64_t rows = r1 - r0, row_bytes = kw.nb * 64;
  const float s_w = kw.scale;
  // At least ~64K weights per task so the fork/join stays a small fraction of the work.
  const int64_t tasks = std::max<int64_t>(
      1, std::min<int64_t>({int64_t(get_num_threads()), rows, rows * K / (int64_t(1) << 16)}));
  const int64_t per = ceil_div(rows, tasks);
  parallel_for(tasks, [&](int64_t task, int) {
    const int64_t a = std::min(rows, task * per), b = std::min(rows, a + per);
    if (a >= b) return;
    unpack_ternary(Format::native, kw.data + (r0 + a) * row_bytes, b - a, K, tmp + a * K);
    const int8_t* t = tmp + a * K;
    float* d = dst + a * K;
    for (int64_t i = 0; i < (b - a) * K; ++i) d[i] = float(t[i]) * s_w;
  });
}

}  // namespace

Tensor bitlinear_frozen(const Tensor& x, std::shared_ptr<const PackedWeights> w) {
  check_arg(w != nullptr, "bitlinear_frozen: w is None (expected PackedWeights [N, K])");
  check_arg(x.defined(), "bitlinear_frozen: x is undefined");
  const int64_t N = w->rows(), K = w->cols();
  check_arg(x.dim() == 2, "bitlinear_frozen: x must be 2-D [M, K], got shape ", x.shape_str());
  check_arg(x.size(1) == K, "bitlinear_frozen: x ", x.shape_str(), " and w [", N, ", ", K,
            "] disagree on K (expected x of shape [M, ", K, "])");
  const int64_t M = x.size(0);
  Tensor y = Tensor::empty({M, N});
  if (M > 0) {
    try {
      bitlinear(x.data(), M, K, *w, y.data(), N);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(str_cat("bitlinear_frozen: x ", x.shape_str(), ": ", e.what()));
    }
  }
  if (should_record({&x})) {
    record("bitlinear_frozen", y, [x = x, w = std::move(w), M, N, K](const float* dy) mutable {
      if (!needs_grad(x) || M == 0) return;
      const KernelWeights& kw = w->kernel();  // built by the forward: free
      const int64_t nb_rows = block_rows(N, K);
      // Transient block: fp32 [nb_rows, K] then int8 [nb_rows, K], from the caching pool.
      Tensor scratch = Tensor::empty({nb_rows * K + ceil_div(nb_rows * K, 4)});
      float* wblk = scratch.data();
      int8_t* tmp = reinterpret_cast<int8_t*>(wblk + nb_rows * K);
      float* dx = x.grad();
      for (int64_t n0 = 0; n0 < N; n0 += nb_rows) {
        const int64_t n1 = std::min(N, n0 + nb_rows);
        unpack_rows(kw, K, n0, n1, tmp, wblk);
        sgemm(false, false, M, K, n1 - n0, 1.0f, dy + n0, N, wblk, K, 1.0f, dx, K);
      }
    });
  }
  return y;
}

}  // namespace bitnet::autograd

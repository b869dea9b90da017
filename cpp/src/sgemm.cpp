// sgemm (bitnet/sgemm.h): the Goto/BLIS loop structure over the micro-kernels of
// kernels/cpu/sgemm_kernels.h, split across the thread pool; plus the sgemm kernel tables.
// Compiled without ISA flags: it only takes the addresses of the ISA kernels and calls them
// after the dispatcher's checks.
//
// Two phases, each one fork/join of the pool:
//   1. op(B) is packed once, whole, into NR-column panels per K block of kSgemmKc values (one
//      shared buffer owned by the calling thread; packing units split across the threads).
//   2. C is cut into a grid of blocks (rows in multiples of MR, at most kMaxBlockRows; columns in
//      multiples of NR, at most kMaxBlockCols), dealt round-robin to the threads. A thread computes
//      its blocks entirely: per K block it packs the block's rows of op(A) into its own buffer
//      (kept in L2), then for each MR-row A panel (in L1) runs the micro-kernel along the row of
//      tiles, streaming the B panels of the block from L2.
// Measured on the 2-core Sapphire Rapids dev box (AVX-512 table, kernel alone ~178 GFLOP/s per
// core): 145..165 GFLOP/s per thread on the training shapes (M = 2048 tokens, N, K = 256..1024;
// N = 8192 / K = 256; and dW = dy^T x with K = 2048), i.e. 85..100% of torch.matmul (MKL).
//
// Determinism contract: the result is bit-identical for any thread count (and any block grid).
// Every output element is computed as
//   c = alpha * s_0 + beta * c  (beta == 0: c = alpha * s_0, C not read),
//   then  c = alpha * s_b + c   for b = 1, 2, ...
// where s_b is the fp32 sum over the b-th K block [b * kSgemmKc, (b + 1) * kSgemmKc), accumulated
// in increasing k by the micro-kernel in the same way for every tile position
// (sgemm_kernels.h). The K partition is a constant; the grid (which depends on the thread count
// and the shape) only decides which thread computes an element, never how. The result does depend
// on the ISA table (FMA or not), i.e. on BITNET_MAX_ISA and the CPU.
//
// alpha == 0 or K == 0: C = beta * C (C = 0 when beta == 0) without reading A or B, as BLAS does.
#include "bitnet/sgemm.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <new>
#include <stdexcept>

#include "bitnet/common.h"
#include "bitnet/threadpool.h"
#include "sgemm_kernels.h"

namespace bitnet {

// ============================================================================ kernel tables
namespace kernels {

namespace {

const SgemmKernels kSgemmRef{
    Isa::ref,          "ref",          ref::kSgemmMr, ref::kSgemmNr, ref::sgemm_pack_a,
    ref::sgemm_pack_b, ref::sgemm_tile};
#if defined(BITNET_HAVE_X86)
const SgemmKernels kSgemmAvx2{
    Isa::avx2,          "avx2",          avx2::kSgemmMr, avx2::kSgemmNr, avx2::sgemm_pack_a,
    avx2::sgemm_pack_b, avx2::sgemm_tile};
const SgemmKernels kSgemmAvx512{Isa::avx512,          "avx512",
                                avx512::kSgemmMr,     avx512::kSgemmNr,
                                avx512::sgemm_pack_a, avx512::sgemm_pack_b,
                                avx512::sgemm_tile};
#endif

}  // namespace

const SgemmKernels* sgemm_table_for(Isa isa) {
  if (table_for(isa) == nullptr) return nullptr;  // not compiled in, or not runnable here
  switch (isa) {
    case Isa::ref:
    case Isa::neon:  // the reference is vectorised for NEON by the compiler
    case Isa::neon_dotprod:
      return &kSgemmRef;
#if defined(BITNET_HAVE_X86)
    case Isa::avx2:
      return &kSgemmAvx2;
    case Isa::avx512:
    case Isa::avx512_vnni:  // VNNI only adds int8 dot products
      return &kSgemmAvx512;
#endif
    default:
      return nullptr;
  }
}

const SgemmKernels& sgemm_active() {
  const SgemmKernels* t = sgemm_table_for(active().isa);
  if (t == nullptr) throw std::logic_error("sgemm: no kernel table for the active ISA");
  return *t;
}

}  // namespace kernels

// ============================================================================ driver
namespace {

using kernels::kSgemmKc;

// Block limits (elements). A block's packed A (kMaxBlockRows x kSgemmKc fp32, <= 192 KiB) and its
// B panels (kSgemmKc x kMaxBlockCols, <= 1 MiB) stay in the 2 MiB L2 while the block computes.
// (96..384 rows and 512..2048 columns measured within noise of each other.)
constexpr int64_t kMaxBlockRows = 192;
constexpr int64_t kMaxBlockCols = 1024;
// Columns of op(B) per unit of the packing phase.
constexpr int64_t kPackUnitCols = 256;
// Below about this many flops per thread the fork/join (a few microseconds) is not worth it.
constexpr double kMinFlopsPerThread = 4.0e6;

// A per-thread, 64-byte aligned, grow-only float buffer (the pool's threads keep theirs across
// calls: the calling thread's B buffer holds all of op(B), K x N rounded up to NR, fp32).
class PackBuffer {
 public:
  float* get(int64_t n) {
    if (n > size_) {
      data_.reset(
          static_cast<float*>(::operator new(size_t(n) * sizeof(float), std::align_val_t(64))));
      size_ = n;
    }
    return data_.get();
  }

 private:
  struct Free {
    void operator()(float* p) const { ::operator delete(p, std::align_val_t(64)); }
  };
  std::unique_ptr<float, Free> data_;
  int64_t size_ = 0;
};

thread_local PackBuffer t_pack_a;
thread_local PackBuffer t_pack_b;

// C = beta * C over an M x N view (beta == 0 writes zeros without reading C).
void scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    if (beta == 0.0f) {
      std::fill(c, c + N, 0.0f);
    } else if (beta != 1.0f) {
      for (int64_t j = 0; j < N; ++j) c[j] *= beta;
    }
  }
}

// Splits `units` into `parts` contiguous ranges whose sizes differ by at most one: range p is
// [split_at(p), split_at(p + 1)).
int64_t split_at(int64_t units, int64_t parts, int64_t p) { return units * p / parts; }

}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  check_arg(M >= 0 && N >= 0 && K >= 0, "sgemm: negative size M=", M, " N=", N, " K=", K);
  check_arg(lda >= (trans_a ? M : K), "sgemm: lda ", lda, " too small for op(A) [", M, ", ", K, "]",
            trans_a ? " stored as A [K, M]" : " stored as A [M, K]");
  check_arg(ldb >= (trans_b ? K : N), "sgemm: ldb ", ldb, " too small for op(B) [", K, ", ", N, "]",
            trans_b ? " stored as B [N, K]" : " stored as B [K, N]");
  check_arg(ldc >= N, "sgemm: ldc ", ldc, " too small for C [", M, ", ", N, "]");
  if (M == 0 || N == 0) return;
  check_arg(C != nullptr && (K == 0 || alpha == 0.0f || (A != nullptr && B != nullptr)),
            "sgemm: null data pointer");
  if (K == 0 || alpha == 0.0f) {
    scale_c(M, N, beta, C, ldc);
    return;
  }

  const kernels::SgemmKernels& kt = kernels::sgemm_active();
  const int64_t mr = kt.mr, nr = kt.nr;
  const int64_t row_tiles = ceil_div(M, mr), col_tiles = ceil_div(N, nr);
  const int64_t k_blocks = ceil_div(K, kSgemmKc);
  const double flops = 2.0 * double(M) * double(N) * double(K);
  const int64_t threads = std::max<int64_t>(
      1, std::min<int64_t>(get_num_threads(), int64_t(flops / kMinFlopsPerThread)));
  // Runs fn(unit) for unit in [0, n_units), units dealt round-robin to the threads.
  auto run = [&](int64_t n_units, const auto& fn) {
    if (threads == 1 || n_units == 1) {
      for (int64_t u = 0; u < n_units; ++u) fn(u);
    } else {
      parallel_for(threads, [&](int64_t t, int) {
        for (int64_t u = t; u < n_units; u += threads) fn(u);
      });
    }
  };

  // Phase 1: op(B) packed. K block b (values [k0, k0 + kc)) starts at pb + k0 * ldp and holds
  // col_tiles panels of NR x kc; panel q (columns [q NR, q NR + NR)) at + q * NR * kc.
  const int64_t ldp = col_tiles * nr;
  float* pb = t_pack_b.get(K * ldp);
  const int64_t unit_panels = std::max<int64_t>(1, kPackUnitCols / nr);
  const int64_t unit_cols = ceil_div(col_tiles, unit_panels);
  run(k_blocks * unit_cols, [&](int64_t u) {
    const int64_t k0 = (u / unit_cols) * kSgemmKc, kc = std::min(kSgemmKc, K - k0);
    const int64_t n0 = (u % unit_cols) * unit_panels * nr;
    const int64_t n1 = std::min(N, n0 + unit_panels * nr);
    kt.pack_b(trans_b, B, ldb, k0, kc, n0, n1 - n0, pb + k0 * ldp + n0 * kc);
  });

  // Phase 2: the block grid. As few blocks as the size limits allow, then more until the blocks
  // divide evenly among the threads (block sizes within one tile of each other).
  int64_t col_blocks = ceil_div(col_tiles, kMaxBlockCols / nr);
  int64_t row_blocks = ceil_div(row_tiles, kMaxBlockRows / mr);
  while ((row_blocks * col_blocks) % threads != 0 && row_blocks < row_tiles) ++row_blocks;
  while ((row_blocks * col_blocks) % threads != 0 && col_blocks < col_tiles) ++col_blocks;
  const int64_t max_rows = ceil_div(row_tiles, row_blocks) * mr;
  run(row_blocks * col_blocks, [&](int64_t blk) {
    const int64_t rb = blk / col_blocks, cb = blk % col_blocks;
    const int64_t m0 = split_at(row_tiles, row_blocks, rb) * mr;
    const int64_t m1 = std::min(M, split_at(row_tiles, row_blocks, rb + 1) * mr);
    const int64_t n0 = split_at(col_tiles, col_blocks, cb) * nr;
    const int64_t n1 = std::min(N, split_at(col_tiles, col_blocks, cb + 1) * nr);
    float* pa = t_pack_a.get(max_rows * kSgemmKc);
    for (int64_t k0 = 0; k0 < K; k0 += kSgemmKc) {
      const int64_t kc = std::min(kSgemmKc, K - k0);
      kt.pack_a(trans_a, A, lda, m0, m1 - m0, k0, kc, pa);
      const float bk = k0 == 0 ? beta : 1.0f;
      for (int64_t i = m0; i < m1; i += mr) {
        const float* a = pa + (i - m0) * kc;
        const int64_t m = std::min(mr, m1 - i);
        for (int64_t j = n0; j < n1; j += nr) {
          kt.tile(kc, a, pb + k0 * ldp + j * kc, C + i * ldc + j, ldc, m, std::min(nr, n1 - j),
                  alpha, bk);
        }
      }
    }
  });
}

}  // namespace bitnet

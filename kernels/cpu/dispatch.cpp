// Chooses the kernel table once from cpuid, capped by BITNET_MAX_ISA. Compiled without ISA flags:
// it only takes addresses of the ISA functions and calls them after the feature check.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

#include "cpu_features.h"
#include "kernels.h"

namespace bitnet::kernels {

namespace {

const CpuKernels kRef{Isa::ref,          "ref",           ref::quantize_row_i8, ref::gemv_k256_i8,
                      ref::gemm_k256_i8, ref::read_bytes, ref::int8_peak};
#if defined(BITNET_HAVE_X86)
const CpuKernels kAvx2{
    Isa::avx2,          "avx2",           avx2::quantize_row_i8, avx2::gemv_k256_i8,
    avx2::gemm_k256_i8, avx2::read_bytes, avx2::int8_peak};
// Quantization and streaming reads are not the bottleneck: the AVX-512 tables reuse AVX2's.
const CpuKernels kAvx512{
    Isa::avx512,          "avx512",         avx2::quantize_row_i8, avx512::gemv_k256_i8,
    avx512::gemm_k256_i8, avx2::read_bytes, avx512::int8_peak};
const CpuKernels kAvx512Vnni{
    Isa::avx512_vnni,          "avx512_vnni",    avx2::quantize_row_i8, avx512_vnni::gemv_k256_i8,
    avx512_vnni::gemm_k256_i8, avx2::read_bytes, avx512_vnni::int8_peak};
#endif
#if defined(BITNET_HAVE_NEON)
const CpuKernels kNeon{
    Isa::neon,          "neon",           neon::quantize_row_i8, neon::gemv_k256_i8,
    neon::gemm_k256_i8, neon::read_bytes, neon::int8_peak};
const CpuKernels kNeonDot{Isa::neon_dotprod,          "neon_dotprod",
                          neon::quantize_row_i8,      neon_dotprod::gemv_k256_i8,
                          neon_dotprod::gemm_k256_i8, neon::read_bytes,
                          neon_dotprod::int8_peak};
#endif

constexpr const char* kNames[] = {"ref", "avx2", "avx512", "avx512_vnni", "neon", "neon_dotprod"};

std::atomic<const CpuKernels*> g_active{nullptr};
std::mutex g_mu;

bool same_family(Isa a, Isa b) {
  auto fam = [](Isa i) { return i == Isa::ref ? 0 : (i <= Isa::avx512_vnni ? 1 : 2); };
  return fam(a) == 0 || fam(b) == 0 || fam(a) == fam(b);
}

const CpuKernels* choose() {
  Isa cap = Isa::neon_dotprod;
  bool capped = false;
  if (const char* env = std::getenv("BITNET_MAX_ISA"); env && *env) {
    cap = parse_isa(env);
    capped = true;
  }
  const CpuKernels* best = &kRef;
  for (int i = 1; i <= int(Isa::neon_dotprod); ++i) {
    Isa isa = Isa(i);
    if (capped && (!same_family(isa, cap) || int(isa) > int(cap))) continue;
    if (const CpuKernels* t = table_for(isa)) best = t;
  }
  return best;
}

}  // namespace

const char* isa_name(Isa isa) { return kNames[int(isa)]; }

Isa parse_isa(const char* name) {
  for (int i = 0; i <= int(Isa::neon_dotprod); ++i)
    if (std::strcmp(name, kNames[i]) == 0) return Isa(i);
  throw std::invalid_argument(std::string("BITNET_MAX_ISA: unknown ISA '") + name +
                              "'; expected one of ref, avx2, avx512, avx512_vnni, neon, "
                              "neon_dotprod");
}

const CpuKernels* table_for(Isa isa) {
  [[maybe_unused]] const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::ref:
      return &kRef;
#if defined(BITNET_HAVE_X86)
    case Isa::avx2:
      return f.can_avx2() ? &kAvx2 : nullptr;
    case Isa::avx512:
      return f.can_avx512() ? &kAvx512 : nullptr;
    case Isa::avx512_vnni:
      return f.can_avx512_vnni() ? &kAvx512Vnni : nullptr;
#endif
#if defined(BITNET_HAVE_NEON)
    case Isa::neon:
      return f.can_neon() ? &kNeon : nullptr;
    case Isa::neon_dotprod:
      return f.can_neon_dotprod() ? &kNeonDot : nullptr;
#endif
    default:
      return nullptr;
  }
}

const CpuKernels& active() {
  const CpuKernels* t = g_active.load(std::memory_order_acquire);
  if (t) return *t;
  std::lock_guard<std::mutex> lk(g_mu);
  t = g_active.load(std::memory_order_relaxed);
  if (!t) {
    t = choose();
    g_active.store(t, std::memory_order_release);
  }
  return *t;
}

const CpuKernels& reload() {
  std::lock_guard<std::mutex> lk(g_mu);
  const CpuKernels* t = choose();
  g_active.store(t, std::memory_order_release);
  return *t;
}

}  // namespace bitnet::kernels

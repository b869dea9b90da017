// CPU feature detection. Compiled without ISA flags.
#include "cpu_features.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>

#include <cstdint>
#elif defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace bitnet::kernels {

namespace {

#if defined(__x86_64__) || defined(_M_X64)
uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(_M_X64)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  f.sse42 = c & (1u << 20);
  f.fma = c & (1u << 12);
  f.f16c = c & (1u << 29);
  const bool osxsave = c & (1u << 27);
  f.avx = c & (1u << 28);
  if (osxsave) {
    uint64_t xcr0 = xgetbv0();
    f.os_avx = (xcr0 & 0x6) == 0x6;                   // XMM and YMM state
    f.os_avx512 = f.os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask, ZMM_Hi256, Hi16_ZMM
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = b & (1u << 5);
    f.avx512f = b & (1u << 16);
    f.avx512dq = b & (1u << 17);
    f.avx512bw = b & (1u << 30);
    f.avx512vl = b & (1u << 31);
    f.avx512vnni = c & (1u << 11);
    f.amx_int8 = d & (1u << 25);
  }
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avxvnni = a & (1u << 4);
#elif defined(__aarch64__)
  f.neon = true;  // Advanced SIMD is mandatory in AArch64
#if defined(__linux__) && defined(HWCAP_ASIMDDP)
  f.dotprod = getauxval(AT_HWCAP) & HWCAP_ASIMDDP;
#elif defined(__APPLE__)
  f.dotprod = true;  // every Apple silicon core has the dot-product extension
#endif
#endif
  return f;
}

}  // namespace

std::vector<std::string> CpuFeatures::names() const {
  std::vector<std::string> out;
  auto add = [&](bool on, const char* n) {
    if (on) out.emplace_back(n);
  };
  add(sse42, "sse4.2");
  add(avx && os_avx, "avx");
  add(avx2 && os_avx, "avx2");
  add(fma && os_avx, "fma");
  add(f16c && os_avx, "f16c");
  add(avxvnni && os_avx, "avx_vnni");
  add(avx512f && os_avx512, "avx512f");
  add(avx512bw && os_avx512, "avx512bw");
  add(avx512vl && os_avx512, "avx512vl");
  add(avx512dq && os_avx512, "avx512dq");
  add(avx512vnni && os_avx512, "avx512_vnni");
  add(amx_int8, "amx_int8");
  add(neon, "neon");
  add(dotprod, "dotprod");
  return out;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

}  // namespace bitnet::kernels

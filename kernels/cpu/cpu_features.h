// Runtime CPU feature detection (cpuid + xgetbv on x86, hwcaps on aarch64). Compiled without
// ISA flags so that it runs on any CPU of the architecture.
#pragma once

#include <string>
#include <vector>

namespace bitnet::kernels {

struct CpuFeatures {
  bool sse42 = false, avx = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false, avxvnni = false, amx_int8 = false;
  bool neon = false, dotprod = false;
  bool os_avx = false, os_avx512 = false;  // the OS saves the YMM / ZMM state (XCR0)

  bool can_avx2() const { return os_avx && avx2 && fma && f16c; }
  bool can_avx512() const {
    return can_avx2() && os_avx512 && avx512f && avx512bw && avx512vl && avx512dq;
  }
  bool can_avx512_vnni() const { return can_avx512() && avx512vnni; }
  bool can_neon() const { return neon; }
  bool can_neon_dotprod() const { return neon && dotprod; }
  // Names of the features present, e.g. {"avx2", "fma", ...}.
  std::vector<std::string> names() const;
};

const CpuFeatures& cpu_features();

}  // namespace bitnet::kernels

#!/usr/bin/env bash
# Cross-compiles the C++ kernel tests (tests/cpp/test_kernels.cpp) for aarch64 and runs them under
# qemu-user on two CPU models:
#   - "max"        (has the dot-product extension): ref, neon and neon_dotprod must all be tested;
#   - "cortex-a72" (ARMv8.0, no dot product):       ref and neon tested, neon_dotprod unavailable.
# Fails (non-zero) if the build fails, any test fails, or the expected ISAs were not exercised.
#
# Needs (Debian): g++-aarch64-linux-gnu qemu-user libgtest-dev (for /usr/src/googletest), cmake,
# and ninja or make. GoogleTest is compiled from source with the cross compiler (Debian ships
# host libraries only), and the test binary is linked statically so qemu needs no sysroot.
#
# Environment overrides: BUILD_DIR (default build/aarch64), AARCH64_CXX, AARCH64_CC,
# QEMU_AARCH64, GTEST_SOURCE_DIR (default /usr/src/googletest), QEMU_CPU_DOTPROD (default max),
# QEMU_CPU_NO_DOTPROD (default cortex-a72), GTEST_FILTER (passed as --gtest_filter).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build_dir="${BUILD_DIR:-$root/build/aarch64}"
cxx="${AARCH64_CXX:-aarch64-linux-gnu-g++}"
cc="${AARCH64_CC:-aarch64-linux-gnu-gcc}"
qemu="${QEMU_AARCH64:-qemu-aarch64}"
gtest_src="${GTEST_SOURCE_DIR:-/usr/src/googletest}"
cpu_dot="${QEMU_CPU_DOTPROD:-max}"
cpu_nodot="${QEMU_CPU_NO_DOTPROD:-cortex-a72}"

for tool in "$cxx" "$cc" "$qemu" cmake; do
  command -v "$tool" >/dev/null || { echo "run_neon_qemu.sh: missing tool: $tool" >&2; exit 2; }
done
[[ -f "$gtest_src/CMakeLists.txt" ]] || {
  echo "run_neon_qemu.sh: no GoogleTest sources at $gtest_src (apt-get install libgtest-dev)" >&2
  exit 2
}
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi

echo "== configure $build_dir (aarch64 cross, $cxx)"
cmake -S "$root" -B "$build_dir" "${generator[@]}" \
  -DCMAKE_SYSTEM_NAME=Linux \
  -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_C_COMPILER="$cc" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_EXE_LINKER_FLAGS=-static \
  -DCMAKE_CROSSCOMPILING_EMULATOR="$qemu;-cpu;$cpu_dot" \
  -DSKBUILD=OFF \
  -DBITNET_BUILD_TESTS=ON \
  -DBITNET_BUILD_BENCHMARKS=OFF \
  -DBITNET_GTEST_SOURCE_DIR="$gtest_src"

echo "== build test_kernels test_dense"
cmake --build "$build_dir" --target test_kernels test_dense -j "$(nproc 2>/dev/null || echo 2)"
bin="$build_dir/tests/cpp/test_kernels"
file_out="$(file -b "$bin" 2>/dev/null || true)"
if [[ -n "$file_out" && "$file_out" != *aarch64* ]]; then
  echo "run_neon_qemu.sh: $bin is not an aarch64 binary: $file_out" >&2
  exit 1
fi

filter=()
if [[ -n "${GTEST_FILTER:-}" ]]; then filter=("--gtest_filter=$GTEST_FILTER"); fi

# Number of passed parameterized tests of one ISA in a gtest log ("[       OK ] .../<isa> (..)").
count_ok() { grep -cE "^\[       OK \] AllIsas/KernelTest\.[A-Za-z0-9_]+/$2 " "$1" || true; }
count_run() { grep -cE "^\[ RUN      \] AllIsas/KernelTest\.[A-Za-z0-9_]+/$2\$" "$1" || true; }

failures=0
summary=()
# run_cpu CPU "required isas" "isas that must be unavailable"
run_cpu() {
  local cpu="$1" required="$2" unavailable="$3"
  local log="$build_dir/test_kernels.$cpu.log"
  echo
  echo "== $qemu -cpu $cpu $bin  (required: $required; must be unavailable: ${unavailable:-none})"
  local rc=0
  # pipefail: the pipeline's status is qemu's (tee succeeds). qemu-user passes the environment on.
  env -u BITNET_MAX_ISA BITNET_TEST_REQUIRE_ISAS="${required// /,}" \
    BITNET_TEST_EXPECT_UNAVAILABLE="${unavailable// /,}" \
    "$qemu" -cpu "$cpu" "$bin" "${filter[@]}" 2>&1 | tee "$log" || rc=$?
  local ok=1
  if [[ $rc -ne 0 ]]; then
    echo "!! -cpu $cpu: test_kernels exited with $rc" >&2
    ok=0
  fi
  grep -q "^\[  PASSED  \]" "$log" || { echo "!! -cpu $cpu: no PASSED line" >&2; ok=0; }
  if grep -q "^\[  FAILED  \]" "$log"; then echo "!! -cpu $cpu: failed tests" >&2; ok=0; fi
  local line
  line="$(grep -m1 "^bitnet kernel tests: tested ISAs:" "$log" || true)"
  [[ -n "$line" ]] || { echo "!! -cpu $cpu: no ISA report line" >&2; ok=0; }
  local tested_list=""
  for isa in $required; do
    local n_run n_ok
    n_run="$(count_run "$log" "$isa")"
    n_ok="$(count_ok "$log" "$isa")"
    if [[ "$n_ok" -eq 0 || "$n_ok" -ne "$n_run" ]]; then
      echo "!! -cpu $cpu: ISA $isa not exercised ($n_ok passed of $n_run run)" >&2
      ok=0
    fi
    tested_list+=" $isa($n_ok tests)"
  done
  for isa in $unavailable; do
    if [[ "$(count_ok "$log" "$isa")" -ne 0 ]]; then
      echo "!! -cpu $cpu: ISA $isa was tested but must be unavailable on this CPU" >&2
      ok=0
    fi
  done
  if [[ $ok -eq 1 ]]; then
    summary+=("PASS -cpu $cpu: tested$tested_list; unavailable: ${unavailable:-none}")
  else
    summary+=("FAIL -cpu $cpu (see $log)")
    failures=$((failures + 1))
  fi
}

run_cpu "$cpu_dot" "ref neon neon_dotprod" ""
run_cpu "$cpu_nodot" "ref neon" "neon_dotprod"

# The dense (embedding/head) kernels: every NEON table the emulated CPU offers against the ref
# table (tests/cpp/test_dense.cpp); gtest's exit status and PASSED line decide.
dense_bin="$build_dir/tests/cpp/test_dense"
for cpu in "$cpu_dot" "$cpu_nodot"; do
  log="$build_dir/test_dense.$cpu.log"
  echo
  echo "== $qemu -cpu $cpu $dense_bin"
  rc=0
  env -u BITNET_MAX_ISA "$qemu" -cpu "$cpu" "$dense_bin" 2>&1 | tee "$log" || rc=$?
  if [[ $rc -eq 0 ]] && grep -q "^\[  PASSED  \]" "$log" && ! grep -q "^\[  FAILED  \]" "$log"; then
    summary+=("PASS -cpu $cpu: test_dense ($(grep -c '^\[       OK \]' "$log") tests)")
  else
    summary+=("FAIL -cpu $cpu: test_dense (see $log)")
    failures=$((failures + 1))
  fi
done

echo
echo "== summary (aarch64 under qemu-user)"
for s in "${summary[@]}"; do echo "$s"; done
if [[ $failures -ne 0 ]]; then
  echo "run_neon_qemu.sh: $failures CPU configuration(s) failed" >&2
  exit 1
fi
echo "run_neon_qemu.sh: all passed"

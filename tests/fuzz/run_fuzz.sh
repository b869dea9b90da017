#!/usr/bin/env bash
# Builds the GGUF reader fuzzer (clang, libFuzzer + ASan + UBSan), checks every saved crasher in
# tests/data/gguf_crashers/, then fuzzes for SECONDS on one core.
#
#   bash tests/fuzz/run_fuzz.sh [SECONDS=60] [WORKDIR=build/fuzz]
#
# WORKDIR (relative paths are taken from the current directory; the default is the repository's
# build/fuzz) receives: fuzzer-build/ (the binary), seeds/ (make_seeds.py), corpus/ (the growing
# corpus, kept between runs), artifacts/ (crashers), gguf.dict, fuzz.log.
# Exit status: 0 when the regression inputs pass and fuzzing found nothing; 1 otherwise (the
# crasher's path and the commands to reproduce and minimize it are printed).
# Environment: CXX (default clang++, else clang++-14), PYTHON (default python3), FUZZ_ARGS (extra
# libFuzzer flags).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
seconds="${1:-60}"
workdir="${2:-$root/build/fuzz}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
  echo "run_fuzz.sh: SECONDS must be a whole number, got '$seconds'" >&2
  exit 2
fi
mkdir -p "$workdir"
workdir="$(cd "$workdir" && pwd)"
python="${PYTHON:-python3}"

cxx="${CXX:-}"
if [[ -z "$cxx" ]]; then
  for c in clang++ clang++-14; do
    if command -v "$c" >/dev/null; then cxx="$c" && break; fi
  done
fi
if [[ -z "$cxx" ]] || ! command -v "$cxx" >/dev/null; then
  echo "run_fuzz.sh: clang++ not found (apt-get install clang), or set CXX" >&2
  exit 2
fi

# ---- build
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
bdir="$workdir/fuzzer-build"
if ! { cmake -S "$root/tests/fuzz" -B "$bdir" "${generator[@]}" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_BUILD_TYPE= && cmake --build "$bdir" --parallel 2; } >"$workdir/build.log" 2>&1; then
  tail -n 40 "$workdir/build.log" >&2
  echo "run_fuzz.sh: building the fuzzer failed (log: $workdir/build.log); libFuzzer comes with" \
    "clang's runtime (Debian/Ubuntu: clang, or libclang-rt-<version>-dev for newer clangs)" >&2
  exit 2
fi
fuzzer="$bdir/fuzz_gguf"

# ---- seeds and dictionary
rm -rf "$workdir/seeds"
"$python" "$root/tests/fuzz/make_seeds.py" "$workdir/seeds"
mkdir -p "$workdir/corpus" "$workdir/artifacts"
dict="$workdir/gguf.dict"
cat >"$dict" <<'EOF'
magic="GGUF"
v2="\x02\x00\x00\x00"
v3="\x03\x00\x00\x00"
v1="\x01\x00\x00\x00"
t_string="\x08\x00\x00\x00"
t_array="\x09\x00\x00\x00"
t_bool="\x07\x00\x00\x00"
t_u64="\x0a\x00\x00\x00"
t_f64="\x0c\x00\x00\x00"
g_q8_0="\x08\x00\x00\x00"
g_tq1_0="\x22\x00\x00\x00"
g_tq2_0="\x23\x00\x00\x00"
g_i2_s="\x24\x00\x00\x00"
g_q1_0="\x29\x00\x00\x00"
g_removed="\x04\x00\x00\x00"
g_big="\xff\xff\xff\xff"
u64_max="\xff\xff\xff\xff\xff\xff\xff\xff"
u64_sign="\x00\x00\x00\x00\x00\x00\x00\x80"
u64_2_32="\x00\x00\x00\x00\x01\x00\x00\x00"
u64_256="\x00\x01\x00\x00\x00\x00\x00\x00"
u64_128="\x80\x00\x00\x00\x00\x00\x00\x00"
align_key="general.alignment"
arch_key="general.architecture"
align_1="\x01\x00\x00\x00"
align_64="\x40\x00\x00\x00"
align_2_31="\x00\x00\x00\x80"
EOF

# No -max_len for the regression step: libFuzzer would cut longer saved inputs to that length.
limits=(-rss_limit_mb=2048 -timeout=5)
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# ---- (1) regression over the saved crashers: every one must now be handled cleanly
crashers=()
if [[ -d "$root/tests/data/gguf_crashers" ]]; then
  while IFS= read -r -d '' f; do crashers+=("$f"); done \
    < <(find "$root/tests/data/gguf_crashers" -maxdepth 1 -type f -print0 | sort -z)
fi
if ((${#crashers[@]} > 0)); then
  echo "run_fuzz.sh: regression: ${#crashers[@]} saved inputs from tests/data/gguf_crashers"
  if ! "$fuzzer" "${limits[@]}" "${crashers[@]}" >"$workdir/regression.log" 2>&1; then
    tail -n 40 "$workdir/regression.log" >&2
    echo "run_fuzz.sh: FAILED: a saved input in tests/data/gguf_crashers crashes again" \
      "(full log: $workdir/regression.log)" >&2
    exit 1
  fi
fi

# ---- (2) fuzz
if ((seconds == 0)); then
  echo "run_fuzz.sh: SECONDS=0, regression only: clean"
  exit 0
fi
marker="$workdir/artifacts/.started"
touch "$marker"
echo "run_fuzz.sh: fuzzing for ${seconds}s (corpus $workdir/corpus, log $workdir/fuzz.log)"
# One in-process fuzzer = one core (libFuzzer's -jobs/-workers would fork helpers that log into
# the current directory; the machine is shared, so none are used). New inputs go to corpus/.
set +e
# shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
(cd "$workdir" && "$fuzzer" "${limits[@]}" -max_len=4096 -max_total_time="$seconds" -dict="$dict" \
  -print_final_stats=1 -artifact_prefix="$workdir/artifacts/" ${FUZZ_ARGS:-} \
  "$workdir/corpus" "$workdir/seeds") >"$workdir/fuzz.log" 2>&1
rc=$?
set -e
grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::' "$workdir/fuzz.log" | tail -n 8 || true
mapfile -t found < <(find "$workdir/artifacts" -type f -newer "$marker" ! -name .started)
if ((rc != 0 || ${#found[@]} > 0)); then
  tail -n 60 "$workdir/fuzz.log" >&2
  echo "run_fuzz.sh: FAILED (libFuzzer exit status $rc); crasher(s) written to:" >&2
  printf '  %s\n' "${found[@]:-"(none; see the log above)"}" >&2
  echo "Reproduce: $fuzzer FILE; minimize: $fuzzer -minimize_crash=1 -runs=20000" \
    "-exact_artifact_path=SMALL FILE; then keep it as tests/data/gguf_crashers/<what>.gguf" >&2
  exit 1
fi
echo "run_fuzz.sh: clean (corpus: $(find "$workdir/corpus" -type f | wc -l) files)"

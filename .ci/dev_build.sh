#!/usr/bin/env bash
# Developer build without pip: compiles the extension into build/$NAME and assembles an importable
# package tree at build/$NAME/pkg (symlinks to python/bitnet plus the built module), so several
# people can build and test side by side without touching site-packages:
#   .ci/dev_build.sh mine && PYTHONPATH=build/mine/pkg python -m pytest tests
set -euo pipefail
name="${1:-dev}"
top="$(cd "$(dirname "$0")/.." && pwd)"
bdir="$top/build/$name"
shift || true
cmake -S "$top" -B "$bdir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSKBUILD=ON \
  -Dpybind11_DIR="$(python -c 'import pybind11; print(pybind11.get_cmake_dir())')" "$@" >/dev/null
ninja -C "$bdir" >/dev/null
pkg="$bdir/pkg/bitnet"
rm -rf "$bdir/pkg" && mkdir -p "$pkg"
for f in "$top"/python/bitnet/*; do ln -s "$f" "$pkg/$(basename "$f")"; done
cp "$bdir"/_ext*.so "$pkg/"
echo "PYTHONPATH=$bdir/pkg"

"""Dispatcher, CPU features and the thread pool."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import bitnet
from bitnet import _ext, ops


def _physical_cores() -> int:
    """Physical cores in our affinity mask, from sysfs (the definition the core implements)."""
    cores = set()
    for cpu in os.sched_getaffinity(0):
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(base + "physical_package_id") as p, open(base + "core_id") as c:
                cores.add((p.read().strip(), c.read().strip()))
        except OSError:
            return len(os.sched_getaffinity(0))
    return len(cores)


def run_py(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ)
    e.pop("BITNET_MAX_ISA", None)
    e.pop("BITNET_NUM_THREADS", None)
    e.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=120
    )


def test_features_and_isas_are_consistent():
    feats = ops.cpu_features()
    isas = ops.available_isas()
    assert isas[0] == "ref"
    assert ops.active_isa() == isas[-1]  # default: the best one
    if "avx2" in isas:
        assert {"avx2", "fma", "f16c"} <= set(feats)
    if "avx512_vnni" in isas:
        assert {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"} <= set(feats)
    if "neon_dotprod" in isas:
        assert "dotprod" in feats


@pytest.mark.parametrize("cap", _ext.available_isas())
def test_env_cap_at_import(cap):
    r = run_py("import bitnet; print(bitnet.ops.active_isa())", BITNET_MAX_ISA=cap)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == cap


def test_env_cap_above_cpu_gives_best_available():
    # Capping at an ISA of the same family that the CPU lacks falls back to the best it has.
    isas = _ext.available_isas()
    if "avx2" not in isas:
        pytest.skip("x86-only check")
    r = run_py("import bitnet; print(bitnet.ops.active_isa())", BITNET_MAX_ISA="avx512_vnni")
    assert r.stdout.strip() == isas[-1]


def test_env_cap_unknown_is_a_clear_error():
    r = run_py("import bitnet; bitnet.ops.active_isa()", BITNET_MAX_ISA="sse9")
    assert r.returncode != 0
    assert "BITNET_MAX_ISA" in r.stderr and "sse9" in r.stderr


def test_default_threads_is_physical_cores():
    r = run_py("import bitnet; print(bitnet.get_num_threads())")
    assert int(r.stdout) == _physical_cores() == _ext.physical_core_count()


def test_threads_env_and_setter(threads):
    r = run_py("import bitnet; print(bitnet.get_num_threads())", BITNET_NUM_THREADS="3")
    assert int(r.stdout) == 3
    bitnet.set_num_threads(3)
    assert bitnet.get_num_threads() == 3
    bitnet.set_num_threads(1)
    assert ops.get_num_threads() == 1
    with pytest.raises(ValueError, match=">= 1"):
        bitnet.set_num_threads(0)
    with pytest.raises(TypeError):
        bitnet.set_num_threads(2.0)  # type: ignore[arg-type]


def test_pool_survives_fork(threads):
    """A forked child (multiprocessing's default on Linux) must not hang on the dead pool."""
    code = (
        "import os, numpy as np, bitnet\n"
        "from bitnet import ops\n"
        "bitnet.set_num_threads(2)\n"
        "t = np.ones((64, 512), np.int8); p = ops.pack(t, 'native', 1.0)\n"
        "x = np.ones((2, 512), np.float32)\n"
        "y = ops.bitlinear(x, p)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    ok = np.array_equal(ops.bitlinear(x, p), y)\n"
        "    os._exit(0 if ok else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print(os.waitstatus_to_exitcode(status))\n"
    )
    r = run_py(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0"


def test_probes_measure_something():
    bw = _ext.measure_read_bandwidth(64 << 20, 1, 2)
    peak = _ext.measure_int8_peak(1, 0.02, 2)
    assert 0.1 < bw < 10_000  # GB/s
    assert 0.1 < peak < 100_000  # GMAC/s

"""The ``bitnet`` command line: argument handling and the kernel benchmark's JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bitnet import ops
from bitnet.cli import build_parser


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("BITNET_MAX_ISA", None)
    return subprocess.run(
        [sys.executable, "-m", "bitnet.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_parser_requires_a_command():
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([])
    assert e.value.code == 2


def test_bench_kernels_rejects_bad_flags():
    r = run_cli("bench", "kernels", "--threads", "0")
    assert r.returncode == 2
    r = run_cli("bench", "kernels", "--isa", "sse9")
    assert r.returncode == 2
    assert "sse9" in r.stderr


def test_bench_kernels_json_is_consistent():
    """A short real run (one repeat, one thread): every number the table prints is derived
    consistently from the measured time and shape."""
    r = run_cli("bench", "kernels", "--repeats", "1", "--threads", "1", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    kinds = {row["kind"] for row in rows}
    assert {"machine", "bandwidth", "int8_peak", "gemv", "gemm"} <= kinds
    machine = rows[0]
    assert machine["isa_default"] == ops.active_isa()
    bw = next(row["gb_per_s"] for row in rows if row["kind"] == "bandwidth")
    assert bw > 0.1
    for row in rows:
        if row["kind"] not in ("gemv", "gemm"):
            continue
        assert row["threads"] == 1 and row["isa"] == ops.active_isa()
        m, n, k, t = row["M"], row["N"], row["K"], row["time_ms"] / 1e3
        assert row["M"] == (1 if row["kind"] == "gemv" else 128)
        assert row["weight_bytes"] == n * k // 4
        assert row["gmac_per_s"] == pytest.approx(m * n * k / t / 1e9, rel=1e-6)
        assert row["gb_per_s"] == pytest.approx(n * k / 4 / t / 1e9, rel=1e-6)
        assert row["pct_bandwidth"] == pytest.approx(100 * row["gb_per_s"] / bw, rel=1e-6)

"""Benchmark of the dense (embedding / LM head) kernels: ``bitnet._ext.DenseMatrix.matmul`` on the
2B4T head, ``[128256, 2560]``, in each stored type, against this machine's measured read
bandwidth and against torch.

Decode runs the head once per token with ``M = 1`` (a GEMV that streams the whole matrix: 657 MB
in f16, 349 MB in q8_0, 185 MB in q4_0), so the figure of merit is the rate at which W is read:
``GB/s = W bytes / time`` (1e9 bytes/s) and ``%bw`` = that rate over
:func:`bitnet._ext.measure_read_bandwidth` at the same thread count (measured in the same run,
on a buffer of at least twice the last-level cache). The goal is ``%bw >= 90`` at 2 threads for
f16, q8_0 and q4_0. ``--m 64`` adds blocked products (perplexity / full-sequence logits run the
head with ``M = T``), reported in GFLOP/s.

torch runs ``x @ W.T`` in fp32 on the same values (W dequantized to fp32: 1.3 GB), with
``torch.set_num_threads`` matched; ``torch/ours`` > 1 means we are faster. Times are medians of
``--repeats`` runs (each at least 0.1 s of back-to-back calls); runs during which other processes
kept more than 0.25 CPUs busy are repeated (bitnet.bench.machine.undisturbed), and the ``others``
column says how busy the machine was. ::

    python benchmarks/python/dense.py                        # active ISA, 1 and 2 threads
    python benchmarks/python/dense.py --isa avx2 avx512_vnni --types f16 q4_0 --json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from typing import Any

import numpy as np

from bitnet import _ext, ops
from bitnet.bench.kernels import best_isa, forced_isa, thread_count
from bitnet.bench.machine import (
    MIN_RUN_SECONDS,
    _progress,
    cpu_caches,
    cpu_model,
    llc_bytes,
    time_per_call,
    undisturbed,
)

ROWS, COLS = 128256, 2560
TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")
GOAL_TYPES = ("f16", "q8_0", "q4_0")
GOAL_PCT_BW = 90.0
GOAL_THREADS = 2
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18}


def make_weights(t: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random ``[rows, cols]`` weights of type ``t`` as GGUF tensor bytes (uint8, 1-D).

    Values do not change the speed: f32/f16/bf16 are Gaussian (no subnormals); quantized blocks
    get random codes and a fixed scale. Built in chunks of rows to bound the temporaries."""
    if t in BLOCK_BYTES:
        bb = BLOCK_BYTES[t]
        data = rng.integers(0, 256, size=(rows * cols // 32, bb), dtype=np.uint8)
        data[:, :2] = np.frombuffer(np.float16(2.0**-7).tobytes(), np.uint8)
        return data.reshape(-1)
    size = {"f32": 4, "f16": 2, "bf16": 2}[t]
    out = np.empty(rows * cols * size, np.uint8)
    chunk = 8192
    for r0 in range(0, rows, chunk):
        r1 = min(rows, r0 + chunk)
        w = rng.standard_normal((r1 - r0) * cols, dtype=np.float32) * np.float32(0.02)
        if t == "f16":
            w = w.astype(np.float16)
        elif t == "bf16":
            w = (w.view(np.uint32) >> 16).astype(np.uint16)
        out[r0 * cols * size : r1 * cols * size] = w.view(np.uint8)
    return out


def dequantized(t: str, data: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """fp32 ``[rows, cols]`` values of the weights (for torch)."""
    if t in BLOCK_BYTES:
        return ops.dequantize_blocks(data, t, (rows, cols))
    if t == "f32":
        return data.view(np.float32).reshape(rows, cols)
    if t == "f16":
        return data.view(np.float16).reshape(rows, cols).astype(np.float32)
    return (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(rows, cols)


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Runs every case; returns JSON-ready rows (``kind``: machine, bandwidth, matmul, goal)."""
    torch = None if args.no_torch else _import_torch()
    caches = cpu_caches()
    llc = llc_bytes(caches)
    bw_bytes = max(1 << 30, 2 * llc if llc else 0)
    rows_out: list[dict[str, Any]] = [
        {
            "kind": "machine",
            "cpu": cpu_model(),
            "physical_cores": _ext.physical_core_count(),
            "isas_available": ops.available_isas(),
            "isa_default": ops.active_isa(),
            "torch": getattr(torch, "__version__", None),
            "numpy": np.__version__,
            "python": platform.python_version(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "load_avg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "repeats": args.repeats,
            "shape": [args.rows, args.cols],
        }
    ]
    bw: dict[int, float] = {}
    with forced_isa(best_isa(ops.available_isas())):
        for t in args.threads:
            _progress(f"read bandwidth, {t} thread(s)")
            bw[t], others = undisturbed(
                lambda t=t: float(_ext.measure_read_bandwidth(bw_bytes, t, args.repeats))
            )
            rows_out.append(
                {
                    "kind": "bandwidth",
                    "threads": t,
                    "gb_per_s": bw[t],
                    "bytes": bw_bytes,
                    "other_cpus": others,
                }
            )
    rng = np.random.default_rng(0)
    for ty in args.types:
        rows_out.extend(_bench_type(ty, args, torch, bw, rng))
    top = best_isa(args.isa)
    t_goal = GOAL_THREADS if GOAL_THREADS in args.threads else max(args.threads)
    for ty in GOAL_TYPES:
        hit = [
            r
            for r in rows_out
            if r["kind"] == "matmul"
            and r["type"] == ty
            and r["isa"] == top
            and r["threads"] == t_goal
            and r["M"] == 1
        ]
        if hit:
            rows_out.append(
                {
                    "kind": "goal",
                    "goal": f"M=1 {ty} head streams W at >= {GOAL_PCT_BW:.0f}% of read bandwidth",
                    "isa": top,
                    "threads": t_goal,
                    "measured_pct": hit[0]["pct_bandwidth"],
                    "met": hit[0]["pct_bandwidth"] >= GOAL_PCT_BW,
                }
            )
    rows_out[0]["load_avg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return rows_out


def _bench_type(
    ty: str, args: argparse.Namespace, torch: Any, bw: dict[int, float], rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Every (M, ISA, threads) case of one weight type, plus torch fp32 at each (M, threads)."""
    _progress(f"building {ty} [{args.rows}, {args.cols}]")
    data = make_weights(ty, args.rows, args.cols, rng)
    mat = _ext.DenseMatrix(ty, args.rows, args.cols, data, f"head.{ty}")
    torch_w = None
    if torch is not None:
        torch_w = torch.from_numpy(
            np.ascontiguousarray(dequantized(ty, data, args.rows, args.cols))
        )
    out_rows: list[dict[str, Any]] = []
    for m in args.m:
        x = rng.standard_normal((m, args.cols), dtype=np.float32)
        out = np.empty((m, args.rows), np.float32)
        torch_sec: dict[int, tuple[float, float | None]] = {}
        if torch_w is not None:
            tx, tw = torch.from_numpy(x), torch_w
            for t in args.threads:
                _progress(f"torch fp32 {ty} M={m}, {t} thread(s)")
                with thread_count(t, torch), torch.inference_mode():
                    torch_sec[t] = undisturbed(
                        lambda tx=tx, tw=tw: (
                            time_per_call(lambda: tx @ tw.T, args.repeats, MIN_RUN_SECONDS).median
                        )
                    )
        for isa in args.isa:
            with forced_isa(isa):
                for t in args.threads:
                    _progress(f"{ty} {isa} M={m}, {t} thread(s)")
                    with thread_count(t):
                        sec, others = undisturbed(
                            lambda x=x, out=out: (
                                time_per_call(
                                    lambda: mat.matmul(x, out), args.repeats, MIN_RUN_SECONDS
                                ).median
                            )
                        )
                    gbps = mat.nbytes / sec / 1e9
                    tsec, tothers = torch_sec.get(t, (None, None))
                    out_rows.append(
                        {
                            "kind": "matmul",
                            "type": ty,
                            "isa": isa,
                            "threads": t,
                            "M": m,
                            "rows": args.rows,
                            "cols": args.cols,
                            "weight_bytes": mat.nbytes,
                            "time_ms": sec * 1e3,
                            "gb_per_s": gbps,
                            "pct_bandwidth": 100.0 * gbps / bw[t],
                            "gflop_per_s": 2.0 * m * args.rows * args.cols / sec / 1e9,
                            "torch_ms": tsec * 1e3 if tsec is not None else None,
                            "torch_over_ours": tsec / sec if tsec is not None else None,
                            "other_cpus": others,
                            "torch_other_cpus": tothers,
                        }
                    )
    return out_rows


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def render(rows: list[dict[str, Any]]) -> str:
    """Plain-text tables of :func:`run`'s rows."""
    mach = rows[0]
    lines = [
        f"# dense head kernels: {mach['cpu']}, {mach['physical_cores']} cores, shape "
        f"{mach['shape']}, median of {mach['repeats']}, {mach['date']}",
        f"# load average {mach['load_avg_start']} -> {mach['load_avg_end']}",
        "",
    ]
    for r in rows:
        if r["kind"] == "bandwidth":
            lines.append(
                f"read bandwidth, {r['threads']} thread(s): {r['gb_per_s']:.2f} GB/s "
                f"(others {_fmt(r['other_cpus'], '.2f')})"
            )
    lines.append("")
    head = (
        f"{'type':5} {'isa':12} {'thr':>3} {'M':>3} {'ms':>9} {'GB/s':>7} {'%bw':>6} "
        f"{'GFLOP/s':>8} {'torch ms':>9} {'torch/ours':>10} {'others':>6}"
    )
    lines += [head, "-" * len(head)]
    for r in rows:
        if r["kind"] == "matmul":
            lines.append(
                f"{r['type']:5} {r['isa']:12} {r['threads']:>3} {r['M']:>3} {r['time_ms']:9.2f} "
                f"{r['gb_per_s']:7.2f} {r['pct_bandwidth']:6.1f} {r['gflop_per_s']:8.1f} "
                f"{_fmt(r['torch_ms'], '9.2f')} {_fmt(r['torch_over_ours'], '10.2f')} "
                f"{_fmt(r['other_cpus'], '6.2f')}"
            )
    lines.append("")
    for r in rows:
        if r["kind"] == "goal":
            lines.append(
                f"goal: {r['goal']} ({r['isa']}, {r['threads']} threads): "
                f"{r['measured_pct']:.1f}% -> {'met' if r['met'] else 'NOT met'}"
            )
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--types", nargs="+", default=list(GOAL_TYPES), choices=TYPES)
    p.add_argument("--isa", nargs="+", help="ISAs to run (default: the active one)")
    p.add_argument("--all-isas", action="store_true", help="every ISA available here")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--m", nargs="+", type=int, default=[1], help="rows of x (default 1)")
    p.add_argument("--rows", type=int, default=ROWS)
    p.add_argument("--cols", type=int, default=COLS)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    available = ops.available_isas()
    if args.all_isas:
        args.isa = available
    elif not args.isa:
        args.isa = [ops.active_isa()]
    bad = [i for i in args.isa if i not in available]
    if bad:
        p.error(f"--isa {' '.join(bad)}: not available here; available: {' '.join(available)}")
    if any(t < 1 for t in args.threads) or any(m < 1 for m in args.m) or args.repeats < 1:
        p.error("--threads, --m and --repeats must be >= 1")
    if args.rows < 1 or args.cols < 32 or args.cols % 32:
        p.error("--rows must be >= 1 and --cols a positive multiple of 32")
    args.threads = sorted(set(args.threads))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    rows = run(args)
    print(json.dumps(rows, indent=1) if args.json else render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

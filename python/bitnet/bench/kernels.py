"""``bitnet bench kernels``: the ternary x int8 kernels at the BitNet b1.58 2B4T shapes.

Everything the table states is measured in the same run:

* the machine's streaming read bandwidth (:func:`bitnet._ext.measure_read_bandwidth`, a buffer
  well above the last-level cache) and int8 multiply-add peak
  (:func:`bitnet._ext.measure_int8_peak`, per ISA) at each thread count;
* GEMV (``M = 1``, decode) and GEMM (``M = 128``, prefill) through the extension's
  ``bitlinear`` (what :func:`bitnet.ops.bitlinear` calls; activation quantization included) at
  the 2B4T shapes ``N x K``;
* torch fp32 ``torch.nn.functional.linear`` on the same shapes with ``torch.set_num_threads``
  matched, when torch is importable (it is optional);
* with ``--full``: every shape, every ISA of :func:`bitnet.ops.available_isas`, and the decode
  sweep: one GEMV through every matrix of all 30 layers in layer order (about 521 MB of 2-bit
  weights, larger than the last-level cache), as a real decode step reads them.

Units: times are medians over ``--repeats`` timed runs (each run loops the call long enough to
last at least :data:`MIN_RUN_SECONDS`); ``GB/s`` = 1e9 bytes/s of kernel-layout weight bytes
(``N * K / 4``); ``GMAC/s`` = 1e9 int8 multiply-adds (``M * N * K``) per second; ``%bw`` is the
weight rate over the measured read bandwidth at the same thread count; ``%peak`` is the MAC rate
over the measured int8 peak of the best ISA (the machine's) at the same thread count,
``%pk(isa)`` over the peak of the ISA that ran; ``torch/ours`` > 1 means faster than torch;
``others`` is the number of CPUs other processes kept busy during the measurement (measurements
disturbed by more than :data:`OTHERS_LIMIT` CPUs are repeated, see :func:`undisturbed`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _ext, ops
from .machine import (
    MIN_RUN_SECONDS,
    _human_bytes,
    _progress,
    cpu_caches,
    cpu_model,
    llc_bytes,
    time_per_call,
    undisturbed,
)
from .report import render

__all__ = [
    "DECODE_LAYERS",
    "LAYER_MATRICES",
    "MIN_RUN_SECONDS",
    "PREFILL_M",
    "SHAPES_FULL",
    "SHAPES_SHORT",
    "build_decode_set",
    "main",
    "random_native",
    "run",
    "time_per_call",
]

LAYER_MATRICES: tuple[tuple[str, int, int], ...] = (
    ("q", 2560, 2560),
    ("k", 640, 2560),
    ("v", 640, 2560),
    ("o", 2560, 2560),
    ("gate", 6912, 2560),
    ("up", 6912, 2560),
    ("down", 2560, 6912),
)
"""The BitLinear matrices of one 2B4T layer in decode order: ``(name, N, K)``."""

DECODE_LAYERS = 30
"""Layers of BitNet b1.58 2B4T."""

SHAPES_FULL: tuple[tuple[int, int], ...] = ((2560, 2560), (640, 2560), (6912, 2560), (2560, 6912))
"""The distinct ``(N, K)`` shapes of a 2B4T layer."""

SHAPES_SHORT: tuple[tuple[int, int], ...] = ((2560, 2560), (6912, 2560))
"""Shapes of the default (short) table."""

PREFILL_M = 128
"""Rows of the GEMM (prefill) cases."""

BANDWIDTH_MIN_BYTES = 1 << 30
"""Smallest read-bandwidth buffer (1 GiB); raised to twice the last-level cache if larger."""

PEAK_SECONDS = 0.2
"""Length of one int8-peak run."""

GOAL_DECODE_PCT_BW = 85.0
GOAL_PREFILL_PCT_PEAK = 60.0
GOAL_THREADS = 2


# ----------------------------------------------------------------------------- weights


def random_native(
    n: int, k: int, rng: np.random.Generator, scale: float = 1.0
) -> ops.PackedWeights:
    """Random ternary weights ``[n, k]`` built directly in the kernel layout (format ``native``,
    K256 blocks of 64 bytes; kernels/cpu/kernels.h), prepared for the kernels.

    Random bytes hold four 2-bit codes each; the invalid code 3 is remapped to 1 (t = 0), so
    t = 0 has probability 1/2 and t = +-1 1/4 each. Padding values (k not a multiple of 256)
    get code 1. No int8 copy of the matrix is ever made (n * k / 4 bytes, plus the kernel copy
    made by ``prepare``).
    """
    nb = -(-k // 256)
    raw = rng.integers(0, 256, size=(n, nb, 64), dtype=np.uint8)
    raw ^= ((raw >> 1) & raw & 0x55) << 1  # 0b11 -> 0b01 in every 2-bit field
    for j in range(k - (nb - 1) * 256, 256):  # padding of the last block: code 1
        shift = 2 * (j // 64)
        col = raw[:, nb - 1, j % 64]
        raw[:, nb - 1, j % 64] = (col & ~np.uint8(3 << shift)) | np.uint8(1 << shift)
    packed = ops.from_bytes(raw.reshape(-1), "native", (n, k), scale)
    packed.prepare()
    return packed


def build_decode_set(
    layers: int, rng: np.random.Generator
) -> list[list[tuple[str, ops.PackedWeights]]]:
    """``layers`` layers of 2B4T matrices (:data:`LAYER_MATRICES`), each with its own random
    weights, in decode order. Memory: twice the 2-bit size (packed bytes plus kernel copy)."""
    return [
        [(name, random_native(n, k, rng, 0.02)) for name, n, k in LAYER_MATRICES]
        for _ in range(layers)
    ]


# ----------------------------------------------------------------------------- dispatch


def _isa_order() -> list[str]:
    return ["ref", "avx2", "avx512", "avx512_vnni", "neon", "neon_dotprod"]


def best_isa(isas: Sequence[str]) -> str:
    """The highest of ``isas`` in dispatch order."""
    order = _isa_order()
    return max(isas, key=lambda i: order.index(i) if i in order else -1)


@contextlib.contextmanager
def forced_isa(isa: str) -> Iterator[None]:
    """Runs the body with the kernels of ``isa`` (env ``BITNET_MAX_ISA`` + reload), then
    restores the previous cap."""
    saved = os.environ.get("BITNET_MAX_ISA")
    os.environ["BITNET_MAX_ISA"] = isa
    try:
        got = _ext.reload_dispatch()
        if got != isa:
            raise RuntimeError(f"BITNET_MAX_ISA={isa} selected {got}; is {isa} available?")
        yield
    finally:
        if saved is None:
            os.environ.pop("BITNET_MAX_ISA", None)
        else:
            os.environ["BITNET_MAX_ISA"] = saved
        _ext.reload_dispatch()


@contextlib.contextmanager
def thread_count(n: int, torch: Any = None) -> Iterator[None]:
    """Runs the body with ``n`` threads in bitnet's pool (and torch's, if given)."""
    saved = ops.get_num_threads()
    saved_torch = torch.get_num_threads() if torch is not None else None
    ops.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        ops.set_num_threads(saved)
        if torch is not None:
            torch.set_num_threads(saved_torch)


# ----------------------------------------------------------------------------- the benchmark


@dataclass
class Config:
    """What to run. ``isas`` and ``threads`` are validated; ``full`` adds the decode sweep."""

    isas: list[str]
    threads: list[int]
    shapes: list[tuple[int, int]]
    repeats: int
    full: bool
    decode_layers: int = DECODE_LAYERS
    min_run: float = MIN_RUN_SECONDS


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def _call_overhead(repeats: int) -> float:
    """Seconds per :func:`bitnet._ext.bitlinear` call on a 16 x 256 matrix, 1 thread: the
    fixed Python + dispatch cost included in every time below."""
    p = random_native(16, 256, np.random.default_rng(1))
    x = np.ones((1, 256), np.float32)
    y = np.empty((1, 16), np.float32)
    with thread_count(1):
        return time_per_call(lambda: _ext.bitlinear(x, p, y), repeats).median


class _TorchCache:
    """torch fp32 ``F.linear`` timings keyed by ``(M, N, K, threads)``: one measurement per
    shape and thread count, shared by every ISA's row."""

    def __init__(self, torch: Any, repeats: int, min_run: float) -> None:
        self.torch = torch
        self.repeats = repeats
        self.min_run = min_run
        self.cache: dict[tuple[int, int, int, int], tuple[float, float | None]] = {}

    def time(self, m: int, n: int, k: int, threads: int) -> tuple[float | None, float | None]:
        """``(seconds per call, other processes' CPUs)``; ``(None, None)`` without torch."""
        if self.torch is None:
            return None, None
        key = (m, n, k, threads)
        if key not in self.cache:
            torch = self.torch
            w = torch.empty(n, k).uniform_(-1.0, 1.0)
            x = torch.randn(m, k)
            linear = torch.nn.functional.linear
            with thread_count(threads, torch), torch.inference_mode():
                self.cache[key] = undisturbed(
                    lambda: time_per_call(lambda: linear(x, w), self.repeats, self.min_run).median
                )
        return self.cache[key]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _case_row(
    kind: str,
    isa: str,
    threads: int,
    m: int,
    n: int,
    k: int,
    sec: float,
    bw: float,
    peak: float,
    peak_isa: float,
    torch_sec: float | None,
    others: float | None,
    torch_others: float | None,
) -> dict[str, Any]:
    wbytes = n * k / 4
    gbps = wbytes / sec / 1e9
    gmacs = m * n * k / sec / 1e9
    return {
        "kind": kind,
        "isa": isa,
        "threads": threads,
        "M": m,
        "N": n,
        "K": k,
        "time_ms": sec * 1e3,
        "weight_bytes": int(wbytes),
        "gb_per_s": gbps,
        "gmac_per_s": gmacs,
        "pct_bandwidth": 100.0 * gbps / bw,
        "pct_peak": 100.0 * gmacs / peak,
        "pct_peak_isa": 100.0 * gmacs / peak_isa,
        "torch_ms": torch_sec * 1e3 if torch_sec is not None else None,
        "torch_over_ours": _ratio(torch_sec, sec),
        "other_cpus": others,
        "torch_other_cpus": torch_others,
    }


def run(cfg: Config) -> list[dict[str, Any]]:
    """Runs the benchmark and returns its rows (see :func:`main` for the kinds)."""
    torch = _import_torch()
    available = ops.available_isas()
    top = best_isa(available)
    caches = cpu_caches()
    llc = llc_bytes(caches)
    bw_bytes = max(BANDWIDTH_MIN_BYTES, 2 * llc if llc else 0)
    rows: list[dict[str, Any]] = []

    machine = {
        "kind": "machine",
        "cpu": cpu_model(),
        "physical_cores": _ext.physical_core_count(),
        "logical_cpus": os.cpu_count(),
        "caches": caches,
        "llc_bytes": llc,
        "load_avg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "isas_available": available,
        "isa_default": ops.active_isa(),
        "cpu_features": ops.cpu_features(),
        "torch": getattr(torch, "__version__", None),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "repeats": cfg.repeats,
        "min_run_s": cfg.min_run,
        "bandwidth_buffer_bytes": bw_bytes,
    }
    rows.append(machine)

    # Probes: bandwidth is a machine property (best ISA's read kernel); the int8 peak is per ISA.
    bw: dict[int, float] = {}
    peak: dict[tuple[str, int], float] = {}
    with forced_isa(top):
        machine["call_overhead_us"] = _call_overhead(cfg.repeats) * 1e6
        for t in cfg.threads:
            _progress(f"read bandwidth, {t} thread(s), {_human_bytes(bw_bytes)} buffer")
            bw[t], others = undisturbed(
                lambda t=t: float(_ext.measure_read_bandwidth(bw_bytes, t, cfg.repeats))
            )
            rows.append(
                {
                    "kind": "bandwidth",
                    "isa": top,
                    "threads": t,
                    "bytes": bw_bytes,
                    "gb_per_s": bw[t],
                    "other_cpus": others,
                }
            )
    for isa in sorted(set(cfg.isas) | {top}, key=_isa_order().index):
        with forced_isa(isa):
            for t in cfg.threads:
                _progress(f"int8 peak, {isa}, {t} thread(s)")
                peak[(isa, t)], others = undisturbed(
                    lambda t=t: float(_ext.measure_int8_peak(t, PEAK_SECONDS, cfg.repeats))
                )
                rows.append(
                    {
                        "kind": "int8_peak",
                        "isa": isa,
                        "threads": t,
                        "gmac_per_s": peak[(isa, t)],
                        "other_cpus": others,
                    }
                )

    # Single-shape GEMV / GEMM (weights hot in cache after the first call).
    torch_times = _TorchCache(torch, cfg.repeats, cfg.min_run)
    rng = np.random.default_rng(0)
    for n, k in cfg.shapes:
        packed = random_native(n, k, rng, 0.02)
        for m in (1, PREFILL_M):
            x = rng.standard_normal((m, k), dtype=np.float32)
            y = np.empty((m, n), np.float32)
            kind = "gemv" if m == 1 else "gemm"
            for isa in cfg.isas:
                with forced_isa(isa):
                    for t in cfg.threads:
                        _progress(f"{kind} {isa} {n}x{k} M={m}, {t} thread(s)")
                        with thread_count(t):
                            sec, others = undisturbed(
                                lambda x=x, y=y, p=packed: (
                                    time_per_call(
                                        lambda: _ext.bitlinear(x, p, y), cfg.repeats, cfg.min_run
                                    ).median
                                )
                            )
                        tt, tothers = torch_times.time(m, n, k, t)
                        rows.append(
                            _case_row(
                                kind,
                                isa,
                                t,
                                m,
                                n,
                                k,
                                sec,
                                bw[t],
                                peak[(top, t)],
                                peak[(isa, t)],
                                tt,
                                others,
                                tothers,
                            )
                        )
        del packed

    if cfg.full:
        rows.extend(_decode_sweep(cfg, torch, bw, peak, top, llc))
    rows.extend(_goals(rows, cfg, top))
    machine["load_avg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return rows


def _decode_sweep(
    cfg: Config,
    torch: Any,
    bw: dict[int, float],
    peak: dict[tuple[str, int], float],
    top: str,
    llc: int | None,
) -> list[dict[str, Any]]:
    """One decode step = one GEMV through every matrix of every layer, in layer order."""
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(1)
    _progress(f"building the {cfg.decode_layers}-layer weight set")
    layers = build_decode_set(cfg.decode_layers, rng)
    wbytes = sum(n * k // 4 for _, n, k in LAYER_MATRICES) * cfg.decode_layers
    macs = sum(n * k for _, n, k in LAYER_MATRICES) * cfg.decode_layers
    xs = {
        k: rng.standard_normal((1, k), dtype=np.float32) for k in {k for _, _, k in LAYER_MATRICES}
    }
    ys = {n: np.empty((1, n), np.float32) for n in {n for _, n, _ in LAYER_MATRICES}}
    calls = [(xs[p.shape[1]], p, ys[p.shape[0]]) for layer in layers for _, p in layer]
    bitlinear = _ext.bitlinear

    def step() -> None:
        for x, p, y in calls:
            bitlinear(x, p, y)

    times: dict[tuple[str, int], tuple[float, float | None]] = {}
    for isa in cfg.isas:
        with forced_isa(isa):
            for t in cfg.threads:
                _progress(f"decode sweep {isa}, {t} thread(s)")
                with thread_count(t):
                    times[(isa, t)] = undisturbed(
                        lambda: time_per_call(step, cfg.repeats, cfg.min_run).median
                    )
    calls.clear()  # free the weight set before torch allocates its own
    layers.clear()

    # torch fp32 on enough layers to exceed twice the LLC (a 30-layer fp32 set is 8.3 GB),
    # scaled to 30 layers.
    torch_layers = 0
    torch_times: dict[int, tuple[float, float | None]] = {}
    if torch is not None:
        layer_fp32 = sum(n * k * 4 for _, n, k in LAYER_MATRICES)
        torch_layers = min(cfg.decode_layers, max(2, math.ceil(2 * (llc or 0) / layer_fp32)))
        _progress(
            f"torch fp32 decode sweep over {torch_layers} layers "
            f"({_human_bytes(torch_layers * layer_fp32)})"
        )
        tw = [
            torch.empty(n, k).uniform_(-1.0, 1.0)
            for _ in range(torch_layers)
            for _, n, k in LAYER_MATRICES
        ]
        txs = {k: torch.randn(1, k) for k in xs}
        linear = torch.nn.functional.linear

        def torch_step() -> None:
            for w in tw:
                linear(txs[w.shape[1]], w)

        for t in cfg.threads:
            with thread_count(t, torch), torch.inference_mode():
                sec, tothers = undisturbed(
                    lambda: time_per_call(torch_step, cfg.repeats, cfg.min_run).median
                )
            torch_times[t] = (sec * cfg.decode_layers / torch_layers, tothers)
        tw.clear()

    for (isa, t), (sec, others) in times.items():
        gbps = wbytes / sec / 1e9
        gmacs = macs / sec / 1e9
        tsec, tothers = torch_times.get(t, (None, None))
        rows.append(
            {
                "kind": "decode",
                "isa": isa,
                "threads": t,
                "layers": cfg.decode_layers,
                "matrices": cfg.decode_layers * len(LAYER_MATRICES),
                "weight_bytes": wbytes,
                "time_ms": sec * 1e3,
                "tokens_per_s": 1.0 / sec,
                "gb_per_s": gbps,
                "gmac_per_s": gmacs,
                "pct_bandwidth": 100.0 * gbps / bw[t],
                "pct_peak": 100.0 * gmacs / peak[(top, t)],
                "pct_peak_isa": 100.0 * gmacs / peak[(isa, t)],
                "torch_ms": tsec * 1e3 if tsec is not None else None,
                "torch_layers_measured": torch_layers or None,
                "torch_over_ours": _ratio(tsec, sec),
                "other_cpus": others,
                "torch_other_cpus": tothers,
            }
        )
    return rows


def _goals(rows: list[dict[str, Any]], cfg: Config, top: str) -> list[dict[str, Any]]:
    """The issue's goals, evaluated on the best ISA that ran at 2 threads (or the most run)."""
    isa = best_isa(cfg.isas)
    t = GOAL_THREADS if GOAL_THREADS in cfg.threads else max(cfg.threads)
    out: list[dict[str, Any]] = []
    dec = [r for r in rows if r["kind"] == "decode" and r["isa"] == isa and r["threads"] == t]
    out.append(
        {
            "kind": "goal",
            "goal": "decode GEMV (30 layers) >= 85% of read bandwidth",
            "isa": isa,
            "threads": t,
            "target_pct": GOAL_DECODE_PCT_BW,
            "measured_pct": dec[0]["pct_bandwidth"] if dec else None,
            "met": (dec[0]["pct_bandwidth"] >= GOAL_DECODE_PCT_BW) if dec else None,
        }
    )
    gemm = [r for r in rows if r["kind"] == "gemm" and r["isa"] == isa and r["threads"] == t]
    pct = [r["pct_peak"] for r in gemm]
    out.append(
        {
            "kind": "goal",
            "goal": f"prefill GEMM (M={PREFILL_M}) >= 60% of int8 peak",
            "isa": isa,
            "threads": t,
            "target_pct": GOAL_PREFILL_PCT_PEAK,
            "measured_pct": min(pct) if pct else None,
            "measured_pct_max": max(pct) if pct else None,
            "met": (min(pct) >= GOAL_PREFILL_PCT_PEAK) if pct else None,
        }
    )
    return out


# ----------------------------------------------------------------------------- entry point


def make_config(args: argparse.Namespace) -> Config:
    """Validates the CLI arguments (``--threads``, ``--isa``, ``--full``, ``--repeats``)."""
    full = bool(getattr(args, "full", False))
    available = ops.available_isas()
    isas = getattr(args, "isa", None)
    if isas:
        bad = [i for i in isas if i not in available]
        if bad:
            raise ValueError(
                f"--isa {' '.join(bad)}: not available here; available: {' '.join(available)}"
            )
        isas = sorted(set(isas), key=_isa_order().index)
    else:
        isas = list(available) if full else [ops.active_isa()]
    threads = getattr(args, "threads", None)
    if threads:
        if any(t < 1 for t in threads):
            raise ValueError("--threads: thread counts must be >= 1")
        threads = sorted(set(threads))
    else:
        threads = sorted({1, int(_ext.physical_core_count())})
    repeats = int(getattr(args, "repeats", 5) or 5)
    if repeats < 1:
        raise ValueError("--repeats must be >= 1")
    shapes = list(SHAPES_FULL if full else SHAPES_SHORT)
    return Config(isas=isas, threads=threads, shapes=shapes, repeats=repeats, full=full)


def main(args: argparse.Namespace) -> int:
    """``bitnet bench kernels``: runs the benchmark and prints a table (or, with ``--json``, a
    JSON list of dicts whose ``kind`` is ``machine``, ``bandwidth``, ``int8_peak``, ``gemv``,
    ``gemm``, ``decode`` or ``goal``). Returns the process exit code (2 on bad arguments)."""
    try:
        cfg = make_config(args)
    except ValueError as e:
        print(f"bitnet bench kernels: {e}", file=sys.stderr)
        return 2
    rows = run(cfg)
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=1))
    else:
        print(render(rows))
    return 0

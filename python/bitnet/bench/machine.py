"""Machine facts and timing for ``bitnet bench kernels``.

The machine: CPU model and caches (``/proc/cpuinfo``, sysfs). Timing: :func:`time_per_call`
(medians over timed runs of at least :data:`MIN_RUN_SECONDS`) and :func:`undisturbed`, which
repeats a measurement while other processes kept more than :data:`OTHERS_LIMIT` CPUs busy
(:class:`CpuMonitor`).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MIN_RUN_SECONDS",
    "OTHERS_LIMIT",
    "OTHERS_RETRIES",
    "CpuMonitor",
    "Timing",
    "cpu_caches",
    "cpu_model",
    "llc_bytes",
    "time_per_call",
    "undisturbed",
]

# ----------------------------------------------------------------------------- machine


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo``), or :func:`platform.processor` elsewhere."""
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _parse_size(text: str) -> int | None:
    text = text.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    try:
        if text and text[-1] in mult:
            return int(text[:-1]) * mult[text[-1]]
        return int(text)
    except ValueError:
        return None


def cpu_caches() -> list[dict[str, Any]]:
    """CPU 0's caches from sysfs: ``[{"level", "type", "bytes", "shared_cpus"}]`` (Linux)."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    out: list[dict[str, Any]] = []
    if not os.path.isdir(base):
        return out
    for name in sorted(os.listdir(base)):
        if not name.startswith("index"):
            continue
        d = os.path.join(base, name)
        level, ctype, size = (_read(os.path.join(d, f)) for f in ("level", "type", "size"))
        if level is None or size is None:
            continue
        nbytes = _parse_size(size)
        if nbytes is None:
            continue
        out.append(
            {
                "level": int(level),
                "type": ctype or "",
                "bytes": nbytes,
                "shared_cpus": _read(os.path.join(d, "shared_cpu_list")) or "",
            }
        )
    return out


def llc_bytes(caches: Sequence[dict[str, Any]]) -> int | None:
    """Size of the last-level (highest-level unified or data) cache, if known."""
    data = [c for c in caches if c["type"] in ("Unified", "Data")]
    return max(data, key=lambda c: c["level"])["bytes"] if data else None


def _human_bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{int(n)} B"


def _cache_summary(caches: Sequence[dict[str, Any]]) -> str:
    parts = []
    for c in caches:
        if c["type"] == "Instruction":
            continue
        tag = f"L{c['level']}" + ("d" if c["type"] == "Data" else "")
        parts.append(f"{tag} {_human_bytes(c['bytes'])} (cpus {c['shared_cpus']})")
    return ", ".join(parts) or "unknown"


# ----------------------------------------------------------------------------- timing


MIN_RUN_SECONDS = 0.1
"""Each timed run repeats the call until it lasts at least this long."""

OTHERS_LIMIT = 0.25
"""A measurement during which other processes kept more than this many CPUs busy on average is
repeated (up to :data:`OTHERS_RETRIES` times; the least disturbed attempt is kept)."""

OTHERS_RETRIES = 2

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _system_busy_seconds() -> float | None:
    """CPU-seconds all CPUs spent busy since boot (``/proc/stat``; steal included), or None."""
    text = _read("/proc/stat")
    if not text:
        return None
    fields = text.splitlines()[0].split()
    if fields[0] != "cpu" or len(fields) < 5:
        return None
    v = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(v) - v[3] - v[4]) / _CLK_TCK


def _own_cpu_seconds() -> float:
    t = os.times()  # this process, all threads
    return t.user + t.system


class CpuMonitor:
    """Context manager: ``others`` = average number of CPUs kept busy by anything but this
    process (other processes, the hypervisor's steal) during the body; None off Linux."""

    def __init__(self) -> None:
        self.others: float | None = None

    def __enter__(self) -> CpuMonitor:
        self._t = time.perf_counter()
        self._busy = _system_busy_seconds()
        self._own = _own_cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._t
        busy = _system_busy_seconds()
        if busy is None or self._busy is None or wall <= 0:
            return
        own = _own_cpu_seconds() - self._own
        self.others = max(0.0, (busy - self._busy) - own) / wall


def _progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def undisturbed(fn: Callable[[], float]) -> tuple[float, float | None]:
    """Runs the measurement ``fn`` under a :class:`CpuMonitor`, again while other processes
    used more than :data:`OTHERS_LIMIT` CPUs; returns ``(value, others)`` of the least disturbed
    attempt."""
    best: tuple[float, float | None] | None = None
    for _ in range(1 + OTHERS_RETRIES):
        with CpuMonitor() as mon:
            value = fn()
        if best is None or (mon.others or 0.0) < (best[1] or 0.0):
            best = (value, mon.others)
        if mon.others is None or mon.others <= OTHERS_LIMIT:
            break
        _progress(f"  other processes used {mon.others:.2f} CPUs; measuring again")
    assert best is not None
    return best


@dataclass
class Timing:
    """Seconds per call: ``median`` and ``min`` over ``runs`` timed runs of ``inner`` calls."""

    median: float
    min: float
    runs: int
    inner: int


def time_per_call(fn: Callable[[], Any], repeats: int, min_run: float = MIN_RUN_SECONDS) -> Timing:
    """Times ``fn``: one warm-up call (also the calibration), then ``repeats`` runs of ``inner``
    calls each, ``inner`` chosen so a run lasts at least ``min_run`` seconds. Returns seconds per
    call."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first < min_run:  # the first call may be cold; calibrate on a second one
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
    inner = max(1, math.ceil(min_run / max(first, 1e-7)))
    per_call = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        per_call.append((time.perf_counter() - t0) / inner)
    return Timing(statistics.median(per_call), min(per_call), repeats, inner)

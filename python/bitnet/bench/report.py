"""The human-readable report of ``bitnet bench kernels``: aligned plain-text tables of the
rows :func:`bitnet.bench.kernels.run` returns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .machine import OTHERS_LIMIT, _cache_summary, _human_bytes

__all__ = ["format_table", "render"]


def _f(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    if digits == 0 or abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def format_table(headers: Sequence[str], body: Sequence[Sequence[str]], left: int = 1) -> str:
    """Aligned plain-text columns: the first ``left`` columns left-aligned, the rest right."""
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in body])


def _o(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _gmacs(v: float) -> str:
    return f"{v:.0f} GMAC/s" if v >= 10 else f"{v:.3g} GMAC/s"


def render(rows: Sequence[dict[str, Any]]) -> str:
    """The human-readable report of :func:`run`'s rows."""
    m = next(r for r in rows if r["kind"] == "machine")
    load0 = " ".join(f"{x:.2f}" for x in m["load_avg_start"] or [])
    load1 = " ".join(f"{x:.2f}" for x in m.get("load_avg_end") or [])
    out = [
        "bitnet kernel benchmark (ternary x int8, BitNet b1.58 2B4T shapes)",
        f"CPU: {m['cpu']}; {m['physical_cores']} physical cores, {m['logical_cpus']} logical",
        f"caches: {_cache_summary(m['caches'])}",
        f"ISAs: {' '.join(m['isas_available'])} (default {m['isa_default']}); "
        f"torch {m['torch'] or 'not installed'}; numpy {m['numpy']}; python {m['python']}",
        f"load average at start {load0}, end {load1}; {m['date']}",
        f"times: median of {m['repeats']} runs of >= {m['min_run_s']} s; Python call overhead "
        f"{m['call_overhead_us']:.1f} us per call is included",
        "others: CPUs kept busy by other processes during a measurement (retried above "
        f"{OTHERS_LIMIT}); torch/ours > 1: bitnet faster",
        "",
        "Machine probes (measured in this run)",
    ]
    probe_body = []
    for r in rows:
        if r["kind"] == "bandwidth":
            value, note = f"{r['gb_per_s']:.1f} GB/s", f"{_human_bytes(r['bytes'])} buffer"
        elif r["kind"] == "int8_peak":
            value, note = _gmacs(r["gmac_per_s"]), "register operands"
        else:
            continue
        probe_body.append(
            [r["kind"], r["isa"], str(r["threads"]), value, _o(r.get("other_cpus")), note]
        )
    out.append(format_table(["probe", "isa", "thr", "value", "others", "note"], probe_body, left=2))

    headers = ["op", "isa", "M", "N x K", "thr", "ms", "GB/s", "GMAC/s", "%bw", "%peak"]
    headers += ["%pk(isa)", "torch ms", "torch/ours", "others"]
    body = [
        [
            r["kind"].upper(),
            r["isa"],
            str(r["M"]),
            f"{r['N']}x{r['K']}",
            str(r["threads"]),
            _ms(r["time_ms"]),
            _f(r["gb_per_s"]),
            _f(r["gmac_per_s"]),
            _f(r["pct_bandwidth"]),
            _f(r["pct_peak"]),
            _f(r["pct_peak_isa"]),
            _ms(r["torch_ms"]),
            _f(r["torch_over_ours"], 2),
            _o(r["other_cpus"]),
        ]
        for r in rows
        if r["kind"] in ("gemv", "gemm")
    ]
    if body:
        out += [
            "",
            "Single matrices (bitnet.ops.bitlinear incl. activation quantization; weights "
            "hot in cache: GB/s may exceed DRAM bandwidth)",
            format_table(headers, body, 2),
        ]

    dec = [r for r in rows if r["kind"] == "decode"]
    if dec:
        # Imported here: .kernels imports this module at its top (main calls render).
        from .kernels import LAYER_MATRICES

        r0 = dec[0]
        tl = r0.get("torch_layers_measured")
        out += [
            "",
            f"Decode sweep: {r0['layers']} layers x {len(LAYER_MATRICES)} matrices = "
            f"{r0['matrices']} GEMVs per token, {r0['weight_bytes'] / 1e6:.1f} MB of weights, "
            "layer order"
            + (f"; torch fp32 measured on {tl} layers, scaled to {r0['layers']}" if tl else ""),
        ]
        dh = ["isa", "thr", "ms/token", "tok/s", "GB/s", "%bw", "GMAC/s", "%peak", "torch ms"]
        dh += ["torch/ours", "others"]
        db = [
            [
                r["isa"],
                str(r["threads"]),
                _ms(r["time_ms"]),
                _f(r["tokens_per_s"]),
                _f(r["gb_per_s"]),
                _f(r["pct_bandwidth"]),
                _f(r["gmac_per_s"]),
                _f(r["pct_peak"]),
                _ms(r["torch_ms"]),
                _f(r["torch_over_ours"], 2),
                _o(r["other_cpus"]),
            ]
            for r in dec
        ]
        out.append(format_table(dh, db, 1))

    goals = [r for r in rows if r["kind"] == "goal"]
    if goals:
        out += ["", "Goals"]
        for g in goals:
            if g["measured_pct"] is None:
                got = "not measured (run with --full)" if "decode" in g["goal"] else "not measured"
            else:
                got = f"{g['measured_pct']:.1f}%"
                hi = g.get("measured_pct_max")
                if hi is not None and f"{hi:.1f}" != f"{g['measured_pct']:.1f}":
                    got = f"{g['measured_pct']:.1f}-{hi:.1f}% over shapes"
                got += ": " + ("met" if g["met"] else "NOT met")
            out.append(f"  {g['goal']} [{g['isa']}, {g['threads']} threads]: {got}")

    disturbed = [r for r in rows if (r.get("other_cpus") or 0.0) > OTHERS_LIMIT]
    if disturbed:
        out += [
            "",
            f"WARNING: {len(disturbed)} measurement(s) ran while other processes used more than "
            f"{OTHERS_LIMIT} CPUs (column 'others'); their numbers, 2-thread ones above all, "
            "understate the kernels. Rerun on an idle machine.",
        ]
    return "\n".join(out)

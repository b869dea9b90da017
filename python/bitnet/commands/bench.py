"""``bitnet bench``: model and kernel benchmarks.

``bitnet bench [-m MODEL]`` (default: the packaged model) measures a model the way llama-bench
does: prompt processing (``ppN``: N random token ids evaluated in one call, from an empty cache)
and generation (``tgN``: N tokens evaluated one at a time after a one-token prompt) in tokens/s,
for each thread count, plus the load time (GGUF mapped and weights repacked) and the process's
peak resident memory (``getrusage``). Token ids are random (seeded), so no tokenizer is needed;
values do not change the speed. Each figure is the median of ``--repetitions`` runs.

``bitnet bench kernels``: the ternary x int8 kernel benchmark table (:mod:`bitnet.bench`).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from typing import Any

from .generate import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``bench`` (model benchmark with ``-m``) and ``bench kernels``."""
    bench = sub.add_parser(
        "bench",
        help="benchmarks: a model (bench -m MODEL) or the kernels (bench kernels)",
        description="Benchmark a model (-m MODEL: prompt processing and generation tokens/s, "
        "load time, peak memory) or the kernels (bench kernels).",
    )
    bench.add_argument(
        "-m",
        "--model",
        default=None,
        metavar="MODEL",
        help="a .gguf file or a Hugging Face repo id to benchmark (default: the small model "
        "shipped in the package, bitnet/data/default.gguf)",
    )
    bench.add_argument(
        "--prompt-tokens",
        type=positive_int,
        nargs="+",
        default=[128, 512],
        metavar="N",
        help="prompt lengths to time (default: 128 512)",
    )
    bench.add_argument(
        "--gen-tokens",
        type=positive_int,
        default=64,
        metavar="N",
        help="tokens to generate one at a time (default 64)",
    )
    bench.add_argument(
        "--threads",
        dest="model_threads",
        type=positive_int,
        nargs="+",
        default=None,
        metavar="N",
        help="thread counts (default: the current setting)",
    )
    bench.add_argument(
        "--repetitions", type=positive_int, default=3, help="runs per test (median; default 3)"
    )
    bench.add_argument(
        "--ctx",
        dest="model_ctx",
        type=positive_int,
        default=None,
        metavar="N",
        help="KV cache length (default: longest prompt + generated tokens)",
    )
    bench.add_argument("--seed", type=int, default=0, help="seed of the random token ids")
    bench.add_argument("--json", dest="model_json", action="store_true", help="print a JSON object")
    bench.set_defaults(func=run_model, bench_parser=bench)

    bench_sub = bench.add_subparsers(dest="what", metavar="WHAT")
    bench_sub.required = False
    kern = bench_sub.add_parser(
        "kernels", help="ternary x int8 kernel benchmark table (GEMV and GEMM at 2B4T shapes)"
    )
    kern.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="thread counts to run (default: 1 and the physical core count)",
    )
    kern.add_argument(
        "--isa", nargs="+", default=None, help="ISAs to run (default: the active one)"
    )
    kern.add_argument(
        "--full",
        action="store_true",
        help="all 2B4T shapes, every ISA, and the 30-layer decode sweep",
    )
    kern.add_argument("--repeats", type=int, default=5, help="timed runs per case (median)")
    kern.add_argument("--json", action="store_true", help="print JSON instead of a table")
    kern.set_defaults(func=run_kernels)


def run_kernels(args: argparse.Namespace) -> int:
    from ..bench import main as bench_main

    return bench_main(args)


# ----------------------------------------------------------------------------- model benchmark


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes (``ru_maxrss``: KiB on Linux, bytes on
    macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024


def bench_model(
    model: str,
    prompt_tokens: list[int],
    gen_tokens: int,
    threads: list[int] | None = None,
    repetitions: int = 3,
    n_ctx: int | None = None,
    seed: int = 0,
    revision: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs the model benchmark; returns the report (the ``--json`` object).

    Returns:
        ``{"model", "architecture", "weight_type", "head_type", "file_size", "n_params"...,
        "n_ctx", "load_seconds", "peak_rss_bytes", "results": [{"threads", "test",
        "n_tokens", "seconds", "tokens_per_second", "runs"}]}``; ``seconds`` is the median run.
    """
    import numpy as np

    from .. import _ext
    from ..model import _resolve
    from ..ops import get_num_threads, set_num_threads

    path = _resolve(model, revision, "i2_s", progress)
    ctx = n_ctx if n_ctx is not None else max(prompt_tokens) + gen_tokens + 1
    counts = threads or [get_num_threads()]
    set_num_threads(counts[0])
    t0 = time.perf_counter()
    engine = _ext.Model(str(path), ctx, 1)
    load_seconds = time.perf_counter() - t0
    cfg = dict(engine.config)
    n = engine.config["n_ctx"]
    need = max(max(prompt_tokens), 1 + gen_tokens)
    if need > n:
        raise ValueError(
            f"{path}: the benchmark needs {need} tokens of context but the cache holds {n}; "
            "raise --ctx or lower --prompt-tokens / --gen-tokens"
        )
    rng = np.random.default_rng(seed)
    vocab = int(cfg["vocab_size"])

    def timed(fn: Any) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    results = []
    engine.eval(np.array([0], dtype=np.int32))  # warm-up (first-touch of buffers)
    for nt in counts:
        set_num_threads(nt)
        for p in prompt_tokens:
            runs = []
            for _ in range(repetitions):
                ids = rng.integers(0, vocab, p, dtype=np.int32)
                engine.reset(0)
                runs.append(timed(lambda ids=ids: engine.eval(ids, 0)))
            results.append(_row(nt, f"pp{p}", p, runs))
        runs = []
        for _ in range(repetitions):
            ids = rng.integers(0, vocab, gen_tokens + 1, dtype=np.int32)
            engine.reset(0)
            engine.eval(ids[:1], 0)

            def decode(ids: np.ndarray = ids) -> None:
                for i in range(1, gen_tokens + 1):
                    engine.eval(ids[i : i + 1], 0)

            runs.append(timed(decode))
        results.append(_row(nt, f"tg{gen_tokens}", gen_tokens, runs))
    return {
        "model": str(path),
        "architecture": cfg["architecture"],
        "weight_type": cfg["weight_type"],
        "head_type": cfg["head_type"],
        "file_size": int(cfg["file_size"]),
        "n_layer": int(cfg["n_layer"]),
        "n_embd": int(cfg["n_embd"]),
        "vocab_size": vocab,
        "n_ctx": int(n),
        "load_seconds": load_seconds,
        "peak_rss_bytes": peak_rss_bytes(),
        "results": results,
    }


def _row(threads: int, test: str, n_tokens: int, runs: list[float]) -> dict[str, Any]:
    med = statistics.median(runs)
    return {
        "threads": threads,
        "test": test,
        "n_tokens": n_tokens,
        "seconds": med,
        "tokens_per_second": n_tokens / med,
        "runs": runs,
    }


def format_report(rep: dict[str, Any]) -> str:
    """The report as a text table."""
    gib = 1024**3
    lines = [
        f"model:     {rep['model']}",
        f"           {rep['architecture']}, {rep['n_layer']} layers, n_embd {rep['n_embd']}, "
        f"vocab {rep['vocab_size']}; weights {rep['weight_type']}, head {rep['head_type']}, "
        f"file {rep['file_size'] / gib:.2f} GiB",
        f"load:      {rep['load_seconds']:.2f} s",
        f"peak RSS:  {rep['peak_rss_bytes'] / gib:.2f} GiB (n_ctx {rep['n_ctx']})",
        "",
        f"{'threads':>7}  {'test':<8} {'tokens/s':>10} {'ms/token':>9}",
    ]
    for r in rep["results"]:
        ms = 1e3 * r["seconds"] / r["n_tokens"]
        lines.append(
            f"{r['threads']:>7}  {r['test']:<8} {r['tokens_per_second']:>10.2f} {ms:>9.2f}"
        )
    return "\n".join(lines)


def run_model(args: argparse.Namespace) -> int:
    """``bitnet bench [-m MODEL]`` (default: the packaged model); returns the exit status."""
    model = args.model
    if model is None:
        from ..model import DEFAULT_MODEL

        if not DEFAULT_MODEL.is_file():
            args.bench_parser.error(
                f"the default model {DEFAULT_MODEL} is missing; give -m MODEL for the model "
                "benchmark, or use `bench kernels`"
            )
        model = str(DEFAULT_MODEL)
    rep = bench_model(
        model,
        args.prompt_tokens,
        args.gen_tokens,
        threads=args.model_threads,
        repetitions=args.repetitions,
        n_ctx=args.model_ctx,
        seed=args.seed,
    )
    print(json.dumps(rep, indent=2) if args.model_json else format_report(rep))
    return 0

"""``bitnet bench kernels``: the ternary x int8 kernel benchmark table."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="what", metavar="WHAT")
    bench_sub.required = True
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

"""The ``bitnet`` command line."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitnet", description="Run, convert and train 1.58-bit BitNet models."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench" and args.what == "kernels":
        from .bench import main as bench_main

        return bench_main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``bitnet`` command line: a thin parser over :mod:`bitnet.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys

from .commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitnet", description="Run, convert and train 1.58-bit BitNet models."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `bitnet info x.gguf | head`: the reader went away; exit quietly like other Unix tools
        # (stdout is pointed at devnull so the interpreter's final flush does not raise again).
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (OSError, ValueError, RuntimeError) as e:
        # Expected failures (bad file, missing repo, bad shape) end with one clear line, not a
        # traceback; BITNET_DEBUG=1 shows the traceback.
        import os

        if os.environ.get("BITNET_DEBUG"):
            raise
        print(f"bitnet {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

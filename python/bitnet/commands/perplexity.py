"""``bitnet perplexity [-m MODEL] FILE``: teacher-forced perplexity of a text file.

Scores the file's tokens in windows of ``--ctx`` tokens (default: the model's context) moved by
``--stride`` (default half a window), as :meth:`bitnet.Model.perplexity` does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .generate import add_model_args, load, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    """Adds the ``perplexity`` subcommand to the ``bitnet`` parser."""
    p = sub.add_parser(
        "perplexity",
        help="perplexity of a text file",
        description="Teacher-forced perplexity exp(mean NLL) of a UTF-8 text file, scored in "
        "sliding windows.",
    )
    add_model_args(p, ctx_help="window length in tokens (default: the model's context)")
    p.add_argument("file", metavar="FILE", help="a UTF-8 text file ('-': stdin)")
    p.add_argument(
        "--stride", type=positive_int, default=None, help="window step (default: half a window)"
    )
    p.add_argument("--no-bos", action="store_true", help="do not prepend the BOS token")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prints the perplexity of ``args.file``; returns the exit status."""
    if args.file == "-":
        text = sys.stdin.read()
    else:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    model = load(args)
    add_bos = False if args.no_bos else None
    if model.tokenizer is None:
        raise ValueError(f"{model.path}: the model file has no tokenizer")
    n_tokens = len(model.tokenizer.encode(text, add_bos=add_bos)) if text else 0
    stride = args.stride if args.stride is not None else max(1, model.n_ctx // 2)
    if stride > model.n_ctx:
        raise ValueError(f"--stride {stride} is longer than the window of {model.n_ctx} tokens")
    t0 = time.perf_counter()
    ppl = model.perplexity(text, stride=stride, add_bos=add_bos)
    seconds = time.perf_counter() - t0
    result = {
        "file": args.file,
        "perplexity": ppl,
        "tokens": n_tokens,
        "n_ctx": model.n_ctx,
        "stride": stride,
        "seconds": seconds,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"perplexity: {ppl:.4f} ({n_tokens} tokens, window {model.n_ctx}, stride {stride}, "
            f"{seconds:.1f} s)"
        )
    return 0

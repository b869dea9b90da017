"""``bitnet generate [-m MODEL] -p PROMPT``: stream a model's continuation of a prompt to stdout.

Also home of the options shared by the model commands (``chat``, ``perplexity``, ``bench``):
:func:`add_model_args` (``-m``, ``--threads``, ``--ctx``, ``--revision``, ``--weight-type``),
:func:`add_sampling_args` (flags mirroring :meth:`bitnet.Model.generate`) and :func:`load`.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

# ----------------------------------------------------------------------------- argument types


def _number(kind: type, lo: float | None, hi: float | None, lo_open: bool = False) -> Any:
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a{'n integer' if kind is int else ' number'}: {text!r}"
            ) from None
        if kind is float and v != v:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo}, got {text}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi}, got {text}")
        return v

    return parse


positive_int = _number(int, 1, None)
non_negative_int = _number(int, 0, None)


def add_model_args(p: argparse.ArgumentParser, ctx_help: str | None = None) -> None:
    """``-m MODEL`` (optional; default :data:`bitnet.model.DEFAULT_MODEL`) and the loading
    options (``--threads``, ``--ctx``, ``--revision``, ``--weight-type``)."""
    p.add_argument(
        "-m",
        "--model",
        default=None,
        metavar="MODEL",
        help="a .gguf file, a Hugging Face repo id (owner/name, converted and cached if it "
        "has no GGUF) or a checkpoint directory (default: the small Shakespeare model "
        "shipped in the package, bitnet/data/default.gguf)",
    )
    p.add_argument("--threads", type=positive_int, default=None, help="compute threads")
    p.add_argument(
        "--ctx",
        type=positive_int,
        default=None,
        metavar="N",
        help=ctx_help or "context length (KV cache tokens; default: the model's)",
    )
    p.add_argument("--revision", default=None, help="branch, tag or commit of a repo id")
    p.add_argument(
        "--weight-type",
        default="i2_s",
        choices=("i2_s", "tq1_0", "tq2_0", "f16", "f32"),
        help="weight storage when a checkpoint is converted (default i2_s)",
    )


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """The generation flags; they mirror :meth:`bitnet.Model.generate`'s parameters."""
    p.add_argument("--max-new-tokens", type=non_negative_int, default=128, metavar="N")
    p.add_argument(
        "--temperature",
        type=_number(float, 0.0, None),
        default=0.8,
        help="0 is greedy (default 0.8)",
    )
    p.add_argument("--top-k", type=non_negative_int, default=40, help="0: off (default 40)")
    p.add_argument(
        "--top-p", type=_number(float, 0.0, 1.0, lo_open=True), default=0.95, help="default 0.95"
    )
    p.add_argument("--min-p", type=_number(float, 0.0, 1.0), default=0.05, help="default 0.05")
    p.add_argument(
        "--repetition-penalty",
        type=_number(float, 0.0, None, lo_open=True),
        default=1.0,
        help="1: off (default)",
    )
    p.add_argument("--frequency-penalty", type=_number(float, None, None), default=0.0)
    p.add_argument("--presence-penalty", type=_number(float, None, None), default=0.0)
    p.add_argument(
        "--seed", type=_number(int, 0, 2**64 - 1), default=None, help="RNG seed (default: random)"
    )
    p.add_argument(
        "--stop",
        action="append",
        default=None,
        metavar="TEXT",
        help="stop string (repeatable); the output ends before it",
    )


def sampling_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for :meth:`bitnet.Model.generate` from the parsed flags."""
    return dict(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        frequency_penalty=args.frequency_penalty,
        presence_penalty=args.presence_penalty,
        seed=args.seed,
        stop=args.stop,
    )


def load(args: argparse.Namespace, **kwargs: Any) -> Any:
    """Loads ``args.model`` (None: the packaged default model) with the loading flags."""
    from ..model import Model

    return Model.load(
        args.model,
        threads=args.threads,
        n_ctx=args.ctx,
        revision=args.revision,
        weight_type=args.weight_type,
        **kwargs,
    )


# ----------------------------------------------------------------------------- the command


def register(sub: argparse._SubParsersAction) -> None:
    """Adds the ``generate`` subcommand to the ``bitnet`` parser."""
    p = sub.add_parser(
        "generate",
        help="generate text from a prompt (streams to stdout)",
        description="Generate a continuation of a prompt and stream it to stdout as it is "
        "produced. Only the new text is printed, followed by a newline.",
    )
    add_model_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-p", "--prompt", help="the prompt text")
    src.add_argument("-f", "--file", help="read the prompt from this file ('-': stdin)")
    add_sampling_args(p)
    p.add_argument("--no-bos", action="store_true", help="do not prepend the BOS token")
    p.add_argument("-v", "--verbose", action="store_true", help="print timing to stderr at the end")
    p.set_defaults(func=run)


def _prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None:
        return args.prompt
    if args.file == "-":
        return sys.stdin.read()
    with open(args.file, encoding="utf-8") as f:
        return f.read()


def run(args: argparse.Namespace) -> int:
    """Loads the model and streams the generated text; returns the exit status."""
    prompt = _prompt(args)
    t0 = time.perf_counter()
    model = load(args)
    t1 = time.perf_counter()
    pieces = model.stream(prompt, add_bos=False if args.no_bos else None, **sampling_options(args))
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    if args.verbose:
        t2 = time.perf_counter()
        n = len(pieces.token_ids)
        print(
            f"load {t1 - t0:.2f} s; {len(pieces.prompt_ids)} prompt + {n} generated tokens in "
            f"{t2 - t1:.2f} s ({n / max(t2 - t1, 1e-9):.1f} tokens/s); "
            f"finish: {pieces.finish_reason}",
            file=sys.stderr,
        )
    return 0

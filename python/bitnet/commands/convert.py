"""``bitnet convert SRC -o OUT.gguf``: HuggingFace BitNet checkpoint -> GGUF.

SRC is a checkpoint directory or a Hugging Face repo id. The last line of stdout is the written
file (or, with ``--json``, stdout is the report as one JSON object); the report table, warnings
and progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

WEIGHT_TYPES = ("i2_s", "tq1_0", "tq2_0", "f16", "f32")  # = bitnet.convert.WEIGHT_TYPES
EMBED_TYPES = ("f16", "f32", "q8_0", "q4_0")  # = bitnet.convert.EMBED_TYPES


def register(sub: argparse._SubParsersAction) -> None:
    """Adds the ``convert`` subcommand to the ``bitnet`` parser."""
    p = sub.add_parser(
        "convert",
        help="convert a HuggingFace BitNet checkpoint to GGUF",
        description=(
            "Convert a HuggingFace BitNet checkpoint (BitNetForCausalLM, e.g. "
            "microsoft/bitnet-b1.58-2B-4T, or 1bitLLM's BitnetForCausalLM) to a GGUF file: "
            "the BitLinear matrices are ternarized (or unpacked) and stored as --type, the "
            "embedding as --embed-type, norms as f32, with the tokenizer."
        ),
    )
    p.add_argument("src", metavar="SRC", help="checkpoint directory or repo id 'owner/name'")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT.gguf",
        default=None,
        help="file to write (default: <SRC name>-<type>.gguf in the current directory)",
    )
    p.add_argument(
        "--type",
        dest="weight_type",
        choices=WEIGHT_TYPES,
        default="i2_s",
        help="ternary weight storage: i2_s (bitnet.cpp), tq1_0 / tq2_0 (llama.cpp), or "
        "f16 / f32 (dequantized) (default: i2_s)",
    )
    p.add_argument(
        "--embed-type",
        choices=EMBED_TYPES,
        default="f16",
        help="token embedding (and untied head) storage (default: f16)",
    )
    p.add_argument("--revision", default=None, help="branch, tag or commit of a repo id")
    p.add_argument("--cache-dir", default=None, help="Hugging Face cache directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no report table")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.set_defaults(func=run)


def default_output(src: str, weight_type: str) -> str:
    """``<SRC name>-<type>.gguf``: the last path component of a directory or repo id."""
    name = os.path.basename(os.path.normpath(os.path.expanduser(src))) or "model"
    return f"{name}-{weight_type}.gguf"


def run(args: argparse.Namespace) -> int:
    """Runs the conversion; returns the exit status."""
    from ..convert import ConversionWarning, convert_with_report

    out = args.output or default_output(args.src, args.weight_type)
    table = not (args.quiet or args.json)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConversionWarning)
        rep = convert_with_report(
            args.src,
            out,
            args.weight_type,
            args.embed_type,
            revision=args.revision,
            cache_dir=args.cache_dir,
            progress=not args.quiet,
            report=table,
        )
    for w in caught:
        if not issubclass(w.category, ConversionWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        elif not table:  # the table lists the conversion warnings itself
            print(f"bitnet convert: warning: {w.message}", file=sys.stderr)
    if args.json:
        print(json.dumps(rep.to_dict(), indent=1), flush=True)
    else:
        print(rep.path, flush=True)
    return 0

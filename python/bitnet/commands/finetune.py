"""``bitnet finetune -m MODEL --data FILE.jsonl --out ADAPTER_DIR``: LoRA on a frozen BitNet base.

Loads the base (a ``.gguf`` file or a transformers checkpoint directory), reads JSONL
instruction data (``{"prompt", "response"}`` or ``{"messages": [...]}``; loss on the responses
only), trains LoRA adapters with AdamW and writes them in PEFT's layout (``adapter_config.json``
+ ``adapter_model.safetensors``). ``--merge-to merged.gguf`` also merges them into the weights
(for a GGUF base on its own ternary grid, the file copied with only the adapted matrices
replaced; for a checkpoint base by absmean re-quantization of the merged master weights), prints
the rounding report and writes a GGUF that ``bitnet generate`` runs.
``--adapter DIR --prompt TEXT`` (without ``--data``) runs the base with a saved adapter,
unmerged, and prints the continuation. The progress bar and reports go to stderr; stdout gets
``adapter: DIR`` (and ``gguf: PATH``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

from .generate import non_negative_int, positive_int


def _float(lo: float, hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> Any:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        bad = not math.isfinite(v) or v < lo or (lo_open and v == lo)
        bad = bad or (hi is not None and (v > hi or (hi_open and v == hi)))
        if bad:
            left = "(" if lo_open else "["
            right = ")" if hi is None or hi_open else "]"
            raise argparse.ArgumentTypeError(
                f"must be in {left}{lo:g}, {'inf' if hi is None else f'{hi:g}'}{right}, got {text}"
            )
        return v

    return parse


def _modules(text: str) -> list[str]:
    from ..lora.config import TARGET_MODULES

    names = [t.strip() for t in text.split(",") if t.strip()]
    if text.strip() == "all-linear":
        return list(TARGET_MODULES)
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of module names")
    for n in names:
        if n not in TARGET_MODULES:
            raise argparse.ArgumentTypeError(
                f"unknown target module {n!r}; choose from {','.join(TARGET_MODULES)}"
            )
    return names


def register(sub: argparse._SubParsersAction) -> None:
    """Adds the ``finetune`` subcommand to the ``bitnet`` parser."""
    p = sub.add_parser(
        "finetune",
        help="LoRA fine-tuning on a frozen ternary base (PEFT-compatible adapters)",
        description=(
            "Train LoRA adapters on instruction data (JSONL: prompt/response or chat messages; "
            "loss on the responses only) over a frozen 1.58-bit base, save them in PEFT's "
            "layout, and optionally merge them into a GGUF (docs/lora.md)."
        ),
    )
    p.add_argument(
        "-m",
        "--model",
        default=None,
        metavar="MODEL",
        help="base model: a .gguf file or a HF checkpoint directory (default: the small "
        "Shakespeare model shipped in the package, bitnet/data/default.gguf)",
    )
    p.add_argument(
        "--data",
        metavar="FILE.jsonl",
        default=None,
        help="instruction data (one JSON record per line)",
    )
    p.add_argument("--out", metavar="ADAPTER_DIR", default=None, help="where the adapter goes")
    g = p.add_argument_group("LoRA")
    g.add_argument("--r", type=positive_int, default=8, help="adapter rank (default 8)")
    g.add_argument(
        "--alpha",
        type=_float(0.0, lo_open=True),
        default=16.0,
        help="scaling numerator, update x alpha/r (default 16)",
    )
    g.add_argument(
        "--dropout",
        type=_float(0.0, 1.0, hi_open=True),
        default=0.0,
        help="dropout on the adapter input, in [0, 1) (default 0)",
    )
    g.add_argument(
        "--target-modules",
        type=_modules,
        default=None,
        metavar="LIST",
        help="comma-separated projections, e.g. q_proj,v_proj (default: all seven: "
        "q,k,v,o,gate,up,down)",
    )
    g = p.add_argument_group("optimization")
    g.add_argument("--steps", type=positive_int, default=100, help="optimizer steps (default 100)")
    g.add_argument(
        "--lr",
        type=_float(0.0, lo_open=True),
        default=2e-4,
        help="peak learning rate (default 2e-4)",
    )
    g.add_argument("--warmup", type=non_negative_int, default=0, help="warm-up steps")
    g.add_argument("--schedule", choices=("cosine", "linear", "constant"), default="cosine")
    g.add_argument("--weight-decay", type=_float(0.0), default=0.0, help="default 0")
    g.add_argument("--grad-clip", type=_float(0.0), default=1.0, help="0: off (default 1)")
    g.add_argument("--batch-size", type=positive_int, default=4, help="examples per step (4)")
    g.add_argument(
        "--seq-len",
        type=positive_int,
        default=512,
        help="tokens per example, longer ones are truncated (default 512)",
    )
    g.add_argument("--seed", type=non_negative_int, default=0, help="init / data order seed")
    g.add_argument("--threads", type=positive_int, default=None, help="compute threads")
    g = p.add_argument_group("output")
    g.add_argument(
        "--merge-to",
        metavar="MERGED.gguf",
        default=None,
        help="merge the adapter into the base and write this GGUF (a GGUF base keeps its "
        "scales: codes move where the update crosses half a grid step)",
    )
    g.add_argument(
        "--merge-type",
        choices=("i2_s", "tq1_0", "tq2_0"),
        default=None,
        help="ternary storage of --merge-to (default: each matrix's own type for a GGUF "
        "base, i2_s for a checkpoint)",
    )
    g = p.add_argument_group("run with an adapter (no training)")
    g.add_argument(
        "--adapter",
        metavar="DIR",
        default=None,
        help="a saved adapter to run with --prompt (unmerged)",
    )
    g.add_argument("--prompt", default=None, help="text to continue with --adapter")
    g.add_argument("--max-new-tokens", type=non_negative_int, default=32, help="default 32")
    g.add_argument("--temperature", type=_float(0.0), default=0.0, help="0: greedy (default)")
    g.add_argument("--quiet", action="store_true", help="no progress bar or report")
    p.set_defaults(func=run)


def _base(args: argparse.Namespace) -> str:
    """``-m MODEL``, or the packaged default model when it is not given."""
    if args.model is not None:
        return str(args.model)
    from ..model import DEFAULT_MODEL

    if not DEFAULT_MODEL.is_file():
        raise FileNotFoundError(
            f"the default model {DEFAULT_MODEL} is missing from this installation; give -m MODEL"
        )
    return str(DEFAULT_MODEL)


def run(args: argparse.Namespace) -> int:
    """Runs the fine-tuning (or the adapter generation); returns the exit status."""
    from ..lora import LoraConfig, LoraModel, LoraTrainConfig, LoraTrainer, load_instructions

    quiet = args.quiet

    def say(msg: str) -> None:
        if not quiet:
            print(f"bitnet finetune: {msg}", file=sys.stderr, flush=True)

    if args.threads is not None:
        from ..ops import set_num_threads

        set_num_threads(args.threads)
    if args.adapter is not None:
        if args.data is not None or args.prompt is None:
            raise ValueError("--adapter runs a saved adapter: give --prompt, not --data")
        model = LoraModel.from_pretrained(_base(args), args.adapter)
        text = model.generate(
            args.prompt,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            seed=args.seed,
        )
        print(text)
        return 0
    if args.data is None or args.out is None:
        raise ValueError("training needs --data FILE.jsonl and --out ADAPTER_DIR")
    cfg = LoraConfig(
        r=args.r,
        alpha=args.alpha,
        dropout=args.dropout,
        target_modules=args.target_modules or LoraConfig().target_modules,
    )
    model = LoraModel(_base(args), cfg, seed=args.seed)
    say(repr(model))
    data = load_instructions(args.data, model.tokenizer, args.seq_len)
    say(f"{len(data)} example(s), {data.trained_tokens} response tokens from {args.data}")
    tcfg = LoraTrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        seed=args.seed,
        progress=not quiet,
    )
    trainer = LoraTrainer(model, data, tcfg)
    hist = trainer.train()
    if hist:
        say(f"loss {hist[0]['loss']:.4f} -> {hist[-1]['loss']:.4f} over {len(hist)} steps")
    out = model.save_adapter(Path(os.path.expanduser(args.out)))
    print(f"adapter: {out}", flush=True)
    if args.merge_to is not None:
        report = model.merge(args.merge_to, weight_type=args.merge_type)
        if not quiet:
            print(report.format(), file=sys.stderr, flush=True)
        print(f"gguf: {report.gguf}", flush=True)
    return 0

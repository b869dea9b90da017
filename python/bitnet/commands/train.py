"""``bitnet train --data PATH --out DIR``: quantization-aware training of a BitNet b1.58 model.

Reads text (``.txt`` / ``.jsonl`` / ``.csv`` / ``.parquet`` or a directory of them), trains a
byte-level BPE tokenizer (``--vocab-size``) or uses ``--tokenizer``, builds a model from
``--preset`` / ``--config`` (or ``--init`` weights, or the checkpoint of ``--resume``), trains it
with AdamW and writes ``DIR/checkpoint-<step>/`` (HF ``BitNetForCausalLM`` weights, optimizer
and trainer state, tokenizer). ``--export out.gguf`` converts the result. The progress bar and
log lines go to stderr; stdout gets ``checkpoint: PATH`` (and ``gguf: PATH``), the last line
being the most useful artefact.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from .generate import non_negative_int, positive_int

PRESETS: dict[str, dict[str, Any]] = {
    # ~0.3M ternary parameters: a smoke test that trains in seconds on a laptop.
    "tiny": dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    ),
    # ~25M ternary parameters: learns a small corpus in minutes to hours on CPU.
    "small": dict(
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=1024,
    ),
}
"""``--preset`` values: :class:`~bitnet.train.config.TrainModelConfig` fields (``vocab_size``
comes from the tokenizer). Sizes are multiples of 128, so the default ``i2_s`` export works."""

WEIGHT_TYPES = ("i2_s", "tq1_0", "tq2_0", "f16", "f32")  # = bitnet.convert.WEIGHT_TYPES
EMBED_TYPES = ("f16", "f32", "q8_0", "q4_0")  # = bitnet.convert.EMBED_TYPES


def _float(lo: float, hi: float | None = None, lo_open: bool = False) -> Any:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(v) or v < lo or (lo_open and v == lo) or (hi is not None and v > hi):
            span = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}"
            raise argparse.ArgumentTypeError(
                f"must be in {span}{')' if hi is None else ']'}, got {text}"
            )
        return v

    return parse


def register(sub: argparse._SubParsersAction) -> None:
    """Adds the ``train`` subcommand to the ``bitnet`` parser."""
    from ..train.trainer import SCHEDULES, TrainConfig

    d = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train a BitNet b1.58 model on text (quantization-aware, AdamW)",
        description=(
            "Train a BitNet b1.58 model (ternary BitLinear weights trained with the "
            "straight-through estimator) on a text corpus, with checkpoints that resume "
            "exactly and an optional GGUF export."
        ),
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        required=True,
        metavar="PATH",
        help="a .txt / .jsonl / .csv / .parquet file, or a directory of them",
    )
    g.add_argument(
        "--text-field", default="text", help="JSON field / CSV or parquet column (default text)"
    )
    g.add_argument(
        "--txt-blocks",
        action="store_true",
        help="split .txt files into documents at blank lines (default: one document per file)",
    )
    g.add_argument(
        "--val-fraction",
        type=_float(0.0, 0.5),
        default=0.05,
        help="tail of the token stream held out for evaluation (default 0.05; 0: none)",
    )
    g = p.add_argument_group("model and tokenizer")
    m = g.add_mutually_exclusive_group()
    m.add_argument(
        "--preset", choices=tuple(PRESETS), default=None, help="model size (default tiny)"
    )
    m.add_argument(
        "--config",
        metavar="MODEL.json",
        default=None,
        help="a HF BitNetForCausalLM config.json, or a JSON object of TrainModelConfig fields",
    )
    m.add_argument(
        "--init",
        metavar="DIR",
        default=None,
        help="start from the weights of a HF BitNetForCausalLM checkpoint directory",
    )
    t = g.add_mutually_exclusive_group()
    t.add_argument(
        "--tokenizer", metavar="PATH", default=None, help="a tokenizer.json (or its directory)"
    )
    t.add_argument(
        "--vocab-size",
        type=_intrange(259),
        default=None,
        help="train a byte-level BPE tokenizer of this size on the data (default 4096)",
    )
    g.add_argument("--model-seed", type=non_negative_int, default=0, help="init seed (default 0)")
    g = p.add_argument_group("optimization")
    g.add_argument("--steps", type=positive_int, default=d.steps, help=f"default {d.steps}")
    g.add_argument(
        "--batch-size",
        type=positive_int,
        default=d.batch_size,
        help=f"sequences per micro-batch (default {d.batch_size})",
    )
    g.add_argument("--seq-len", type=positive_int, default=d.seq_len, help=f"default {d.seq_len}")
    g.add_argument(
        "--grad-accum",
        type=positive_int,
        default=d.grad_accum,
        help="micro-batches per step (default 1)",
    )
    g.add_argument("--lr", type=_float(0.0), default=d.lr, help=f"peak learning rate ({d.lr})")
    g.add_argument("--min-lr", type=_float(0.0), default=d.min_lr, help=f"default {d.min_lr}")
    g.add_argument("--warmup", type=non_negative_int, default=d.warmup, help="warm-up steps")
    g.add_argument(
        "--schedule", choices=SCHEDULES, default=d.schedule, help=f"default {d.schedule}"
    )
    g.add_argument(
        "--stage2-lr",
        type=_float(0.0),
        default=None,
        help="two_stage: learning rate after the split (default 0.4 x lr)",
    )
    g.add_argument(
        "--weight-decay", type=_float(0.0), default=d.weight_decay, help=f"default {d.weight_decay}"
    )
    g.add_argument(
        "--beta1", type=_float(0.0, 0.999999), default=d.betas[0], help=f"default {d.betas[0]}"
    )
    g.add_argument(
        "--beta2", type=_float(0.0, 0.999999), default=d.betas[1], help=f"default {d.betas[1]}"
    )
    g.add_argument(
        "--grad-clip",
        type=_float(0.0),
        default=d.grad_clip,
        help=f"max global gradient norm, 0: off (default {d.grad_clip})",
    )
    g.add_argument(
        "--lambda-warmup",
        type=non_negative_int,
        default=0,
        metavar="STEPS",
        help="ramp BitLinear quantization in over STEPS (0: ternary from the start)",
    )
    g.add_argument("--seed", type=non_negative_int, default=0, help="data order seed")
    g.add_argument("--threads", type=positive_int, default=None, help="compute threads")
    g = p.add_argument_group("evaluation, checkpoints and output")
    g.add_argument("--out", required=True, metavar="DIR", help="output directory")
    g.add_argument(
        "--resume",
        metavar="DIR",
        default=None,
        help="continue from a checkpoint directory (or a run's --out: its latest checkpoint)",
    )
    g.add_argument(
        "--eval-every", type=non_negative_int, default=0, help="steps (0: only at the end)"
    )
    g.add_argument(
        "--eval-batches",
        type=non_negative_int,
        default=d.eval_batches,
        help=f"validation batches per evaluation (0: all; default {d.eval_batches})",
    )
    g.add_argument(
        "--save-every", type=non_negative_int, default=0, help="steps (0: only at the end)"
    )
    g.add_argument(
        "--log-every", type=non_negative_int, default=0, help="log line every N steps (0: none)"
    )
    g.add_argument("--export", metavar="OUT.gguf", default=None, help="convert the result to GGUF")
    g.add_argument(
        "--export-type",
        choices=WEIGHT_TYPES,
        default="i2_s",
        help="ternary weight storage of --export (default i2_s)",
    )
    g.add_argument(
        "--export-embed-type",
        choices=EMBED_TYPES,
        default="f16",
        help="embedding storage of --export (default f16)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _intrange(lo: int) -> Any:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {text}")
        return v

    return parse


def _model_config(args: argparse.Namespace, vocab: int, bos: int | None, eos: int | None) -> Any:
    """The TrainModelConfig of --config / --preset, sized for a tokenizer of ``vocab`` ids."""
    from ..train.config import TrainModelConfig

    if args.config is not None:
        path = Path(os.path.expanduser(args.config))
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such model config file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object")
        if "architectures" in d or "model_type" in d:
            fields = vars(TrainModelConfig.from_hf_config(d))
        else:
            fields = dict(d)
            fields.setdefault("vocab_size", vocab)
        try:
            cfg = TrainModelConfig(**fields)
        except TypeError as e:
            raise ValueError(f"{path}: {e}") from None
        if cfg.vocab_size < vocab:
            raise ValueError(
                f"{path}: vocab_size {cfg.vocab_size} is smaller than the tokenizer's {vocab} ids"
            )
    else:
        fields = dict(PRESETS[args.preset or "tiny"])
        fields["max_position_embeddings"] = max(fields["max_position_embeddings"], args.seq_len)
        cfg = TrainModelConfig(vocab_size=vocab, **fields)
    if cfg.bos_token_id is None and bos is not None:
        cfg.bos_token_id = bos
    if cfg.eos_token_id is None and eos is not None:
        cfg.eos_token_id = eos
    return cfg


def run(args: argparse.Namespace) -> int:
    """Runs the training; returns the exit status."""
    from ..train import checkpoint as ckpt
    from ..train.config import TrainModelConfig
    from ..train.data import (
        TokenDataset,
        encode_texts,
        load_texts,
        load_tokenizer,
        save_tokenizer,
        special_token_ids,
        split_train_val,
        train_bpe_tokenizer,
    )
    from ..train.model import BitNetForTraining
    from ..train.trainer import TrainConfig, Trainer

    out = Path(os.path.expanduser(args.out))
    quiet = args.quiet

    def say(msg: str) -> None:
        if not quiet:
            print(f"bitnet train: {msg}", file=sys.stderr, flush=True)

    resume_dir = ckpt.resolve_checkpoint(args.resume) if args.resume else None
    if resume_dir is not None and (args.config or args.preset or args.init):
        raise ValueError(
            "--resume takes the model from the checkpoint; drop --config/--preset/--init"
        )

    texts = load_texts(args.data, text_field=args.text_field, txt_blocks=args.txt_blocks)
    say(f"{len(texts)} document(s) from {args.data}")

    # Tokenizer: given, from the checkpoint being resumed / the --init directory, or trained.
    if args.tokenizer is not None:
        tok = load_tokenizer(args.tokenizer)
    elif resume_dir is not None and (resume_dir / "tokenizer.json").is_file():
        tok = load_tokenizer(resume_dir)
    elif args.init is not None and (Path(args.init) / "tokenizer.json").is_file():
        tok = load_tokenizer(args.init)
    else:
        vocab_size = args.vocab_size or 4096
        say(f"training a byte-level BPE tokenizer of {vocab_size} tokens")
        tok = train_bpe_tokenizer(texts, vocab_size)
    out.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tok, out)
    vocab = tok.get_vocab_size()
    bos, eos = special_token_ids(tok)

    if resume_dir is not None:
        d = json.loads((resume_dir / ckpt.CONFIG_FILE).read_text(encoding="utf-8"))
        model = BitNetForTraining(TrainModelConfig.from_hf_config(d), seed=None)
    elif args.init is not None:
        model = BitNetForTraining.from_pretrained(args.init)
    else:
        model = BitNetForTraining(_model_config(args, vocab, bos, eos), seed=args.model_seed)
    if model.config.vocab_size < vocab:
        raise ValueError(
            f"the tokenizer has {vocab} tokens, more than the model's vocab_size "
            f"{model.config.vocab_size}"
        )

    ids = encode_texts(tok, texts)
    train_ids, val_ids = split_train_val(ids, args.val_fraction, args.seq_len)
    train = TokenDataset(train_ids, args.seq_len)
    val = TokenDataset(val_ids, args.seq_len) if len(val_ids) else None
    say(
        f"{len(ids):,} tokens ({len(train):,} training windows of {args.seq_len}"
        + (f", {len(val):,} validation" if val is not None else "")
        + f"); {model!r}"
    )
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        lr=args.lr,
        min_lr=args.min_lr,
        warmup=args.warmup,
        weight_decay=args.weight_decay,
        betas=(args.beta1, args.beta2),
        grad_clip=args.grad_clip,
        grad_accum=args.grad_accum,
        schedule=args.schedule,
        stage2_lr=args.stage2_lr,
        lambda_warmup_steps=args.lambda_warmup,
        eval_every=args.eval_every,
        eval_batches=args.eval_batches,
        save_every=args.save_every,
        out_dir=str(out),
        seed=args.seed,
        threads=args.threads,
        log_every=args.log_every,
        progress=not quiet,
    )
    trainer = Trainer(model, train, val, config, tokenizer=tok)
    if resume_dir is not None:
        trainer.resume(resume_dir)
        say(f"resumed from {resume_dir} at step {trainer.step}")
    history = trainer.train()
    if trainer.last_checkpoint is None:  # nothing left to train and nothing resumed
        trainer.save_checkpoint()
    if history:
        last = history[-1]
        msg = f"step {last['step']}: loss {last['loss']:.4f}"
        if "eval_loss" in last:
            msg += f", eval loss {last['eval_loss']:.4f} (ppl {last['eval_ppl']:.2f})"
        say(msg)
    print(f"checkpoint: {trainer.last_checkpoint}", flush=True)
    if args.export:
        path = trainer.export_gguf(
            args.export, args.export_type, args.export_embed_type, progress=not quiet
        )
        print(f"gguf: {path}", flush=True)
    return 0

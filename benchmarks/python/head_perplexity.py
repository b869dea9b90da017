"""Perplexity cost of the LM head types (f32, f16, q8_0, q4_0) on a small trained BitNet model.

No trained BitNet model is available offline, so this script trains one (plain PyTorch, QAT)
and measures what storing its tied embedding / LM head in a smaller type costs:

1. Corpus: the docstrings and comments of the Python standard library (the ``.py`` files under
   ``sysconfig.get_paths()["stdlib"]``; test packages, site-packages and the codec tables of
   ``encodings`` left out), one document per file, in sorted path order. A document is held
   out when the first 8 hex digits of the SHA-256 of its relative path are ``< heldout_pct``
   percent of 2**32, so the split is by document and does not depend on which other files
   exist.
2. Tokenizer: a LLaMA-3 style byte-level BPE (LLaMA-3 split regex + ByteLevel, BOS prepended)
   of ``--vocab`` tokens trained with ``tokenizers`` on the training documents only.
3. Model: transformers' ``BitNetForCausalLM`` (the 2B4T recipe scaled down: relu2 FFN,
   GQA, sub-norms, tied embeddings, RoPE theta 500000) trained from scratch with QAT: each
   q/k/v/o/gate/up/down projection computes
   ``F.linear(x + (aq(x) - x).detach(), w + (wq(w) - w).detach())`` (docs/formats.md section 1;
   ``s_w``'s mean in float64 as the converter computes it, so training and the GGUF hold the
   same ternary values). fp32, AdamW, linear warmup + cosine decay, random 256-token windows of
   the training token stream. With ``--minutes`` the schedule follows the elapsed fraction of
   the wall-clock budget (so other jobs on the machine slow it down but do not cut it short;
   the step count is printed, and ``--steps N`` runs a step-driven schedule of the same shape);
   the checkpoint is saved with ``save_pretrained`` (safetensors) plus tokenizer.json /
   tokenizer_config.json.
4. The checkpoint is converted with ``bitnet.convert`` to i2_s weights with each head type, and
   to tq2_0 / tq1_0 weights with an f16 head; ``bitnet.Model.perplexity`` is measured on the
   held-out text (windows of 256 tokens every 128 tokens, each token scored once), and the
   PyTorch QAT model's perplexity on the same token ids with the same windowing.

    PYTHONPATH=build/<name>/pkg python benchmarks/python/head_perplexity.py --out /tmp/headppl
    PYTHONPATH=build/<name>/pkg python benchmarks/python/head_perplexity.py --out /tmp/hp \\
        --minutes 0.5            # smoke run
    ... --out /tmp/headppl --reuse   # re-measure an already trained checkpoint

Results (table, corpus and training statistics) are printed and written to
``<out>/results.json``; see benchmarks/python/HEAD_PERPLEXITY.md for a real run.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import math
import os
import platform
import sys
import sysconfig
import time
import tokenize
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from checkpoints import CHAT_TEMPLATE, LLAMA3_REGEX  # noqa: E402

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
SPECIALS = (BOS, EOS, "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
BITLINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Left out: tests, installed packages, and ``encodings`` (codec tables whose comments are Unicode
# character names, one per line: a fifth of the text, and not natural language).
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
SKIP_DIRS |= {"encodings"}
CONFIGS = (  # (label, weight_type, embed_type): the i2_s head sweep, then the weight types
    ("i2_s", "f32"),
    ("i2_s", "f16"),
    ("i2_s", "q8_0"),
    ("i2_s", "q4_0"),
    ("tq2_0", "f16"),
    ("tq1_0", "f16"),
)


# ------------------------------------------------------------------------------------ corpus
def _document(source: bytes) -> str:
    """The docstrings (module, class, function) and comments of one Python source, in source
    order, as paragraphs separated by blank lines. Consecutive comment lines form one
    paragraph; shebang and coding lines are left out. Raises SyntaxError/tokenize errors."""
    pieces: list[tuple[int, str]] = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and node.body:
                pieces.append((node.body[0].lineno, doc.strip()))
    block: list[str] = []
    block_line = 0
    last_line = -2
    for tok in tokenize.tokenize(io.BytesIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        line = tok.start[0]
        text = tok.string.lstrip("#").strip()
        if line <= 2 and (text.startswith("!") or "coding" in text):
            continue
        if line != last_line + 1 and block:
            pieces.append((block_line, " ".join(block)))
            block = []
        if not block:
            block_line = line
        if text:
            block.append(text)
        last_line = line
    if block:
        pieces.append((block_line, " ".join(block)))
    pieces.sort(key=lambda p: p[0])
    return "\n\n".join(text for _, text in pieces if text)


def stdlib_documents(root: Path | None = None) -> list[tuple[str, str]]:
    """(relative path, text) of every stdlib ``.py`` file with docstrings or comments, sorted by
    path. Files that do not parse on this Python are skipped."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise FileNotFoundError(f"the standard library directory '{root}' does not exist")
    docs = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = Path(dirpath) / name
            try:
                text = _document(path.read_bytes())
            except (SyntaxError, ValueError, tokenize.TokenError, UnicodeDecodeError):
                continue
            if text:
                docs.append((path.relative_to(root).as_posix(), text))
    docs.sort()
    if not docs:
        raise ValueError(f"no documents found under '{root}'")
    return docs


def is_heldout(name: str, pct: float) -> bool:
    """Whether the document ``name`` belongs to the held-out split (``pct`` percent of names)."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) < pct / 100 * 2**32


# ------------------------------------------------------------------------------------ tokenizer
def train_tokenizer(texts: list[str], dst: Path, vocab_size: int) -> Any:
    """Trains the byte-level BPE on ``texts``; writes tokenizer.json and tokenizer_config.json
    into ``dst`` and returns the ``tokenizers.Tokenizer`` (BOS id 0, EOS id 1)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[AddedToken(s, special=True) for s in SPECIALS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos)]
    )
    dst.mkdir(parents=True, exist_ok=True)
    tok.save(str(dst / "tokenizer.json"))
    cfg = {
        "add_bos_token": True,
        "bos_token": BOS,
        "eos_token": EOS,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    return tok


# ------------------------------------------------------------------------------------ model
def act_quant(x: Any) -> Any:
    """Per-token int8 fake quantization (docs/formats.md section 1), fp32."""
    s = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    return (x * s).round().clamp(-128, 127) / s


def weight_quant(w: Any) -> Any:
    """Absmean ternarization ``t * s_w``: ``s_w = max(mean|W|, 1e-5)`` with the mean in float64
    rounded to fp32 once (as bitnet.convert computes it), ``t = clamp(round(W / s_w), -1, 1)``."""
    s = w.detach().abs().double().mean().float().clamp(min=1e-5)
    return (w / s).round().clamp(-1, 1) * s


def enable_qat(model: Any) -> int:
    """Replaces the forward of every BitLinear projection of ``model`` by the straight-through
    QAT form; returns how many were patched."""
    import torch.nn.functional as F

    n = 0
    for layer in model.model.layers:
        for mod in (layer.self_attn, layer.mlp):
            for name in BITLINEAR:
                lin = getattr(mod, name, None)
                if lin is None:
                    continue

                def forward(x: Any, lin: Any = lin) -> Any:
                    w = lin.weight
                    return F.linear(
                        x + (act_quant(x) - x).detach(), w + (weight_quant(w) - w).detach()
                    )

                lin.forward = forward
                n += 1
    if n != 7 * len(model.model.layers):
        raise RuntimeError(f"patched {n} projections, expected {7 * len(model.model.layers)}")
    return n


def make_model(args: argparse.Namespace, vocab: int) -> Any:
    """A fresh fp32 ``BitNetForCausalLM`` with the script's shape (seeded init)."""
    import torch
    from transformers import BitNetConfig, BitNetForCausalLM

    torch.manual_seed(args.seed)
    cfg = BitNetConfig(
        vocab_size=vocab,
        hidden_size=args.hidden,
        intermediate_size=args.ffn,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        hidden_act="relu2",
        max_position_embeddings=args.seq_len,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=1,
    )
    return BitNetForCausalLM(cfg).float()


# ------------------------------------------------------------------------------------ training
def lr_at(progress: float, peak: float, warmup: float) -> float:
    """The learning rate at ``progress`` in [0, 1] of the run: linear warmup to ``peak`` over
    the first ``warmup`` fraction (from ``peak / 100``), then cosine decay to ``peak / 10``."""
    if progress < warmup:
        return peak * max(progress / warmup, 0.01)
    p = min(1.0, (progress - warmup) / (1.0 - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * p)))


def train(model: Any, ids: Any, args: argparse.Namespace) -> dict[str, Any]:
    """QAT training on random windows of the token stream ``ids`` (int64 tensor).

    With ``args.steps`` the run has that many steps and its progress is ``step / steps``;
    otherwise it runs for ``args.minutes`` of wall clock and its progress (which drives the
    warmup + cosine schedule of :func:`lr_at`) is the elapsed fraction of that budget, so a run
    slowed down by other jobs on the machine still completes its schedule. Returns statistics
    (steps, tokens, seconds, losses)."""
    import torch

    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim == 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim == 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": rest, "weight_decay": 0}],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    gen = torch.Generator().manual_seed(args.seed)
    n_windows = len(ids) - args.seq_len - 1
    if n_windows < args.batch:
        raise ValueError(
            f"the training split has {len(ids)} tokens: too few for seq_len {args.seq_len}"
        )
    budget = args.minutes * 60.0
    t0 = time.perf_counter()
    losses: list[float] = []
    step = 0
    while True:
        elapsed = time.perf_counter() - t0
        progress = step / args.steps if args.steps else elapsed / budget
        if progress >= 1.0:
            break
        lr = lr_at(progress, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, n_windows, (args.batch,), generator=gen)
        batch = torch.stack([ids[s : s + args.seq_len + 1] for s in starts.tolist()])
        logits = model(batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % args.log_every == 0 or step == args.steps:
            el = time.perf_counter() - t0
            mean = sum(losses[-args.log_every :]) / len(losses[-args.log_every :])
            print(
                f"  step {step}{f'/{args.steps}' if args.steps else ''} loss {mean:.3f} "
                f"lr {lr:.2e} {step * args.batch * args.seq_len / el:.0f} tok/s "
                f"{el / 60:.1f} min",
                file=sys.stderr,
                flush=True,
            )
    seconds = time.perf_counter() - t0
    model.eval()
    tail = losses[-min(50, len(losses)) :]
    return {
        "steps": step,
        "schedule": f"{args.steps} steps" if args.steps else f"{args.minutes} minutes",
        "lr": args.lr,
        "warmup_fraction": args.warmup,
        "batch": args.batch,
        "seq_len": args.seq_len,
        "tokens": step * args.batch * args.seq_len,
        "epochs": step * args.batch * args.seq_len / len(ids),
        "seconds": seconds,
        "final_train_loss": sum(tail) / len(tail),
        "first_train_loss": losses[0],
    }


# ------------------------------------------------------------------------------------ evaluation
def windowed_nll(
    logits_fn: Callable[[list[int]], Any], ids: list[int], window: int, stride: int
) -> np.ndarray:
    """Per-token NLL (float64, one per scored token, in order) of ``ids`` with
    ``bitnet.Model.perplexity``'s windowing: windows of ``window`` tokens starting every
    ``stride`` tokens, each token scored once, in the first window that holds it after that
    window's position 0. ``logits_fn(window_ids)`` returns the logits [len, vocab] of a window
    evaluated from position 0; the log-softmax is float64. ``exp(mean)`` is the perplexity."""
    out = []
    prev_end = 0
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        first = max(prev_end, begin + 1)
        x = np.asarray(logits_fn(ids[begin:end]), dtype=np.float64)
        x = x[first - 1 - begin : end - 1 - begin]
        m = x.max(axis=1, keepdims=True)
        lse = (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]
        out.append(lse - x[np.arange(len(x)), np.asarray(ids[first:end])])
        prev_end = end
        if end == len(ids):
            break
    return np.concatenate(out)


def torch_logits_fn(model: Any) -> Callable[[list[int]], np.ndarray]:
    """``logits_fn`` for :func:`windowed_nll` of a transformers causal LM (fp32, no grad)."""
    import torch

    def fn(w: list[int]) -> np.ndarray:
        with torch.no_grad():
            return model(torch.tensor([w], dtype=torch.long)).logits[0].numpy()

    return fn


def measure_gguf(
    path: Path, text: str, ids: list[int], args: argparse.Namespace
) -> tuple[dict[str, Any], np.ndarray]:
    """Loads ``path`` with bitnet and measures ``Model.perplexity`` of ``text`` (whose token ids
    under the file's tokenizer must equal ``ids``). Also returns the per-token NLL from
    ``Model.logits`` with the same windowing, checked against the perplexity (for the paired
    error bars)."""
    import bitnet

    model = bitnet.Model.load(path, threads=args.threads, n_ctx=args.seq_len)
    got = model.tokenizer.encode(text)
    if got != ids:
        raise RuntimeError(f"{path}: the GGUF tokenizer encodes the held-out text differently")
    t0 = time.perf_counter()
    ppl = model.perplexity(text, n_ctx=args.seq_len, stride=args.seq_len // 2)
    seconds = time.perf_counter() - t0
    nll = windowed_nll(model.logits, ids, args.seq_len, args.seq_len // 2)
    if abs(math.log(ppl) - float(nll.mean())) > 1e-6:
        raise RuntimeError(
            f"{path}: Model.perplexity {ppl} disagrees with the per-token NLL from Model.logits "
            f"(exp(mean) = {math.exp(nll.mean())}): the windowing here does not match"
        )
    row = {
        "file": path.name,
        "weight_type": model.config.weight_type,
        "head_type": model.config.head_type,
        "file_size": path.stat().st_size,
        "perplexity": ppl,
        "seconds": seconds,
    }
    return row, nll


def paired_delta(nll: np.ndarray, base: np.ndarray, block: int) -> tuple[float, float]:
    """Perplexity change of ``nll`` relative to ``base`` (same tokens), in percent, and two
    standard errors of it: the per-token NLL differences are averaged over consecutive blocks
    of ``block`` tokens (nearby tokens are correlated) and the standard error of the mean is
    taken over the blocks."""
    d = nll - base
    n = len(d) // block
    if n < 2:
        return 100.0 * math.expm1(float(d.mean())), math.nan
    means = d[: n * block].reshape(n, block).mean(axis=1)
    se = float(means.std(ddof=1)) / math.sqrt(n)
    return 100.0 * math.expm1(float(d.mean())), 100.0 * 2.0 * se


def format_table(rows: list[dict[str, Any]], ref: float) -> str:
    """Markdown table: weights, head, file size, perplexity, delta vs the i2_s/f32 row."""
    base = next(r["perplexity"] for r in rows if r["label"] == "i2_s / f32")
    lines = [
        "| model | weights | head | file size | perplexity | delta vs f32 head | delta % "
        "| 2 SE (paired) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        d = r["perplexity"] - base
        size = f"{r['file_size'] / 1e6:.3f} MB" if r.get("file_size") else "-"
        lines.append(
            f"| {r['label']} | {r['weight_type']} | {r['head_type']} | {size} | "
            f"{r['perplexity']:.4f} | {d:+.4f} | {100 * d / base:+.3f}% | "
            f"{r['delta_2se_pct']:.3f}% |"
        )
    lines.append(
        f"\nPyTorch QAT vs GGUF i2_s / f32: {ref:.5f} vs {base:.5f} "
        f"({100 * (base - ref) / ref:+.4f}%)"
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def _cpu_name() -> str:
    """The CPU model name (Linux /proc/cpuinfo), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="working/output directory")
    p.add_argument("--minutes", type=float, default=12.0, help="training wall-clock budget")
    p.add_argument("--steps", type=int, default=None, help="exact step count (overrides --minutes)")
    p.add_argument("--reuse", action="store_true", help="reuse <out>/hf if already trained")
    p.add_argument("--heldout-pct", type=float, default=8.0)
    p.add_argument("--max-eval-tokens", type=int, default=0, help="0: the whole held-out split")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--ffn", type=int, default=768, help="multiple of 256 (TQ formats)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=float, default=0.05, help="warmup fraction of the run")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2, help="torch and bitnet threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=25)
    a = p.parse_args(argv)
    if a.steps is not None and a.steps < 1:
        p.error("--steps must be >= 1")
    if a.minutes <= 0:
        p.error("--minutes must be > 0")
    if not 0 < a.warmup < 1:
        p.error("--warmup must be in (0, 1)")
    if not 0 < a.heldout_pct < 100:
        p.error("--heldout-pct must be in (0, 100)")
    if a.ffn % 256 or a.hidden % 256:
        p.error("--hidden and --ffn must be multiples of 256 (TQ1_0 / TQ2_0 row blocks)")
    if a.hidden % a.heads or a.heads % a.kv_heads:
        p.error("--hidden must divide by --heads, and --heads by --kv-heads")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    import bitnet
    from bitnet.convert import convert

    torch.set_num_threads(args.threads)
    out = args.out
    hf = out / "hf"
    out.mkdir(parents=True, exist_ok=True)

    docs = stdlib_documents()
    train_docs = [t for n, t in docs if not is_heldout(n, args.heldout_pct)]
    held_docs = [(n, t) for n, t in docs if is_heldout(n, args.heldout_pct)]
    if not train_docs or not held_docs:
        raise ValueError("the held-out split or the training split is empty: change --heldout-pct")
    corpus_sha = hashlib.sha256("\0".join(n + "\0" + t for n, t in docs).encode()).hexdigest()

    reuse = args.reuse and (hf / "model.safetensors").is_file() and (out / "train.json").is_file()
    if reuse:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(hf / "tokenizer.json"))
    else:
        print(f"training the tokenizer on {len(train_docs)} documents", file=sys.stderr)
        tok = train_tokenizer(train_docs, hf, args.vocab)
    train_text = "\n\n".join(train_docs)
    train_ids = torch.tensor(tok.encode(train_text).ids, dtype=torch.long)
    held_text = "\n\n".join(t for _, t in held_docs)
    held_ids = tok.encode(held_text).ids
    if args.max_eval_tokens and len(held_ids) > args.max_eval_tokens:
        # cut at a document boundary so the text stays whole documents
        keep = []
        for _, t in held_docs:
            keep.append(t)
            if len(tok.encode("\n\n".join(keep)).ids) >= args.max_eval_tokens:
                break
        held_text = "\n\n".join(keep)
        held_ids = tok.encode(held_text).ids
    corpus = {
        "python": platform.python_version(),
        "stdlib": sysconfig.get_paths()["stdlib"],
        "sha256": corpus_sha,
        "documents": len(docs),
        "train_documents": len(train_docs),
        "train_chars": len(train_text),
        "train_tokens": len(train_ids),
        "heldout_documents": len(held_docs),
        "eval_chars": len(held_text),
        "eval_tokens": len(held_ids),
        "heldout_names": [n for n, _ in held_docs],
    }
    print(json.dumps({k: v for k, v in corpus.items() if k != "heldout_names"}), file=sys.stderr)

    if reuse:
        from transformers import BitNetForCausalLM

        model = BitNetForCausalLM.from_pretrained(str(hf), dtype=torch.float32)
        stats = json.loads((out / "train.json").read_text())
        for key, now in (("heldout_pct", args.heldout_pct), ("corpus_sha256", corpus_sha)):
            if key in stats and stats[key] != now:
                raise ValueError(
                    f"--reuse: {out / 'train.json'} was trained with {key} {stats[key]!r}, this "
                    f"run has {now!r}: the held-out split would differ (retrain without --reuse)"
                )
    else:
        model = make_model(args, tok.get_vocab_size())
        n_params = sum(p.numel() for p in model.parameters())
        print(f"model: {n_params / 1e6:.2f} M parameters", file=sys.stderr)
        enable_qat(model)
        stats = train(model, train_ids, args)
        stats.update(parameters=n_params, heldout_pct=args.heldout_pct, corpus_sha256=corpus_sha)
        model.save_pretrained(str(hf), safe_serialization=True)
        (out / "train.json").write_text(json.dumps(stats, indent=2))
    enable_qat(model)
    model.eval()

    t0 = time.perf_counter()
    window, stride = args.seq_len, args.seq_len // 2
    ref_nll = windowed_nll(torch_logits_fn(model), held_ids, window, stride)
    ref = math.exp(float(ref_nll.mean()))
    print(f"PyTorch QAT perplexity {ref:.5f} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    # the same measurement on as many training tokens: the generalization gap
    train_nll = windowed_nll(
        torch_logits_fn(model), train_ids[: len(held_ids)].tolist(), window, stride
    )
    train_ppl = math.exp(float(train_nll.mean()))
    print(
        f"PyTorch QAT perplexity on {len(held_ids)} training tokens {train_ppl:.5f}",
        file=sys.stderr,
    )

    rows: list[dict[str, Any]] = []
    nlls: list[np.ndarray] = []
    for wt, et in CONFIGS:
        path = out / f"model-{wt}-{et}.gguf"
        convert(hf, path, weight_type=wt, embed_type=et, progress=False, report=False)
        r, nll = measure_gguf(path, held_text, held_ids, args)
        r["label"] = f"{wt} / {et}"
        rows.append(r)
        nlls.append(nll)
        print(f"  {r['label']}: {r['perplexity']:.5f} ({r['seconds']:.1f} s)", file=sys.stderr)
    rows.append(
        {"label": "PyTorch QAT", "weight_type": "fp32 QAT", "head_type": "f32", "perplexity": ref}
    )
    nlls.append(ref_nll)
    for r, nll in zip(rows, nlls, strict=True):
        r["delta_pct"], r["delta_2se_pct"] = paired_delta(nll, nlls[0], stride)
    table = format_table(rows, ref)
    c = model.config
    result = {
        "corpus": corpus,
        "train": stats,
        "model": {
            "vocab": c.vocab_size,
            "hidden": c.hidden_size,
            "layers": c.num_hidden_layers,
            "heads": c.num_attention_heads,
            "kv_heads": c.num_key_value_heads,
            "ffn": c.intermediate_size,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "torch_perplexity": ref,
        "torch_train_subset_perplexity": train_ppl,
        "rows": rows,
        "machine": {
            "platform": platform.platform(),
            "cpu": _cpu_name(),
            "isa": bitnet.ops.active_isa(),
            "threads": args.threads,
        },
        "table": table,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(
        f"corpus: {corpus['documents']} stdlib files (Python {corpus['python']}), train "
        f"{corpus['train_chars']} chars / {corpus['train_tokens']} tokens, held out "
        f"{corpus['heldout_documents']} files / {corpus['eval_tokens']} tokens"
    )
    print(
        f"training: {stats['steps']} steps x {stats['batch']} x {stats['seq_len']} = "
        f"{stats['tokens']} tokens ({stats['epochs']:.2f} epochs) in {stats['seconds'] / 60:.1f} "
        f"min, final train loss {stats['final_train_loss']:.3f}"
    )
    print(
        f"PyTorch QAT perplexity on the first {len(held_ids)} training tokens (same windowing): "
        f"{train_ppl:.4f}"
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write a GGUF with the exact BitNet b1.58 2B4T shapes and random ternary weights.

The real weights cannot be downloaded here, and speed does not depend on their values, so the
model benchmarks run on files like this one (docs/formats.md section 4): hidden 2560, 30 layers,
20 query / 5 KV heads of 128, FFN 6912, vocab 128256, context 4096, RoPE theta 500000, ReLU^2,
tied head. BitLinear matrices are random ternary in the chosen weight type (``i2_s`` writes
architecture ``bitnet-b1.58`` as bitnet.cpp does, the TQ types ``bitnet``); the token embedding
(= the head) is random normal (std 0.02) in the chosen head type; norms are f32 near 1.

Tensors are written one at a time through ``bitnet.gguf.write`` with ``LazyTensor``, so memory
stays about one tensor (the largest is the embedding: 656 MB in f16). A tiny byte-level
tokenizer (256 byte tokens plus ``<|begin_of_text|>`` 128000, ``<|end_of_text|>`` 128001 and
``<|eot_id|>`` 128009) is stored as ``tokenizer.huggingface.json``, so ``bitnet generate`` runs
on the file (its text is random bytes); benchmarks use token ids.

    python benchmarks/python/make_2b4t_gguf.py out/2b4t-i2_s-f16.gguf --weight-type i2_s \
        --head-type f16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bitnet import gguf, ops
from bitnet.convert.architectures import HParams, gguf_metadata
from bitnet.convert.pipeline import FILE_TYPES

WEIGHT_TYPES = ("i2_s", "tq1_0", "tq2_0")
HEAD_TYPES = ("f16", "f32", "q8_0", "q4_0")
BOS, EOS, EOT = 128000, 128001, 128009

SHAPE = HParams(
    architecture="BitNetForCausalLM",
    vocab_size=128256,
    hidden_size=2560,
    intermediate_size=6912,
    n_layers=30,
    n_heads=20,
    n_kv_heads=5,
    head_dim=128,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    context_length=4096,
    hidden_act="relu2",
    tie_word_embeddings=True,
)


def tiny_tokenizer_json() -> str:
    """A byte-level tokenizer.json: ids 0..255 are the bytes (GPT-2's byte-to-unicode
    alphabet), no merges, and the three LLaMA-3 special tokens at their 2B4T ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tj = json.loads(tok.to_str())
    tj["added_tokens"] = [
        {
            "id": i,
            "content": s,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, s in ((BOS, "<|begin_of_text|>"), (EOS, "<|end_of_text|>"), (EOT, "<|eot_id|>"))
    ]
    return json.dumps(tj, ensure_ascii=False)


def _embedding(head_type: str, rng: np.random.Generator) -> Any:
    """The token embedding [vocab, hidden] in ``head_type``, made in row chunks."""
    rows, cols = SHAPE.vocab_size, SHAPE.hidden_size
    chunk = 8192
    if head_type in ("f16", "f32"):
        out = np.empty((rows, cols), dtype=np.float16 if head_type == "f16" else np.float32)
        for r in range(0, rows, chunk):
            n = min(chunk, rows - r)
            out[r : r + n] = 0.02 * rng.standard_normal((n, cols), dtype=np.float32)
        return out
    parts = []
    for r in range(0, rows, chunk):
        n = min(chunk, rows - r)
        x = 0.02 * rng.standard_normal((n, cols), dtype=np.float32)
        parts.append(ops.quantize_blocks(x, head_type))
    return gguf.Tensor(head_type, (rows, cols), np.concatenate(parts, axis=0))


def _ternary(weight_type: str, shape: tuple[int, int], rng: np.random.Generator) -> Any:
    t = rng.integers(-1, 2, size=shape, dtype=np.int8)
    return ops.pack(t, weight_type, float(rng.uniform(0.5, 2.0)))


def _norm(n: int, rng: np.random.Generator) -> np.ndarray:
    return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)


def write(
    path: Path,
    weight_type: str = "i2_s",
    head_type: str = "f16",
    layers: int = SHAPE.n_layers,
    seed: int = 0,
    tokenizer: bool = True,
    progress: bool = True,
) -> Path:
    """Writes the file; returns its path. ``layers`` < 30 makes a shorter model for tests."""
    if weight_type not in WEIGHT_TYPES:
        raise ValueError(f"weight type must be one of {WEIGHT_TYPES}, got {weight_type!r}")
    if head_type not in HEAD_TYPES:
        raise ValueError(f"head type must be one of {HEAD_TYPES}, got {head_type!r}")
    hp = HParams(**{**SHAPE.__dict__, "n_layers": int(layers)})
    arch = "bitnet-b1.58" if weight_type == "i2_s" else "bitnet"
    md: dict[str, Any] = {
        "general.name": f"bitnet-2b4t-shape-random-{weight_type}-{head_type}",
        "general.file_type": gguf.typed(FILE_TYPES[weight_type], "u32"),
        "general.quantization_version": gguf.typed(2, "u32"),
    }
    md.update(gguf_metadata(hp, arch))
    if tokenizer:
        md.update(
            {
                "tokenizer.ggml.bos_token_id": BOS,
                "tokenizer.ggml.eos_token_id": EOS,
                "tokenizer.ggml.add_bos_token": True,
                "tokenizer.huggingface.json": tiny_tokenizer_json(),
            }
        )
    h, f = hp.hidden_size, hp.intermediate_size
    q, kv = hp.n_heads * hp.head_dim, hp.n_kv_heads * hp.head_dim
    rng = np.random.default_rng(seed)
    # One generator per tensor (spawned in file order) keeps the file independent of timing.
    seeds = iter(rng.spawn(2 + 11 * hp.n_layers))

    def lazy(kind: str, shape: tuple[int, ...]) -> gguf.LazyTensor:
        g = next(seeds)
        if kind == "embd":
            return gguf.LazyTensor(head_type, shape, lambda: _embedding(head_type, g))
        if kind == "norm":
            return gguf.LazyTensor("f32", shape, lambda: _norm(shape[0], g))
        return gguf.LazyTensor(weight_type, shape, lambda: _ternary(weight_type, shape, g))

    tensors = [("token_embd.weight", lazy("embd", (hp.vocab_size, h)))]
    for i in range(hp.n_layers):
        for name, kind, shape in (
            ("attn_norm", "norm", (h,)),
            ("attn_q", "ternary", (q, h)),
            ("attn_k", "ternary", (kv, h)),
            ("attn_v", "ternary", (kv, h)),
            ("attn_sub_norm", "norm", (h,)),
            ("attn_output", "ternary", (h, q)),
            ("ffn_norm", "norm", (h,)),
            ("ffn_gate", "ternary", (f, h)),
            ("ffn_up", "ternary", (f, h)),
            ("ffn_sub_norm", "norm", (f,)),
            ("ffn_down", "ternary", (h, f)),
        ):
            tensors.append((f"blk.{i}.{name}.weight", lazy(kind, shape)))
    tensors.append(("output_norm.weight", lazy("norm", (h,))))
    path.parent.mkdir(parents=True, exist_ok=True)
    return gguf.write(path, arch, md, tensors, progress=progress)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("output", type=Path, help="the .gguf file to write")
    p.add_argument("--weight-type", default="i2_s", choices=WEIGHT_TYPES)
    p.add_argument("--head-type", default="f16", choices=HEAD_TYPES)
    p.add_argument("--layers", type=int, default=SHAPE.n_layers, help="(default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-tokenizer", action="store_true", help="store no tokenizer")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if a.layers < 1:
        p.error("--layers must be >= 1")
    t0 = time.perf_counter()
    out = write(
        a.output,
        a.weight_type,
        a.head_type,
        a.layers,
        a.seed,
        tokenizer=not a.no_tokenizer,
        progress=not a.quiet,
    )
    size = out.stat().st_size
    print(f"{out}: {size / 1e9:.3f} GB in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tiny HuggingFace BitNet checkpoints (and tokenizers, and a fake HF cache) for the tests.

Every builder takes a destination directory plus options, writes a complete checkpoint
directory there, and returns it. Weights are random with a fixed seed. Nothing needs network
access or remote code.

* :func:`make_bitnet_checkpoint`: transformers' ``BitNetForCausalLM`` (2B4T layout: ReLU^2,
  GQA, ``attn_sub_norm`` / ``ffn_sub_norm``), master weights in bf16/f16/f32, as one safetensors
  file, sharded safetensors or a PyTorch ``.bin``; or, with ``packed=``, in the HF packed form
  (uint8 ``[out/4, in]`` + ``weight_scale``, packed here from docs/formats.md, not with
  transformers' packer) with ``quantization_config.linear_class`` autobitlinear or bitlinear.
* :func:`make_1bitllm_checkpoint`: 1bitLLM's ``BitnetForCausalLM`` (LLaMA layout, SiLU, sub-norms
  ``inner_attn_ln`` / ``ffn_layernorm``, untied ``lm_head``), built from a ``LlamaForCausalLM``.
* :func:`write_byte_level_tokenizer` (LLaMA-3 style, ``gpt2`` in GGUF) and
  :func:`write_llama_tokenizer` (SentencePiece-style BPE with byte fallback, ``llama``).
* :func:`make_hf_cache`: a checkpoint directory placed in huggingface_hub's cache layout.

The numpy references :func:`ternarize` and :func:`pack_hf` / :func:`unpack_hf` are written from
docs/formats.md sections 1-2 so tests can predict every stored value.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

BITLINEAR = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)
"""The BitLinear projections of a layer (module paths under ``model.layers.N.``)."""

LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
    "\n\n{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

SAMPLE_TEXT = (
    "BitNet b1.58 stores every weight as -1, 0 or +1; it's 1.58 bits per weight!\n"
    "Zürich naïve café: 12345 tokens, 67 890 ... ok? Ünïcödé ✓ 日本語 emoji 🙂 done."
)

_SYLLABLES = (
    "ka bit net ter na ry lo ra mo del wei ght ten sor qua nti ze pa ck ro w co lu mn bl "
    "ock sca le em be dd ing to ke n at te nti on he ad ff n no rm"
).split()


def corpus(seed: int = 0, words: int = 3000) -> list[str]:
    """Deterministic training text: pseudo-words, numbers, punctuation and a few non-ASCII."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(words // 12):
        line = []
        for _ in range(12):
            r = rng.random()
            if r < 0.08:
                line.append(str(int(rng.integers(0, 100000))))
            elif r < 0.12:
                line.append(str(rng.choice(["é", "ü", "naïve", "日本", "—", "...", "!", "?"])))
            else:
                n = int(rng.integers(1, 4))
                line.append("".join(rng.choice(_SYLLABLES, n)))
        lines.append(" ".join(line) + ("." if rng.random() < 0.5 else ","))
    return lines + [SAMPLE_TEXT]


# ---------------------------------------------------------------------------------- references
def ternarize(w: Any) -> tuple[np.ndarray, np.float32]:
    """BitNet b1.58 absmean ternarization in numpy (docs/formats.md sections 1 and 6).

    ``s_w = max(fp32(mean |W|), 1e-5)`` (mean in float64), ``t = clip(rint(W / s_w), -1, 1)`` in
    fp32 (``rint`` rounds half to even). Returns (int8 ``t``, float32 ``s_w``).
    """
    w = np.asarray(w, dtype=np.float32)
    s = np.maximum(np.float32(np.mean(np.abs(w.astype(np.float64)))), np.float32(1e-5))
    t = np.clip(np.rint(w / s), -1, 1).astype(np.int8)
    return t, np.float32(s)


def pack_hf(t: np.ndarray) -> np.ndarray:
    """Ternary int8 ``[out, in]`` -> HF packed uint8 ``[out/4, in]``: bits ``2i`` of packed row
    ``r`` hold the code ``t + 1`` of row ``i * (out/4) + r``."""
    out, k = t.shape
    assert out % 4 == 0, out
    rows = out // 4
    codes = (t.astype(np.int16) + 1).astype(np.uint8)
    packed = np.zeros((rows, k), dtype=np.uint8)
    for i in range(4):
        packed |= codes[i * rows : (i + 1) * rows] << (2 * i)
    return packed


def unpack_hf(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_hf` (code 3 would come out as t = 2)."""
    return np.concatenate([((packed >> (2 * i)) & 3).astype(np.int8) - 1 for i in range(4)])


# ---------------------------------------------------------------------------------- tokenizers
def write_byte_level_tokenizer(dst: Path, *, vocab_size: int = 560, seed: int = 0) -> Path:
    """A LLaMA-3 style byte-level BPE (Split with LLaMA-3's regex + ByteLevel), trained on
    :func:`corpus`: special tokens ``<|begin_of_text|>`` (bos, prepended by the post-processor),
    ``<|end_of_text|>`` (eos), header / ``<|eot_id|>`` tokens, a non-special added token
    ``<tool>``, and a chat template in tokenizer_config.json. Writes tokenizer.json and
    tokenizer_config.json into ``dst``; returns ``dst``."""
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

    specials = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
    ]
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
        special_tokens=[AddedToken(s, special=True) for s in specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(seed), trainer=trainer)
    tok.add_tokens([AddedToken("<tool>", special=False)])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    tok.save(str(dst / "tokenizer.json"))
    cfg = {
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|end_of_text|>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": True,
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    return dst


def write_llama_tokenizer(dst: Path, *, vocab_size: int = 520, seed: int = 0) -> Path:
    """A LLaMA (SentencePiece-converted) style BPE: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, byte
    tokens ``<0x00>``..``<0xFF>`` at 3..258 in the model vocabulary, then trained pieces with
    ``▁`` for spaces; ``byte_fallback``, Metaspace pre-tokenizer, bos prepended. Writes
    tokenizer.json and tokenizer_config.json into ``dst``; returns ``dst``."""
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    base = Tokenizer(models.BPE())
    base.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 259, show_progress=False)
    base.train_from_iterator(corpus(seed), trainer=trainer)
    learned = json.loads(base.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for piece, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
    )
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("\u2581", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tok.add_special_tokens([AddedToken(s, special=True) for s in ("<unk>", "<s>", "</s>")])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    tok.save(str(dst / "tokenizer.json"))
    cfg = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": {"__type": "AddedToken", "content": "<s>", "special": True},
        "eos_token": {"__type": "AddedToken", "content": "</s>", "special": True},
        "unk_token": {"__type": "AddedToken", "content": "<unk>", "special": True},
        "pad_token": None,
        "tokenizer_class": "LlamaTokenizer",
    }
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    return dst


def _tokenizer(dst: Path, kind: str | None, vocab: int) -> None:
    if kind == "byte_level":
        write_byte_level_tokenizer(dst, vocab_size=min(560, vocab))
    elif kind == "llama":
        write_llama_tokenizer(dst, vocab_size=min(520, vocab))
    elif kind is not None:
        raise ValueError(f"unknown tokenizer kind {kind!r}")


# ---------------------------------------------------------------------------------- checkpoints
_TORCH_DTYPES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, _TORCH_DTYPES[name])


def _randomize_norms(model: Any, seed: int) -> None:
    """RMSNorm weights are ones after init; make them distinct so a test can tell them apart."""
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))


def save_state_dict(
    state: dict[str, Any], dst: Path, fmt: str = "safetensors", shard_bytes: int | None = None
) -> None:
    """Writes ``state`` as ``model.safetensors``, sharded safetensors with an index
    (``shard_bytes`` per shard at most, one tensor at least), or ``pytorch_model.bin``."""
    import torch
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in state.items()}
    if fmt == "bin":
        torch.save(state, dst / "pytorch_model.bin")
        return
    if fmt != "safetensors":
        raise ValueError(fmt)
    if shard_bytes is None:
        save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
        return
    shards: list[dict[str, Any]] = [{}]
    size = 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        if shards[-1] and size + n > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += n
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(dst / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
    total = sum(v.numel() * v.element_size() for v in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def read_state_dict(directory: Path) -> dict[str, Any]:
    """Every tensor of a checkpoint written by this module (safetensors, sharded or .bin)."""
    import torch
    from safetensors.torch import load_file

    directory = Path(directory)
    files = sorted(directory.glob("*.safetensors"))
    if files:
        state: dict[str, Any] = {}
        for f in files:
            state.update(load_file(str(f)))
        return state
    return torch.load(directory / "pytorch_model.bin", weights_only=True)


def make_bitnet_checkpoint(
    dst: Path,
    *,
    hidden: int = 256,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    ffn: int = 512,
    vocab: int = 576,
    context: int = 128,
    dtype: str = "bf16",
    fmt: str = "safetensors",
    shard_bytes: int | None = None,
    tie: bool = True,
    packed: str | None = None,
    scale_dtype: str = "bf16",
    tokenizer: str | None = "byte_level",
    seed: int = 0,
) -> Path:
    """A random ``BitNetForCausalLM`` checkpoint in ``dst``; returns ``dst``.

    Args:
        hidden, layers, heads, kv_heads, ffn, vocab, context: the config (head_dim =
            hidden / heads; RMSNorm eps 1e-5, RoPE theta 500000, relu2).
        dtype: master weight dtype: ``bf16``, ``f16`` or ``f32``.
        fmt: ``safetensors`` or ``bin`` (PyTorch ``pytorch_model.bin``).
        shard_bytes: shard the safetensors (max bytes per shard).
        tie: tied embeddings (no ``lm_head.weight``) or an untied head.
        packed: None (master weights), or ``autobitlinear`` / ``bitlinear``: every BitLinear
            weight ternarized with :func:`ternarize`, stored as :func:`pack_hf` uint8 plus a
            ``weight_scale`` of ``s_w`` (autobitlinear) or ``1 / s_w`` (bitlinear) in
            ``scale_dtype``, and ``quantization_config`` set accordingly.
        tokenizer: ``byte_level``, ``llama`` or None (no tokenizer files).
        seed: torch seed of the random init.
    """
    import torch
    from transformers import BitNetConfig, BitNetForCausalLM

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = BitNetConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=context,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie,
        bos_token_id=0,
        eos_token_id=1,
    )
    model = BitNetForCausalLM(cfg)
    _randomize_norms(model, seed)
    model = model.to(_torch_dtype(dtype))
    state = {k: v for k, v in model.state_dict().items() if not (tie and k == "lm_head.weight")}
    config = json.loads(cfg.to_json_string(use_diff=False))
    config["architectures"] = ["BitNetForCausalLM"]
    config["dtype"] = _TORCH_DTYPES[dtype]
    if packed is not None:
        if packed not in ("autobitlinear", "bitlinear"):
            raise ValueError(packed)
        for name in list(state):
            if not any(f".{p}.weight" in name for p in BITLINEAR):
                continue
            t, s = ternarize(state[name].float().numpy())
            state[name] = torch.from_numpy(pack_hf(t))
            scale = s if packed == "autobitlinear" else np.float32(1) / s
            state[name + "_scale"] = torch.tensor([float(scale)], dtype=_torch_dtype(scale_dtype))
        config["quantization_config"] = {
            "quant_method": "bitnet",
            "linear_class": packed,
            "quantization_mode": "offline",
            "use_rms_norm": False,
            "rms_norm_eps": 1e-5,
        }
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    save_state_dict(state, dst, fmt, shard_bytes)
    _tokenizer(dst, tokenizer, vocab)
    return dst


def make_1bitllm_checkpoint(
    dst: Path,
    *,
    hidden: int = 256,
    layers: int = 2,
    heads: int = 4,
    ffn: int = 512,
    vocab: int = 544,
    context: int = 128,
    dtype: str = "f16",
    tie: bool = False,
    tokenizer: str | None = "llama",
    seed: int = 0,
) -> Path:
    """A random 1bitLLM-style ``BitnetForCausalLM`` checkpoint in ``dst``; returns ``dst``.

    LLaMA layout (no GQA, SiLU, RoPE theta 10000, RMSNorm eps 1e-5) built from a
    ``LlamaForCausalLM``, plus the sub-norms ``self_attn.inner_attn_ln`` [hidden] and
    ``mlp.ffn_layernorm`` [ffn], an untied ``lm_head.weight`` (unless ``tie``) and the old
    ``rotary_emb.inv_freq`` buffers; config.json as the 1bitLLM repos write it (remote-code
    ``auto_map``, ``weight_bits`` / ``input_bits``).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=context,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie,
        hidden_act="silu",
    )
    model = LlamaForCausalLM(cfg)
    state = {k: v for k, v in model.state_dict().items() if not (tie and k == "lm_head.weight")}
    g = torch.Generator().manual_seed(seed + 2)
    head_dim = hidden // heads
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    for i in range(layers):
        p = f"model.layers.{i}."
        state[p + "self_attn.inner_attn_ln.weight"] = torch.ones(hidden)
        state[p + "mlp.ffn_layernorm.weight"] = torch.ones(ffn)
        state[p + "self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
    for k, v in state.items():
        if v.ndim == 1 and not k.endswith("inv_freq"):
            state[k] = 1.0 + 0.1 * torch.randn(v.shape, generator=g)
    state = {
        k: v if k.endswith("inv_freq") else v.to(_torch_dtype(dtype)) for k, v in state.items()
    }
    config = {
        "architectures": ["BitnetForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_bitnet.BitnetConfig",
            "AutoModelForCausalLM": "modeling_bitnet.BitnetForCausalLM",
        },
        "model_type": "llama",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": None,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "input_bits": 8,
        "weight_bits": 1,
        "intermediate_size": ffn,
        "max_position_embeddings": context,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": heads,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-5,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": tie,
        "torch_dtype": _TORCH_DTYPES[dtype],
        "use_cache": True,
        "vocab_size": vocab,
    }
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    save_state_dict(state, dst)
    _tokenizer(dst, tokenizer, vocab)
    return dst


# ---------------------------------------------------------------------------------- HF cache
def make_hf_cache(cache: Path, repo_id: str, src: Path, commit: str | None = None) -> Path:
    """Places the files of checkpoint directory ``src`` in huggingface_hub's cache layout
    (``models--owner--name/{blobs/<sha256>, snapshots/<commit>/<file> -> blob, refs/main}``)
    under ``cache``; returns the snapshot directory."""
    cache, src = Path(cache), Path(src)
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    blobs, snap = folder / "blobs", folder / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        blob = blobs / digest
        if not blob.exists():
            shutil.copyfile(f, blob)
        link = snap / f.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return snap

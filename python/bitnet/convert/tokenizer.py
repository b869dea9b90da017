"""GGUF tokenizer metadata from a HuggingFace ``tokenizer.json`` (+ ``tokenizer_config.json``).

Two BPE flavours are recognised, as llama.cpp names them in ``tokenizer.ggml.model``:

* ``gpt2``: byte-level BPE (a ``ByteLevel`` pre-tokenizer / decoder), e.g. LLaMA-3's tokenizer
  used by microsoft/bitnet-b1.58-2B-4T. ``tokenizer.ggml.pre`` is ``llama-bpe`` when the
  pre-tokenizer splits with LLaMA-3's regex, ``default`` otherwise.
* ``llama``: SentencePiece-style BPE (``byte_fallback`` with ``<0xXX>`` byte tokens, or a
  ``Metaspace`` pre-tokenizer), e.g. the LLaMA tokenizer of the 1bitLLM models. It also gets
  ``tokenizer.ggml.scores``: SentencePiece's BPE merges the adjacent pair whose result has the
  highest score, so a token made by merge number ``r`` (its highest-priority merge) scores
  ``-r``; other normal tokens score ``-len(merges)`` (never preferred); control, byte and unused
  tokens score 0.

``tokenizer.ggml.tokens`` lists the whole vocabulary by id (added tokens included), padded to
the model's ``vocab_size`` with ``[PAD{id}]`` for ids the tokenizer does not use, as llama.cpp
does. Token types: 1 normal, 3 control (special added tokens), 4 user-defined (other added
tokens), 5 unused (the padding), 6 byte (``<0xXX>`` in ``llama`` tokenizers). The whole
``tokenizer.json`` text is kept under ``tokenizer.huggingface.json`` so the runtime can rebuild
the exact HF tokenizer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConversionError

__all__ = ["LLAMA3_PRETOKENIZER_REGEX", "TokenizerInfo", "TokenType", "tokenizer_metadata"]

LLAMA3_PRETOKENIZER_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""The Split pattern of LLaMA-3's pre-tokenizer (``tokenizer.ggml.pre = llama-bpe``)."""


class TokenType:
    """Values of ``tokenizer.ggml.token_type`` (llama.cpp's ``llama_token_type``)."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclass
class TokenizerInfo:
    """Tokenizer metadata ready for ``bitnet.gguf.write``.

    Attributes:
        model: ``gpt2`` or ``llama``.
        metadata: ``tokenizer.*`` key -> value.
        warnings: things that could not be carried over (an unknown special token, ...).
    """

    model: str
    metadata: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _find_type(node: Any, name: str) -> list[dict[str, Any]]:
    """Every component of type ``name`` in a (possibly nested ``Sequence``) tokenizer.json node."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("type") == name:
            found.append(node)
        for v in node.values():
            if isinstance(v, (dict, list)):
                found += _find_type(v, name)
    elif isinstance(node, list):
        for v in node:
            found += _find_type(v, name)
    return found


def _flavour(tj: Mapping[str, Any], path: Path) -> str:
    model = tj.get("model") or {}
    kind = model.get("type", "BPE" if "merges" in model else None)
    if kind != "BPE":
        raise ConversionError(f"{path}: tokenizer model '{kind}' is not supported (BPE only)")
    if model.get("byte_fallback") or _find_type(
        [tj.get("pre_tokenizer"), tj.get("decoder")], "Metaspace"
    ):
        return "llama"
    if _find_type([tj.get("pre_tokenizer"), tj.get("decoder")], "ByteLevel"):
        return "gpt2"
    raise ConversionError(
        f"{path}: BPE tokenizer is neither byte-level (ByteLevel pre-tokenizer) nor "
        "SentencePiece-style (byte_fallback / Metaspace); cannot tell llama.cpp how to run it"
    )


def _pre(tj: Mapping[str, Any], flavour: str) -> str:
    if flavour != "gpt2":
        return "default"
    for split in _find_type(tj.get("pre_tokenizer"), "Split"):
        pattern = split.get("pattern")
        if isinstance(pattern, dict) and pattern.get("Regex") == LLAMA3_PRETOKENIZER_REGEX:
            return "llama-bpe"
    return "default"


def _merges(model: Mapping[str, Any], path: Path) -> list[str]:
    """Merges as ``"a b"`` strings; the pair form (transformers >= 4.45) may hold spaces inside
    a part, which are written as U+0120 as llama.cpp does."""
    raw = model.get("merges") or []
    out = []
    for i, m in enumerate(raw):
        if isinstance(m, str):
            out.append(m)
        elif isinstance(m, (list, tuple)) and len(m) == 2 and all(isinstance(p, str) for p in m):
            out.append(" ".join(p.replace(" ", "\u0120") for p in m))
        else:
            raise ConversionError(f"{path}: merge {i} is neither 'a b' nor a pair: {m!r}")
    return out


def _merge_pairs(model: Mapping[str, Any]) -> list[tuple[str, str]]:
    pairs = []
    for m in model.get("merges") or []:
        if isinstance(m, str):
            a, _, b = m.partition(" ")
        else:
            a, b = m
        pairs.append((a, b))
    return pairs


def _vocab(tj: Mapping[str, Any], path: Path) -> tuple[dict[int, str], dict[int, bool]]:
    """id -> token (model vocab overlaid with added tokens) and id -> special (added only)."""
    vocab = (tj.get("model") or {}).get("vocab")
    if not isinstance(vocab, dict):
        raise ConversionError(f"{path}: model.vocab is missing")
    by_id: dict[int, str] = {}
    for tok, i in vocab.items():
        if isinstance(i, bool) or not isinstance(i, int) or i < 0:
            raise ConversionError(f"{path}: token {tok!r} has invalid id {i!r}")
        if i in by_id:
            raise ConversionError(f"{path}: tokens {by_id[i]!r} and {tok!r} share id {i}")
        by_id[i] = tok
    added: dict[int, bool] = {}
    for a in tj.get("added_tokens") or []:
        i, tok = a.get("id"), a.get("content")
        if isinstance(i, bool) or not isinstance(i, int) or i < 0 or not isinstance(tok, str):
            raise ConversionError(f"{path}: malformed added token {a!r}")
        by_id[i] = tok
        added[i] = bool(a.get("special", False))
    return by_id, added


def _token_content(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, dict) and isinstance(v.get("content"), str):
        return v["content"]
    return None


def _add_bos(tj: Mapping[str, Any], tcfg: Mapping[str, Any]) -> bool:
    """``add_bos_token`` from tokenizer_config.json, else whether the post-processor's template
    for a single sequence starts with a special token."""
    if isinstance(tcfg.get("add_bos_token"), bool):
        return bool(tcfg["add_bos_token"])
    for proc in _find_type(tj.get("post_processor"), "TemplateProcessing"):
        single = proc.get("single") or []
        if single and isinstance(single[0], dict) and "SpecialToken" in single[0]:
            return True
    return False


def _chat_templates(directory: Path, tcfg: Mapping[str, Any]) -> dict[str, str]:
    """``tokenizer.chat_template[.<name>]`` from chat_template.jinja or tokenizer_config.json."""
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return {"tokenizer.chat_template": jinja.read_text(encoding="utf-8")}
    ct = tcfg.get("chat_template")
    if isinstance(ct, str):
        return {"tokenizer.chat_template": ct}
    out = {}
    if isinstance(ct, list):  # [{"name": "default", "template": "..."}, ...]
        for item in ct:
            if isinstance(item, dict) and isinstance(item.get("template"), str):
                name = item.get("name", "default")
                key = "tokenizer.chat_template" + ("" if name == "default" else f".{name}")
                out[key] = item["template"]
    return out


def _scores(tokens: list[str], types: list[int], model: Mapping[str, Any]) -> list[float]:
    pairs = _merge_pairs(model)
    rank: dict[str, int] = {}
    for r, (a, b) in enumerate(pairs):
        rank.setdefault(a + b, r)
    lowest = -float(len(pairs))
    return [
        (float(-rank[tok]) if tok in rank else lowest) if ty == TokenType.NORMAL else 0.0
        for tok, ty in zip(tokens, types, strict=True)
    ]


def tokenizer_metadata(
    directory: Path, config: Mapping[str, Any], vocab_size: int
) -> TokenizerInfo | None:
    """Builds the ``tokenizer.*`` GGUF keys of the checkpoint in ``directory``.

    Args:
        directory: the checkpoint directory (``tokenizer.json``, optionally
            ``tokenizer_config.json`` and ``chat_template.jinja``).
        config: the model's ``config.json`` (fallback for bos / eos / pad ids).
        vocab_size: rows of the token embedding; the token list is padded to it.

    Returns:
        None when there is no ``tokenizer.json`` (the caller warns), else the metadata.

    Raises:
        ConversionError: malformed tokenizer files, a tokenizer model other than BPE, or a
            token id outside the model's vocabulary.
    """
    path = directory / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
        tj = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(tj, dict):
        raise ConversionError(f"{path}: expected a JSON object")
    tcfg_path = directory / "tokenizer_config.json"
    tcfg: dict[str, Any] = {}
    if tcfg_path.is_file():
        try:
            tcfg = json.loads(tcfg_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConversionError(f"{tcfg_path}: not valid JSON ({e})") from None
        if not isinstance(tcfg, dict):
            raise ConversionError(f"{tcfg_path}: expected a JSON object")

    flavour = _flavour(tj, path)
    by_id, added = _vocab(tj, path)
    top = max(by_id, default=-1)
    if top >= vocab_size:
        raise ConversionError(
            f"{path}: token {by_id[top]!r} has id {top}, outside the model's vocab_size "
            f"{vocab_size} (config.json)"
        )
    tokens, types = [], []
    for i in range(vocab_size):
        tok = by_id.get(i)
        if tok is None:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added:
            tokens.append(tok)
            types.append(TokenType.CONTROL if added[i] else TokenType.USER_DEFINED)
        elif flavour == "llama" and _BYTE_TOKEN.fullmatch(tok):
            tokens.append(tok)
            types.append(TokenType.BYTE)
        else:
            tokens.append(tok)
            types.append(TokenType.NORMAL)

    model = tj["model"]
    md: dict[str, Any] = {
        "tokenizer.ggml.model": flavour,
        "tokenizer.ggml.pre": _pre(tj, flavour),
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
    }
    if flavour == "llama":
        md["tokenizer.ggml.scores"] = _scores(tokens, types, model)
    merges = _merges(model, path)
    if merges:
        md["tokenizer.ggml.merges"] = merges

    warnings: list[str] = []
    ids = {tok: i for i, tok in sorted(by_id.items(), reverse=True)}  # lowest id wins
    for i in added:
        ids[by_id[i]] = i  # added tokens take precedence, as in HF
    special = {
        "bos": "bos_token",
        "eos": "eos_token",
        "padding": "pad_token",
        "unknown": "unk_token",
    }
    fallback = {
        "bos": config.get("bos_token_id"),
        "eos": config.get("eos_token_id"),
        "padding": config.get("pad_token_id"),
        "unknown": model.get("unk_token"),
    }
    for key, cfg_key in special.items():
        content = _token_content(tcfg.get(cfg_key))
        value: Any = ids.get(content) if content is not None else None
        if content is not None and value is None:
            warnings.append(f"{tcfg_path.name}: {cfg_key} {content!r} is not in the vocabulary")
        if value is None:
            value = fallback[key]
            if isinstance(value, list):
                value = value[0] if value else None
            if isinstance(value, str):
                value = ids.get(value)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab_size:
            warnings.append(f"{key} token id {value!r} is outside the vocabulary; not written")
            continue
        md[f"tokenizer.ggml.{key}_token_id"] = value
    md["tokenizer.ggml.add_bos_token"] = _add_bos(tj, tcfg)
    md.update(_chat_templates(directory, tcfg))
    md["tokenizer.huggingface.json"] = text
    return TokenizerInfo(flavour, md, warnings)

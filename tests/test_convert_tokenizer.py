"""bitnet.convert: tokenizer metadata, compared with the tokenizer.json it comes from.

GGUF files are read back with the `gguf` package (llama.cpp's reader); the expected values are
taken straight from the tokenizer files written by tests/checkpoints.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf as ggufpkg
import pytest
from checkpoints import (
    CHAT_TEMPLATE,
    SAMPLE_TEXT,
    make_1bitllm_checkpoint,
    make_bitnet_checkpoint,
)
from tokenizers import Tokenizer

from bitnet.convert import ConversionError, ConversionWarning, convert_with_report
from bitnet.convert.tokenizer import tokenizer_metadata

NORMAL, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 3, 4, 5, 6


@pytest.fixture(scope="module")
def byte_level(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bitnet_checkpoint(tmp_path_factory.mktemp("bl") / "m", layers=1, seed=11)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_1bitllm_checkpoint(tmp_path_factory.mktemp("ll") / "m", layers=1, seed=12)


def read(path: Path) -> tuple[dict[str, Any], dict[str, list]]:
    """(key -> value, key -> GGUF value types) via llama.cpp's reader."""
    r = ggufpkg.GGUFReader(str(path))
    fields = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
    return {k: f.contents() for k, f in fields.items()}, {k: f.types for k, f in fields.items()}


def convert_tok(src: Path, tmp: Path) -> tuple[dict[str, Any], dict[str, list]]:
    dst = tmp / "out.gguf"
    convert_with_report(src, dst, "tq2_0", progress=False, report=False)
    return read(dst)


def vocab_by_id(tj: dict[str, Any]) -> tuple[dict[int, str], dict[int, bool]]:
    by_id = {i: t for t, i in tj["model"]["vocab"].items()}
    special = {}
    for a in tj["added_tokens"]:
        by_id[a["id"]] = a["content"]
        special[a["id"]] = a["special"]
    return by_id, special


def merges_as_strings(tj: dict[str, Any]) -> list[str]:
    return [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]


def test_byte_level_tokenizer(byte_level: Path, tmp_path: Path) -> None:
    md, types = convert_tok(byte_level, tmp_path)
    text = (byte_level / "tokenizer.json").read_text()
    tj = json.loads(text)
    n = json.loads((byte_level / "config.json").read_text())["vocab_size"]
    by_id, special = vocab_by_id(tj)
    assert max(by_id) < n - 1  # the model vocab is larger: some ids are padding

    assert md["tokenizer.ggml.model"] == "gpt2"
    assert md["tokenizer.ggml.pre"] == "llama-bpe"
    tokens = md["tokenizer.ggml.tokens"]
    assert len(tokens) == n
    assert tokens == [by_id.get(i, f"[PAD{i}]") for i in range(n)]
    want_types = [
        UNUSED
        if i not in by_id
        else (CONTROL if special[i] else USER_DEFINED)
        if i in special
        else NORMAL
        for i in range(n)
    ]
    assert md["tokenizer.ggml.token_type"] == want_types
    assert want_types.count(USER_DEFINED) == 1  # "<tool>"
    assert types["tokenizer.ggml.token_type"] == [
        ggufpkg.GGUFValueType.ARRAY,
        ggufpkg.GGUFValueType.INT32,
    ]
    assert md["tokenizer.ggml.merges"] == merges_as_strings(tj)
    assert len(md["tokenizer.ggml.merges"]) >= 250
    ids = {t: i for i, t in by_id.items()}
    assert md["tokenizer.ggml.bos_token_id"] == ids["<|begin_of_text|>"]
    assert md["tokenizer.ggml.eos_token_id"] == ids["<|end_of_text|>"]
    assert "tokenizer.ggml.padding_token_id" not in md
    assert "tokenizer.ggml.scores" not in md
    # tokenizer_config.json has no add_bos_token: the post-processor prepends bos
    assert md["tokenizer.ggml.add_bos_token"] is True
    assert types["tokenizer.ggml.add_bos_token"] == [ggufpkg.GGUFValueType.BOOL]
    assert md["tokenizer.chat_template"] == CHAT_TEMPLATE
    assert md["tokenizer.huggingface.json"] == text
    original = Tokenizer.from_file(str(byte_level / "tokenizer.json"))
    rebuilt = Tokenizer.from_str(md["tokenizer.huggingface.json"])
    for sample in (SAMPLE_TEXT, "<|begin_of_text|>hi <tool> there<|eot_id|>"):
        assert rebuilt.encode(sample).ids == original.encode(sample).ids
        assert rebuilt.encode(sample).tokens == [tokens[i] for i in original.encode(sample).ids]


def test_llama_tokenizer(llama: Path, tmp_path: Path) -> None:
    md, types = convert_tok(llama, tmp_path)
    tj = json.loads((llama / "tokenizer.json").read_text())
    n = json.loads((llama / "config.json").read_text())["vocab_size"]
    by_id, special = vocab_by_id(tj)

    assert md["tokenizer.ggml.model"] == "llama"
    assert md["tokenizer.ggml.pre"] == "default"
    tokens = md["tokenizer.ggml.tokens"]
    assert tokens == [by_id.get(i, f"[PAD{i}]") for i in range(n)]
    tt = md["tokenizer.ggml.token_type"]
    assert tt[:3] == [CONTROL] * 3  # <unk> <s> </s>
    assert tt[3 : 3 + 256] == [BYTE] * 256 and tokens[3 + 0x41] == "<0x41>"
    assert set(tt[259 : len(by_id)]) == {NORMAL}
    assert set(tt[len(by_id) :]) == {UNUSED}
    # scores: -(rank of the first merge producing the token); other normal tokens -len(merges)
    merges = tj["model"]["merges"]
    pairs = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
    rank: dict[str, int] = {}
    for r, (a, b) in enumerate(pairs):
        rank.setdefault(a + b, r)
    want = [
        float(-rank.get(tok, len(pairs))) if ty == NORMAL else 0.0
        for tok, ty in zip(tokens, tt, strict=True)
    ]
    assert md["tokenizer.ggml.scores"] == want
    assert types["tokenizer.ggml.scores"][1] == ggufpkg.GGUFValueType.FLOAT32
    # SentencePiece merges by highest score: a merge's result outranks every later merge's
    scores = md["tokenizer.ggml.scores"]
    ids = {t: i for i, t in by_id.items()}
    a, b = pairs[0]
    assert scores[ids[a + b]] == 0.0 and scores[ids["".join(pairs[-1])]] == -(len(pairs) - 1)
    assert md["tokenizer.ggml.bos_token_id"] == 1
    assert md["tokenizer.ggml.eos_token_id"] == 2
    assert md["tokenizer.ggml.unknown_token_id"] == 0
    assert md["tokenizer.ggml.add_bos_token"] is True
    assert "tokenizer.chat_template" not in md
    original = Tokenizer.from_file(str(llama / "tokenizer.json"))
    rebuilt = Tokenizer.from_str(md["tokenizer.huggingface.json"])
    for sample in (SAMPLE_TEXT, "snow \u2603 rocket \U0001f680"):  # not in the training text
        enc = original.encode(sample)
        assert rebuilt.encode(sample).ids == enc.ids
    assert [tokens[i] for i in enc.ids if tokens[i].startswith("<0x")] == [
        "<0xE2>",
        "<0x98>",
        "<0x83>",
        "<0xF0>",
        "<0x9F>",
        "<0x9A>",
        "<0x80>",
    ]  # byte fallback: the UTF-8 bytes of the unseen characters


def _copy_tokenizer(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (dst / f).write_text((src / f).read_text())
    return dst


def test_merges_as_pairs_and_spaces(byte_level: Path, tmp_path: Path) -> None:
    d = _copy_tokenizer(byte_level, tmp_path / "tok")
    tj = json.loads((d / "tokenizer.json").read_text())
    strings = merges_as_strings(tj)
    tj["model"]["merges"] = [s.split(" ") for s in strings] + [["a b", "c"]]
    (d / "tokenizer.json").write_text(json.dumps(tj))
    info = tokenizer_metadata(d, {}, 600)
    assert info is not None
    # spaces inside a pair part are written as U+0120, as llama.cpp does
    assert info.metadata["tokenizer.ggml.merges"] == strings + ["a\u0120b c"]


def test_special_tokens_fall_back_to_config(byte_level: Path, tmp_path: Path) -> None:
    d = _copy_tokenizer(byte_level, tmp_path / "tok")
    (d / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": False}))
    info = tokenizer_metadata(
        d, {"bos_token_id": 3, "eos_token_id": [4, 1], "pad_token_id": 2}, 600
    )
    assert info is not None and info.warnings == []
    md = info.metadata
    assert md["tokenizer.ggml.bos_token_id"] == 3
    assert md["tokenizer.ggml.eos_token_id"] == 4
    assert md["tokenizer.ggml.padding_token_id"] == 2
    assert md["tokenizer.ggml.add_bos_token"] is False
    assert "tokenizer.chat_template" not in md


def test_unknown_special_token_warns(byte_level: Path, tmp_path: Path) -> None:
    d = _copy_tokenizer(byte_level, tmp_path / "tok")
    (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|nope|>"}))
    info = tokenizer_metadata(d, {"eos_token_id": 1}, 600)
    assert info is not None
    assert any("<|nope|>" in w for w in info.warnings)
    assert info.metadata["tokenizer.ggml.eos_token_id"] == 1  # config.json fallback


def test_chat_template_sources(byte_level: Path, tmp_path: Path) -> None:
    d = _copy_tokenizer(byte_level, tmp_path / "tok")
    listed = [
        {"name": "default", "template": "A{{ messages }}"},
        {"name": "tool_use", "template": "B{{ tools }}"},
    ]
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": listed}))
    md = tokenizer_metadata(d, {}, 600).metadata  # type: ignore[union-attr]
    assert md["tokenizer.chat_template"] == "A{{ messages }}"
    assert md["tokenizer.chat_template.tool_use"] == "B{{ tools }}"
    (d / "chat_template.jinja").write_text("J{{ messages }}")  # transformers >= 4.43 layout
    md = tokenizer_metadata(d, {}, 600).metadata  # type: ignore[union-attr]
    assert md["tokenizer.chat_template"] == "J{{ messages }}"


def test_plain_byte_level_pre_is_default(byte_level: Path, tmp_path: Path) -> None:
    d = _copy_tokenizer(byte_level, tmp_path / "tok")
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}
    (d / "tokenizer.json").write_text(json.dumps(tj))
    md = tokenizer_metadata(d, {}, 600).metadata  # type: ignore[union-attr]
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.pre"] == "default"


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda tj: tj["model"].update(type="Unigram"), "tokenizer model 'Unigram'"),
        (lambda tj: tj.update(pre_tokenizer=None, decoder=None), "neither byte-level"),
        (lambda tj: tj["model"]["vocab"].update({"zz": 700}), "outside the model's vocab_size"),
        (lambda tj: tj["model"]["vocab"].update({"zz": 5}), "share id 5"),
    ],
)
def test_bad_tokenizer_json(byte_level: Path, tmp_path: Path, edit: Any, fragment: str) -> None:
    d = _copy_tokenizer(byte_level, tmp_path / "tok")
    tj = json.loads((d / "tokenizer.json").read_text())
    edit(tj)
    (d / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(ConversionError, match=fragment) as e:
        tokenizer_metadata(d, {}, 600)
    assert "tokenizer.json" in str(e.value)


def test_missing_tokenizer_warns_and_writes_none(tmp_path: Path) -> None:
    src = make_bitnet_checkpoint(tmp_path / "m", layers=1, tokenizer=None, seed=13)
    dst = tmp_path / "out.gguf"
    with pytest.warns(ConversionWarning, match="no tokenizer.json"):
        rep = convert_with_report(src, dst, "tq1_0", progress=False, report=False)
    assert rep.tokenizer is None
    assert any("no tokenizer" in w for w in rep.warnings)
    assert "no tokenizer" in rep.format()
    md, _ = read(dst)
    assert not [k for k in md if k.startswith("tokenizer.")]
    assert md["general.architecture"] == "bitnet"

"""bitnet.Model and bitnet.tokenizer: loading (GGUF, repo id, checkpoint directory, conversion
cache), config, logits, tokenizers from GGUF metadata, chat templates, perplexity, input checks.

Tiny random checkpoints come from tests/checkpoints.py (tests/tiny_models.py converts them).
Expected values come from the original tokenizer.json (HF ``tokenizers``), transformers' chat
template rendering, and numpy written here from the formulas.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from checkpoints import (
    CHAT_TEMPLATE,
    SAMPLE_TEXT,
    corpus,
    make_hf_cache,
    write_byte_level_tokenizer,
    write_llama_tokenizer,
)
from huggingface_hub import constants
from tiny_models import PROMPTS, checkpoint, gguf, rewrite_gguf
from tokenizers import Tokenizer as HFTokenizer

import bitnet
from bitnet import gguf as gguf_io
from bitnet.convert.tokenizer import tokenizer_metadata
from bitnet.model import Model, ModelConfig
from bitnet.tokenizer import Tokenizer

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "hello there"},
    {"role": "assistant", "content": "hi"},
    {"role": "user", "content": "ka bit net?"},
]


@pytest.fixture(scope="module")
def model() -> Model:
    return Model.load(gguf("i2_s"))


def samples() -> list[str]:
    return [
        SAMPLE_TEXT,
        "snow \u2603 rocket \U0001f680, tabs\tand  spaces \n\n end",
        "<|begin_of_text|>hi <tool> there<|eot_id|>",
        *corpus(9, 300),
    ]


# ----------------------------------------------------------------------------- loading, config
def test_config(model: Model) -> None:
    cfg = json.loads((checkpoint() / "config.json").read_text())
    c = model.config
    assert isinstance(c, ModelConfig)
    assert c.architecture == "bitnet-b1.58"
    assert (c.vocab_size, c.n_embd, c.n_layer, c.n_ff) == (
        cfg["vocab_size"],
        cfg["hidden_size"],
        cfg["num_hidden_layers"],
        cfg["intermediate_size"],
    )
    assert (c.n_head, c.n_head_kv) == (cfg["num_attention_heads"], cfg["num_key_value_heads"])
    assert c.head_dim == cfg["hidden_size"] // cfg["num_attention_heads"]
    assert c.n_ctx_train == c.n_ctx == cfg["max_position_embeddings"]
    assert c.rope_theta == 500000.0  # tests/checkpoints.py: BitNetConfig's default
    assert c.rms_eps == pytest.approx(cfg["rms_norm_eps"])
    assert (c.hidden_act, c.weight_type, c.head_type, c.tied) == ("relu2", "i2_s", "f16", True)
    assert c.file_size == os.path.getsize(gguf("i2_s"))
    assert (c.n_seq, model.n_seq, model.n_ctx) == (1, 1, c.n_ctx)
    assert model.path == gguf("i2_s")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.n_ctx = 5  # type: ignore[misc]


def test_load_options(threads: None) -> None:
    m = Model.load(str(gguf("i2_s")), threads=1, n_ctx=40, n_seq=3)
    assert bitnet.get_num_threads() == 1
    assert (m.n_ctx, m.n_seq) == (40, 3)
    assert "n_ctx 40, n_seq 3" in repr(m)


def test_import_is_lazy() -> None:
    code = (
        "import sys, bitnet; "
        "print(sorted(m for m in ('torch', 'tokenizers', 'jinja2', 'bitnet.model') "
        "if m in sys.modules)); "
        "from bitnet.model import Model; print(bitnet.Model is Model, 'Model' in dir(bitnet))"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["[]", "True True"]


# ----------------------------------------------------------------------------- logits
def test_logits(model: Model) -> None:
    ids = model.tokenizer.encode(PROMPTS[2])
    out = model.logits(ids)
    assert out.dtype == np.float32 and out.shape == (len(ids), model.config.vocab_size)
    assert np.isfinite(out).all()
    # Each row is the logits of the prefix ending there (a fresh evaluation of that prefix).
    for t in (0, 3, len(ids) - 1):
        np.testing.assert_allclose(model.logits(ids[: t + 1])[-1], out[t], rtol=1e-5, atol=1e-5)
    # Fresh: a generation in between does not change the result.
    model.generate(PROMPTS[0], max_new_tokens=8, seed=3)
    np.testing.assert_array_equal(model.logits(ids), out)
    np.testing.assert_array_equal(model.logits(np.asarray(ids, dtype=np.int64)), out)


# ----------------------------------------------------------------------------- tokenizers
def assert_same_encoding(ours: Tokenizer, original: HFTokenizer, texts: list[str]) -> None:
    for text in texts:
        want = original.encode(text, add_special_tokens=False).ids
        assert ours.encode(text, add_bos=False) == want, text
        assert ours.decode(want, skip_special_tokens=False) == original.decode(
            want, skip_special_tokens=False
        )


def test_tokenizer_from_gguf_equals_original(model: Model) -> None:
    original = HFTokenizer.from_file(str(checkpoint() / "tokenizer.json"))
    tok = model.tokenizer
    assert_same_encoding(tok, original, samples())
    bos = original.token_to_id("<|begin_of_text|>")
    eos = original.token_to_id("<|end_of_text|>")
    eot = original.token_to_id("<|eot_id|>")
    assert (tok.bos_id, tok.eos_id, tok.add_bos) == (bos, eos, True)
    assert set(tok.eos_ids) == {eos, eot}
    # encode prepends BOS as the original post-processor does, never twice
    assert tok.encode("hello") == original.encode("hello").ids == [bos, *tok.encode("hello", False)]
    assert tok.encode("<|begin_of_text|>hello") == tok.encode("hello")
    assert tok.decode(tok.encode("hi <tool> x<|eot_id|>")) == "hi <tool> x"
    assert tok.is_special(eot) and not tok.is_special(tok.token_to_id("<tool>"))
    assert Tokenizer.from_file(checkpoint()).encode(SAMPLE_TEXT) == tok.encode(SAMPLE_TEXT)
    assert Tokenizer.from_gguf(gguf("i2_s")).encode(SAMPLE_TEXT) == tok.encode(SAMPLE_TEXT)


@pytest.mark.parametrize("style", ["gpt2", "llama", "llama-scores"])
def test_tokenizer_from_ggml_keys(style: str, tmp_path: Path) -> None:
    """Without tokenizer.huggingface.json the tokenizer is rebuilt from llama.cpp's keys:
    byte-level BPE with LLaMA-3's pre-tokenizer (gpt2), or BPE with byte fallback (llama), from
    merges or, lacking them, from the SentencePiece scores; it encodes as the original."""
    d = tmp_path / "tok"
    if style == "gpt2":
        write_byte_level_tokenizer(d, seed=4)
    else:
        write_llama_tokenizer(d, seed=4)
    md = tokenizer_metadata(d, {}, 600).metadata
    drop = {"tokenizer.huggingface.json"} | (
        {"tokenizer.ggml.merges"} if "scores" in style else set()
    )
    kept = {k: v for k, v in md.items() if k not in drop}
    path = gguf_io.write(tmp_path / "tok.gguf", "bitnet", kept, {})
    tok = Tokenizer.from_gguf(path)
    original = HFTokenizer.from_file(str(d / "tokenizer.json"))
    texts = samples() + ["unseen \u2603\U0001f680 Ωmega"]
    assert_same_encoding(tok, original, texts)
    ids = original.encode(SAMPLE_TEXT, add_special_tokens=False).ids
    assert tok.decode(ids) == original.decode(ids)
    assert tok.vocab_size == original.get_vocab_size()
    assert tok.bos_id == md["tokenizer.ggml.bos_token_id"] and tok.add_bos
    assert tok.eos_id == md["tokenizer.ggml.eos_token_id"]
    assert tok.encode("x")[0] == tok.bos_id


def test_model_without_tokenizer(tmp_path: Path) -> None:
    src = gguf("i2_s")
    with gguf_io.read(src) as f:
        tok_keys = tuple(k for k in f.metadata if k.startswith("tokenizer."))
    bare = rewrite_gguf(src, tmp_path / "bare.gguf", drop=tok_keys)
    m = Model.load(bare)
    assert m.tokenizer is None
    assert m.logits([1, 2, 3]).shape == (3, m.config.vocab_size)
    with pytest.raises(ValueError, match="no tokenizer"):
        m.generate("hello")
    with pytest.raises(ValueError, match="no tokenizer"):
        m.generate([1, 2, 3])
    m2 = Model.load(bare, tokenizer=checkpoint() / "tokenizer.json")
    ref = Model.load(src)
    assert m2.generate("hello", max_new_tokens=10, temperature=0) == ref.generate(
        "hello", max_new_tokens=10, temperature=0
    )


def test_bad_tokenizer_metadata(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no tokenizer"):
        Tokenizer.from_gguf_metadata({}, "x.gguf")
    with pytest.raises(ValueError, match=r"x.gguf: tokenizer.ggml.model = 'bert'"):
        Tokenizer.from_gguf_metadata(
            {"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"]}, "x.gguf"
        )
    md = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": ["a", "b"],
        "tokenizer.ggml.pre": "qwen2",
    }
    with pytest.raises(ValueError, match="tokenizer.ggml.pre = 'qwen2'"):
        Tokenizer.from_gguf_metadata(md, "x.gguf")
    md = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": ["a", "b"],
        "tokenizer.ggml.merges": ["ab"],
    }
    with pytest.raises(ValueError, match=r"tokenizer.ggml.merges\[0\]"):
        Tokenizer.from_gguf_metadata(md, "x.gguf")
    md = {"tokenizer.huggingface.json": "{not json"}
    with pytest.raises(ValueError, match="tokenizer.huggingface.json is not a valid tokenizer"):
        Tokenizer.from_gguf_metadata(md, "x.gguf")
    with pytest.raises(FileNotFoundError):
        Tokenizer.from_file(tmp_path / "nope.json")


# ----------------------------------------------------------------------------- chat
def test_chat_template_rendering(model: Model) -> None:
    from transformers import PreTrainedTokenizerFast

    tok = model.tokenizer
    text = tok.apply_chat_template(MESSAGES)
    want = (
        "<|begin_of_text|>"
        + "".join(
            f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>"
            for m in MESSAGES
        )
        + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert text == want
    hf = PreTrainedTokenizerFast(
        tokenizer_file=str(checkpoint() / "tokenizer.json"),
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
    )
    assert (
        hf.apply_chat_template(
            MESSAGES, tokenize=False, add_generation_prompt=True, chat_template=CHAT_TEMPLATE
        )
        == text
    )
    assert (
        tok.apply_chat_template(MESSAGES, add_generation_prompt=False)
        == want.rsplit("<|start_header_id|>", 1)[0]
    )
    custom = "{% for m in messages %}[{{ m.role }}|{{ m.content }}]{% endfor %}{{ x }}"
    assert tok.apply_chat_template(MESSAGES[:2], chat_template=custom, x="!") == (
        "[system|You are terse.][user|hello there]!"
    )
    with pytest.raises(ValueError, match="chat template: boom"):
        tok.apply_chat_template(MESSAGES, chat_template="{{ raise_exception('boom') }}")
    with pytest.raises(ValueError, match=r"messages\[1\]"):
        tok.apply_chat_template([MESSAGES[0], {"content": "no role"}])
    with pytest.raises(ValueError, match="list of"):
        tok.apply_chat_template("hello")  # type: ignore[arg-type]


def test_chat_uses_the_template(model: Model) -> None:
    tok = model.tokenizer
    ids = tok.encode(tok.apply_chat_template(MESSAGES), add_bos=False)
    assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1
    want = model.generate(ids, max_new_tokens=16, temperature=0)
    model.reset()
    assert model.chat(MESSAGES, max_new_tokens=16, temperature=0) == want
    # the next turn reuses the KV cache of the common prefix and still gives the fresh result
    longer = [*MESSAGES, {"role": "assistant", "content": want}, {"role": "user", "content": "ok"}]
    fresh_ids = tok.encode(tok.apply_chat_template(longer), add_bos=False)
    fresh = model.generate(fresh_ids, max_new_tokens=16, temperature=0)
    model.chat(MESSAGES, max_new_tokens=16, temperature=0)
    assert model.chat(longer, max_new_tokens=16, temperature=0) == fresh
    assert model._engine.seq_len(0) > 0
    model.reset()
    assert model._engine.seq_len(0) == 0
    pieces = list(model.chat(MESSAGES, stream=True, max_new_tokens=16, temperature=0))
    assert "".join(pieces) == want
    assert model.chat(MESSAGES, max_new_tokens=16, seed=9) == model.generate(
        ids, max_new_tokens=16, seed=9
    )
    with pytest.raises(TypeError, match="bogus"):
        model.chat(MESSAGES, bogus=1)


# ----------------------------------------------------------------------------- perplexity
def nll_reference(logits: np.ndarray, targets: list[int]) -> np.ndarray:
    """-log softmax(logits)[target] per row, float64."""
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    return lse - x[np.arange(len(targets)), targets]


def windowed_reference(model: Model, ids: list[int], n_ctx: int, stride: int) -> float:
    """HF's sliding-window perplexity recipe: windows [begin, begin + n_ctx) every stride
    tokens; a window scores the targets after the previous window's end (never position 0 of
    the window)."""
    nlls: list[float] = []
    prev_end = 0
    for begin in range(0, len(ids), stride):
        end = min(begin + n_ctx, len(ids))
        logits = model.logits(ids[begin:end])
        for j in range(max(prev_end, begin + 1), end):
            nlls.append(nll_reference(logits[j - begin - 1 : j - begin], [ids[j]])[0])
        prev_end = end
        if end == len(ids):
            break
    return math.exp(float(np.mean(nlls)))


def test_perplexity(model: Model) -> None:
    text = " ".join(corpus(3, 36)[:2])
    ids = model.tokenizer.encode(text)
    assert 30 < len(ids) <= model.n_ctx
    logits = model.logits(ids)
    want = math.exp(float(np.mean(nll_reference(logits[:-1], ids[1:]))))
    # float64 log-softmax on the same float32 logits; only the summation order differs
    assert model.perplexity(text) == pytest.approx(want, rel=1e-9)
    assert model.perplexity(ids) == pytest.approx(want, rel=1e-9)
    no_bos = model.tokenizer.encode(text, add_bos=False)
    want_nb = math.exp(float(np.mean(nll_reference(model.logits(no_bos)[:-1], no_bos[1:]))))
    assert model.perplexity(text, add_bos=False) == pytest.approx(want_nb, rel=1e-9)
    for n_ctx, stride in ((16, 8), (16, 16), (13, 5), (7, 1)):
        got = model.perplexity(text, n_ctx=n_ctx, stride=stride)
        assert got == pytest.approx(windowed_reference(model, ids, n_ctx, stride), rel=1e-9)
    assert model.perplexity(text, n_ctx=16) == pytest.approx(
        windowed_reference(model, ids, 16, 8), rel=1e-9
    )
    with pytest.raises(ValueError, match="at least 2 tokens"):
        model.perplexity([5])
    with pytest.raises(ValueError, match="n_ctx"):
        model.perplexity(text, n_ctx=model.n_ctx + 1)
    with pytest.raises(ValueError, match="stride"):
        model.perplexity(text, n_ctx=16, stride=17)
    with pytest.raises(ValueError, match="empty"):
        model.perplexity("")


# ----------------------------------------------------------------------------- input checks
@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"min_p": 1.01}, "min_p"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"frequency_penalty": float("inf")}, "frequency_penalty"),
        ({"presence_penalty": "x"}, "presence_penalty"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"max_new_tokens": 2.5}, "max_new_tokens"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**64}, "seed"),
        ({"stop": ""}, "empty string"),
        ({"penalty_last_n": -2}, "penalty_last_n"),
    ],
)
def test_bad_parameters(model: Model, kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        model.generate("hello", **kwargs)
    with pytest.raises(ValueError, match=fragment):
        model.stream("hello", **kwargs)  # checked at the call, not at the first next()
    with pytest.raises(ValueError, match=fragment):
        model.generate_batch(["a", "b"], **kwargs)


def test_bad_prompts(model: Model) -> None:
    for empty in ("", []):
        with pytest.raises(ValueError, match="prompt is empty"):
            model.generate(empty)
    with pytest.raises(ValueError, match="ids is empty"):
        model.logits([])
    n = model.n_ctx
    too_long = " ".join(["ka"] * (2 * n))
    with pytest.raises(
        ValueError, match=rf"prompt is \d+ tokens long, more than the context of {n}"
    ):
        model.generate(too_long)
    with pytest.raises(ValueError, match=rf"{n + 1} tokens long.*{n} tokens"):
        model.generate([1] * (n + 1))
    with pytest.raises(ValueError, match=rf"ids is {n + 1} tokens long"):
        model.logits([1] * (n + 1))
    v = model.config.vocab_size
    with pytest.raises(ValueError, match=rf"prompt token 1 = {v} is out of range \[0, {v}\)"):
        model.generate([1, v])
    with pytest.raises(ValueError, match=r"prompt\[0\]"):
        model.generate([-1])
    with pytest.raises(TypeError, match="prompt must be"):
        model.generate(3.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"prompts\[1\]: prompt is empty"):
        model.generate_batch(["a", ""])
    with pytest.raises(ValueError, match="non-empty list"):
        model.generate_batch([])
    with pytest.raises(TypeError, match="token ids"):
        model.logits("text")  # type: ignore[arg-type]


def test_bad_load_arguments(tmp_path: Path) -> None:
    path = gguf("i2_s")
    # Without a GPU (or a CUDA build): RuntimeError naming the reason; with one, the CUDA model
    # runner is not written yet: NotImplementedError, a RuntimeError too.
    with pytest.raises(RuntimeError, match="CUDA"):
        Model.load(path, device="cuda")
    with pytest.raises(RuntimeError, match="CUDA"):
        Model.load(path, device="cuda:0")
    with pytest.raises(ValueError, match="device must be 'cpu'"):
        Model.load(path, device="tpu")
    for kw, name in (({"n_seq": 0}, "n_seq"), ({"threads": 0}, "threads"), ({"n_ctx": 0}, "n_ctx")):
        with pytest.raises(ValueError, match=name):
            Model.load(path, **kw)
    with pytest.raises(ValueError, match="weight_type must be one of"):
        Model.load(path, weight_type="q9")
    with pytest.raises(ValueError, match="revision"):
        Model.load(path, revision="main")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Model.load(tmp_path / "missing.gguf")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Model.load("not/a/path/or/repo")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IsADirectoryError, match="without config.json"):
        Model.load(tmp_path / "empty")
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(ValueError, match="bad.gguf"):
        Model.load(tmp_path / "bad.gguf")


# ----------------------------------------------------------------------------- repos and cache
@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline Hugging Face cache and an empty bitnet cache, both under tmp_path."""
    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("BITNET_CACHE", str(tmp_path / "bitnet-cache"))
    return cache


@pytest.fixture
def convert_calls(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Conversions into the bitnet cache during the test."""
    import bitnet.convert

    calls: list[tuple] = []
    real = bitnet.convert.convert
    cache = Path(os.environ["BITNET_CACHE"])

    def counting(src, dst, weight_type="i2_s", *args, **kwargs):  # noqa: ANN001, ANN202
        if cache in Path(dst).parents:  # not the tiny_models conversions
            calls.append((Path(src), Path(dst), weight_type))
        return real(src, dst, weight_type, *args, **kwargs)

    monkeypatch.setattr(bitnet.convert, "convert", counting)
    return calls


def test_load_repo_id_converts_once(hf_cache: Path, convert_calls: list, tmp_path: Path) -> None:
    commit = "ab" * 20
    make_hf_cache(hf_cache, "owner/tiny", checkpoint(), commit=commit)
    m = Model.load("owner/tiny", weight_type="tq2_0", progress=False)
    expected = tmp_path / "bitnet-cache" / "converted" / "owner--tiny" / commit / "tq2_0.gguf"
    assert m.path == expected and expected.is_file()
    assert m.config.weight_type == "tq2_0"
    assert len(convert_calls) == 1 and convert_calls[0][2] == "tq2_0"
    stamp = expected.stat().st_mtime_ns
    again = Model.load("owner/tiny", weight_type="tq2_0", progress=False)
    assert len(convert_calls) == 1 and again.path == expected
    assert expected.stat().st_mtime_ns == stamp
    ref = Model.load(gguf("tq2_0"))
    assert again.generate(PROMPTS[0], max_new_tokens=12, temperature=0) == ref.generate(
        PROMPTS[0], max_new_tokens=12, temperature=0
    )
    Model.load("owner/tiny", progress=False)  # another weight type: another conversion
    assert len(convert_calls) == 2
    assert (expected.parent / "i2_s.gguf").is_file()
    with pytest.raises(OSError, match="owner/absent"):
        Model.load("owner/absent", progress=False)


def test_load_repo_with_gguf(hf_cache: Path, convert_calls: list, tmp_path: Path) -> None:
    d = tmp_path / "repo"
    d.mkdir()
    (d / "model-i2_s.gguf").write_bytes(gguf("i2_s").read_bytes())
    snap = make_hf_cache(hf_cache, "owner/tiny-gguf", d)
    m = Model.load("owner/tiny-gguf", progress=False)
    assert m.path.resolve() == (snap / "model-i2_s.gguf").resolve()
    m2 = Model.load("owner/tiny-gguf/model-i2_s.gguf", progress=False)
    assert m2.path.resolve() == m.path.resolve()
    assert convert_calls == []


def test_load_checkpoint_directory(hf_cache: Path, convert_calls: list) -> None:
    m = Model.load(checkpoint(), weight_type="tq1_0", progress=False)
    assert m.config.weight_type == "tq1_0" and len(convert_calls) == 1
    assert m.path.parent.parent.name.startswith(f"local--{checkpoint().name}-")
    assert Model.load(checkpoint(), weight_type="tq1_0", progress=False).path == m.path
    assert len(convert_calls) == 1
    with pytest.raises(ValueError, match="revision"):
        Model.load(checkpoint(), revision="main")

"""Generation: stop strings, streaming detokenization, and the generation loop of bitnet.Model
checked against loops the tests write over ``model.logits`` (argmax, and the C++ sampler fed
the same logits and history).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from checkpoints import SAMPLE_TEXT, corpus, write_byte_level_tokenizer, write_llama_tokenizer
from tiny_models import PROMPTS, gguf

from bitnet.generation import StopStrings, split_stop
from bitnet.model import Model
from bitnet.sampling import Sampler, SamplingParams
from bitnet.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def model() -> Model:
    return Model.load(gguf("i2_s"))


def greedy_reference(model: Model, prompt: str, n: int) -> list[int]:
    """Greedy decoding written from the definition: argmax of a fresh evaluation of the whole
    sequence at every step, stopping at an end-of-generation id."""
    ids = model.tokenizer.encode(prompt)
    out: list[int] = []
    for _ in range(n):
        nxt = int(np.argmax(model.logits(ids + out)[-1]))  # argmax: lowest id on ties
        if nxt in model.tokenizer.eos_ids:
            break
        out.append(nxt)
    return out


def continuation(tok: Tokenizer, context: list[int], ids: list[int]) -> str:
    """The text ``ids`` add after ``context`` (decoded together, as the stream must); a
    character the context leaves incomplete (decoded as U+FFFD) belongs to the new text."""
    return tok.decode(context + ids)[len(tok.decode(context).rstrip("\ufffd")) :]


# ----------------------------------------------------------------------------- stop strings
def reference_cut(text: str, stops: list[str]) -> tuple[str, bool]:
    hits = [text.find(s) for s in stops if s in text]
    return (text[: min(hits)], True) if hits else (text, False)


@pytest.mark.parametrize("seed", range(6))
def test_stop_strings_random_chunks(seed: int) -> None:
    """Fed in random chunks, the emitted text is the text up to the earliest stop string, and
    never anything of a stop string, whatever the chunking."""
    rng = np.random.default_rng(seed)
    alphabet = list("ab c\né日")
    for _ in range(200):
        text = "".join(rng.choice(alphabet, int(rng.integers(0, 40))))
        stops = ["".join(rng.choice(alphabet, int(rng.integers(1, 5)))) for _ in range(3)]
        stops = list(dict.fromkeys(stops))
        cuts = sorted(rng.choice(len(text) + 1, int(rng.integers(0, 8)), replace=True))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        ss = StopStrings(stops)
        out, hit = "", False
        for c in chunks:
            piece, hit = ss.feed(c)
            out += piece
            assert not any(s in out for s in stops)
            if hit:
                break
        if not hit:
            out += ss.flush()
        assert (out, hit) == reference_cut(text, stops), (text, stops, chunks)


def test_stop_strings_hold_back_a_possible_start() -> None:
    ss = StopStrings(["<end>", "xyz"])
    assert ss.feed("abc <e") == ("abc ", False)  # "<e" may start "<end>"
    assert ss.feed("n") == ("", False)
    assert ss.feed("x") == ("<en", False)  # not "<end>" after all; "x" may start "xyz"
    assert ss.feed("y") == ("", False)
    assert ss.feed("z tail") == ("", True)
    assert ss.flush() == "" and ss.stopped


def test_split_stop() -> None:
    assert split_stop(None) == ([], [])
    assert split_stop("a") == (["a"], [])
    assert split_stop(7) == ([], [7])
    assert split_stop(["a", 3, "b", "a", np.int64(4)]) == (["a", "b"], [3, 4])
    with pytest.raises(ValueError, match=r"stop\[0\] is an empty string"):
        split_stop([""])
    with pytest.raises(ValueError, match="not a token id"):
        split_stop([-1])
    with pytest.raises(TypeError, match=r"stop\[1\]"):
        split_stop(["a", 1.5])
    with pytest.raises(TypeError):
        split_stop(b"x")


# ----------------------------------------------------------------------------- stream decoding
@pytest.fixture(scope="module", params=["byte_level", "llama"])
def hf_tokenizer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp(request.param)
    if request.param == "byte_level":
        write_byte_level_tokenizer(d)
    else:
        write_llama_tokenizer(d)
    return Tokenizer.from_file(d / "tokenizer.json")


def test_stream_decoder_matches_full_decode(hf_tokenizer: Tokenizer) -> None:
    """Pieces pushed one id at a time concatenate to the text decoded all at once, after any
    split point, and no piece holds a broken character (U+FFFD) for valid text."""
    tok = hf_tokenizer
    rng = np.random.default_rng(5)
    texts = [SAMPLE_TEXT, "snow \u2603 rocket \U0001f680\U0001f680 日本語", *corpus(7, 120)[:10]]
    broken = 0
    for text in texts:
        full = tok.encode(text)
        for k in sorted({0, 1, len(full) // 2, int(rng.integers(0, len(full)))}):
            dec = tok.stream_decoder(full[:k])
            pieces = [dec.push(t) for t in full[k:]]
            pieces.append(dec.flush())
            assert "".join(pieces) == continuation(tok, full[:k], full[k:])
            assert not any("\ufffd" in p for p in pieces)
            broken += sum(1 for t in full[k:] if "\ufffd" in tok.decode([t]))
    assert broken > 0  # some single tokens are partial characters: the hold-back was exercised


def test_stream_decoder_invalid_bytes(tmp_path: Path) -> None:
    """Random ids (invalid UTF-8 included) still stream to exactly the full decode.

    Byte-level only: HF's ByteFallback decoder (llama style) turns a whole run of byte tokens
    into U+FFFD when the run is invalid (valid ASCII bytes in it included), so on garbage a
    windowed decode can show fewer replacement characters than a one-shot decode; valid text is
    exact for both (previous test)."""
    tok = Tokenizer.from_file(write_byte_level_tokenizer(tmp_path) / "tokenizer.json")
    rng = np.random.default_rng(6)
    ctx = tok.encode("context")
    for _ in range(50):
        ids = [int(i) for i in rng.integers(0, tok.vocab_size, int(rng.integers(1, 30)))]
        dec = tok.stream_decoder(ctx)
        text = "".join(dec.push(t) for t in ids) + dec.flush()
        assert text == continuation(tok, ctx, ids)


# ----------------------------------------------------------------------------- the generation loop
@pytest.mark.parametrize("prompt", PROMPTS[:3])
def test_greedy_equals_argmax_loop(model: Model, prompt: str) -> None:
    stream = model.stream(prompt, max_new_tokens=32, temperature=0)
    text = "".join(stream)
    want = greedy_reference(model, prompt, 32)
    assert stream.token_ids == want
    assert stream.prompt_ids == model.tokenizer.encode(prompt)
    assert text == continuation(model.tokenizer, stream.prompt_ids, want)
    assert stream.finish_reason == ("length" if len(want) == 32 else "stop")
    assert model.generate(prompt, max_new_tokens=32, temperature=0) == text


def test_sampling_equals_sampler_loop(model: Model) -> None:
    """Seeded sampling with penalties draws exactly what the C++ sampler draws from fresh logits
    and the prompt + generated history: the loop wires logits, history and seed correctly."""
    kw = dict(
        temperature=0.9,
        top_k=50,
        top_p=0.9,
        min_p=0.02,
        repetition_penalty=1.3,
        frequency_penalty=0.1,
        presence_penalty=0.2,
        penalty_last_n=16,
    )
    prompt = PROMPTS[0]
    stream = model.stream(prompt, max_new_tokens=24, seed=1234, **kw)
    text = "".join(stream)
    sampler = Sampler(SamplingParams(seed=1234, **kw), model.config.vocab_size)
    ids = model.tokenizer.encode(prompt)
    want: list[int] = []
    for _ in range(24):
        hist = np.asarray(ids + want, dtype=np.int32)
        t = sampler.sample(model.logits(ids + want)[-1], hist)
        if t in model.tokenizer.eos_ids:
            break
        want.append(t)
    assert stream.token_ids == want
    assert text == continuation(model.tokenizer, ids, want)


def test_stream_concatenates_to_generate_and_seed_reproduces(model: Model) -> None:
    texts = {}
    for seed in (1, 2, 3):
        pieces = list(model.stream(PROMPTS[2], max_new_tokens=20, seed=seed, temperature=1.0))
        assert all(pieces)  # no empty pieces
        text = model.generate(PROMPTS[2], max_new_tokens=20, seed=seed, temperature=1.0)
        assert "".join(pieces) == text
        assert model.generate(PROMPTS[2], max_new_tokens=20, seed=seed, temperature=1.0) == text
        texts[seed] = text
    assert len(set(texts.values())) > 1  # the seed matters


def test_max_new_tokens(model: Model) -> None:
    for n in (1, 5, 17):
        s = model.stream(PROMPTS[1], max_new_tokens=n, temperature=0)
        list(s)
        assert s.token_ids == greedy_reference(model, PROMPTS[1], n)
        assert len(s.token_ids) <= n
    s = model.stream(PROMPTS[1], max_new_tokens=0)
    assert list(s) == [] and s.token_ids == [] and s.finish_reason == "length"


def _boundaries(tok: Tokenizer, ctx: list[int], ids: list[int]) -> list[int]:
    """Text offset after each generated token (None where the prefix ends mid-character)."""
    out = []
    for k in range(1, len(ids) + 1):
        t = continuation(tok, ctx, ids[:k])
        out.append(None if t.endswith("\ufffd") else len(t))
    return out


def test_stop_string_across_tokens(model: Model) -> None:
    """A stop string straddling two tokens ends generation at the token completing it, and the
    text is cut where it starts."""
    tok = model.tokenizer
    prompt = PROMPTS[0]
    s = model.stream(prompt, max_new_tokens=40, temperature=0)
    full = "".join(s)
    ids = s.token_ids
    bounds = _boundaries(tok, s.prompt_ids, ids)
    chosen = None
    for k in range(1, len(ids) - 1):
        b0, b, b1 = ([0] + bounds)[k - 1], bounds[k - 1], bounds[k]
        if None in (b0, b, b1) or b - b0 < 2 or b1 - b < 2:
            continue
        stop = full[b - 2 : b + 2]
        if full.find(stop) == b - 2 and "\ufffd" not in stop:
            chosen = (k, stop)
            break
    assert chosen is not None, f"no two-character tokens in {full!r}"
    k, stop = chosen
    s2 = model.stream(prompt, max_new_tokens=40, temperature=0, stop=[stop, "never-there"])
    assert "".join(s2) == full[: full.find(stop)]
    assert s2.token_ids == ids[: k + 1]  # stopped at the token completing the stop string
    assert s2.finish_reason == "stop"
    assert model.generate(prompt, max_new_tokens=40, temperature=0, stop=stop) == full[: b - 2]
    # a stop string whose beginning ends the text is held back, then flushed at the end
    tail = full[-1] + "\x00never"
    assert model.generate(prompt, max_new_tokens=40, temperature=0, stop=tail) == full


def test_stop_token_ids_and_eos(model: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    tok = model.tokenizer
    s = model.stream(PROMPTS[1], max_new_tokens=20, temperature=0)
    list(s)
    ids = s.token_ids
    stop_id = ids[3]
    first = ids.index(stop_id)
    s2 = model.stream(PROMPTS[1], max_new_tokens=20, temperature=0, stop=[stop_id])
    text = "".join(s2)
    assert s2.token_ids == ids[:first] and s2.finish_reason == "stop"
    assert text == continuation(tok, s.prompt_ids, ids[:first])
    # an end-of-generation id of the tokenizer stops the same way
    monkeypatch.setattr(tok, "eos_ids", (*tok.eos_ids, stop_id))
    assert model.generate(PROMPTS[1], max_new_tokens=20, temperature=0) == text


def test_context_full_ends_generation() -> None:
    m = Model.load(gguf("i2_s"), n_ctx=12)
    prompt = m.tokenizer.encode(PROMPTS[0])[:8]
    s = m.stream(prompt, max_new_tokens=50, temperature=0)
    list(s)
    # 8 prompt + 4 generated tokens fill the cache; the 5th is sampled from the last logits
    want = greedy_reference(m, m.tokenizer.decode(prompt), 5)
    if len(want) == 5:
        assert s.token_ids == want and s.finish_reason == "context"
    else:
        assert s.token_ids == want and s.finish_reason == "stop"
    # a prompt exactly as long as the context still yields one token
    full = m.tokenizer.encode(SAMPLE_TEXT)[:12]
    s = m.stream(full, max_new_tokens=5, temperature=0)
    list(s)
    assert len(s.token_ids) <= 1


def test_batch_equals_one_at_a_time() -> None:
    """generate_batch over n_seq slots (all at once, and with slot refills) equals generate()
    per prompt, greedy and seeded (prompt i uses seed + i)."""
    single = Model.load(gguf("i2_s"))
    prompts = [*PROMPTS, "x", PROMPTS[0]]
    greedy = [single.generate(p, max_new_tokens=24, temperature=0) for p in prompts]
    sampled = [single.generate(p, max_new_tokens=16, seed=40 + i) for i, p in enumerate(prompts)]
    for n_seq in (len(prompts), 2):
        m = Model.load(gguf("i2_s"), n_seq=n_seq)
        assert m.n_seq == n_seq
        assert m.generate_batch(prompts, max_new_tokens=24, temperature=0) == greedy
        assert m.generate_batch(prompts, max_new_tokens=16, seed=40) == sampled
    assert any("e" in g for g in greedy[:2])
    stops = m.generate_batch(prompts[:2], max_new_tokens=24, temperature=0, stop="e")
    assert stops == [g[: g.find("e")] if "e" in g else g for g in greedy[:2]]


def test_reuse_cache_matches_fresh(model: Model) -> None:
    """Generating with the KV cache prefix kept (as chat does) gives what a fresh prefill gives."""
    a = model.generate(PROMPTS[0], max_new_tokens=12, temperature=0, reuse_cache=True)
    longer = PROMPTS[0] + a + " and more"
    fresh = model.generate(longer, max_new_tokens=12, temperature=0)
    model.generate(PROMPTS[0], max_new_tokens=12, temperature=0, reuse_cache=True)
    assert model.generate(longer, max_new_tokens=12, temperature=0, reuse_cache=True) == fresh


def test_one_generation_at_a_time(model: Model) -> None:
    s = model.stream(PROMPTS[0], max_new_tokens=30, temperature=0)
    next(s)
    with pytest.raises(RuntimeError, match="busy"):
        model.generate("hello", max_new_tokens=2)
    with pytest.raises(RuntimeError, match="busy"):
        model.logits([1, 2, 3])
    s.close()
    assert model.generate(PROMPTS[0], max_new_tokens=5, temperature=0)

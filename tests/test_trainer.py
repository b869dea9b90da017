"""bitnet.train data / trainer / checkpoint and the ``bitnet train`` CLI, on tiny models."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from bitnet import autograd as ag
from bitnet.train.checkpoint import CheckpointError, latest_checkpoint
from bitnet.train.config import TrainModelConfig
from bitnet.train.data import (
    BOS_TOKEN,
    EOS_TOKEN,
    PAD_TOKEN,
    DataError,
    TokenDataset,
    encode_texts,
    load_texts,
    load_tokenizer,
    special_token_ids,
    split_train_val,
    train_bpe_tokenizer,
)
from bitnet.train.model import BitNetForTraining
from bitnet.train.trainer import TrainConfig, Trainer

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def corpus(n_docs: int = 40, words: int = 24, seed: int = 0) -> list[str]:
    """Repetitive word soup: learnable by a tiny model in a few dozen steps."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, words)) + "." for _ in range(n_docs)]


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(corpus(), 300)


@pytest.fixture(scope="module")
def stream(tok) -> np.ndarray:
    return encode_texts(tok, corpus())


def model_config(vocab: int, hidden: int = 64, ffn: int = 128) -> TrainModelConfig:
    return TrainModelConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )


def quiet(**kw) -> TrainConfig:
    base = dict(batch_size=2, seq_len=16, lr=3e-3, progress=False, log_every=0)
    base.update(kw)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------- load_texts
def test_load_txt_whole_file_and_blocks(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("first para\nline two\n\n\n  \nsecond para\n\nthird\n", encoding="utf-8")
    assert load_texts(p) == ["first para\nline two\n\n\n  \nsecond para\n\nthird\n"]
    assert load_texts(p, txt_blocks=True) == ["first para\nline two", "second para", "third"]


def test_load_jsonl_default_and_custom_field(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(
        '{"text": "héllo", "id": 1}\n\n{"text": "wörld 🙂", "body": "b"}\n', encoding="utf-8"
    )
    assert load_texts(p) == ["héllo", "wörld 🙂"]
    q = tmp_path / "e.jsonl"
    q.write_text('{"body": "x"}\n{"body": "y"}\n')
    assert load_texts(q, text_field="body") == ["x", "y"]


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"text": "ok"}\n{"text": oops}\n', r"d\.jsonl:2: invalid JSON"),
        ('{"text": "ok"}\n\n{"txt": "x"}\n', r"d\.jsonl:3: no field 'text' \(fields: 'txt'\)"),
        ('{"text": 5}\n', r"d\.jsonl:1: field 'text' is int, expected a string"),
        ('["text"]\n', r"d\.jsonl:1: expected a JSON object"),
    ],
)
def test_load_jsonl_errors_name_file_and_line(tmp_path, content, match):
    p = tmp_path / "d.jsonl"
    p.write_text(content)
    with pytest.raises(DataError, match=match):
        load_texts(p)


def test_load_csv(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text('id,text\n1,"multi\nline, with comma"\n2,plain\n', encoding="utf-8")
    assert load_texts(p) == ["multi\nline, with comma", "plain"]
    q = tmp_path / "bad.csv"
    q.write_text("id,body\n1,x\n")
    with pytest.raises(
        DataError, match=r"bad\.csv: no column 'text' in the header \(columns: 'id', 'body'\)"
    ):
        load_texts(q)


def test_load_directory_recurses_sorted_and_skips_other_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("B")
    (tmp_path / "a.jsonl").write_text('{"text": "A"}\n')
    (tmp_path / "sub" / "c.csv").write_text("text\nC\n")
    (tmp_path / "notes.md").write_text("ignored")
    (tmp_path / "empty.txt").write_text("  \n")
    assert load_texts(tmp_path) == ["A", "B", "C"]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt: no such file"):
        load_texts(tmp_path / "nope.txt")
    (tmp_path / "x.md").write_text("hi")
    with pytest.raises(DataError, match=r"x\.md: unsupported file type '\.md'"):
        load_texts(tmp_path / "x.md")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no .txt, .jsonl, .csv, .parquet files"):
        load_texts(empty)
    (empty / "blank.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no text found"):
        load_texts(empty)
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    with pytest.raises(DataError, match=r"latin1\.txt: not UTF-8"):
        load_texts(tmp_path / "latin1.txt")


def test_load_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (parquet support)")
    import pyarrow.parquet as pq

    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["one", "two"], "n": [1, 2]}), p)
    assert load_texts(p) == ["one", "two"]
    with pytest.raises(DataError, match=r"t\.parquet: no column 'body'"):
        load_texts(p, text_field="body")


def test_load_parquet_without_pyarrow_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow...` fail
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    p = tmp_path / "t.parquet"
    p.write_bytes(b"PAR1")
    with pytest.raises(DataError, match=r"t\.parquet: .*needs pyarrow.*pip install pyarrow"):
        load_texts(p)


# ----------------------------------------------------------------------------- tokenizer
def test_tokenizer_training_saving_and_loading(tmp_path):
    texts = corpus() + ["Zürich naïve café 日本語 🙂"]
    tok = train_bpe_tokenizer(texts, 320, tmp_path / "tk")
    assert [tok.token_to_id(t) for t in (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)] == [0, 1, 2]
    assert 259 < tok.get_vocab_size() <= 320
    assert special_token_ids(tok) == (0, 1)
    # Byte-level: any text round-trips, even characters never seen in training.
    for s in ["alpha beta gamma.", "Zürich naïve café 日本語 🙂", "unseen ✓ ∑ \t tabs"]:
        enc = tok.encode(s, add_special_tokens=False)
        assert tok.decode(enc.ids) == s
    # The post-processor prepends <|bos|> (what bitnet convert reads as add_bos_token).
    assert tok.encode("alpha").ids[0] == 0
    # Merges were learnt: a frequent word is a single token (plus its leading space).
    assert len(tok.encode(" alpha", add_special_tokens=False).ids) == 1
    cfg = json.loads((tmp_path / "tk" / "tokenizer_config.json").read_text())
    assert cfg["bos_token"] == BOS_TOKEN and cfg["eos_token"] == EOS_TOKEN
    again = load_tokenizer(tmp_path / "tk")
    assert again.encode(texts[0]).ids == tok.encode(texts[0]).ids
    assert (
        load_tokenizer(tmp_path / "tk" / "tokenizer.json").get_vocab_size() == tok.get_vocab_size()
    )


def test_tokenizer_errors(tmp_path):
    with pytest.raises(ValueError, match="vocab_size 100 is too small.*at least 259"):
        train_bpe_tokenizer(corpus(), 100)
    with pytest.raises(ValueError, match="no text to train on"):
        train_bpe_tokenizer(["", ""], 300)
    with pytest.raises(FileNotFoundError, match="no tokenizer.json in this directory"):
        load_tokenizer(tmp_path)
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": 3}')
    with pytest.raises(DataError, match="not a valid tokenizer.json"):
        load_tokenizer(bad)


def test_encode_texts_wraps_documents(tok):
    docs = ["alpha beta", "gamma"]
    ids = encode_texts(tok, docs)
    a = tok.encode(docs[0], add_special_tokens=False).ids
    b = tok.encode(docs[1], add_special_tokens=False).ids
    assert ids.dtype == np.int32
    assert ids.tolist() == [0, *a, 1, 0, *b, 1]
    assert encode_texts(tok, docs, add_bos=False, add_eos=False).tolist() == a + b


# ----------------------------------------------------------------------------- dataset
def test_windows_and_targets_follow_the_stream():
    ids = np.arange(3, 3 + 53, dtype=np.int64)  # 53 tokens, seq_len 7 -> 7 windows
    ds = TokenDataset(ids, 7)
    assert len(ds) == 7 and ds.tokens.dtype == np.int32
    x, y = ds.window(2)
    assert x.tolist() == list(range(3 + 14, 3 + 21)) and y.tolist() == list(range(3 + 15, 3 + 22))
    with pytest.raises(IndexError, match=r"window 7 out of range \[0, 7\)"):
        ds.window(7)


def test_batches_are_deterministic_shuffled_and_cover_each_epoch():
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 1000, 16 * 23 + 1)
    ds = TokenDataset(ids, 16)  # 23 windows; batch 4 -> 5 batches, 3 windows dropped
    assert ds.batches_per_epoch(4) == 5

    def starts(batches):
        return [tuple(int(r[0]) for r in x) for x, _ in batches]

    e0 = list(ds.batches(4, seed=7, epoch=0))
    assert len(e0) == 5
    for x, y in e0:
        assert x.shape == y.shape == (4, 16) and x.dtype == np.int32
        assert np.array_equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    assert starts(e0) == starts(ds.batches(4, seed=7, epoch=0))  # same seed, same order
    assert starts(e0) != starts(ds.batches(4, seed=8, epoch=0))
    assert starts(e0) != starts(ds.batches(4, seed=7, epoch=1))
    # Each window at most once per epoch, and the windows are the stream's.
    seen = [w for x, _ in e0 for w in x.tolist()]
    assert len({tuple(w) for w in seen}) == 20
    all_windows = {tuple(ds.window(i)[0].tolist()) for i in range(len(ds))}
    assert {tuple(w) for w in seen} <= all_windows
    # batch_at counts across epochs: batch 5 + j is batch j of epoch 1.
    e1 = list(ds.batches(4, seed=7, epoch=1))
    for j in range(5):
        for k, ref in ((j, e0[j]), (5 + j, e1[j])):
            x, y = ds.batch_at(k, 4, seed=7)
            assert np.array_equal(x, ref[0]) and np.array_equal(y, ref[1])


def test_dataset_errors():
    with pytest.raises(ValueError, match="10 tokens are fewer than one window of seq_len 10"):
        TokenDataset(np.arange(10), 10)
    with pytest.raises(ValueError, match="seq_len must be >= 1"):
        TokenDataset(np.arange(10), 0)
    with pytest.raises(ValueError, match="negative token id -3"):
        TokenDataset(np.array([1, 2, -3, 4]), 2)
    ds = TokenDataset(np.arange(41), 10)  # 4 windows
    with pytest.raises(ValueError, match="batch_size 5 is larger than the 4 windows"):
        ds.batch_at(0, 5)
    with pytest.raises(ValueError, match="batch index must be >= 0"):
        ds.batch_at(-1, 2)


def test_split_train_val():
    ids = np.arange(1000)
    tr, va = split_train_val(ids, 0.1, 32)
    assert np.array_equal(np.concatenate([tr, va]), ids) and len(va) == 100
    tr, va = split_train_val(ids, 0.01, 32)
    assert len(va) == 33  # at least one window
    tr, va = split_train_val(ids, 0.0, 32)
    assert len(tr) == 1000 and len(va) == 0
    with pytest.raises(ValueError, match=r"val_fraction 1.5 is not in \[0, 1\)"):
        split_train_val(ids, 1.5, 32)
    with pytest.raises(ValueError, match="40 tokens cannot hold a training and a validation"):
        split_train_val(np.arange(40), 0.5, 32)


# ----------------------------------------------------------------------------- training
def test_loss_decreases_on_a_repetitive_corpus(tok, stream):
    model = BitNetForTraining(model_config(tok.get_vocab_size()), seed=0)
    train_ids, val_ids = split_train_val(stream, 0.1, 16)
    cfg = quiet(steps=40, batch_size=4, lr=5e-3, warmup=4, eval_every=20)
    hist = Trainer(model, TokenDataset(train_ids, 16), TokenDataset(val_ids, 16), cfg).train()
    assert [h["step"] for h in hist] == list(range(1, 41))
    first, last = hist[0]["loss"], np.mean([h["loss"] for h in hist[-5:]])
    # Uniform guessing over ~290 tokens is ln(290) ~ 5.7; the corpus is 12 words in random
    # order (~ln 12 ~ 2.5 nats per word, spread over ~2 tokens), so a model that learnt the
    # vocabulary gets well below half the initial loss.
    assert first > 5.0 and last < 0.5 * first
    evals = [h for h in hist if "eval_loss" in h]
    assert [h["step"] for h in evals] == [20, 40]
    assert evals[1]["eval_loss"] < evals[0]["eval_loss"] < first
    assert evals[1]["eval_ppl"] == pytest.approx(math.exp(evals[1]["eval_loss"]), rel=1e-12)


def test_steps_match_a_torch_adamw_reference(tok, stream):
    """Three trainer steps (two_stage schedule, so lr and weight decay change every step, a
    stage switch at step 2, grad clipping active) against a hand-written loop: the tape's
    gradients fed to torch.optim.AdamW (weight decay on matrices only) and
    torch.nn.utils.clip_grad_norm_, with lr / wd from the schedule formulas written here.

    The two optimizers agree to a few ulps, not bit for bit, and ternary quantization is
    discontinuous: an ulp can move a weight across a rounding threshold and change the next
    loss by ~1e-4. So after each step the weights are compared, then the reference model takes
    the trainer's weights (torch keeps its own moments), and every step's loss is checked on
    identical weights."""
    torch = pytest.importorskip("torch")
    vocab = tok.get_vocab_size()
    cfg = quiet(
        steps=4,
        lr=2e-3,
        warmup=1,
        weight_decay=0.3,
        grad_clip=0.5,
        schedule="two_stage",
        stage2_lr=1e-3,
        betas=(0.8, 0.9),
        eps=1e-6,
        seed=3,
    )
    data = TokenDataset(stream, 16)
    model = BitNetForTraining(model_config(vocab), seed=4)
    trainer = Trainer(model, data, None, cfg)

    def schedule(s: int) -> tuple[float, float]:  # TwoStageSchedule(total 4, warmup 1, split 2)
        if s < 2:
            lr = 2e-3 * (s + 1) if s < 1 else 2e-3 * 0.5 * (1 + math.cos(math.pi * (s - 1) / 3))
            return lr, 0.3 * 0.5 * (1 + math.cos(math.pi * s / 2))
        return 1e-3 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 2)), 0.0

    ref = BitNetForTraining(model_config(vocab), seed=4)
    names = list(ref.params)
    tp = {n: torch.tensor(ref.params[n].numpy(), requires_grad=True) for n in names}
    decay = [tp[n] for n in names if tp[n].ndim == 2]
    no_decay = [tp[n] for n in names if tp[n].ndim != 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.3}, {"params": no_decay, "weight_decay": 0.0}],
        lr=2e-3,
        betas=(0.8, 0.9),
        eps=1e-6,
        foreach=False,
    )
    for s in range(3):
        rec = trainer.train(until=s + 1)[s]
        lr, wd = schedule(s)
        assert rec["lr"] == pytest.approx(lr, rel=1e-12)
        assert rec["weight_decay"] == pytest.approx(wd, rel=1e-12, abs=1e-15)
        opt.param_groups[0]["lr"] = opt.param_groups[1]["lr"] = lr
        opt.param_groups[0]["weight_decay"] = wd
        x, y = data.batch_at(s, 2, seed=3)
        loss = ref.loss(x, y)
        # Same weights, same kernels: only the order of the loss's final sum could differ.
        assert rec["loss"] == pytest.approx(loss.item(), rel=1e-6)
        ag.backward(loss)
        for n in names:
            tp[n].grad = torch.tensor(ref.params[n].grad)
            ref.params[n].zero_grad()
        norm = torch.nn.utils.clip_grad_norm_(list(tp.values()), 0.5)
        # torch sums the norm in fp32, the core in double: ~1e-6 relative.
        assert rec["grad_norm"] == pytest.approx(float(norm), rel=1e-5)
        opt.step()
        # The core's AdamW follows torch's fp32 arithmetic to a few ulps per step (optim.h), and
        # the clip coefficient differs by the ~1e-6 relative norm difference: |w| <= ~1 and an
        # update is <= 2e-3, so 1e-6 is a few ulps of the largest weights.
        got = model.state_dict()
        with torch.no_grad():
            for n in names:
                np.testing.assert_allclose(got[n], tp[n].numpy(), rtol=0, atol=1e-6, err_msg=n)
                tp[n].copy_(torch.from_numpy(got[n]))
                ref.params[n].numpy()[...] = got[n]


def test_two_stage_and_lambda_warmup_schedules_are_applied(tok, stream):
    cfg = quiet(
        steps=10,
        lr=1e-2,
        min_lr=1e-4,
        warmup=2,
        weight_decay=0.1,
        schedule="two_stage",
        stage2_lr=4e-3,
        lambda_warmup_steps=4,
    )
    model = BitNetForTraining(model_config(tok.get_vocab_size()), seed=0)
    hist = Trainer(model, TokenDataset(stream, 16), None, cfg).train()
    for s, h in enumerate(hist):
        if s < 2:
            lr, wd = 1e-2 * (s + 1) / 2, 0.1 * 0.5 * (1 + math.cos(math.pi * s / 5))
        elif s < 5:  # stage 1: cosine over the whole run, from the end of the warm-up
            lr = 1e-4 + (1e-2 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (s - 2) / 8))
            wd = 0.1 * 0.5 * (1 + math.cos(math.pi * s / 5))
        else:  # stage 2: a drop to stage2_lr, cosine to min_lr, no weight decay
            lr, wd = 1e-4 + (4e-3 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (s - 5) / 5)), 0.0
        assert h["lr"] == pytest.approx(lr, rel=1e-12), s
        assert h["weight_decay"] == pytest.approx(wd, rel=1e-12, abs=1e-15), s
        assert h["lambda"] == min(1.0, s / 4)
    assert hist[5]["lr"] < hist[4]["lr"]  # the abrupt drop at the split
    assert model.lambda_ == 1.0


def test_grad_accumulation_equals_the_larger_batch(tok, stream):
    """2 micro-batches of 2 == one batch of 4: the step sees the same 4 windows (batch_at with
    batch_size * grad_accum, split in order) and each micro loss is scaled by 1/2, so the
    gradient is the same mean over all tokens; only the fp32 summation order differs."""
    data = TokenDataset(stream, 16)

    def run(batch: int, accum: int):
        model = BitNetForTraining(model_config(tok.get_vocab_size()), seed=2)
        cfg = quiet(steps=2, batch_size=batch, grad_accum=accum, lr=1e-3, grad_clip=1.0)
        return Trainer(model, data, None, cfg).train(), model.state_dict()

    h4, w4 = run(4, 1)
    h22, w22 = run(2, 2)
    for a, b in zip(h4, h22, strict=True):
        # mean of two fp32 means vs one mean over the same 4 * 16 losses: ~1 ulp of ~5.6
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
        # global norms summed in double from gradients that differ in fp32 rounding only
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-6)
    # Adam normalises each element by its own gradient magnitude, so an element whose gradient
    # is a near-cancelling sum can move by a different fraction of lr; 2 steps of lr 1e-3
    # bound the difference by 4e-3, it is ~1e-7 in practice: 2e-6 = 0.1% of one step.
    for n in w4:
        np.testing.assert_allclose(w4[n], w22[n], rtol=0, atol=2e-6, err_msg=n)
    # and the accumulation is not a no-op: a batch of 2 without accumulation differs
    h2, _ = run(2, 1)
    assert h2[0]["loss"] != pytest.approx(h4[0]["loss"], rel=1e-4)


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path, tok, stream):
    vocab = tok.get_vocab_size()
    train_ids, val_ids = split_train_val(stream, 0.1, 16)
    train, val = TokenDataset(train_ids, 16), TokenDataset(val_ids, 16)
    kw = dict(
        steps=8,
        warmup=2,
        grad_accum=2,
        lambda_warmup_steps=6,
        eval_every=3,
        eval_batches=2,
        seed=11,
    )
    straight = BitNetForTraining(model_config(vocab), seed=5)
    t_straight = Trainer(straight, train, val, quiet(**kw))
    h_straight = t_straight.train()

    out = tmp_path / "run"
    first = BitNetForTraining(model_config(vocab), seed=5)
    Trainer(first, train, val, quiet(out_dir=str(out), **kw), tokenizer=tok).train(until=4)
    assert latest_checkpoint(out) == out / "checkpoint-4"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers

    # A fresh model with other weights: everything must come from the checkpoint.
    resumed = BitNetForTraining(model_config(vocab), seed=99)
    t = Trainer(resumed, train, val, quiet(out_dir=str(out), **kw), tokenizer=tok).resume(out)
    assert t.step == 4 and len(t.history) == 4 and resumed.lambda_ == pytest.approx(3 / 6)
    h_resumed = t.train()

    def strip(h):
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in h]

    assert strip(h_resumed) == strip(h_straight)  # bit-identical losses, norms, lr, evals
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(np.array_equal(a[n], b[n]) for n in a)
    for (sa, ma, va), (sb, mb, vb) in zip(
        t_straight.optimizer.get_state(), t.optimizer.get_state(), strict=True
    ):
        assert sa == sb == 8 and np.array_equal(ma, mb) and np.array_equal(va, vb)
    # the final checkpoint is a HF directory that from_pretrained reads back
    final = out / "checkpoint-8"
    assert latest_checkpoint(out) == final
    again = BitNetForTraining.from_pretrained(final)
    assert all(np.array_equal(again.state_dict()[n], a[n]) for n in a)
    assert load_tokenizer(final).get_vocab_size() == vocab


def test_checkpoint_errors(tmp_path, tok, stream):
    vocab = tok.get_vocab_size()
    data = TokenDataset(stream, 16)
    out = tmp_path / "run"
    model = BitNetForTraining(model_config(vocab), seed=0)
    Trainer(model, data, None, quiet(steps=2, out_dir=str(out))).train()
    ck = out / "checkpoint-2"

    def fresh(**kw):
        cfg = model_config(vocab, **kw)
        return Trainer(BitNetForTraining(cfg, seed=1), data, None, quiet(steps=4))

    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        fresh().resume(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no checkpoint-<step> directory inside it"):
        fresh().resume(tmp_path)
    with pytest.raises(
        CheckpointError, match=r"checkpoint is of a different model: hidden_size 64 \(model: 128\)"
    ):
        fresh(hidden=128, ffn=128).resume(ck)
    # Corruptions: each is named, and a failed resume leaves the trainer untouched.
    state = (ck / "trainer_state.json").read_text()
    (ck / "trainer_state.json").write_text(state[:-20])
    t = fresh()
    before = t.model.state_dict()
    with pytest.raises(CheckpointError, match=r"trainer_state.json: corrupt trainer state"):
        t.resume(ck)
    assert t.step == 0 and all(np.array_equal(before[n], t.model.state_dict()[n]) for n in before)
    (ck / "trainer_state.json").write_text(state)
    blob = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match=r"model.safetensors: corrupt safetensors file"):
        fresh().resume(ck)
    (ck / "model.safetensors").write_bytes(blob)
    (ck / "optimizer.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"optimizer.safetensors: missing"):
        fresh().resume(ck)


def test_checkpoint_save_is_atomic(tmp_path, tok, stream, monkeypatch):
    import safetensors.numpy

    data = TokenDataset(stream, 16)
    t = Trainer(BitNetForTraining(model_config(tok.get_vocab_size())), data, None, quiet(steps=3))
    t.train(until=1)
    ck = t.save_checkpoint(tmp_path / "ck")
    saved = (ck / "model.safetensors").read_bytes()
    t.train(until=2)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        t.save_checkpoint(tmp_path / "ck")
    # the old checkpoint is intact and no temporary directory is left
    assert (ck / "model.safetensors").read_bytes() == saved
    assert json.loads((ck / "trainer_state.json").read_text())["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    monkeypatch.undo()
    t.save_checkpoint(tmp_path / "ck")  # replaces the old one
    assert json.loads((ck / "trainer_state.json").read_text())["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_config_and_trainer_errors(tok, stream):
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="warmup 20 exceeds steps 10"):
        TrainConfig(steps=10, warmup=20)
    with pytest.raises(ValueError, match=r"betas must be two numbers in \[0, 1\)"):
        TrainConfig(betas=(0.9, 1.0))
    model = BitNetForTraining(model_config(tok.get_vocab_size()))
    with pytest.raises(ValueError, match="train_data has seq_len 8, the config 16"):
        Trainer(model, TokenDataset(stream, 8), None, quiet())
    small = BitNetForTraining(model_config(100))
    with pytest.raises(ValueError, match="holds token id .* outside the model's vocab_size 100"):
        Trainer(small, TokenDataset(stream, 16), None, quiet())
    with pytest.raises(ValueError, match="batch_size 4096 is larger than"):
        Trainer(model, TokenDataset(stream, 16), None, quiet(batch_size=2048, grad_accum=2))
    with pytest.raises(ValueError, match="no validation data"):
        Trainer(model, TokenDataset(stream, 16), None, quiet()).evaluate()


# ----------------------------------------------------------------------------- export / CLI
def test_export_gguf_runs_in_the_inference_engine(tmp_path, tok, stream):
    import bitnet

    model = BitNetForTraining(model_config(tok.get_vocab_size(), hidden=128, ffn=256), seed=0)
    t = Trainer(model, TokenDataset(stream, 16), None, quiet(steps=6), tokenizer=tok)
    t.train()
    path = t.export_gguf(tmp_path / "m.gguf", "i2_s", "f32")
    m = bitnet.Model.load(path)
    ids = [int(i) for i in stream[:24]]
    with ag.no_grad():
        want = model.forward(np.array([ids])).numpy()
    # The same ternary weights, int8 activations and f32 embedding/head: only the fp32
    # summation order of the two engines differs (observed ~1e-6 at |logits| ~ 3).
    np.testing.assert_allclose(np.asarray(m.logits(ids)), want, rtol=0, atol=1e-4)
    # Greedy generation in the engine == greedy decoding with the training model.
    prompt = m.tokenizer.encode("alpha beta")
    assert prompt == [0, *tok.encode("alpha beta", add_special_tokens=False).ids]  # <|bos|>
    seq = list(prompt)
    with ag.no_grad():
        for _ in range(6):
            seq.append(int(np.argmax(model.forward(np.array([seq])).numpy()[-1])))
    new = seq[len(prompt) :]
    if 1 in new:  # generation stops at <|eos|>
        new = new[: new.index(1)]
    assert m.generate("alpha beta", max_new_tokens=6, temperature=0) == tok.decode(new)


@pytest.fixture
def cli_main():
    from bitnet import cli

    assert "train" in cli.COMMANDS
    return cli.main


def test_cli_train_resume_and_export(tmp_path, cli_main, capsys):
    import bitnet

    data = tmp_path / "corpus.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus(60)))
    out = tmp_path / "run"
    common = ["train", "--data", str(data), "--seq-len", "16", "--batch-size", "4", "--quiet"]
    rc = cli_main([*common, "--vocab-size", "300", "--steps", "4", "--out", str(out)])
    assert rc == 0
    assert capsys.readouterr().out.splitlines() == [f"checkpoint: {out / 'checkpoint-4'}"]
    gguf = tmp_path / "m.gguf"
    rc = cli_main(
        [*common, "--steps", "6", "--out", str(out), "--resume", str(out), "--export", str(gguf)]
    )
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"checkpoint: {out / 'checkpoint-6'}", f"gguf: {gguf}"]
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["history"]] == [1, 2, 3, 4, 5, 6]
    assert "eval_loss" in state["history"][-1]  # held-out 5% evaluated at the end
    m = bitnet.Model.load(gguf)
    assert m.config.n_embd == 128 and m.config.vocab_size == load_tokenizer(out).get_vocab_size()
    assert isinstance(m.generate("alpha", max_new_tokens=4, temperature=0), str)


def test_cli_errors(tmp_path, cli_main, capsys):
    assert cli_main(["train", "--data", str(tmp_path / "none.txt"), "--out", str(tmp_path)]) == 1
    assert "bitnet train: error:" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{oops\n')
    assert cli_main(["train", "--data", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert "bad.jsonl:2: invalid JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["train", "--data", "x", "--out", "y", "--preset", "huge"])
    with pytest.raises(SystemExit):  # --vocab-size and --tokenizer are exclusive
        cli_main(["train", "--data", "x", "--out", "y", "--vocab-size", "300", "--tokenizer", "t"])
    cfg = tmp_path / "model.json"
    cfg.write_text(
        json.dumps(
            {
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 1,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "bogus": 1,
            }
        )
    )
    txt = tmp_path / "c.txt"
    txt.write_text(" ".join(corpus(20)))
    rc = cli_main(["train", "--data", str(txt), "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert rc == 1 and "bogus" in capsys.readouterr().err

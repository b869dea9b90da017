"""bitnet.lora: LoRA adapters on a frozen packed ternary base, PEFT interop, data, merge, CLI.

The tiny base is a transformers BitNetForCausalLM checkpoint (hidden 256, 2 layers, GQA 4/2,
ffn 512, f32 master weights) converted to GGUF (i2_s, f32 embedding: the GGUF then holds exactly
the ternary weights and embedding that the PyTorch reference uses).

Tolerances.
* Gradients of one LoRA layer against float64 torch: every fp32 product (x @ A^T, h @ B^T, and
  their backward sums) has at most K <= 256 terms, so errors stay below ~(K + 2) u |terms|
  (u = 2**-24); we allow 1e-5 relative to the largest gradient entry, above that bound yet far
  below any wrong-term error (~the entries themselves).
* Whole-model logits / gradients against transformers + PEFT (fp32): the only differences are
  fp32 summation orders (~1e-6 relative). BitNet's int8 activation rounding could amplify them
  when an activation lies within ~1e-6 of a rounding boundary; on these seeded inputs it does
  not, and a flip would show up as an error of ~1e-2, so 2e-5 (logits of magnitude ~1) and 1e-4
  relative (gradients) separate "same computation" from "different computation" cleanly. The
  adapter's own effect on the logits is asserted to be >100x the tolerance.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bitnet import _ext, ops
from bitnet import autograd as ag
from bitnet.lora import (
    SIMPLE_TEMPLATE,
    DataError,
    InstructionDataset,
    LoraConfig,
    LoraModel,
    LoraTrainConfig,
    LoraTrainer,
    encode_example,
    load_instructions,
    peft_key,
)

sys.path.insert(0, str(Path(__file__).parent))
from checkpoints import BITLINEAR, make_bitnet_checkpoint, ternarize  # noqa: E402
from model_reference import activation_quant, transformers_reference  # noqa: E402

U = 2.0**-24


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from bitnet.convert import convert

    d = tmp_path_factory.mktemp("lora")
    ck = make_bitnet_checkpoint(
        d / "ck", hidden=256, layers=2, heads=4, kv_heads=2, ffn=512, dtype="f32"
    )
    gguf = convert(ck, d / "base.gguf", "i2_s", "f32", progress=False, report=False)
    data = d / "data.jsonl"
    recs = [
        {"prompt": "ka bit net ", "response": "ter na ry lo ra"},
        {"prompt": "qua nti ze ", "response": "pa ck ro w"},
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "sca le?"},
                {"role": "assistant", "content": "em be dd ing"},
                {"role": "user", "content": "to ke n"},
                {"role": "assistant", "content": "at te nti on"},
            ]
        },
    ]
    data.write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    return SimpleNamespace(dir=d, ck=ck, gguf=gguf, data=data)


def _randomize(model: LoraModel, seed: int, std: float = 0.05) -> None:
    rng = np.random.default_rng(seed)
    for _, t in model.named_parameters():
        t.numpy()[...] = rng.standard_normal(t.shape).astype(np.float32) * np.float32(std)


# ----------------------------------------------------------------------------- config
def test_config_validation_and_peft_dict() -> None:
    c = LoraConfig(r=4, alpha=8, dropout=0.1, target_modules=["v_proj", "q_proj"])
    assert c.target_modules == ["q_proj", "v_proj"] and c.scaling == 2.0
    d = c.to_peft_dict("base.gguf")
    assert d["peft_type"] == "LORA" and d["task_type"] == "CAUSAL_LM"
    assert (d["r"], d["lora_alpha"], d["lora_dropout"]) == (4, 8.0, 0.1)
    assert d["bias"] == "none" and d["fan_in_fan_out"] is False
    assert d["base_model_name_or_path"] == "base.gguf"
    assert LoraConfig.from_peft_dict(d) == c
    assert LoraConfig(target_modules="all-linear").target_modules == LoraConfig().target_modules
    with pytest.raises(ValueError, match="r must be an integer >= 1, got 0"):
        LoraConfig(r=0)
    with pytest.raises(ValueError, match="r must be an integer >= 1, got -2"):
        LoraConfig(r=-2)
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        LoraConfig(alpha=0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        LoraConfig(dropout=1.0)
    with pytest.raises(ValueError, match="unknown target module 'qkv_proj'"):
        LoraConfig(target_modules=["q_proj", "qkv_proj"])
    with pytest.raises(ValueError, match="target_modules is empty"):
        LoraConfig(target_modules=[])
    with pytest.raises(ValueError, match="use_dora = True is not supported"):
        LoraConfig.from_peft_dict({**d, "use_dora": True}, "x.json")
    with pytest.raises(ValueError, match="peft_type is 'IA3'"):
        LoraConfig.from_peft_dict({**d, "peft_type": "IA3"})
    with pytest.raises(ValueError, match="regular expression"):
        LoraConfig.from_peft_dict({**d, "target_modules": ".*proj"})


# ----------------------------------------------------------------------------- one layer
@pytest.mark.parametrize(("module", "m"), [("self_attn.q_proj", 5), ("mlp.down_proj", 1)])
def test_lora_layer_gradients_match_torch(tiny: SimpleNamespace, module: str, m: int) -> None:
    model = LoraModel(tiny.gguf, LoraConfig(r=3, alpha=5))
    _randomize(model, seed=m)
    name = f"model.layers.1.{module}"
    a_t, b_t = model.adapters[name]
    w = model.base_weights()[name]
    t, s = ops.unpack(w)
    n, k = w.shape
    rng = np.random.default_rng(11)
    x = rng.standard_normal((m, k)).astype(np.float32)
    g = rng.standard_normal((m, n)).astype(np.float32)
    xt = ag.Tensor(x, requires_grad=True)
    y = model._proj(xt, name)
    ag.backward_with(y, g)

    x64 = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    a64 = torch.tensor(a_t.numpy(), dtype=torch.float64, requires_grad=True)
    b64 = torch.tensor(b_t.numpy(), dtype=torch.float64, requires_grad=True)
    wq = torch.from_numpy(t.astype(np.float64) * float(s))
    xq = activation_quant(torch.from_numpy(x)).double()
    x_ste = x64 + (xq - x64).detach()  # straight-through: d x_ste / d x = 1
    ref = x_ste @ wq.T + (5 / 3) * (x64 @ a64.T) @ b64.T
    ref.backward(torch.from_numpy(g).double())
    np.testing.assert_allclose(y.numpy(), ref.detach().numpy(), rtol=0, atol=1e-5)
    for ours, theirs in ((xt.grad, x64.grad), (a_t.grad, a64.grad), (b_t.grad, b64.grad)):
        theirs = theirs.numpy()
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())
    assert w.tobytes() == model.base_weights()[name].tobytes()


# ----------------------------------------------------------------------------- training
def test_training_keeps_base_bit_identical_and_lowers_loss(tiny: SimpleNamespace) -> None:
    raw = tiny.gguf.read_bytes()
    model = LoraModel(tiny.gguf, LoraConfig(r=4, alpha=8, dropout=0.1), seed=1)
    base = {k: w.tobytes() for k, w in model.base_weights().items()}
    frozen = [model._base.embed.numpy().copy()] + [
        t.numpy().copy() for t in model._base.norms.values()
    ]
    data = load_instructions(tiny.data, model.tokenizer, 64)
    cfg = LoraTrainConfig(steps=12, batch_size=3, lr=1e-2, schedule="constant", progress=False)
    hist = LoraTrainer(model, data, cfg).train()
    assert len(hist) == 12 and not any(h["skipped"] for h in hist)
    assert hist[-1]["loss"] < 0.8 * hist[0]["loss"], [h["loss"] for h in hist]
    assert all(h["tokens"] == data.trained_tokens for h in hist)  # one batch = all examples
    assert {k: w.tobytes() for k, w in model.base_weights().items()} == base
    now = [model._base.embed.numpy()] + [t.numpy() for t in model._base.norms.values()]
    assert all(np.array_equal(a, b) for a, b in zip(frozen, now, strict=True))
    assert tiny.gguf.read_bytes() == raw
    # Only adapters are parameters; the B matrices left zero.
    assert len(model.parameters()) == 2 * 7 * 2
    assert all(np.abs(t.numpy()).max() > 0 for t in model.parameters())


def test_gguf_and_checkpoint_bases_agree(tiny: SimpleNamespace) -> None:
    # The converter's ternarization and LoraModel's are both absmean: same codes, same fp32
    # scale (i2_s), same f32 embedding -> identical logits, and an untrained adapter (B = 0)
    # leaves the base unchanged.
    a = LoraModel(tiny.gguf)
    b = LoraModel(tiny.ck)
    ids = np.random.default_rng(0).integers(0, 576, 13)
    np.testing.assert_array_equal(a.logits(ids), b.logits(ids))
    master = b._master_state()
    for k, w in a.base_weights().items():
        t, s = ternarize(master[k + ".weight"])
        ta, sa = ops.unpack(w)
        assert np.array_equal(ta, t) and np.float32(sa) == s


@pytest.mark.parametrize("wtype", ["tq1_0", "tq2_0"])
def test_tq_bases_load_packed(tiny: SimpleNamespace, wtype: str) -> None:
    from bitnet.convert import convert

    path = convert(tiny.ck, tiny.dir / f"{wtype}.gguf", wtype, "f16", progress=False, report=False)
    model = LoraModel(path)
    state = LoraModel(tiny.ck)._master_state()
    for k, w in model.base_weights().items():
        assert w.format == wtype
        t, s = ternarize(state[k + ".weight"])
        tu, su = ops.unpack(w)
        assert np.array_equal(tu, t) and np.float32(su) == np.float32(np.float16(s))
    out = model.logits(np.arange(5))
    assert out.shape == (5, 576) and np.isfinite(out).all()


# ----------------------------------------------------------------------------- adapters
def test_save_load_round_trip(tiny: SimpleNamespace) -> None:
    cfg = LoraConfig(r=2, alpha=3, target_modules=["k_proj", "up_proj"])
    model = LoraModel(tiny.gguf, cfg, seed=4)
    _randomize(model, 5)
    out = model.save_adapter(tiny.dir / "rt")
    conf = json.loads((out / "adapter_config.json").read_text())
    assert conf["peft_type"] == "LORA" and conf["target_modules"] == ["k_proj", "up_proj"]
    assert conf["base_model_name_or_path"] == str(tiny.gguf)
    from safetensors.numpy import load_file

    st = load_file(str(out / "adapter_model.safetensors"))
    assert set(st) == {
        peft_key(f"model.layers.{i}.{p}", ab)
        for i in range(2)
        for p in ("self_attn.k_proj", "mlp.up_proj")
        for ab in "AB"
    }
    key = "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"
    assert st[key].shape == (2, 256) and st[key.replace("lora_A", "lora_B")].shape == (128, 2)
    again = LoraModel.from_pretrained(tiny.gguf, out)
    assert again.lora_config == cfg
    ids = np.random.default_rng(1).integers(0, 576, (2, 9))
    np.testing.assert_array_equal(again.logits(ids), model.logits(ids))
    for (ka, ta), (kb, tb) in zip(model.named_parameters(), again.named_parameters(), strict=True):
        assert ka == kb and np.array_equal(ta.numpy(), tb.numpy())


def test_load_adapter_errors(tiny: SimpleNamespace) -> None:
    from safetensors.numpy import load_file, save_file

    model = LoraModel(tiny.gguf, LoraConfig(r=2, target_modules=["q_proj"]))
    _randomize(model, 8)
    good = model.save_adapter(tiny.dir / "good")
    state = load_file(str(good / "adapter_model.safetensors"))
    ids = np.arange(6)
    before = model.logits(ids)

    def variant(name: str, st: dict, conf_update: dict | None = None) -> Path:
        d = tiny.dir / name
        d.mkdir(exist_ok=True)
        conf = json.loads((good / "adapter_config.json").read_text())
        conf.update(conf_update or {})
        (d / "adapter_config.json").write_text(json.dumps(conf))
        save_file(st, str(d / "adapter_model.safetensors"))
        return d

    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    wide = variant("wide", {**state, key: np.zeros((2, 512), np.float32)})
    with pytest.raises(
        ValueError,
        match=r"q_proj.lora_A.weight has shape \(2, 512\), this base "
        r"expects \(2, 256\) \(an adapter for a different base model\?\)",
    ):
        model.load_adapter(wide)
    extra = key.replace("layers.0", "layers.5")
    deep = variant("deep", {**state, extra: state[key]})
    with pytest.raises(ValueError, match=r"unexpected tensor .*layers\.5.*this base has 2 layers"):
        model.load_adapter(deep)
    missing = variant("missing", {k: v for k, v in state.items() if "layers.1" not in k})
    with pytest.raises(ValueError, match=r"missing tensor .*layers\.1\.self_attn\.q_proj"):
        model.load_adapter(missing)
    bad_target = variant("target", state, {"target_modules": ["q_proj", "fc1"]})
    with pytest.raises(ValueError, match="unknown target module 'fc1'"):
        model.load_adapter(bad_target)
    bad_r = variant("rank", state, {"r": 0})
    with pytest.raises(ValueError, match="r must be an integer >= 1, got 0"):
        model.load_adapter(bad_r)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        model.load_adapter(tiny.dir / "nowhere")
    # Failed loads change nothing.
    np.testing.assert_array_equal(model.logits(ids), before)


# ----------------------------------------------------------------------------- PEFT interop
def _peft_model(tiny: SimpleNamespace, adapter: Path, ste: bool) -> object:
    from peft import PeftModel

    ref = transformers_reference(tiny.ck, "i2_s")
    if ste:

        def forward(weight: torch.Tensor) -> object:
            def f(x: torch.Tensor) -> torch.Tensor:
                return F.linear(x + (activation_quant(x) - x).detach(), weight)

            return f

        for layer in ref.model.layers:
            for path in BITLINEAR:
                mod = layer.get_submodule(path)
                mod.forward = forward(mod.weight)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PeftModel.from_pretrained(ref, str(adapter), is_trainable=ste)


def test_peft_loads_adapter_with_same_logits_and_gradients(tiny: SimpleNamespace) -> None:
    cfg = LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"])
    model = LoraModel(tiny.gguf, cfg, seed=1)
    _randomize(model, 2)
    adapter = model.save_adapter(tiny.dir / "peft")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 576, 24)

    pm = _peft_model(tiny, adapter, ste=False)
    with torch.no_grad():
        theirs = pm(torch.tensor(ids[None])).logits[0].numpy()
    ours = model.logits(ids)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-5)
    plain = LoraModel(tiny.gguf).logits(ids)  # untrained adapter = the base
    assert np.abs(plain - theirs).max() > 100 * 2e-5

    # Gradients of every adapter matrix: transformers + PEFT with the straight-through
    # estimator on every BitLinear vs ours, for the same mean cross-entropy.
    pm = _peft_model(tiny, adapter, ste=True)
    batch = rng.integers(0, 576, (2, 13))
    out = pm(torch.tensor(batch[:, :-1])).logits
    loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), torch.tensor(batch[:, 1:]).reshape(-1))
    loss.backward()
    mine = model.loss(batch[:, :-1], batch[:, 1:])
    assert mine.item() == pytest.approx(loss.item(), rel=1e-5)
    ag.backward(mine)
    grads = {
        n.replace(".default", ""): p.grad.numpy()
        for n, p in pm.named_parameters()
        if p.grad is not None
    }
    assert set(grads) == {k for k, _ in model.named_parameters()}
    for k, t in model.named_parameters():
        np.testing.assert_allclose(t.grad, grads[k], rtol=0, atol=1e-4 * np.abs(grads[k]).max())


# ----------------------------------------------------------------------------- data
def test_prompt_response_masking(tiny: SimpleNamespace) -> None:
    tok = LoraModel(tiny.gguf).tokenizer
    ids, mask = encode_example(tok, {"prompt": "ka bit net ", "response": "ter na ry"})
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    trained = [t for t, m in zip(ids, mask, strict=True) if m]
    assert tok.decode(trained[:-1]) == "ter na ry" and trained[-1] == tok.eos_id
    assert tok.decode([t for t, m in zip(ids, mask, strict=True) if not m]) == "ka bit net "
    ds = InstructionDataset([(ids, mask)], seq_len=20, pad_id=7)
    x, y = ds.inputs[0], ds.targets[0]
    n = len(ids) - 1
    assert list(x[:n]) == ids[:-1] and (x[n:] == 7).all()
    assert list(y[:n]) == [t if m else -100 for t, m in zip(ids[1:], mask[1:], strict=True)]
    assert (y[n:] == -100).all()


def test_chat_masking_with_template_and_simple_template(tiny: SimpleNamespace) -> None:
    tok = LoraModel(tiny.gguf).tokenizer
    assert tok.chat_template is not None  # the test tokenizer's Llama-3 style template
    rec = json.loads(tiny.data.read_text().splitlines()[2])
    ids, mask = encode_example(tok, rec)
    spans, cur = [], []
    for t, m in zip(ids, mask, strict=True):
        if m:
            cur.append(t)
        elif cur:
            spans.append(cur)
            cur = []
    spans.append(cur) if cur else None
    texts = [tok.decode(s, skip_special_tokens=False) for s in spans]
    assert texts == ["em be dd ing<|eot_id|>", "at te nti on<|eot_id|>"]
    # The tokens before the first answer are exactly the inference-time prompt.
    prompt = tok.apply_chat_template(rec["messages"][:2], add_generation_prompt=True)
    assert ids[: mask.index(True)] == tok.encode(prompt)
    # No template: SIMPLE_TEMPLATE, the answer and EOS trained.
    tok.chat_template = None
    ids2, mask2 = encode_example(tok, {"messages": rec["messages"][1:3]})
    trained = tok.decode([t for t, m in zip(ids2, mask2, strict=True) if m], False)
    assert trained.startswith("em be dd ing<|end_of_text|>")
    assert "### User:\nsca le?" in tok.decode(ids2, False)
    assert "### Assistant:" in SIMPLE_TEMPLATE


def test_loss_counts_response_tokens_only(tiny: SimpleNamespace) -> None:
    model = LoraModel(tiny.gguf, LoraConfig(r=2))
    _randomize(model, 3)
    data = load_instructions(tiny.data, model.tokenizer, 48)
    x, y = data.batch_at(0, 3)
    loss = model.loss(x, y).item()
    ag.clear_tape()
    logits = model.logits(x).reshape(-1, 576).astype(np.float64)
    tgt = y.reshape(-1)
    keep = tgt != -100
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    ref = float(np.mean(lse[keep] - logits[keep, tgt[keep]]))
    assert loss == pytest.approx(ref, rel=1e-5)
    assert 0 < keep.sum() < keep.size


def test_data_errors(tiny: SimpleNamespace) -> None:
    tok = LoraModel(tiny.gguf).tokenizer
    p = tiny.dir / "bad.jsonl"
    cases = [
        ('{"prompt": "a", "response": "b"}\n{"prompt": "a", \n', r"bad\.jsonl:2: not valid JSON"),
        ('{"prompt": "a"}\n', r"bad\.jsonl:1: 'response' must be a string"),
        ('{"text": "a"}\n', r"bad\.jsonl:1: expected \{'prompt', 'response'\}"),
        ('{"messages": [{"role": "bot", "content": "x"}]}\n', r":1: messages\[0\] has role 'bot'"),
        ('{"messages": [{"role": "user", "content": "x"}]}\n', r":1: no assistant message"),
        ("\n\n", r"bad\.jsonl: no records"),
    ]
    for text, msg in cases:
        p.write_text(text)
        with pytest.raises(DataError, match=msg):
            load_instructions(p, tok, 32)
    p.write_text(json.dumps({"prompt": "ka " * 40, "response": "x"}) + "\n")
    with pytest.raises(DataError, match="no example has a response token within seq_len 8"):
        load_instructions(p, tok, 8)
    with pytest.raises(FileNotFoundError):
        load_instructions(tiny.dir / "none.jsonl", tok, 8)


# ----------------------------------------------------------------------------- merge (checkpoint)
def test_merge_report_matches_numpy(tiny: SimpleNamespace) -> None:
    cfg = LoraConfig(r=4, alpha=8, target_modules=["q_proj", "gate_proj"])
    model = LoraModel(tiny.ck, cfg, seed=0)
    _randomize(model, 6, std=0.1)
    state, rep = model.merged_state_dict()
    master = LoraModel(tiny.ck)._master_state()
    ad = model.adapter_state_dict()
    upd = [0.0, 0.0]
    werr = [0.0, 0.0]
    changed = total = 0
    for st in rep.layers:
        w0 = master[st.name + ".weight"]
        t0, s0 = ternarize(w0)
        q0 = t0.astype(np.float64) * float(s0)
        if st.targeted:
            a = ad[peft_key(st.name, "A")].astype(np.float64)
            b = ad[peft_key(st.name, "B")].astype(np.float64)
            dw = 2.0 * (b @ a)
        else:
            dw = np.zeros_like(q0)
        wm = (w0.astype(np.float64) + dw).astype(np.float32)
        assert np.array_equal(state[st.name + ".weight"], wm)
        t1, s1 = ternarize(wm)
        q1 = t1.astype(np.float64) * float(s1)
        assert st.scale_before == pytest.approx(float(s0), rel=1e-7)
        assert st.scale_after == pytest.approx(float(s1), rel=1e-7)
        assert st.codes_changed == np.mean(t1 != t0)
        e = np.linalg.norm(q1 - (q0 + dw))
        assert st.weight_rel_error == pytest.approx(e / np.linalg.norm(q0 + dw), rel=1e-9)
        if st.targeted:
            u = np.linalg.norm((q1 - q0) - dw)
            assert st.update_rel_error == pytest.approx(u / np.linalg.norm(dw), rel=1e-9)
            upd[0] += u**2
            upd[1] += np.linalg.norm(dw) ** 2
        else:  # a checkpoint base re-quantizes an untouched matrix to itself
            assert st.codes_changed == 0 and st.weight_rel_error == 0
        werr[0] += e**2
        werr[1] += np.linalg.norm(q0 + dw) ** 2
        changed += int(np.sum(t1 != t0))
        total += t0.size
    assert sum(s.targeted for s in rep.layers) == 4 and len(rep.layers) == 14
    assert rep.update_rel_error == pytest.approx(np.sqrt(upd[0] / upd[1]), rel=1e-9)
    assert rep.weight_rel_error == pytest.approx(np.sqrt(werr[0] / werr[1]), rel=1e-9)
    assert rep.codes_changed == changed / total > 0
    assert rep.method == "absmean" and "overall: update lost to re-quantization" in rep.format()


# ----------------------------------------------------------------------------- merge (GGUF base)
_PROJ_GGUF = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}


def _gguf_name(module: str) -> str:
    i = module.split(".")[2]
    return f"blk.{i}.{_PROJ_GGUF[module.rsplit('.', 1)[1]]}.weight"


def _grid_expected(model: LoraModel) -> dict[str, tuple[np.ndarray, np.ndarray, float, object]]:
    """module -> (T0, T1, s0, dW or None), T1 recomputed in numpy from the formula
    ``clip(rint(T0 + (alpha / r) B @ A / s0), -1, 1)`` (float64; rint = half to even) with the
    base codes read by the numpy reference unpacker, not by bitnet.ops."""
    from bitnet import gguf
    from bitnet.quant import reference as qref

    sc = model.lora_config.scaling
    ad = model.adapter_state_dict()
    out = {}
    with gguf.read(model._base.source) as f:
        for module in model.base_weights():
            info = f.tensors[_gguf_name(module)]
            t0, s0 = qref.unpack(info.data, info.type, *info.shape)
            dw = None
            if module in model.adapters:
                a = ad[peft_key(module, "A")].astype(np.float64)
                b = ad[peft_key(module, "B")].astype(np.float64)
                dw = sc * (b @ a)
            t1 = t0 if dw is None else np.clip(np.rint(t0 + dw / s0), -1, 1).astype(np.int8)
            out[module] = (t0, t1, float(s0), dw)
    return out


def _base_gguf(tiny: SimpleNamespace, wtype: str) -> Path:
    from bitnet.convert import convert

    if wtype == "i2_s":
        return tiny.gguf
    path = tiny.dir / f"base_{wtype}.gguf"
    if not path.exists():
        convert(tiny.ck, path, wtype, "f32", progress=False, report=False)
    return path


@pytest.mark.parametrize("wtype", ["i2_s", "tq2_0"])
def test_grid_merge_copies_base_and_rounds_on_its_grid(tiny: SimpleNamespace, wtype: str) -> None:
    from bitnet import gguf
    from bitnet.quant import reference as qref

    base = _base_gguf(tiny, wtype)
    cfg = LoraConfig(r=3, alpha=6, target_modules=["q_proj", "o_proj", "down_proj"])
    model = LoraModel(base, cfg, seed=2)
    _randomize(model, 12, std=0.08)  # |dW| ~ s_w: about a fifth of the codes move
    out = tiny.dir / f"grid_{wtype}.gguf"
    rep = model.merge(out)
    assert rep.gguf == out and rep.method == "grid"
    exp = _grid_expected(model)
    a, b = base.read_bytes(), out.read_bytes()
    with gguf.read(base) as fa, gguf.read(out) as fb:
        # Same header (every metadata key and type, tensor table): byte-identical up to the data.
        assert fa.data_offset == fb.data_offset and a[: fa.data_offset] == b[: fb.data_offset]
        assert fb.metadata == fa.metadata and len(a) == len(b)
        assert fb.metadata["tokenizer.chat_template"] == fa.metadata["tokenizer.chat_template"]
        changed = adapted = 0
        for name, ia in fa.tensors.items():
            ib = fb.tensors[name]
            assert (ib.type, ib.shape, ib.offset) == (ia.type, ia.shape, ia.offset)
            module = next((m for m in exp if _gguf_name(m) == name), None)
            if module is None or module not in model.adapters:
                assert bytes(ib.data) == bytes(ia.data), name  # untouched: byte-identical
                continue
            t0, t1, s0, _ = exp[module]
            tb, sb = qref.unpack(ib.data, ib.type, *ib.shape)
            assert np.array_equal(tb, t1) and sb == s0, name  # bit-exact codes, same scale
            # and packed exactly as the numpy reference packs them
            assert bytes(ib.data) == qref.pack(t1, wtype, s0).tobytes(), name
            changed += int(np.sum(t1 != t0))
            adapted += t0.size
        assert adapted > 0 and changed > 0.05 * adapted


def test_grid_merge_report_matches_numpy(tiny: SimpleNamespace) -> None:
    cfg = LoraConfig(r=4, alpha=8, target_modules=["k_proj", "gate_proj", "up_proj"])
    model = LoraModel(tiny.gguf, cfg, seed=3)
    _randomize(model, 21, std=0.06)
    state, rep = model.merged_state_dict()
    assert rep.method == "grid" and "rounding onto the base's grid" in rep.format()
    exp = _grid_expected(model)
    sums = np.zeros(4)
    changed = total = 0
    for st in rep.layers:
        t0, t1, s0, dw = exp[st.name]
        w, w1 = t0.astype(np.float64) * s0, t1.astype(np.float64) * s0
        assert st.scale_before == st.scale_after == s0
        assert st.codes_changed == np.mean(t1 != t0)
        assert np.array_equal(state[st.name + ".weight"], t1.astype(np.float32) * np.float32(s0))
        target = w if dw is None else w + dw
        e = np.linalg.norm(w1 - target)
        assert st.weight_rel_error == pytest.approx(e / np.linalg.norm(target), rel=1e-9, abs=0)
        if dw is None:
            assert not st.targeted and st.codes_changed == 0 and st.weight_rel_error == 0
            assert np.isnan(st.update_rel_error) and st.update_norm == 0
        else:
            u = np.linalg.norm((w1 - w) - dw)
            assert st.update_norm == pytest.approx(np.linalg.norm(dw), rel=1e-12)
            assert st.update_rel_error == pytest.approx(u / np.linalg.norm(dw), rel=1e-9)
            sums[:2] += (u**2, np.linalg.norm(dw) ** 2)
        sums[2:] += (e**2, np.linalg.norm(target) ** 2)
        changed += int(np.sum(t1 != t0))
        total += t0.size
    assert sum(s.targeted for s in rep.layers) == 6 and len(rep.layers) == 14
    assert rep.update_rel_error == pytest.approx(np.sqrt(sums[0] / sums[1]), rel=1e-9)
    assert rep.weight_rel_error == pytest.approx(np.sqrt(sums[2] / sums[3]), rel=1e-9)
    assert rep.codes_changed == changed / total > 0
    # The untargeted matrices' scale is kept: no ~30% absmean shrink (mean|T| < 1).
    assert all(s.scale_after == s.scale_before for s in rep.layers)


def test_grid_merged_logits_match_reference(tiny: SimpleNamespace) -> None:
    """bitnet.Model on the merged GGUF against a plain PyTorch BitNet (model_reference.PlainModel)
    whose BitLinear weights are set to the numpy-recomputed merged ``s0 * T1``. Tolerance as in
    tests/test_model.py: on a "clean" prompt (no int8 activation within 1e-4 code units of a
    rounding boundary in the reference) both make the same int8 decisions, and what remains is
    fp32 summation order (measured <= 7e-7 relative there); 1e-5 relative to max|logit|."""
    from checkpoints import read_state_dict
    from model_reference import PlainModel, clean_prompt, head_logits

    import bitnet

    cfg = LoraConfig(r=4, alpha=8)  # every projection
    model = LoraModel(tiny.gguf, cfg, seed=5)
    _randomize(model, 30, std=0.05)
    out = tiny.dir / "grid_ref.gguf"
    rep = model.merge(out)
    assert rep.codes_changed > 0.02
    c = model.config
    ref = PlainModel(
        read_state_dict(tiny.ck),
        dict(
            hidden=c.hidden_size,
            heads=c.num_attention_heads,
            kv_heads=c.num_key_value_heads,
            layers=c.num_hidden_layers,
            eps=c.rms_norm_eps,
            theta=c.rope_theta,
            act=c.hidden_act,
            attn_sub_norm="self_attn.attn_sub_norm",
            ffn_sub_norm="mlp.ffn_sub_norm",
        ),
        "i2_s",
    )
    for module, (_, t1, s0, _) in _grid_expected(model).items():
        i, rest = int(module.split(".")[2]), module.split(".", 3)[3]
        ref.layers[i][rest] = torch.from_numpy(t1.astype(np.float32) * np.float32(s0))
    ids = clean_prompt(ref.hidden, c.vocab_size, 8, seed=4, delta=1e-4)
    embed = model._base.embed.numpy()
    want, _ = head_logits(ref.hidden(ids), embed, "f32")
    got = bitnet.Model.load(out, progress=False).logits(ids)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    # The merge is visible: the base's logits are far outside that tolerance.
    base = bitnet.Model.load(tiny.gguf, progress=False).logits(ids)
    assert np.abs(base - want).max() > 100 * 1e-5 * np.abs(want).max()


def test_grid_friendly_update_merges_exactly(tiny: SimpleNamespace) -> None:
    """An update that is a multiple of the grid step (``dW = s0 * D``, D in {-1, 0, 1} only where
    ``T0 + D`` stays ternary) survives the merge exactly: zero rounding loss, ``T1 = T0 + D``.
    The merged model then differs from the unmerged one only in that the merged model rounds
    the adapter branch's input to int8 as every BitLinear does (|x - q / s_x| <= max|x| / 254
    per entry), while LoRA's branch sees fp32 ``x``. With the adapter on the last projection
    (layers.1 down_proj) no quantization follows it, so nothing amplifies that difference:
    measured <= 3% of the adapter's effect on the logits; 10% is allowed, far below what a
    wrong merge gives (a lost update: 100%; an absmean-rescaled base: the base itself ~30%
    off)."""
    import bitnet

    name = "model.layers.1.mlp.down_proj"
    cfg = LoraConfig(r=4, alpha=8, target_modules=["down_proj"])
    model = LoraModel(tiny.gguf, cfg, seed=0)
    rng = np.random.default_rng(17)
    t0, s0 = ops.unpack(model.base_weights()[name])
    d = np.zeros(t0.shape, np.int8)
    a = np.zeros((4, t0.shape[1]), np.float32)
    b = np.zeros((t0.shape[0], 4), np.float32)
    for j, row in enumerate(rng.choice(t0.shape[0], 4, replace=False)):
        cols = rng.choice(np.flatnonzero(t0[row] == 0), 100, replace=False)
        a[j, cols] = rng.choice([-1.0, 1.0], 100)
        b[row, j] = np.float32(s0 / cfg.scaling)
        d[row] = a[j].astype(np.int8)
    model.adapters[name][0].numpy()[...] = a
    model.adapters[name][1].numpy()[...] = b
    out = tiny.dir / "friendly.gguf"
    rep = model.merge(out)
    st = next(s for s in rep.layers if s.name == name)
    assert st.update_rel_error < 1e-6 and rep.codes_changed == 400 / sum(
        w.shape[0] * w.shape[1] for w in model.base_weights().values()
    )
    from bitnet import gguf

    with gguf.read(out) as f:
        t1, s1 = ops.unpack(f.tensors["blk.1.ffn_down.weight"].packed())
    assert np.array_equal(t1, t0 + d) and s1 == s0
    merged = bitnet.Model.load(out, progress=False)
    plain = LoraModel(tiny.gguf)
    for seed in range(3):
        ids = np.random.default_rng(seed).integers(0, 576, 16)
        unmerged, base = model.logits(ids), plain.logits(ids)
        effect = np.abs(unmerged - base).max()
        assert effect > 1e-2
        assert np.abs(merged.logits(ids) - unmerged).max() <= 0.1 * effect


def test_near_zero_adapter_merges_to_the_base(tiny: SimpleNamespace) -> None:
    model = LoraModel(tiny.gguf, LoraConfig(r=2, alpha=4), seed=1)
    _randomize(model, 3, std=1e-5)  # |dW| ~ 1e-9 << s_w / 2
    out = tiny.dir / "near_zero.gguf"
    rep = model.merge(out)
    assert rep.codes_changed == 0 and rep.update_rel_error == pytest.approx(1.0, abs=1e-6)
    assert 0 < rep.weight_rel_error < 1e-6
    assert out.read_bytes() == tiny.gguf.read_bytes()  # every tensor, every metadata byte


def test_grid_merge_to_another_type_and_errors(tiny: SimpleNamespace) -> None:
    import bitnet
    from bitnet import gguf

    cfg = LoraConfig(r=2, alpha=4, target_modules=["v_proj"])
    model = LoraModel(tiny.gguf, cfg, seed=6)
    _randomize(model, 7, std=0.1)
    out = tiny.dir / "as_tq2.gguf"
    rep = model.merge(out, weight_type="tq2_0")
    exp = _grid_expected(model)
    with gguf.read(tiny.gguf) as fa, gguf.read(out) as fb:
        assert fb.architecture == "bitnet" and fa.architecture == "bitnet-b1.58"
        assert fb.metadata["general.file_type"] == 37 and fb.metadata_types[
            "general.file_type"
        ] == ("u32")
        assert fb.metadata["bitnet.block_count"] == fa.metadata["bitnet-b1.58.block_count"]
        assert fb.metadata["tokenizer.ggml.tokens"] == fa.metadata["tokenizer.ggml.tokens"]
        for module, (_, t1, s0, _) in exp.items():
            info = fb.tensors[_gguf_name(module)]
            t, s = ops.unpack(info.packed())
            assert info.type == "tq2_0" and np.array_equal(t, t1)
            assert s == float(np.float16(s0))  # TQ stores the scale as fp16
        assert bytes(fb.tensors["token_embd.weight"].data) == bytes(
            fa.tensors["token_embd.weight"].data
        )
    untouched = [s for s in rep.layers if not s.targeted]
    assert all(s.codes_changed == 0 and s.weight_rel_error < 1e-3 for s in untouched)
    assert bitnet.Model.load(out, progress=False).config.weight_type == "tq2_0"
    with pytest.raises(ValueError, match="embed_type 'q8_0' differs from the base's token_embd"):
        model.merge(tiny.dir / "x.gguf", embed_type="q8_0")
    with pytest.raises(ValueError, match="hf_dir needs a checkpoint base"):
        model.merge(tiny.dir / "x.gguf", hf_dir=tiny.dir / "hf")
    with pytest.raises(ValueError, match="weight_type 'f16' is not a ternary type"):
        model.merge(tiny.dir / "x.gguf", weight_type="f16")
    assert not (tiny.dir / "x.gguf").exists()
    model.merge(tiny.dir / "same.gguf", embed_type="f32")  # its own type is accepted


# ----------------------------------------------------------------------------- CLI
def test_cli_finetune_merge_and_run(tiny: SimpleNamespace, capsys: pytest.CaptureFixture) -> None:
    import bitnet
    from bitnet.cli import main

    out, merged = tiny.dir / "cli_adapter", tiny.dir / "merged.gguf"
    args = [
        "finetune",
        "-m",
        str(tiny.gguf),
        "--data",
        str(tiny.data),
        "--out",
        str(out),
        "--r",
        "2",
        "--alpha",
        "4",
        "--target-modules",
        "q_proj,v_proj",
        "--steps",
        "3",
        "--lr",
        "1e-2",
        "--batch-size",
        "2",
        "--seq-len",
        "48",
        "--merge-to",
        str(merged),
        "--quiet",
    ]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"adapter: {out}", f"gguf: {merged}"]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 2 and cfg["target_modules"] == ["q_proj", "v_proj"]
    m = bitnet.Model.load(merged, progress=False)
    assert m.config.weight_type == "i2_s" and m.config.n_layer == 2
    text = m.generate("ka bit", max_new_tokens=4, temperature=0)
    assert isinstance(text, str)
    # Unmerged run of the saved adapter.
    assert (
        main(
            [
                "finetune",
                "-m",
                str(tiny.gguf),
                "--adapter",
                str(out),
                "--prompt",
                "ka bit",
                "--max-new-tokens",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    expect = LoraModel.from_pretrained(tiny.gguf, out).generate("ka bit", max_new_tokens=3)
    assert capsys.readouterr().out == expect + "\n"


def test_cli_errors(tiny: SimpleNamespace, capsys: pytest.CaptureFixture) -> None:
    from bitnet.cli import main

    base = ["finetune", "-m", str(tiny.gguf), "--out", str(tiny.dir / "x"), "--quiet"]
    with pytest.raises(SystemExit) as e:
        main([*base, "--data", str(tiny.data), "--target-modules", "q_proj,attn"])
    assert e.value.code == 2
    assert "unknown target module 'attn'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--data", str(tiny.data), "--r", "0"])
    assert "--r" in capsys.readouterr().err
    bad = tiny.dir / "broken.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\nnot json\n')
    assert main([*base, "--data", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bitnet finetune: error: ") and "broken.jsonl:2: not valid JSON" in err


def test_generate_unmerged_is_greedy_over_logits(tiny: SimpleNamespace) -> None:
    model = LoraModel(tiny.gguf, LoraConfig(r=2))
    _randomize(model, 9)
    ids = [3, 50, 7]
    new = model.generate(ids, max_new_tokens=4, stop_at_eos=False)
    seq = list(ids)
    for _ in range(4):
        seq.append(int(np.argmax(model.logits(np.array(seq))[-1])))
    assert new == seq[3:]
    a = model.generate(ids, 5, temperature=1.0, top_k=5, seed=3, stop_at_eos=False)
    assert a == model.generate(ids, 5, temperature=1.0, top_k=5, seed=3, stop_at_eos=False)
    with pytest.raises(ValueError, match="ids\\[0, 1\\] = 576 is out of range"):
        model.logits([1, 576])
    assert _ext.autograd.tape_size() == 0


def test_grid_merge_dense_f16_base(tiny: SimpleNamespace) -> None:
    """A GGUF whose BitLinear matrices are stored dequantized (f16 ``t * s_w``) stays f16: the
    merged matrix is ``T1 * s0`` in f16, exact (s0 is the f16 maximum of the stored values)."""
    from bitnet import gguf

    base = _base_gguf(tiny, "f16")
    model = LoraModel(base, LoraConfig(r=2, alpha=4, target_modules=["up_proj"]), seed=8)
    _randomize(model, 8, std=0.1)
    out = tiny.dir / "grid_f16.gguf"
    rep = model.merge(out)
    assert rep.codes_changed > 0
    sc = model.lora_config.scaling
    with gguf.read(base) as fa, gguf.read(out) as fb:
        for name, ia in fa.tensors.items():
            ib = fb.tensors[name]
            assert (ib.type, ib.shape, ib.offset) == (ia.type, ia.shape, ia.offset)
            if ".ffn_up." not in name:
                assert bytes(ib.data) == bytes(ia.data), name
                continue
            w = ia.array().astype(np.float64)
            s0 = np.abs(w).max()
            t0 = np.rint(w / s0)
            module = f"model.layers.{name.split('.')[1]}.mlp.up_proj"
            a, b = (t.numpy().astype(np.float64) for t in model.adapters[module])
            t1 = np.clip(np.rint(t0 + sc * (b @ a) / s0), -1, 1)
            assert np.array_equal(ib.array(), (t1 * s0).astype(np.float16)), name
            assert not np.array_equal(ib.array(), ia.array())

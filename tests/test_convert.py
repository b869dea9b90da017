"""bitnet.convert: every checkpoint form x every weight / embedding type, read back and compared
value for value with numpy references written here from docs/formats.md.

Files other than I2_S are read with the `gguf` package (llama.cpp's reader and quantizers), I2_S
files with bitnet.gguf plus an I2_S decoder written in this file. Integer paths (ternary values,
packed bytes, quantized blocks) are compared bit-exactly; float tensors are exact copies or exact
casts (f32 -> f16), so they are compared exactly too. Only the reported relative errors, sums of
squares accumulated in a different order, get a tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf as ggufpkg
import numpy as np
import pytest
from checkpoints import (
    BITLINEAR,
    make_1bitllm_checkpoint,
    make_bitnet_checkpoint,
    read_state_dict,
    ternarize,
    unpack_hf,
)

import bitnet.gguf as bgguf
from bitnet import ops
from bitnet.convert import ConversionReport, convert, convert_with_report

WEIGHT_TYPES = ("i2_s", "tq1_0", "tq2_0", "f16", "f32")
EMBED_TYPES = ("f16", "f32", "q8_0", "q4_0")
GGML = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q8_0": 8,
    "tq1_0": 34,
    "tq2_0": 35,
}
FILE_TYPE = {
    "f32": ggufpkg.LlamaFileType.ALL_F32,
    "f16": ggufpkg.LlamaFileType.MOSTLY_F16,
    "tq1_0": ggufpkg.LlamaFileType.MOSTLY_TQ1_0,
    "tq2_0": ggufpkg.LlamaFileType.MOSTLY_TQ2_0,
    "i2_s": 40,  # bitnet.cpp's LLAMA_FTYPE_MOSTLY_I2_S
}
LAYER_MAP = {  # HF module path -> GGUF name (docs/formats.md section 3)
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    # BitNetForCausalLM and 1bitLLM's BitnetForCausalLM name the sub-norms differently
    "self_attn.attn_sub_norm": "attn_sub_norm",
    "mlp.ffn_sub_norm": "ffn_sub_norm",
    "self_attn.inner_attn_ln": "attn_sub_norm",
    "mlp.ffn_layernorm": "ffn_sub_norm",
}


# ------------------------------------------------------------------------------ checkpoints
CHECKPOINTS: dict[str, dict[str, Any]] = {
    "bf16": dict(kind="bitnet"),
    "f32_sharded_gqa4": dict(
        kind="bitnet",
        hidden=512,
        heads=8,
        kv_heads=2,
        ffn=768,
        layers=1,
        dtype="f32",
        shard_bytes=600_000,
        seed=1,
    ),
    "f16_bin_untied": dict(kind="bitnet", dtype="f16", fmt="bin", tie=False, seed=2),
    "packed_autobitlinear": dict(kind="bitnet", packed="autobitlinear", seed=3),
    "packed_bitlinear_f32scale": dict(kind="bitnet", packed="bitlinear", scale_dtype="f32", seed=4),
    "1bitllm_f16": dict(kind="1bitllm", seed=5),
}


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ckpts")


_BUILT: dict[tuple[Path, str], Path] = {}


def checkpoint(root: Path, name: str) -> Path:
    """Builds the named checkpoint once per module."""
    key = (root, name)
    if key not in _BUILT:
        opts = dict(CHECKPOINTS[name])
        kind = opts.pop("kind")
        build = make_bitnet_checkpoint if kind == "bitnet" else make_1bitllm_checkpoint
        _BUILT[key] = build(root / name, **opts)
    return _BUILT[key]


# ------------------------------------------------------------------------------ references
def f32(x: Any) -> np.ndarray:
    return x.float().numpy().astype(np.float32)


def reference(src: Path) -> tuple[dict[str, Any], dict[str, tuple]]:
    """(config, GGUF name -> ("ternary", t, s_w, source f32) | ("float", f32 array)) computed
    from the checkpoint files with the formulas of docs/formats.md."""
    config = json.loads((src / "config.json").read_text())
    state = read_state_dict(src)
    linear_class = (config.get("quantization_config") or {}).get("linear_class")
    out: dict[str, tuple] = {
        "token_embd.weight": ("float", f32(state["model.embed_tokens.weight"]))
    }
    out["output_norm.weight"] = ("float", f32(state["model.norm.weight"]))
    if "lm_head.weight" in state and not config.get("tie_word_embeddings", False):
        out["output.weight"] = ("float", f32(state["lm_head.weight"]))
    for i in range(config["num_hidden_layers"]):
        for hf, gg in LAYER_MAP.items():
            key = f"model.layers.{i}.{hf}.weight"
            if key not in state:
                continue
            name = f"blk.{i}.{gg}.weight"
            if hf not in BITLINEAR:
                out[name] = ("float", f32(state[key]))
                continue
            w = state[key]
            if key + "_scale" in state:  # packed: W = t * ws (autobitlinear) or t / ws
                t = unpack_hf(w.numpy())
                ws = np.float32(f32(state[key + "_scale"]).reshape(-1)[0])
                s = ws if linear_class == "autobitlinear" else np.float32(1) / ws
                out[name] = ("ternary", t, np.float32(s), t.astype(np.float32) * s)
            else:
                t, s = ternarize(f32(w))
                out[name] = ("ternary", t, s, f32(w))
    return config, out


def decode_i2_s(data: np.ndarray, n: int, k: int) -> tuple[np.ndarray, np.float32]:
    """I2_S bytes (docs/formats.md section 2) -> (t int8 [n, k], fp32 scale): the flattened
    tensor in blocks of 128 values / 32 bytes, value j at byte j % 32, bit shift 6 - 2 (j / 32),
    codes t + 1, then a 32-byte tail starting with the fp32 scale."""
    raw = np.asarray(data, dtype=np.uint8).reshape(-1)
    body = n * k // 4
    assert raw.size == body + 32
    blocks = raw[:body].reshape(-1, 32)
    codes = np.concatenate([(blocks >> (6 - 2 * g)) & 3 for g in range(4)], axis=1)
    assert not np.any(codes == 3)
    t = codes.reshape(n, k).astype(np.int8) - 1
    return t, np.frombuffer(raw[body : body + 4].tobytes(), "<f4")[0]


def reader_metadata(path: Path) -> dict[str, Any]:
    r = ggufpkg.GGUFReader(str(path))
    return {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}


def expected_metadata(config: dict[str, Any], wtype: str, etype: str) -> dict[str, Any]:
    arch = "bitnet-b1.58" if wtype == "i2_s" else "bitnet"
    heads = config["num_attention_heads"]
    theta = config.get("rope_theta") or config["rope_parameters"]["rope_theta"]
    md = {
        "general.architecture": arch,
        "general.file_type": int(FILE_TYPE[wtype]),
        f"{arch}.vocab_size": config["vocab_size"],
        f"{arch}.context_length": config["max_position_embeddings"],
        f"{arch}.embedding_length": config["hidden_size"],
        f"{arch}.block_count": config["num_hidden_layers"],
        f"{arch}.feed_forward_length": config["intermediate_size"],
        f"{arch}.attention.head_count": heads,
        f"{arch}.attention.head_count_kv": config.get("num_key_value_heads") or heads,
        f"{arch}.attention.layer_norm_rms_epsilon": float(np.float32(config["rms_norm_eps"])),
        f"{arch}.rope.freq_base": float(np.float32(theta)),
        f"{arch}.rope.dimension_count": config["hidden_size"] // heads,
        f"{arch}.hidden_act": config["hidden_act"],
    }
    if wtype in ("i2_s", "tq1_0", "tq2_0") or etype in ("q8_0", "q4_0"):
        md["general.quantization_version"] = 2
    return md


# ------------------------------------------------------------------------------ checks
def check_file(path: Path, src: Path, wtype: str, etype: str, rep: ConversionReport) -> None:
    config, ref = reference(src)
    f = bgguf.read(path)
    assert set(f.tensors) == set(ref), sorted(set(f.tensors) ^ set(ref))
    assert f.metadata["general.name"] == src.name
    for key, value in expected_metadata(config, wtype, etype).items():
        assert f.metadata[key] == value, key
    assert f.metadata_types["general.file_type"] == "u32"
    if wtype not in ("i2_s", "tq1_0", "tq2_0") and etype not in ("q8_0", "q4_0"):
        assert "general.quantization_version" not in f.metadata

    if wtype != "i2_s":  # llama.cpp's reader knows every other type
        md = reader_metadata(path)
        for key, value in expected_metadata(config, wtype, etype).items():
            assert md[key] == value, key  # f32 values compare exactly as Python floats
        tensors = {t.name: t for t in ggufpkg.GGUFReader(str(path)).tensors}
    else:
        tensors = {}

    by_name = {t.gguf_name: t for t in rep.tensors}
    for name, r in ref.items():
        info = f.tensors[name]
        kind = r[0]
        want_type = wtype if kind == "ternary" else ("f32" if r[1].ndim == 1 else etype)
        assert info.type == want_type, name
        shape = r[1].shape
        assert info.shape == shape, name
        if name in tensors:
            assert tensors[name].tensor_type == GGML[want_type], name
            assert tuple(int(d) for d in tensors[name].shape[::-1]) == shape, name
        if kind == "ternary":
            _, t, s, source = r
            stored = check_ternary(info, tensors.get(name), t, s, wtype)
        else:
            source = r[1]
            stored = check_float(info, tensors.get(name), source, want_type)
        # the report line: names, types, sizes, and the relative error of what was stored
        line = by_name[name]
        assert line.stored_type == want_type and line.shape == shape
        assert line.stored_bytes == info.nbytes
        src64 = source.astype(np.float64)
        err = np.linalg.norm(stored.astype(np.float64) - src64) / np.linalg.norm(src64)
        # both sides are float64 sums of squares of <= 4e5 terms: agreement to ~1e-12
        assert line.rel_error == pytest.approx(err, rel=1e-9, abs=1e-15), name
    assert [t.gguf_name for t in rep.tensors] == list(f.tensors)
    assert rep.output_bytes == path.stat().st_size
    assert rep.source_bytes == sum(t.source_bytes for t in rep.tensors)


def check_ternary(info: Any, gt: Any, t: np.ndarray, s: np.float32, wtype: str) -> np.ndarray:
    """Asserts the stored matrix is exactly t * s_w as the type stores it; returns it (f32)."""
    if wtype == "i2_s":
        t_file, s_file = decode_i2_s(info.data, *t.shape)
        np.testing.assert_array_equal(t_file, t)
        assert s_file == s
        t_ours, s_ours = ops.unpack(info.packed())
        np.testing.assert_array_equal(t_ours, t)
        assert np.float32(s_ours) == s
        return t.astype(np.float32) * s
    if wtype in ("tq1_0", "tq2_0"):
        want = t.astype(np.float32) * np.float32(np.float16(s))  # d is fp16(s_w)
        got = ggufpkg.quants.dequantize(gt.data, gt.tensor_type).reshape(t.shape)
        np.testing.assert_array_equal(got, want)
        return want
    dense = t.astype(np.float32) * s
    want = dense if wtype == "f32" else dense.astype(np.float16)
    got = np.asarray(gt.data).reshape(t.shape)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    return want.astype(np.float32)


def check_float(info: Any, gt: Any, source: np.ndarray, typ: str) -> np.ndarray:
    """Asserts an embedding / norm is stored as the reference encoding of ``source``."""
    if typ in ("q8_0", "q4_0"):
        qt = getattr(ggufpkg.GGMLQuantizationType, typ.upper())
        want = ggufpkg.quants.quantize(source, qt)
        raw = np.asarray(gt.data) if gt is not None else info.data
        np.testing.assert_array_equal(raw.reshape(want.shape), want)
        return ggufpkg.quants.dequantize(want, qt).reshape(source.shape)
    want = source if typ == "f32" else source.astype(np.float16)
    got = np.asarray(gt.data).reshape(source.shape) if gt is not None else info.array()
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    return want.astype(np.float32)


# ------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("wtype", WEIGHT_TYPES)
@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_every_checkpoint_form_to_every_weight_type(
    name: str, wtype: str, ckpt_root: Path, tmp_path: Path
) -> None:
    src = checkpoint(ckpt_root, name)
    dst = tmp_path / "out.gguf"
    rep = convert_with_report(src, dst, wtype, progress=False, report=False)
    assert rep.path == dst and dst.is_file()
    assert not (tmp_path / "out.gguf.partial").exists()
    assert rep.weight_type == wtype and rep.embed_type == "f16"
    assert rep.gguf_architecture == ("bitnet-b1.58" if wtype == "i2_s" else "bitnet")
    check_file(dst, src, wtype, "f16", rep)
    if name.startswith("packed") and wtype == "f32":  # already ternary: stored exactly
        tern = [t for t in rep.tensors if t.source_dtype.startswith("u8 packed")]
        assert len(tern) == 2 * 7 and all(t.rel_error == 0 for t in tern)


@pytest.mark.parametrize("etype", EMBED_TYPES)
@pytest.mark.parametrize("name", ["bf16", "f16_bin_untied"])
def test_every_embedding_type(name: str, etype: str, ckpt_root: Path, tmp_path: Path) -> None:
    src = checkpoint(ckpt_root, name)
    dst = tmp_path / "out.gguf"
    rep = convert_with_report(src, dst, "tq2_0", etype, progress=False, report=False)
    check_file(dst, src, "tq2_0", etype, rep)
    heads = [t for t in rep.tensors if t.gguf_name in ("token_embd.weight", "output.weight")]
    assert len(heads) == (2 if "untied" in name else 1)
    assert all(t.stored_type == etype for t in heads)


@pytest.mark.parametrize("wtype", ["f16", "f32"])
def test_odd_shapes_with_dense_types(wtype: str, tmp_path: Path) -> None:
    """hidden 160 / 5 heads / ffn 96 fit no ternary block type, but dense types and q8_0 do."""
    src = make_bitnet_checkpoint(
        tmp_path / "odd", hidden=160, heads=5, kv_heads=5, ffn=96, vocab=600, seed=7
    )
    dst = tmp_path / "odd.gguf"
    rep = convert_with_report(src, dst, wtype, "q8_0", progress=False, report=False)
    check_file(dst, src, wtype, "q8_0", rep)


def test_convert_returns_path_and_prints_report(
    ckpt_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = checkpoint(ckpt_root, "bf16")
    dst = tmp_path / "m.gguf"
    assert convert(src, dst, "tq2_0", progress=False) == dst
    err = capsys.readouterr().err
    assert "blk.1.ffn_down.weight" in err and "tq2_0" in err
    assert "24 tensors" in err and "tokenizer gpt2" in err
    convert(src, dst, "tq2_0", progress=False, report=False)  # overwrites in place
    assert capsys.readouterr().err == ""


def test_report_format_and_json(ckpt_root: Path, tmp_path: Path) -> None:
    src = checkpoint(ckpt_root, "1bitllm_f16")
    rep = convert_with_report(
        src, tmp_path / "m.gguf", "i2_s", "q4_0", progress=False, report=False
    )
    text = rep.format()
    lines = text.splitlines()
    assert lines[0].split() == [
        "gguf",
        "tensor",
        "source",
        "shape",
        "type",
        "rel.err",
        "before",
        "after",
    ]
    assert sum(" i2_s " in ln for ln in lines) == 2 * 7
    assert "BitnetForCausalLM" in text and "bitnet-b1.58" in text
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["weight_type"] == "i2_s" and d["embed_type"] == "q4_0"
    assert len(d["tensors"]) == len(rep.tensors) == 2 * 11 + 3
    assert d["tensors"][0]["gguf_name"] == "token_embd.weight"
    assert d["tensors"][0]["shape"] == [544, 256]
    # absmean ternarization of Gaussian weights loses about half the norm (~0.51 measured);
    # the loose band catches a wrong scale (e.g. 1 / s_w) or sign, exact values are checked above
    tern = [t.rel_error for t in rep.tensors if t.stored_type == "i2_s"]
    assert all(0.3 < e < 0.7 for e in tern)


def test_error_sums_in_row_blocks(
    ckpt_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report's error sums run over blocks of rows; force many small blocks (1000 values:
    3 rows of 256 per block, a partial last block) and check the same values come out."""
    import bitnet.convert.weights as weights

    monkeypatch.setattr(weights, "_CHUNK", 1000)
    src = checkpoint(ckpt_root, "f16_bin_untied")
    for wtype, etype in (("tq1_0", "q4_0"), ("f16", "f16")):
        dst = tmp_path / f"{wtype}.gguf"
        rep = convert_with_report(src, dst, wtype, etype, progress=True, report=False)
        check_file(dst, src, wtype, etype, rep)

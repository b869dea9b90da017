"""bitnet.convert on bad input: every case stops with a ConversionError whose message names what
is wrong, and leaves nothing behind (no output file, no partial file, an existing output file
untouched)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from checkpoints import make_bitnet_checkpoint, read_state_dict, save_state_dict
from safetensors.torch import save_file

import bitnet.gguf as bgguf
from bitnet.convert import ConversionError, ConversionWarning, convert, convert_with_report
from bitnet.convert.weights import unpack_hf_packed

# The checkpoints here have no tokenizer; that warning is tested in test_convert_tokenizer.py.
pytestmark = pytest.mark.filterwarnings("ignore:.*no tokenizer.json:UserWarning")


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bitnet_checkpoint(tmp_path_factory.mktemp("m") / "m", tokenizer=None, seed=21)


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bitnet_checkpoint(
        tmp_path_factory.mktemp("p") / "p", tokenizer=None, packed="autobitlinear", seed=22
    )


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_config(d: Path, fn: Callable[[dict[str, Any]], None]) -> None:
    cfg = json.loads((d / "config.json").read_text())
    fn(cfg)
    (d / "config.json").write_text(json.dumps(cfg))


def edit_state(d: Path, fn: Callable[[dict[str, Any]], None]) -> None:
    state = read_state_dict(d)
    fn(state)
    for f in d.glob("*.safetensors"):
        f.unlink()
    save_state_dict(state, d)


def fails(src: Path, out_dir: Path, fragment: str, *args: Any, **kwargs: Any) -> str:
    """Converts into an empty ``out_dir``; asserts a ConversionError matching ``fragment`` and
    that ``out_dir`` is still empty. Returns the message."""
    out_dir.mkdir(exist_ok=True)
    with pytest.raises(ConversionError, match=fragment) as e:
        convert(src, out_dir / "out.gguf", *args, progress=False, report=False, **kwargs)
    assert list(out_dir.iterdir()) == []
    return str(e.value)


def test_missing_config(master: Path, tmp_path: Path) -> None:
    d = copy(master, tmp_path / "c")
    (d / "config.json").unlink()
    assert str(d) in fails(d, tmp_path / "o", "config.json not found")


def test_unknown_architecture(master: Path, tmp_path: Path) -> None:
    d = copy(master, tmp_path / "c")
    edit_config(d, lambda c: c.update(architectures=["LlamaForCausalLM"]))
    msg = fails(d, tmp_path / "o", "unknown architecture LlamaForCausalLM")
    assert "BitNetForCausalLM" in msg and "BitnetForCausalLM" in msg  # lists the supported


def test_missing_tensor(master: Path, tmp_path: Path) -> None:
    d = copy(master, tmp_path / "c")
    edit_state(d, lambda s: s.pop("model.layers.1.mlp.up_proj.weight"))
    fails(d, tmp_path / "o", r"missing: model\.layers\.1\.mlp\.up_proj\.weight")


def test_untied_config_without_lm_head(master: Path, tmp_path: Path) -> None:
    d = copy(master, tmp_path / "c")
    edit_config(d, lambda c: c.update(tie_word_embeddings=False))
    fails(d, tmp_path / "o", "missing: lm_head.weight")


def test_wrong_shape(master: Path, tmp_path: Path) -> None:
    d = copy(master, tmp_path / "c")
    key = "model.layers.0.self_attn.q_proj.weight"
    edit_state(d, lambda s: s.update({key: s[key][:128].clone()}))
    fails(
        d,
        tmp_path / "o",
        r"q_proj\.weight \(blk\.0\.attn_q\.weight\) has shape \[128, 256\], expected \[256, 256\]",
    )


def test_unsupported_dtype(master: Path, tmp_path: Path) -> None:
    d = copy(master, tmp_path / "c")
    key = "model.layers.0.input_layernorm.weight"
    edit_state(d, lambda s: s.update({key: torch.ones(256, dtype=torch.int32)}))
    fails(d, tmp_path / "o", r"input_layernorm\.weight \(blk\.0\.attn_norm\.weight\) has dtype i32")


@pytest.mark.parametrize("wtype, mult", [("tq2_0", 256), ("tq1_0", 256), ("i2_s", 128)])
def test_row_length_the_type_cannot_hold(wtype: str, mult: int, tmp_path: Path) -> None:
    d = make_bitnet_checkpoint(
        tmp_path / "c", hidden=160, heads=5, kv_heads=5, ffn=96, tokenizer=None, layers=1
    )
    msg = fails(d, tmp_path / "o", f"row length 160 is not a multiple of {mult}", wtype)
    assert "blk.0.attn_q.weight" in msg and "use --type f16 or f32" in msg


def test_row_length_the_embedding_type_cannot_hold(tmp_path: Path) -> None:
    d = make_bitnet_checkpoint(
        tmp_path / "c", hidden=200, heads=5, kv_heads=5, ffn=96, tokenizer=None, layers=1
    )
    msg = fails(
        d, tmp_path / "o", "row length 200 is not a multiple of 32, which q4_0", "f16", "q4_0"
    )
    assert "token_embd.weight" in msg and "use --embed-type f16 or f32" in msg


def test_invalid_packed_code_leaves_existing_file(packed: Path, tmp_path: Path) -> None:
    d = copy(packed, tmp_path / "c")
    key = "model.layers.1.mlp.down_proj.weight"

    def corrupt(s: dict[str, Any]) -> None:
        w = s[key].clone()
        w[5, 7] = 0b11_01_10_01  # code 3 in bits 6-7: original row 3 * (256 / 4) + 5
        s[key] = w

    edit_state(d, corrupt)
    out = tmp_path / "o"
    out.mkdir()
    dst = out / "model.gguf"
    dst.write_bytes(b"previous model")
    with pytest.raises(ConversionError, match=rf"{key}: invalid 2-bit code 3 at row 197, column 7"):
        convert(d, dst, "tq2_0", progress=False, report=False)
    assert dst.read_bytes() == b"previous model"
    assert [p.name for p in out.iterdir()] == ["model.gguf"]


def test_destination_directory_missing(master: Path, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="does not exist"):
        convert(master, tmp_path / "nope" / "out.gguf", progress=False, report=False)
    assert not (tmp_path / "nope").exists()
    with pytest.raises(ConversionError, match="is a directory"):
        convert(master, tmp_path, progress=False, report=False)


@pytest.mark.parametrize(
    "args, fragment",
    [(("q4_0",), "unknown weight type 'q4_0'"), (("tq2_0", "i2_s"), "unknown embedding type")],
)
def test_unknown_types(master: Path, tmp_path: Path, args: tuple, fragment: str) -> None:
    fails(master, tmp_path / "o", fragment, *args)


def test_source_missing_or_a_file(tmp_path: Path) -> None:
    fails(tmp_path / "absent", tmp_path / "o", "does not exist")
    (tmp_path / "f.txt").write_text("x")
    fails(tmp_path / "f.txt", tmp_path / "o", "is a file")


def test_revision_for_local_directory(master: Path, tmp_path: Path) -> None:
    fails(master, tmp_path / "o", "revision 'main' given for the local directory", revision="main")


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda c: c.pop("hidden_size"), "'hidden_size' must be a positive integer, got missing"),
        (lambda c: c.update(num_key_value_heads=3), "not a multiple of num_key_value_heads = 3"),
        (lambda c: c.update(hidden_act="gelu"), "hidden_act 'gelu' is not supported"),
        (
            lambda c: c.update(rope_parameters={"rope_type": "yarn", "factor": 4.0}),
            "RoPE scaling 'yarn'",
        ),
        (lambda c: c.update(attention_bias=True), "'attention_bias': true is not supported"),
        (lambda c: c.update(architectures="nope"), "unknown architecture nope"),
    ],
)
def test_bad_config(master: Path, tmp_path: Path, edit: Any, fragment: str) -> None:
    d = copy(master, tmp_path / "c")
    edit_config(d, edit)
    assert "config.json" in fails(d, tmp_path / "o", fragment)


def test_malformed_config_json(master: Path, tmp_path: Path) -> None:
    d = copy(master, tmp_path / "c")
    (d / "config.json").write_text("{not json")
    fails(d, tmp_path / "o", "config.json: not valid JSON")


def test_packed_without_quantization_config(packed: Path, tmp_path: Path) -> None:
    d = copy(packed, tmp_path / "c")
    edit_config(d, lambda c: c.pop("quantization_config"))
    fails(d, tmp_path / "o", "has a weight_scale but config.json has no quantization_config")


def test_packed_with_wrong_shape(packed: Path, tmp_path: Path) -> None:
    d = copy(packed, tmp_path / "c")
    key = "model.layers.0.self_attn.k_proj.weight"
    edit_state(d, lambda s: s.update({key: s[key][:16].clone()}))
    fails(d, tmp_path / "o", r"packed uint8 weight has shape \[16, 256\], expected \[32, 256\]")


def test_non_finite_weight_scale(packed: Path, tmp_path: Path) -> None:
    d = copy(packed, tmp_path / "c")
    key = "model.layers.0.self_attn.v_proj.weight_scale"
    edit_state(d, lambda s: s.update({key: torch.tensor([float("nan")], dtype=torch.bfloat16)}))
    fails(d, tmp_path / "o", rf"tensor {key}: non-finite value")


def test_unpacked_offline_weights_must_be_ternary(packed: Path, tmp_path: Path) -> None:
    """Offline autobitlinear weights may be stored unpacked as floats; they must be ternary."""
    d = copy(packed, tmp_path / "c")
    state = read_state_dict(d)
    keys = [k for k in state if k.endswith("proj.weight")]
    for k in keys:  # unpack every matrix to bf16 {-1, 0, 1}
        state[k] = torch.from_numpy(unpack_hf_packed(state[k].numpy()).astype(np.float32)).to(
            torch.bfloat16
        )
    for f in d.glob("*.safetensors"):
        f.unlink()
    save_state_dict(state, d)
    rep = convert_with_report(d, tmp_path / "ok.gguf", "tq2_0", progress=False, report=False)
    assert {t.source_dtype for t in rep.tensors if t.stored_type == "tq2_0"} == {"bf16 ternary"}
    assert all(t.rel_error == 0 for t in rep.tensors if t.stored_type == "tq2_0")
    state[keys[0]] = state[keys[0]] * 1.5
    for f in d.glob("*.safetensors"):
        f.unlink()
    save_state_dict(state, d)
    fails(d, tmp_path / "o", "is not -1, 0 or 1, but the tensor has a weight_scale")


def test_nan_master_weight(master: Path, tmp_path: Path) -> None:
    d = copy(master, tmp_path / "c")
    key = "model.layers.1.self_attn.o_proj.weight"

    def poison(s: dict[str, Any]) -> None:
        w = s[key].clone()
        w[3, 4] = float("nan")
        s[key] = w

    edit_state(d, poison)
    fails(d, tmp_path / "o", rf"tensor {key}: non-finite value nan at \[3, 4\]")


def test_embedding_overflows_f16(master: Path, tmp_path: Path) -> None:
    d = copy(master, tmp_path / "c")
    key = "model.embed_tokens.weight"

    def big(s: dict[str, Any]) -> None:
        w = s[key].clone()
        w[2, 9] = 1e6
        s[key] = w

    edit_state(d, big)
    fails(d, tmp_path / "o", r"overflows float16; use --embed-type f32")
    convert(d, tmp_path / "ok.gguf", "tq2_0", "f32", progress=False, report=False)


def test_corrupt_and_missing_weight_files(master: Path, tmp_path: Path) -> None:
    d = copy(master, tmp_path / "c")
    (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    fails(d, tmp_path / "o", "cannot read safetensors file")
    (d / "model.safetensors").unlink()
    fails(d, tmp_path / "o2", "no weight files found")
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors"}})
    )
    fails(d, tmp_path / "o3", "shard model-00001-of-00002.safetensors is missing")


def test_tensor_in_two_files(master: Path, tmp_path: Path) -> None:
    d = copy(master, tmp_path / "c")
    save_file({"model.norm.weight": torch.ones(256)}, str(d / "extra.safetensors"))
    (d / "model.safetensors").rename(d / "a.safetensors")
    fails(d, tmp_path / "o", "tensor model.norm.weight is stored twice")


def test_extra_tensors_warn_and_inv_freq_is_ignored(master: Path, tmp_path: Path) -> None:
    d = copy(master, tmp_path / "c")

    def extra(s: dict[str, Any]) -> None:
        s["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(256)
        s["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(32)

    edit_state(d, extra)
    with pytest.warns(ConversionWarning, match=r"1 checkpoint tensor\(s\) .*q_proj\.bias$"):
        rep = convert_with_report(d, tmp_path / "x.gguf", "tq2_0", progress=False, report=False)
    assert len(rep.warnings) == 2  # the extra tensor and the missing tokenizer
    assert not any("inv_freq" in w for w in rep.warnings)


def test_pytorch_nested_state_dict(master: Path, tmp_path: Path) -> None:
    """Training checkpoints nest the weights under "state_dict" / "model"."""
    d = tmp_path / "c"
    d.mkdir()
    shutil.copy(master / "config.json", d / "config.json")
    torch.save({"state_dict": read_state_dict(master), "step": 3}, d / "checkpoint.pt")
    convert(master, tmp_path / "a.gguf", "tq2_0", progress=False, report=False)
    convert(d, tmp_path / "b.gguf", "tq2_0", progress=False, report=False)
    fa, fb = bgguf.read(tmp_path / "a.gguf"), bgguf.read(tmp_path / "b.gguf")
    assert list(fa.tensors) == list(fb.tensors)
    for name, info in fa.tensors.items():
        np.testing.assert_array_equal(info.data, fb.tensors[name].data)


def test_unpack_hf_packed_layout() -> None:
    """unpack_hf_packed against the layout drawn in docs/formats.md, several shapes."""
    rng = np.random.default_rng(5)
    for out, k in [(4, 1), (8, 3), (64, 33), (256, 256), (12, 130)]:
        t = rng.integers(-1, 2, size=(out, k)).astype(np.int8)
        rows = out // 4
        packed = np.zeros((rows, k), np.uint8)
        for r in range(rows):
            for i in range(4):
                packed[r] |= ((t[i * rows + r] + 1).astype(np.uint8) << (2 * i)).astype(np.uint8)
        np.testing.assert_array_equal(unpack_hf_packed(packed, "w"), t)
    with pytest.raises(ConversionError, match="tensor w: invalid 2-bit code 3 at row 5, column 1"):
        unpack_hf_packed(np.array([[0x55, 0x55], [0x55, 0x75]], np.uint8), "w")

"""Interop with llama.cpp's `gguf` package: files we write read back right with gguf.GGUFReader,
files gguf.GGUFWriter writes read back right with ours, and GGUF v2 files read."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

from bitnet import gguf as G
from bitnet import ops

RNG_SEED = 99
F32 = np.float32
_VT = {
    "u8": V.UINT8, "i8": V.INT8, "u16": V.UINT16, "i16": V.INT16, "u32": V.UINT32,
    "i32": V.INT32, "u64": V.UINT64, "i64": V.INT64, "f32": V.FLOAT32, "f64": V.FLOAT64,
    "bool": V.BOOL, "string": V.STRING,
}  # fmt: skip
_SAMPLES = {  # one value and an array per scalar type
    "u8": (255, [0, 7, 255]), "i8": (-128, [-1, 127]), "u16": (65535, [1, 2]),
    "i16": (-32768, [300, -300]), "u32": (2**32 - 1, [5]), "i32": (-(2**31), [1, -1]),
    "u64": (2**64 - 1, [2**63, 0]), "i64": (-(2**63), [2**62, -5]), "f32": (0.25, [1.5, -2.0]),
    "f64": (1e-300, [0.1, 2.0]), "bool": (True, [True, False, True]),
    "string": ("ünïcode ✓", ["a", "", "bc"]),
}  # fmt: skip


def _type_flat(type_: str) -> list[V]:
    """``"array[array[i32]]"`` -> [ARRAY, ARRAY, INT32], GGUFReader's ``field.types``."""
    out = []
    while type_.startswith("array["):
        out.append(V.ARRAY)
        type_ = type_[6:-1]
    return [*out, _VT[type_]]


def _flatten(v):
    return [x for item in v for x in _flatten(item)] if isinstance(v, list) else [v]


def _ternary_scaled(rng: np.random.Generator, n: int, k: int, scale: float):
    t = rng.integers(-1, 2, size=(n, k)).astype(np.int8)
    t[:, 0] = 1  # every block holds a non-zero, so ggml's absmax scale is `scale`
    t[:, 256 - 1 :: 256] = -1
    return t, (t.astype(np.float32) * np.float32(np.float16(scale)))


def test_our_files_read_by_gguf_reader(tmp_path: Path):
    rng = np.random.default_rng(RNG_SEED)
    meta: dict[str, object] = {}
    for name, (scalar, arr) in _SAMPLES.items():
        meta[f"s.{name}"] = G.typed(scalar, name)
        meta[f"a.{name}"] = G.typed(arr, f"array[{name}]")
    meta["n.nested"] = [[1, 2], [3]]
    meta["n.strings"] = [["x", "y"], ["z"]]
    t1, _ = _ternary_scaled(rng, 3, 512, 0.7)
    t2, _ = _ternary_scaled(rng, 4, 256, 0.3)
    tensors = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal((2, 3, 4)).astype(np.float16),
        "f64": rng.standard_normal(7),
        "i8": rng.integers(-128, 127, (4, 2), dtype=np.int8),
        "i16": rng.integers(-999, 999, (3,), dtype=np.int16),
        "i32": rng.integers(-999, 999, (1, 1, 2, 3), dtype=np.int32),
        "i64": rng.integers(-999, 999, (5,), dtype=np.int64),
        "tq1": ops.pack(t1, "tq1_0", 0.7),
        "tq2": ops.pack(t2, "tq2_0", 0.3),
        "q8": G.Tensor("q8_0", (2, 64), ops.quantize_blocks(rng.random((2, 64), F32), "q8_0")),
        "q4": G.Tensor("q4_0", (3, 32), ops.quantize_blocks(rng.random((3, 32), F32), "q4_0")),
    }
    # I2_S (type 36) is left out: only bitnet.cpp's fork knows it; gguf.GGUFReader raises on it.
    path = G.write(tmp_path / "ours.gguf", "bitnet", meta, tensors, alignment=64)
    ours = G.read(path)
    r = gguf.GGUFReader(path)
    assert r.alignment == 64
    fields = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
    assert list(fields) == list(ours.metadata)
    for key, value in ours.metadata.items():
        f = fields[key]
        assert f.types == _type_flat(ours.metadata_types[key]), key
        got = f.contents()
        if isinstance(value, list):  # GGUFReader flattens nested arrays
            assert got == _flatten(value), key
        else:
            assert got == value, key
    assert [t.name for t in r.tensors] == list(ours.tensors)
    for t in r.tensors:
        mine = ours.tensors[t.name]
        assert t.tensor_type == Q(mine.type_id) and t.tensor_type.name.lower() == mine.type
        assert tuple(int(d) for d in t.shape[::-1]) == mine.shape  # GGUFReader: innermost first
        assert t.data_offset == mine.offset and t.n_bytes == mine.nbytes
        assert np.asarray(t.data).tobytes() == mine.data.tobytes()
        if mine.type in ("tq1_0", "tq2_0", "q8_0", "q4_0", "f16"):
            theirs = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
            np.testing.assert_array_equal(mine.dequantize(), theirs.reshape(mine.shape))
    # the ternary values themselves, exactly
    np.testing.assert_array_equal(
        ours.tensors["tq1"].dequantize(), t1.astype(np.float32) * np.float32(np.float16(0.7))
    )


def _gguf_writer_file(path: Path, rng: np.random.Generator):
    """A file written by gguf.GGUFWriter with every value type, arrays of each, nested arrays
    and tensors f32, f16, bf16, q8_0, q4_0, tq1_0, tq2_0. Returns (metadata, types, tensors)."""
    w = gguf.GGUFWriter(path, "bitnet")
    meta: dict[str, object] = {"general.architecture": "bitnet"}
    types: dict[str, str] = {"general.architecture": "string"}
    for name, (scalar, arr) in _SAMPLES.items():
        w.add_key_value(f"s.{name}", scalar, _VT[name])
        w.add_key_value(f"a.{name}", arr, V.ARRAY, sub_type=_VT[name])
        meta[f"s.{name}"], types[f"s.{name}"] = scalar, name
        meta[f"a.{name}"], types[f"a.{name}"] = arr, f"array[{name}]"
    w.add_key_value("n.nested", [[1, 2], [3]], V.ARRAY)  # inner type inferred: i32
    w.add_key_value("n.nested_str", [["a"], ["b", "c"]], V.ARRAY)
    meta.update({"n.nested": [[1, 2], [3]], "n.nested_str": [["a"], ["b", "c"]]})
    types.update({"n.nested": "array[array[i32]]", "n.nested_str": "array[array[string]]"})
    meta["s.f32"] = float(np.float32(0.25))
    meta["a.f32"] = [1.5, -2.0]
    x = rng.standard_normal((4, 256)).astype(np.float32)
    tensors: dict[str, tuple[str, np.ndarray]] = {}
    w.add_tensor("f32", x[:, :7].copy())
    tensors["f32"] = ("f32", x[:, :7])
    w.add_tensor("f16", x[:3, :5].astype(np.float16))
    tensors["f16"] = ("f16", x[:3, :5].astype(np.float16).astype(np.float32))
    for qname, qt, src in (
        ("bf16", Q.BF16, x[:2, :9]),
        ("q8_0", Q.Q8_0, x[:, :96]),
        ("q4_0", Q.Q4_0, x[:3, :64]),
        ("tq1_0", Q.TQ1_0, _ternary_scaled(rng, 3, 512, 0.6)[1]),
        ("tq2_0", Q.TQ2_0, _ternary_scaled(rng, 2, 768, 1.25)[1]),
    ):
        q = gguf.quants.quantize(np.ascontiguousarray(src), qt)
        w.add_tensor(qname, q, raw_dtype=qt)
        tensors[qname] = (qname, gguf.quants.dequantize(q, qt))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return meta, types, tensors


def test_gguf_writer_files_read_by_ours(tmp_path: Path):
    rng = np.random.default_rng(RNG_SEED)
    path = tmp_path / "theirs.gguf"
    meta, types, tensors = _gguf_writer_file(path, rng)
    f = G.read(path)
    assert f.version == 3 and f.architecture == "bitnet"
    assert f.metadata == meta
    assert f.metadata_types == types
    assert list(f.tensors) == list(tensors)
    r = gguf.GGUFReader(path)
    for t in r.tensors:
        mine = f.tensors[t.name]
        type_, want = tensors[t.name]
        assert mine.type == type_ and mine.shape == want.shape
        assert mine.offset == t.data_offset and mine.data.tobytes() == np.asarray(t.data).tobytes()
        got = mine.dequantize()
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want.astype(np.float32))
    np.testing.assert_array_equal(f.tensors["f32"].array(), tensors["f32"][1])


def test_gguf_v2_reads(tmp_path: Path):
    rng = np.random.default_rng(RNG_SEED)
    a = rng.standard_normal((3, 8)).astype(np.float32)
    path = G.write(tmp_path / "v3.gguf", "bitnet", {"k": [1, 2]}, {"a": a})
    data = bytearray(path.read_bytes())
    assert struct.unpack_from("<I", data, 4) == (3,)
    struct.pack_into("<I", data, 4, 2)  # v2 and v3 share the layout
    v2 = tmp_path / "v2.gguf"
    v2.write_bytes(bytes(data))
    f = G.read(v2)
    assert f.version == 2 and f.metadata == {"general.architecture": "bitnet", "k": [1, 2]}
    np.testing.assert_array_equal(f.tensors["a"].array(), a)
    assert gguf.GGUFReader(v2).fields["GGUF.version"].contents() == 2


@pytest.mark.parametrize("fmt", ["tq1_0", "tq2_0"])
def test_our_ternary_bytes_equal_ggml_quantizer(fmt: str):
    """pack(t, fmt, s) is what ggml's quantizer makes of t * s (docs/formats.md section 6)."""
    rng = np.random.default_rng(RNG_SEED)
    for n, k in ((1, 256), (3, 512), (5, 768)):
        t, ts = _ternary_scaled(rng, n, k, 0.4)
        theirs = gguf.quants.quantize(ts, Q[fmt.upper()])
        assert ops.pack(t, fmt, 0.4).tobytes() == theirs.tobytes()

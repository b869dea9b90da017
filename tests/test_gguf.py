"""bitnet.gguf: writer output against a reference encoder, round trips, zero-copy views, metadata
typing, writer failures, the 128k-vocabulary parse time, and `bitnet info`."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf_reference import RefFile

from bitnet import gguf as G
from bitnet import ops

RNG_SEED = 1234
TYPE_IDS = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8, "i8": 24, "i16": 25, "i32": 26, "i64": 27}
TYPE_IDS.update({"f64": 28, "bf16": 30, "tq1_0": 34, "tq2_0": 35, "i2_s": 36})

# Every metadata value type, with the type the writer infers (or is told) and the value it reads
# back (f32 values come back rounded to float32).
METADATA = [
    ("m.u8", G.typed(200, "u8"), "u8", 200),
    ("m.i8", G.typed(-100, "i8"), "i8", -100),
    ("m.u16", G.typed(60000, "u16"), "u16", 60000),
    ("m.i16", G.typed(-30000, "i16"), "i16", -30000),
    ("m.u32", 4000000000, "u32", 4000000000),
    ("m.i32", -5, "i32", -5),
    ("m.u64", 2**63 + 5, "u64", 2**63 + 5),
    ("m.i64", -(2**40), "i64", -(2**40)),
    ("m.f32", 0.1, "f32", float(np.float32(0.1))),
    ("m.f64", G.typed(0.1, "f64"), "f64", 0.1),
    ("m.bool", True, "bool", True),
    ("m.str", "héllo ✓", "string", "héllo ✓"),
    ("m.empty_str", "", "string", ""),
    ("m.bytes", b"\xff\xfe raw", "string", b"\xff\xfe raw"),
    ("m.a_i32", [1, -2, 3], "array[i32]", [1, -2, 3]),
    ("m.a_i64", [1, 2**40], "array[i64]", [1, 2**40]),
    ("m.a_u64", [1, 2**63], "array[u64]", [1, 2**63]),
    ("m.a_f32", [0.5, 1, 2.25], "array[f32]", [0.5, 1.0, 2.25]),
    ("m.a_str", ["a", "", "ü"], "array[string]", ["a", "", "ü"]),
    ("m.a_bool", [True, False], "array[bool]", [True, False]),
    ("m.a_empty", [], "array[u8]", []),
    ("m.a_nested", [[1, 2], [], [3]], "array[array[i32]]", [[1, 2], [], [3]]),
    ("m.a_nested_mix", [[1], [2.5]], "array[array[f32]]", [[1.0], [2.5]]),
    ("m.a_deep", [[["x"]], [["y", "z"]]], "array[array[array[string]]]", [[["x"]], [["y", "z"]]]),
    ("m.a_u8", G.typed([1, 255], "array[u8]"), "array[u8]", [1, 255]),
    ("m.a_i8", np.array([-1, 5], np.int8), "array[i8]", [-1, 5]),
    ("m.a_u16", np.array([7, 65535], np.uint16), "array[u16]", [7, 65535]),
    ("m.a_i16", np.array([-7, 300], np.int16), "array[i16]", [-7, 300]),
    ("m.a_u32", np.array([2**32 - 1], np.uint32), "array[u32]", [2**32 - 1]),
    ("m.a_np_f64", np.array([0.1, -2.0]), "array[f64]", [0.1, -2.0]),
    ("m.a_np_bool", np.array([True, False, True]), "array[bool]", [True, False, True]),
    (
        "m.a_2d",
        np.arange(6, dtype=np.int32).reshape(2, 3),
        "array[array[i32]]",
        [[0, 1, 2], [3, 4, 5]],
    ),
]


def _ternary(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.integers(-1, 2, size=(n, k)).astype(np.int8)


def _ref_q8_0(data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Q8_0 from docs/formats.md: blocks {fp16 d; int8 qs[32]}, x = d * q."""
    b = data.reshape(-1, 34)
    d = b[:, :2].copy().view(np.float16).astype(np.float32)
    q = b[:, 2:].view(np.int8).astype(np.float32)
    return (d * q).reshape(shape)


def _ref_q4_0(data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Q4_0: blocks {fp16 d; uint8 qs[16]}, low nibbles values 0..15, high 16..31, x = d*(n-8)."""
    b = data.reshape(-1, 18)
    d = b[:, :2].copy().view(np.float16).astype(np.float32)
    qs = b[:, 2:]
    nib = np.concatenate([qs & 15, qs >> 4], axis=1).astype(np.float32)
    return (d * (nib - 8)).reshape(shape)


def _case(rng: np.random.Generator):
    """Tensors of every kind, with the (type, shape, bytes) the file must hold."""
    tensors: dict[str, object] = {}
    expect: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    dtypes = [np.float32, np.float16, np.float64, np.int8, np.int16, np.int32, np.int64]
    shapes = [(7,), (3, 5), (2, 3, 5), (1, 2, 1, 3), (1,)]
    for i, dt in enumerate(dtypes):
        shape = shapes[i % len(shapes)]
        if np.issubdtype(dt, np.floating):
            a = rng.standard_normal(shape).astype(dt)
        else:
            a = rng.integers(np.iinfo(dt).min, np.iinfo(dt).max, size=shape, dtype=dt)
        name = f"np.{np.dtype(dt).name}"
        tensors[name] = a
        expect[name] = (G._NUMPY_TYPES[np.dtype(dt)], shape, a.tobytes())
    nc = rng.standard_normal((4, 6)).astype(np.float32)[:, ::2]  # non-contiguous
    tensors["np.strided"] = nc
    expect["np.strided"] = ("f32", (4, 3), np.ascontiguousarray(nc).tobytes())
    for fmt, (n, k) in {"i2_s": (3, 384), "tq1_0": (2, 512), "tq2_0": (5, 256)}.items():
        t = _ternary(rng, n, k)
        p = ops.pack(t, fmt, 0.37)
        tensors[f"blk.0.{fmt}.weight"] = p
        expect[f"blk.0.{fmt}.weight"] = (fmt, (n, k), p.tobytes())
    for qt, shape in {"q8_0": (3, 64), "q4_0": (2, 96)}.items():
        raw = ops.quantize_blocks(rng.standard_normal(shape).astype(np.float32), qt)
        tensors[f"{qt}.raw"] = G.Tensor(qt, shape, raw)
        expect[f"{qt}.raw"] = (qt, shape, raw.tobytes())
    lazy = rng.standard_normal((2, 33)).astype(np.float32)
    tensors["lazy"] = G.LazyTensor("f32", (2, 33), lambda: lazy)
    expect["lazy"] = ("f32", (2, 33), lazy.tobytes())
    tb = torch.from_numpy(rng.standard_normal((3, 4)).astype(np.float32)).to(torch.bfloat16)
    tensors["torch.bf16"] = tb
    expect["torch.bf16"] = ("bf16", (3, 4), tb.view(torch.int16).numpy().tobytes())
    tensors["empty"] = np.zeros((0, 4), np.float32)
    expect["empty"] = ("f32", (0, 4), b"")
    return tensors, expect


@pytest.mark.parametrize("alignment", [32, 64, 8])
def test_writer_bytes_match_reference_encoder(tmp_path: Path, alignment: int):
    rng = np.random.default_rng(RNG_SEED + alignment)
    tensors, expect = _case(rng)
    path = G.write(
        tmp_path / "m.gguf",
        "bitnet",
        {k: v for k, v, _, _ in METADATA},
        tensors,
        alignment=alignment,
    )
    ref = RefFile(alignment=alignment).kv("general.architecture", "string", "bitnet")
    for key, value, type_, _ in METADATA:
        raw = value.value if isinstance(value, G.typed) else value
        if isinstance(raw, np.ndarray):
            raw = raw.tolist()
        ref.kv(key, type_, raw)
    if alignment != 32:
        ref.kv("general.alignment", "u32", alignment)
    for name, (type_, shape, data) in expect.items():
        ref.tensor(name, shape, TYPE_IDS[type_], data)
    assert path.read_bytes() == ref.build()
    assert not Path(str(path) + ".partial").exists()


@pytest.mark.parametrize("alignment", [32, 64])
def test_round_trip(tmp_path: Path, alignment: int):
    rng = np.random.default_rng(RNG_SEED)
    tensors, expect = _case(rng)
    meta = {k: v for k, v, _, _ in METADATA}
    path = G.write(tmp_path / "m.gguf", "bitnet", meta, tensors, alignment=alignment)
    with G.read(path) as f:
        assert f.version == 3 and f.alignment == alignment and f.architecture == "bitnet"
        assert f.data_offset % alignment == 0
        want_md = {"general.architecture": "bitnet", **{k: r for k, _, _, r in METADATA}}
        want_types = {"general.architecture": "string", **{k: t for k, _, t, _ in METADATA}}
        if alignment != 32:
            want_md["general.alignment"] = alignment
            want_types["general.alignment"] = "u32"
        assert f.metadata == want_md
        assert list(f.metadata) == list(want_md)  # file order
        assert f.metadata_types == want_types
        assert list(f.tensors) == list(expect)
        for name, (type_, shape, data) in expect.items():
            t = f.tensors[name]
            assert (t.type, t.shape, t.type_id) == (type_, shape, TYPE_IDS[type_]), name
            assert t.offset % alignment == 0 and t.nbytes == len(data)
            assert t.data.tobytes() == data, name
        for name in ("np.float32", "np.int64", "np.strided", "lazy"):
            src = tensors[name]
            src = src.load() if isinstance(src, G.LazyTensor) else src
            np.testing.assert_array_equal(f.tensors[name].array(), src)
        # dequantize() against the formulas
        for name in ("np.float16", "np.float64"):
            np.testing.assert_array_equal(
                f.tensors[name].dequantize(), tensors[name].astype(np.float32)
            )
        np.testing.assert_array_equal(
            f.tensors["torch.bf16"].dequantize(), tensors["torch.bf16"].float().numpy()
        )
        for fmt in ("i2_s", "tq1_0", "tq2_0"):
            ti = f.tensors[f"blk.0.{fmt}.weight"]
            t, _ = ops.unpack(tensors[f"blk.0.{fmt}.weight"])
            scale = np.float32(0.37) if fmt == "i2_s" else np.float32(np.float16(0.37))
            got = ti.dequantize()
            assert got.dtype == np.float32 and got.shape == t.shape
            np.testing.assert_array_equal(got, t.astype(np.float32) * scale)
            p = ti.packed()
            assert (p.format, p.shape, p.scale) == (fmt, t.shape, float(scale))
            np.testing.assert_array_equal(ops.unpack(p)[0], t)
        for qt, ref in (("q8_0", _ref_q8_0), ("q4_0", _ref_q4_0)):
            ti = f.tensors[f"{qt}.raw"]
            np.testing.assert_array_equal(ti.dequantize(), ref(ti.data, ti.shape))
        assert f.tensors["empty"].dequantize().shape == (0, 4)


def test_type_table_and_sizes():
    import gguf

    for qt, (block, size) in gguf.GGML_QUANT_SIZES.items():
        name = qt.name.lower()
        assert name in G.TYPES
        assert G.type_size(name) == (block, size)
        assert G._TYPE_TABLE[name][0] == qt.value
    assert set(G.TYPES) == {q.name.lower() for q in gguf.GGML_QUANT_SIZES} | {"i2_s"}
    assert G.type_size("I2_S") == (1, 1)
    rng = np.random.default_rng(RNG_SEED)
    for _ in range(20):
        rows, blocks = int(rng.integers(1, 9)), int(rng.integers(1, 5))
        for name in ("q8_0", "tq1_0", "q6_k", "f16", "bf16"):
            block, size = G.type_size(name)
            assert G.tensor_nbytes(name, (rows, blocks * block)) == rows * blocks * size
        assert G.tensor_nbytes("i2_s", (rows, blocks * 128)) == rows * blocks * 128 // 4 + 32
        assert (
            G.tensor_nbytes("i2_s", (rows, blocks * 128))
            == ops.pack(np.zeros((rows, blocks * 128), np.int8), "i2_s", 1.0).nbytes
        )
    with pytest.raises(ValueError, match="row length 33 is not a multiple of the block size 32"):
        G.tensor_nbytes("q8_0", (2, 33), "w")
    with pytest.raises(ValueError, match="i2_s row length 64 is not a multiple of 128"):
        G.tensor_nbytes("i2_s", (2, 64))
    with pytest.raises(ValueError, match="unknown ggml type 'q9_9'"):
        G.type_size("q9_9")


@pytest.mark.parametrize(
    ("value", "expect"),
    [
        (0, "u32"),
        (2**32 - 1, "u32"),
        (2**32, "u64"),
        (2**64 - 1, "u64"),
        (-1, "i32"),
        (-(2**31), "i32"),
        (-(2**31) - 1, "i64"),
        (-(2**63), "i64"),
        (True, "bool"),
        (np.int64(5), "u32"),
        (np.float64(1.5), "f32"),
        (np.bool_(False), "bool"),
        ([1, 2**31], "array[i64]"),
        ([-1, 2**31 - 1], "array[i32]"),
        ([1, 1.5], "array[f32]"),
        ((b"x", "y"), "array[string]"),
        ([[], []], "array[array[u8]]"),
        ([[1], [2**40]], "array[array[i64]]"),
        (np.zeros((2, 0), np.float32), "array[array[f32]]"),
        (np.float32(2.0), "f32"),
    ],
)
def test_metadata_type_inference(value, expect):
    assert G._infer_type(value, "k") == expect


def test_metadata_errors(tmp_path: Path):
    out = tmp_path / "x.gguf"
    cases = [
        ({"k": 2**64}, ValueError, "key 'k': integer 18446744073709551616 does not fit"),
        ({"k": -(2**63) - 1}, ValueError, "does not fit in 64 bits"),
        ({"k": [1, "a"]}, TypeError, "key 'k': array mixes int, string"),
        ({"k": [True, 1]}, TypeError, "array mixes bool, int"),
        ({"k": [[1], ["a"]]}, TypeError, "array elements mix i32 and string"),
        ({"k": {"a": 1}}, TypeError, "key 'k': unsupported metadata value dict"),
        ({"k": G.typed(256, "u8")}, ValueError, "key 'k': value 256 is out of range for u8"),
        ({"k": G.typed(-1, "u64")}, ValueError, "value -1 is out of range for u64"),
        ({"k": G.typed([1, 300], "array[u8]")}, ValueError, "key 'k'\\[1\\]: value 300"),
        ({"k": G.typed("s", "u32")}, TypeError, "key 'k': expected a value for u32, got str"),
        ({"k": G.typed(1, "string")}, TypeError, "expected a value for string, got int"),
        ({"k": G.typed(1, "array[i8]")}, TypeError, "expected a value for array, got int"),
        ({"k": G.typed(True, "i32")}, TypeError, "expected a value for i32, got bool"),
        ({"k": G.typed(True, "f32")}, TypeError, "expected a value for f32, got bool"),
        ({"k": 1e39}, ValueError, "key 'k': value 1e\\+39 is out of range for f32"),
        ({"k": G.typed(10**400, "f64")}, ValueError, "key 'k': value 1000.* out of range for f64"),
        ({"k": np.zeros(2, np.float16)}, TypeError, "unsupported array dtype float16"),
        ({"general.architecture": "llama"}, ValueError, "contradicts arch = 'bitnet'"),
        ({"general.alignment": 64}, ValueError, "general.alignment must be the writer's"),
        ({"": 1}, ValueError, "empty metadata key"),
        ({"k": "\ud800"}, ValueError, "key 'k': the string is not valid Unicode"),
    ]
    for meta, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            G.write(out, "bitnet", meta, {})
        assert not out.exists() and not Path(str(out) + ".partial").exists()
    with pytest.raises(ValueError, match="invalid GGUF type 'array\\[u9\\]'"):
        G.typed([1], "array[u9]")
    with pytest.raises(ValueError, match="arch must be a non-empty str"):
        G.write(out, "", {}, {})
    # A value forced to its own inferred type is accepted (and the typed arch is compared).
    G.write(out, "bitnet", {"general.architecture": G.typed("bitnet", "string")}, {})
    assert G.read(out).metadata == {"general.architecture": "bitnet"}


def test_zero_copy_views_outlive_the_file(tmp_path: Path):
    rng = np.random.default_rng(RNG_SEED)
    a = rng.standard_normal((64, 48)).astype(np.float32)
    path = G.write(tmp_path / "z.gguf", "bitnet", {}, {"a": a, "b": a[:3]})
    f = G.read(path)
    t = f.tensors["a"]
    d1, d2, arr = t.data, t.data, t.array()
    assert np.shares_memory(d1, d2) and np.shares_memory(d1, arr)
    assert not d1.flags.writeable and not arr.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        arr[0, 0] = 1.0
    maps = Path("/proc/self/maps")

    def mapped() -> bool:
        return str(path) in maps.read_text()

    if maps.exists():
        assert mapped()
    f.close()
    with pytest.raises(ValueError, match="z.gguf: tensor 'a': the GGUFFile is closed"):
        _ = t.data
    del f, t
    gc.collect()
    np.testing.assert_array_equal(arr, a)  # the view keeps the mapping alive
    assert arr.base is not None
    if maps.exists():
        assert mapped()
        del d1, d2, arr
        gc.collect()
        assert not mapped()  # the last view gone: unmapped
        # no reference cycles: dropping the file and its views unmaps without the collector
        gc.disable()
        try:
            f = G.read(path)
            infos = dict(f.tensors)
            view = infos["b"].data
            del f
            assert mapped()
            del infos, view
            assert not mapped()
        finally:
            gc.enable()
    with G.read(path) as f2:
        view = f2.tensors["b"].array()
    np.testing.assert_array_equal(view, a[:3])


def test_read_buffer_and_bytes_values(tmp_path: Path):
    data = (
        RefFile().kv("s", "string", b"\xc3\x28").kv("t", "array[string]", [b"ok", b"\xff"]).build()
    )
    f = G.read_buffer(data, "mem.gguf")
    assert f.metadata == {"s": b"\xc3\x28", "t": ["ok", b"\xff"]}
    assert f.metadata_types == {"s": "string", "t": "array[string]"}
    assert str(f.path) == "mem.gguf"


def test_array_rejects_block_types_and_packed_rejects_float(tmp_path: Path):
    raw = ops.quantize_blocks(np.ones((1, 32), np.float32), "q8_0")
    path = G.write(
        tmp_path / "q.gguf",
        "bitnet",
        {},
        {"q": G.Tensor("q8_0", (1, 32), raw), "f": np.ones(3, np.float32)},
    )
    f = G.read(path)
    with pytest.raises(ValueError, match="q.gguf: tensor 'q': type q8_0 is a block format"):
        f.tensors["q"].array()
    with pytest.raises(ValueError, match="tensor 'f': type f32 is not a ternary format"):
        f.tensors["f"].packed()


def test_tq_dequantize_rejects_mixed_block_scales(tmp_path: Path):
    t = _ternary(np.random.default_rng(3), 2, 256)
    raw = bytearray(ops.pack(t, "tq2_0", 1.0).tobytes())
    raw[64:66] = np.float16(2.0).tobytes()  # block 0 of row 0 gets another scale
    path = G.write(tmp_path / "t.gguf", "bitnet", {}, {"w": G.Tensor("tq2_0", (2, 256), raw)})
    with pytest.raises(ValueError, match="t.gguf: tensor 'w': .*scale"):
        G.read(path).tensors["w"].dequantize()


def test_lazy_tensors_load_once_in_order_and_are_dropped(tmp_path: Path):
    import weakref

    log: list[str] = []
    refs: dict[str, weakref.ref] = {}
    rng = np.random.default_rng(RNG_SEED)
    data = {f"t{i}": rng.standard_normal((i + 1, 5)).astype(np.float32) for i in range(4)}

    def loader(name: str):
        def load():
            # every tensor loaded before this one has been written and released
            assert all(r() is None for r in refs.values()), "writer kept a tensor alive"
            log.append(name)
            a = data[name].copy()
            refs[name] = weakref.ref(a)
            return a

        return load

    lazies = ((n, G.LazyTensor("f32", a.shape, loader(n))) for n, a in data.items())
    path = G.write(tmp_path / "l.gguf", "bitnet", {}, lazies)  # a generator works too
    assert log == list(data)
    f = G.read(path)
    for n, a in data.items():
        np.testing.assert_array_equal(f.tensors[n].array(), a)


def test_writer_failures_leave_no_file(tmp_path: Path):
    out = tmp_path / "f.gguf"
    partial = Path(str(out) + ".partial")
    ok = np.ones((2, 2), np.float32)

    def boom():
        raise RuntimeError("load failed")

    calls = []

    def counted():
        calls.append(1)
        return np.ones((2, 3), np.float32)

    cases = [
        ({"a": ok, "b": G.LazyTensor("f32", (2, 2), boom)}, RuntimeError, "load failed"),
        (
            {"b": G.LazyTensor("f32", (2, 2), counted)},
            ValueError,
            "tensor 'b': load\\(\\) returned f32 \\[2, 3\\], declared f32 \\[2, 2\\]",
        ),
        (
            {"b": G.LazyTensor("f16", (2, 3), counted)},
            ValueError,
            "returned f32 \\[2, 3\\], declared f16",
        ),
        ({"b": G.LazyTensor("f32", (2, 3), lambda: "x")}, TypeError, "unsupported value str"),
        (
            {"n": ops.pack(np.zeros((1, 5), np.int8), "native", 1.0)},
            ValueError,
            "'native' kernel layout",
        ),
        ({"u": np.zeros(3, np.uint8)}, TypeError, "tensor 'u': unsupported dtype uint8"),
        ({"s": np.array(1.0, np.float32)}, ValueError, "0-d array"),
        ({"q": np.zeros((2, 2, 2, 2, 2), np.float32)}, ValueError, "1 to 4 dimensions, got 5"),
        ({"x" * 64: ok}, ValueError, "llama.cpp allows at most 63"),
        ({"": ok}, ValueError, "empty tensor name"),
        ([("a", ok), ("a", ok)], ValueError, "duplicate tensor name 'a'"),
        ({"t": torch.zeros(2, dtype=torch.bool)}, TypeError, "unsupported dtype bool"),
        (
            {"l": G.LazyTensor("f32", (2,), lambda: G.LazyTensor("f32", (2,), boom))},
            TypeError,
            "another LazyTensor",
        ),
    ]
    for tensors, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            G.write(out, "bitnet", {}, tensors)
        assert not out.exists() and not partial.exists(), msg
    assert len(calls) == 2  # each LazyTensor's load() ran exactly once
    with pytest.raises(ValueError, match="Tensor\\(q8_0, \\(2, 32\\)\\): needs 68 bytes, got 67"):
        G.Tensor("q8_0", (2, 32), bytes(67))
    with pytest.raises(ValueError, match="unknown ggml type 'q3'"):
        G.LazyTensor("q3", (2,), boom)
    with pytest.raises(FileNotFoundError, match="missing/f.gguf.partial: cannot create"):
        G.write(tmp_path / "missing" / "f.gguf", "bitnet", {}, {"a": ok})
    # A failed rewrite leaves the previous file untouched.
    G.write(out, "bitnet", {"v": 1}, {"a": ok})
    before = out.read_bytes()
    with pytest.raises(RuntimeError, match="load failed"):
        G.write(out, "bitnet", {"v": 2}, {"b": G.LazyTensor("f32", (2, 2), boom)})
    assert out.read_bytes() == before and not partial.exists()


def test_disk_full_is_reported(tmp_path: Path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    out = tmp_path / "full.gguf"
    partial = Path(str(out) + ".partial")
    partial.symlink_to("/dev/full")  # the writer opens path + ".partial": every write fails
    with pytest.raises(OSError, match="full.gguf.partial: write failed: No space left on device"):
        G.write(out, "bitnet", {}, {"a": np.zeros(1 << 20, np.float32)})
    assert not out.exists() and not partial.exists()


def test_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    G.write(tmp_path / "p.gguf", "bitnet", {}, {"a": np.zeros(1000, np.float32)}, progress=True)
    assert "p.gguf" in capsys.readouterr().err


def test_large_vocabulary_parses_fast(tmp_path: Path):
    rng = np.random.default_rng(RNG_SEED)
    tokens = [f"tok{i}_" + "x" * int(rng.integers(0, 12)) for i in range(128256)]
    merges = [f"a{i} b{i % 977}" for i in range(280000)]
    types = rng.integers(1, 7, size=128256).astype(np.int32)
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
    }
    path = G.write(tmp_path / "v.gguf", "bitnet", meta, {})
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        f = G.read(path)
        best = min(best, time.perf_counter() - t0)
    assert f.metadata["tokenizer.ggml.tokens"] == tokens
    assert f.metadata["tokenizer.ggml.merges"] == merges
    assert f.metadata["tokenizer.ggml.token_type"] == types.tolist()
    assert best < 0.5, f"parsing a 128k vocabulary took {best:.3f} s"


def test_read_resolves_repo_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import bitnet.hub

    path = G.write(tmp_path / "r.gguf", "bitnet", {}, {})
    asked: list[str] = []

    def fake(s):
        asked.append(s)
        return path

    monkeypatch.setattr(bitnet.hub, "resolve_gguf", fake)
    assert G.read("owner/name").path == path
    assert G.read("owner/name/sub/model.gguf").path == path
    assert asked == ["owner/name", "owner/name/sub/model.gguf"]
    monkeypatch.chdir(tmp_path)
    os.mkdir("owner")
    G.write("owner/local.gguf", "bitnet", {}, {})
    assert G.read("owner/local.gguf").path == Path("owner/local.gguf")  # local wins
    with pytest.raises(FileNotFoundError):
        G.read("owner/missing.gguf")  # a path, not a repo id
    assert len(asked) == 2


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "bitnet.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_info_command(tmp_path: Path):
    t = _ternary(np.random.default_rng(RNG_SEED), 4, 256)
    meta = {
        "bitnet.block_count": 30,
        "bitnet.rope.freq_base": 500000.0,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "llama-bpe",
        "tokenizer.ggml.tokens": [f"t{i}" for i in range(100)],
        "tokenizer.ggml.merges": ["a b", "c d"],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.chat_template": "{{ x }}" * 50,
        "general.name": "tiny",
    }
    tensors = {
        "token_embd.weight": np.ones((10, 8), np.float16),
        "blk.0.attn_q.weight": ops.pack(t, "tq2_0", 0.5),
    }
    path = G.write(tmp_path / "i.gguf", "bitnet", meta, tensors)
    r = run_cli("info", str(path))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for frag in (
        "GGUF version:  3",
        "architecture:  bitnet",
        "bitnet.block_count = 30",
        "model gpt2, pre llama-bpe",
        "vocab size 100, merges 2",
        "bos 1, eos 2, pad -, chat template yes",
        "... (100 items)",
        "blk.0.attn_q.weight",
        "4x256",
        "tq2_0",
        "parameters:   1,104",
        f"({path.stat().st_size} bytes)",
    ):
        assert frag in out, frag
    assert "{{ x }}" * 50 not in out
    full = run_cli("info", str(path), "--metadata").stdout
    assert "{{ x }}" * 50 in full and "t99" in full
    j = json.loads(run_cli("info", str(path), "--json").stdout)
    assert j["version"] == 3 and j["architecture"] == "bitnet"
    assert j["hyperparameters"] == {"bitnet.block_count": 30, "bitnet.rope.freq_base": 500000.0}
    assert j["tokenizer"]["vocab_size"] == 100 and j["tokenizer"]["has_chat_template"]
    assert j["metadata"]["tokenizer.ggml.tokens"]["length"] == 100
    assert j["metadata_types"]["tokenizer.ggml.tokens"] == "array[string]"
    assert [x["name"] for x in j["tensors"]] == list(tensors)
    assert j["tensors"][1] == {
        "name": "blk.0.attn_q.weight",
        "shape": [4, 256],
        "type": "tq2_0",
        "nbytes": 4 * 66,
        "offset": G.read(path).tensors["blk.0.attn_q.weight"].offset,
    }
    assert j["totals"] == {
        "tensors": 2,
        "bytes_by_type": {"f16": 160, "tq2_0": 264},
        "tensor_bytes": 424,
        "parameters": 1104,
        "file_size": path.stat().st_size,
    }
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(path.read_bytes()[:40])
    r = run_cli("info", str(bad))
    assert r.returncode == 1
    assert r.stderr.startswith("bitnet info: error: ") and "bad.gguf" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_non_finite_floats_round_trip(tmp_path: Path):
    meta = {"nan": float("nan"), "inf": float("-inf"), "d": G.typed(float("inf"), "f64")}
    f = G.read(G.write(tmp_path / "n.gguf", "bitnet", meta, {}))
    assert np.isnan(f.metadata["nan"]) and f.metadata["inf"] == float("-inf")
    assert f.metadata["d"] == float("inf") and f.metadata_types["d"] == "f64"

"""Ternary storage formats: the C++ pack/unpack against the numpy reference
(bitnet.quant.reference), against ggml's own quantizer for TQ1_0 / TQ2_0 (the gguf package),
and against the layouts of docs/formats.md written a second time here, position by position.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from bitnet import _ext, ops
from bitnet.quant import reference as R

FMTS = ("i2_s", "tq1_0", "tq2_0", "native")
TQ = ("tq1_0", "tq2_0")
GGML_TYPE = {"tq1_0": gguf.GGMLQuantizationType.TQ1_0, "tq2_0": gguf.GGMLQuantizationType.TQ2_0}
BLOCK_BYTES = {"tq1_0": 54, "tq2_0": 66}

SHAPES = {
    "i2_s": [(1, 128), (3, 256), (17, 384), (1, 512), (3, 2560), (64, 128)],
    "tq1_0": [(1, 256), (3, 512), (17, 256), (2, 2560)],
    "tq2_0": [(1, 256), (3, 512), (17, 256), (2, 2560)],
    "native": [(1, 1), (3, 7), (17, 300), (1, 256), (3, 255), (2, 257), (5, 512), (3, 2560)],
}
CASES = [(f, n, k) for f in FMTS for (n, k) in SHAPES[f]]
DISTS = ("uniform", "bitnet", "heavy", "sparse", "dense", "skewed", "blocky", "plus", "minus")


def make_ternary(n: int, k: int, dist: str, seed: int = 0) -> np.ndarray:
    """Seeded ternary [n, k] int8 with a few realistic value distributions."""
    rng = np.random.default_rng([seed, n, k, DISTS.index(dist)])
    if dist == "uniform":
        t = rng.integers(-1, 2, (n, k))
    elif dist == "bitnet":  # absmean ternarization of Gaussian weights (~31 % zeros)
        t = R.quantize_weights_ref(rng.standard_normal((n, k), dtype=np.float32))[0]
    elif dist == "heavy":  # Student-t weights: mostly zeros, a few +-1
        t = R.quantize_weights_ref(rng.standard_t(2.0, (n, k)).astype(np.float32))[0]
    elif dist == "sparse":
        t = rng.choice([-1, 0, 1], (n, k), p=[0.05, 0.9, 0.05])
    elif dist == "dense":
        t = rng.choice([-1, 0, 1], (n, k), p=[0.49, 0.02, 0.49])
    elif dist == "skewed":
        t = rng.choice([-1, 0, 1], (n, k), p=[0.1, 0.3, 0.6])
    elif dist == "blocky":  # whole zero rows and zero 256-blocks among uniform ones
        t = rng.integers(-1, 2, (n, k))
        t[:: max(1, n // 3)] = 0
        for b in range(0, k, 256):
            if rng.random() < 0.4:
                t[:, b : b + 256] = 0
        if n > 1:
            t[-1] = rng.integers(-1, 2, k)
    elif dist == "plus":
        t = np.ones((n, k))
    else:
        t = -np.ones((n, k))
    return np.ascontiguousarray(t, dtype=np.int8)


def stored_scale(fmt: str, t: np.ndarray, scale: float) -> float:
    """The scale a packed tensor reports: fp32 for I2_S / native, fp16 for TQ (0 if t == 0)."""
    if fmt in TQ:
        return float(np.float16(np.float32(scale))) if t.any() else 0.0
    return float(np.float32(scale))


def assert_bytes_equal(got: bytes, want: bytes, what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} bytes, expected {len(want)}"
    if got != want:
        a, b = np.frombuffer(got, np.uint8), np.frombuffer(want, np.uint8)
        i = np.flatnonzero(a != b)
        j = i[0]
        raise AssertionError(f"{what}: {i.size} bytes differ, first at {j}: {a[j]} != {b[j]}")


def scale_for(seed: int) -> float:
    return float(np.random.default_rng(seed).uniform(1e-3, 3.0))


# ------------------------------------------------------------------------------ layout, by hand
def code_position(fmt: str, n: int, k: int, r: int, c: int) -> tuple[int, int]:
    """(byte offset, bit shift) of value [r, c] for the 2-bit formats, from formats.md / K256."""
    if fmt == "i2_s":
        f = r * k + c  # flattened row-major, blocks of 128 in 32 bytes
        return f // 128 * 32 + f % 128 % 32, 6 - 2 * (f % 128 // 32)
    if fmt == "tq2_0":
        blk, j = r * (k // 256) + c // 256, c % 256
        h, g, m = j // 128, j % 128 // 32, j % 32
        return blk * 66 + h * 32 + m, 2 * g
    assert fmt == "native"
    nb = -(-k // 256)
    blk, j = r * nb + c // 256, c % 256
    return blk * 64 + j % 64, 2 * (j // 64)


def set_code(data: bytearray, fmt: str, n: int, k: int, r: int, c: int, code: int) -> None:
    off, shift = code_position(fmt, n, k, r, c)
    data[off] = (data[off] & ~(3 << shift) & 0xFF) | (code << shift)


def tq1_0_one_hot(k: int, r: int, c: int, value: int, d: bytes) -> bytes:
    """TQ1_0 bytes of a [r + 1, k] matrix that is 0 except t[r, c] = value, by hand."""
    nb = k // 256
    blocks = []
    for row in range(r + 1):
        for b in range(nb):
            digits = np.ones(256, dtype=np.int64)  # codes t + 1
            hit = row == r and b == c // 256
            if hit:
                digits[c % 256] = value + 1
            out = []
            for m in range(32):  # qs[m]: values m + 32j, j = 0 most significant
                out.append(sum(int(digits[m + 32 * j]) * 3 ** (4 - j) for j in range(5)))
            for m in range(16):  # qs[32 + m]: values 160 + m + 16j
                out.append(sum(int(digits[160 + m + 16 * j]) * 3 ** (4 - j) for j in range(5)))
            for m in range(4):  # qh[m]: values 240 + m + 4j, times 3
                out.append(3 * sum(int(digits[240 + m + 4 * j]) * 3 ** (3 - j) for j in range(4)))
            stored = bytes(-(-v * 256 // 243) for v in out)
            blocks.append(stored + (d if hit else b"\0\0"))
    return b"".join(blocks)


@pytest.mark.parametrize("fmt,k", [("i2_s", 384), ("tq2_0", 512), ("native", 300), ("native", 7)])
def test_two_bit_layout_positions(fmt, k):
    """Every single +-1 value lands at the byte / shift that formats.md prescribes."""
    n, scale = 3, 0.5
    zeros = np.zeros((n, k), np.int8)
    base = bytearray(ops.pack(zeros, fmt, scale).tobytes())
    rng = np.random.default_rng(k)
    rows, cols = rng.integers(0, n, 150).tolist(), rng.integers(0, k, 150).tolist()
    positions = [(0, 0), (n - 1, k - 1), *zip(rows, cols, strict=True)]
    for r, c in positions:
        for v in (-1, 1):
            t = zeros.copy()
            t[r, c] = v
            want = bytearray(base)
            set_code(want, fmt, n, k, r, c, v + 1)
            if fmt == "tq2_0":  # the block of the value now stores d = fp16(scale)
                blk = r * (k // 256) + c // 256
                want[blk * 66 + 64 : blk * 66 + 66] = np.float16(scale).tobytes()
            assert_bytes_equal(ops.pack(t, fmt, scale).tobytes(), bytes(want), f"{fmt} [{r},{c}]")


def test_tq1_0_layout_positions():
    k, d = 512, np.float16(0.25).tobytes()
    rng = np.random.default_rng(1)
    cols = [0, 31, 32, 159, 160, 175, 176, 239, 240, 243, 244, 255, 256, 511]
    cols += [int(c) for c in rng.integers(0, k, 20)]
    for c in cols:
        for v in (-1, 1):
            t = np.zeros((2, k), np.int8)
            t[1, c] = v
            want = tq1_0_one_hot(k, 1, c, v, d)
            assert_bytes_equal(ops.pack(t, "tq1_0", 0.25).tobytes(), want, f"tq1_0 col {c}")


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("fmt,n,k", CASES)
def test_pack_matches_reference_and_round_trips(fmt, n, k, dist):
    t = make_ternary(n, k, dist)
    scale = scale_for(n * k)
    p = ops.pack(t, fmt, scale)
    assert isinstance(p, ops.PackedWeights)
    assert p.format == fmt
    assert p.shape == (n, k)
    nbytes = R.packed_nbytes(fmt, n, k)
    assert p.nbytes == nbytes == _ext.packed_nbytes(fmt, n, k)
    data = p.tobytes()
    assert isinstance(data, bytes) and len(data) == nbytes
    assert_bytes_equal(data, R.pack(t, fmt, scale).tobytes(), f"{fmt} C++ vs numpy reference")
    assert p.scale == stored_scale(fmt, t, scale)

    t2, s2 = ops.unpack(p)
    assert t2.dtype == np.int8 and t2.shape == (n, k) and t2.flags.c_contiguous
    np.testing.assert_array_equal(t2, t)
    assert s2 == p.scale

    t3, s3 = R.unpack(data, fmt, n, k)
    np.testing.assert_array_equal(t3, t)
    if fmt != "native":
        assert s3 == p.scale


@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("fmt,n,k", [c for c in CASES if c[0] in TQ])
def test_tq_bytes_match_gguf(fmt, n, k, dist):
    """Our TQ bytes are exactly what ggml's quantizer makes of t * scale, and decode back."""
    t = make_ternary(n, k, dist, seed=7)
    scale = scale_for(n + k)
    data = ops.pack(t, fmt, scale).tobytes()
    ggml = gguf.quants.quantize(t.astype(np.float32) * np.float32(scale), GGML_TYPE[fmt])
    assert_bytes_equal(data, ggml.tobytes(), f"{fmt} vs gguf.quants.quantize")
    deq = gguf.quants.dequantize(np.frombuffer(data, np.uint8).reshape(n, -1), GGML_TYPE[fmt])
    want = t.astype(np.float32) * np.float32(np.float16(np.float32(scale)))
    np.testing.assert_array_equal(deq, want)


@pytest.mark.parametrize("fmt", FMTS)
def test_pack_accepts_torch_int8(fmt):
    t = make_ternary(3, 512, "uniform")
    p = ops.pack(torch.from_numpy(t), fmt, 0.5)
    assert p.tobytes() == ops.pack(t, fmt, 0.5).tobytes()


@pytest.mark.parametrize("fmt", FMTS)
def test_format_name_is_case_insensitive(fmt):
    t = make_ternary(2, 256, "uniform")
    p = ops.pack(t, fmt.upper(), 0.5)
    assert p.format == fmt
    assert p.tobytes() == ops.pack(t, fmt, 0.5).tobytes()
    assert _ext.format_row_multiple(fmt) == R.row_multiple(fmt)


# ------------------------------------------------------------------------------ all-zero data
@pytest.mark.parametrize("fmt,n,k", CASES)
def test_all_zero(fmt, n, k):
    t = np.zeros((n, k), np.int8)
    p = ops.pack(t, fmt, 0.75)
    data = p.tobytes()
    assert_bytes_equal(data, R.pack(t, fmt, 0.75).tobytes(), fmt)
    if fmt in TQ:
        blocks = np.frombuffer(data, np.uint8).reshape(-1, BLOCK_BYTES[fmt])
        assert not blocks[:, -2:].any(), "all-zero TQ blocks store d = 0"
        assert p.scale == 0.0
        ggml = gguf.quants.quantize(np.zeros((n, k), np.float32), GGML_TYPE[fmt])
        assert_bytes_equal(data, ggml.tobytes(), f"{fmt} vs gguf")
    else:
        assert p.scale == np.float32(0.75)
    t2, s2 = ops.unpack(p)
    assert not t2.any()
    assert s2 == p.scale
    v = ops.from_bytes(data, fmt, (n, k), 0.75)
    assert v.scale == p.scale
    assert not ops.unpack(v)[0].any()


# ------------------------------------------------------------------------------ fp16 scales
def _fp16_sweep() -> list[float]:
    """Scales across the fp16 range: edges, subnormals, exact ties between fp16 neighbours."""
    rng = np.random.default_rng(16)
    special = [
        2.0**-24,
        3e-8,
        1e-7,
        1e-6,
        2.0**-14 * (1 - 2.0**-11),
        2.0**-14,
        6.1e-5,
        1e-3,
        0.1,
        1 / 3,
        1.0,
        1 + 2.0**-11,
        1 + 3 * 2.0**-11,
        1 + 2.0**-11 + 2.0**-30,
        2048.5,
        4095.0,
        65504.0,
        65519.0,
        65519.99,
    ]
    bits = rng.integers(1, 0x7BFF, 1500).astype(np.uint16)
    lo = bits.view(np.float16).astype(np.float64)
    hi = (bits + 1).view(np.float16).astype(np.float64)
    ties = ((lo + hi) / 2).astype(np.float32)  # exactly halfway: ties to even
    logu = np.exp(rng.uniform(np.log(2.0**-24), np.log(65504.0), 1500)).astype(np.float32)
    return [float(s) for s in special] + [float(s) for s in ties] + [float(s) for s in logu]


@pytest.mark.parametrize("fmt", TQ)
def test_tq_scale_is_fp16_round_to_nearest_even(fmt):
    t = np.ones((1, 256), np.int8)
    for s in _fp16_sweep():
        want = np.float16(np.float32(s))
        p = ops.pack(t, fmt, s)
        d = p.tobytes()[-2:]
        assert d == want.tobytes(), f"fp16({s!r}): got {d.hex()}, want {want.tobytes().hex()}"
        assert p.scale == float(want)


@pytest.mark.parametrize("fmt", TQ)
def test_tq_block_scale_decodes_every_fp16(fmt):
    """from_bytes reads every positive finite fp16 d (normal and subnormal) exactly."""
    buf = bytearray(ops.pack(np.ones((1, 256), np.int8), fmt, 1.0).tobytes())
    all_bits = np.arange(1, 0x7C00, dtype=np.uint16)
    values = all_bits.view(np.float16).astype(np.float32)
    step = 1 if fmt == "tq2_0" else 7
    for b, v in zip(all_bits[::step].tolist(), values[::step].tolist(), strict=True):
        buf[-2:] = b.to_bytes(2, "little")
        assert ops.from_bytes(bytes(buf), fmt, (1, 256)).scale == v, hex(b)


# ------------------------------------------------------------------------------ random bytes
def _random_packed(fmt: str, n: int, k: int, seed: int) -> bytearray:
    """Arbitrary valid packed data: random bytes without code 3, one shared TQ d."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, R.packed_nbytes(fmt, n, k)).astype(np.uint8)
    if fmt in ("i2_s", "tq2_0", "native"):
        raw &= ~((raw >> 1) & raw & 0x55)  # turn every code 3 (0b11) into 2 (0b10)
    if fmt == "i2_s":
        raw[n * k // 4 :] = 0
        raw[n * k // 4 : n * k // 4 + 4] = np.frombuffer(np.float32(0.3).tobytes(), np.uint8)
    if fmt in TQ:
        blocks = raw.reshape(-1, BLOCK_BYTES[fmt])
        d = np.frombuffer(np.float16(0.0375).tobytes(), np.uint8)
        blocks[:, -2:] = d
        blocks[rng.random(blocks.shape[0]) < 0.3, -2:] = 0  # some zero blocks
    return bytearray(raw.tobytes())


@pytest.mark.parametrize("fmt,n,k", CASES)
def test_unpack_arbitrary_bytes_matches_reference(fmt, n, k):
    data = bytes(_random_packed(fmt, n, k, seed=n * 1000 + k))
    v = ops.from_bytes(data, fmt, (n, k), 0.5)
    t, s = ops.unpack(v)
    t_ref, s_ref = R.unpack(data, fmt, n, k)
    np.testing.assert_array_equal(t, t_ref)
    if fmt == "native":
        assert s == v.scale == 0.5
    else:
        assert s == v.scale == s_ref
    if fmt in TQ:  # ggml decodes the same values (including non-canonical TQ1_0 bytes)
        deq = gguf.quants.dequantize(np.frombuffer(data, np.uint8).reshape(n, -1), GGML_TYPE[fmt])
        np.testing.assert_array_equal(deq, t.astype(np.float32) * np.float32(s))
    # Re-packing what we read gives data that reads back the same; for I2_S and native (without
    # padding) it is the very same bytes (TQ zero blocks and TQ1_0 bytes are not canonical).
    again = ops.pack(t, fmt, s if fmt != "native" else 0.5)
    np.testing.assert_array_equal(ops.unpack(again)[0], t)
    if fmt == "i2_s" or (fmt == "native" and k % 256 == 0):
        assert again.tobytes() == data


# ------------------------------------------------------------------------------ from_bytes
@pytest.mark.parametrize("fmt,n,k", CASES)
def test_from_bytes_is_zero_copy_and_reads_scale(fmt, n, k):
    t = make_ternary(n, k, "bitnet", seed=3)
    scale = 0.0421
    p = ops.pack(t, fmt, scale)
    data = p.tobytes()

    for buf in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        v = ops.from_bytes(buf, fmt, (n, k), scale=123.0 if fmt != "native" else scale)
        assert v.format == fmt and v.shape == (n, k) and v.nbytes == len(data)
        assert v.scale == p.scale  # file formats read it from the data, not the argument
        assert v.tobytes() == data
        np.testing.assert_array_equal(ops.unpack(v)[0], t)

    # Zero copy: a change to the wrapped array shows through the view.
    arr = np.frombuffer(data, np.uint8).copy()
    v = ops.from_bytes(arr, fmt, (n, k), scale)
    t2 = t.copy()
    t2[0, 0] = -1 if t[0, 0] != -1 else 1
    t2[-1, -1] = 0 if t[-1, -1] != 0 else 1
    arr[:] = R.pack(t2, fmt, scale)
    np.testing.assert_array_equal(ops.unpack(v)[0], t2)

    # The view keeps its buffer alive (CPython frees `arr` at once unless the view holds it).
    del arr
    assert v.tobytes() == R.pack(t2, fmt, scale).tobytes()


def test_from_bytes_i2_s_reads_the_tail_scale():
    t = make_ternary(4, 256, "uniform")
    data = bytearray(ops.pack(t, "i2_s", 1.0).tobytes())
    data[-32:-28] = np.float32(0.0123).tobytes()
    v = ops.from_bytes(bytes(data), "i2_s", (4, 256))
    assert v.scale == np.float32(0.0123)
    assert ops.unpack(v)[1] == np.float32(0.0123)


def test_from_bytes_accepts_multidim_numpy_buffers():
    t = make_ternary(3, 512, "uniform")
    data = ops.pack(t, "tq2_0", 0.5).tobytes()
    arr = np.frombuffer(data, np.uint8).reshape(3, -1)  # e.g. a GGUF tensor read as rows
    np.testing.assert_array_equal(ops.unpack(ops.from_bytes(arr, "tq2_0", (3, 512)))[0], t)


# ------------------------------------------------------------------------------ repack (kernels)
@pytest.mark.parametrize("k", [256, 512, 2560])
def test_bitlinear_agrees_across_formats(k):
    """All formats repack to the same kernel layout: identical outputs, matching the reference."""
    n, m = 19, 5
    t = make_ternary(n, k, "bitnet", seed=11)
    scale = 0.0234375  # exactly representable in fp16, so every format stores the same scale
    x = np.random.default_rng(k).standard_normal((m, k), dtype=np.float32)
    ys = {}
    for fmt in FMTS:
        p = ops.pack(t, fmt, scale)
        p.prepare()
        p.prepare()  # idempotent
        ys[fmt] = ops.bitlinear(x, p)
    for fmt in FMTS:
        np.testing.assert_array_equal(ys[fmt], ys["native"], err_msg=fmt)
    q, s_x = R.quantize_activations_ref(x)
    acc = q.astype(np.int64) @ t.T.astype(np.int64)
    ref = acc.astype(np.float64) * (np.float64(scale) / s_x.astype(np.float64))[:, None]
    np.testing.assert_allclose(ys["native"], ref, rtol=1e-6, atol=1e-30)


# ------------------------------------------------------------------------------ errors
def _ternary(n: int = 2, k: int = 512) -> np.ndarray:
    return make_ternary(n, k, "uniform")


@pytest.mark.parametrize(
    "fmt,k", [("i2_s", 100), ("i2_s", 200), ("tq1_0", 128), ("tq1_0", 300), ("tq2_0", 384)]
)
def test_k_not_a_multiple_of_the_block(fmt, k):
    mult = R.row_multiple(fmt)
    match = rf"{fmt}: row length K = {k} is not a multiple of {mult}"
    with pytest.raises(ValueError, match=match):
        ops.pack(_ternary(2, k), fmt, 1.0)
    with pytest.raises(ValueError, match=match):
        _ext.packed_nbytes(fmt, 2, k)
    with pytest.raises(ValueError, match=match):
        ops.from_bytes(b"\0" * 64, fmt, (2, k))
    with pytest.raises(ValueError, match=rf"{fmt}.*not a multiple of {mult}"):
        R.pack(_ternary(2, k), fmt, 1.0)


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("bad", [2, -2, 127, -128])
def test_values_outside_ternary(fmt, bad):
    t = _ternary(3, 512)
    t[2, 301] = bad
    with pytest.raises(ValueError, match=rf"-1, 0 or 1; found {bad} at \[2, 301\]"):
        ops.pack(t, fmt, 1.0)
    with pytest.raises(ValueError, match=rf"found {bad} at \[2, 301\]"):
        R.pack(t, fmt, 1.0)


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.int32, np.uint8, bool])
def test_wrong_dtype(fmt, dtype):
    with pytest.raises(TypeError, match="pack: t: expected dtype int8"):
        ops.pack(_ternary().astype(dtype), fmt, 1.0)


def test_wrong_type():
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        ops.pack([[0, 1, -1]], "native", 1.0)
    with pytest.raises(TypeError, match="expected dtype int8"):
        ops.pack(torch.zeros(2, 256), "native", 1.0)


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("shape", [(256,), (1, 2, 256), (1, 1, 1, 256)])
def test_wrong_rank(fmt, shape):
    with pytest.raises(ValueError, match="expected a 2-D array"):
        ops.pack(np.zeros(shape, np.int8), fmt, 1.0)


@pytest.mark.parametrize("fmt", FMTS)
def test_non_contiguous(fmt):
    t = _ternary(4, 512)
    for view in (t[:, ::2], t[::2, :256].T.copy().T):
        assert not view.flags.c_contiguous
        with pytest.raises(ValueError, match="not C-contiguous"):
            ops.pack(view, fmt, 1.0)


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("shape", [(0, 256), (3, 0), (0, 0)])
def test_empty(fmt, shape):
    with pytest.raises(ValueError, match="empty"):
        ops.pack(np.zeros(shape, np.int8), fmt, 1.0)


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize(
    "scale", [0.0, -0.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e-50, 1e300]
)
def test_bad_scale(fmt, scale):
    with pytest.raises(ValueError, match=rf"{fmt}: scale must be positive and finite"):
        ops.pack(_ternary(), fmt, scale)


@pytest.mark.parametrize("fmt", TQ)
@pytest.mark.parametrize("scale", [1e-9, 2.0**-25, 65520.0, 1e5, 3e38])
def test_scale_not_fp16_representable(fmt, scale):
    with pytest.raises(ValueError, match=rf"{fmt}: scale .* is not representable in fp16"):
        ops.pack(_ternary(), fmt, scale)
    with pytest.raises(ValueError, match="not representable in fp16"):
        R.pack(_ternary(), fmt, scale)


@pytest.mark.parametrize("fmt", ["i2_s", "native"])
@pytest.mark.parametrize("scale", [1e-9, 65520.0, 3e38])
def test_fp32_formats_keep_any_finite_scale(fmt, scale):
    p = ops.pack(_ternary(), fmt, scale)
    assert p.scale == np.float32(scale)
    assert ops.unpack(p)[1] == np.float32(scale)


@pytest.mark.parametrize("name", ["q4_0", "", "i2s", "tq3_0", "native "])
def test_unknown_format(name):
    with pytest.raises(ValueError, match="unknown ternary format"):
        ops.pack(_ternary(), name, 1.0)
    with pytest.raises(ValueError, match="unknown ternary format"):
        ops.from_bytes(b"\0" * 64, name, (1, 256))
    with pytest.raises(ValueError, match="unknown ternary format"):
        _ext.packed_nbytes(name, 1, 256)


@pytest.mark.parametrize(
    "fmt,n,k", [("i2_s", 3, 256), ("tq1_0", 2, 512), ("tq2_0", 2, 512), ("native", 3, 300)]
)
def test_from_bytes_wrong_byte_count(fmt, n, k):
    data = ops.pack(_ternary(n, k), fmt, 1.0).tobytes()
    for bad in (data[:-1], data + b"\0", data[: len(data) // 2], b""):
        with pytest.raises(ValueError, match=rf"needs {len(data)} bytes, got {len(bad)}"):
            ops.from_bytes(bad, fmt, (n, k))
    with pytest.raises(ValueError, match="needs"):
        ops.from_bytes(data, fmt, (n + 1, k))


def test_from_bytes_bad_buffers():
    data = ops.pack(_ternary(1, 256), "tq2_0", 1.0).tobytes()
    with pytest.raises(ValueError, match="contiguous 1-D byte buffer"):
        ops.from_bytes(memoryview(data * 2)[::2], "tq2_0", (1, 256))
    for shape in [(0, 256), (-1, 256), (1, -256)]:
        with pytest.raises(ValueError, match="must be non-empty"):
            ops.from_bytes(data, "tq2_0", shape)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_from_bytes_bad_scales(bad):
    data = bytearray(ops.pack(_ternary(2, 256), "i2_s", 1.0).tobytes())
    data[-32:-28] = np.float32(bad).tobytes()
    with pytest.raises(ValueError, match="i2_s: tensor scale .* in the 32-byte tail"):
        ops.from_bytes(bytes(data), "i2_s", (2, 256))
    native = ops.pack(_ternary(2, 256), "native", 1.0).tobytes()
    with pytest.raises(ValueError, match="native: scale must be finite"):
        ops.from_bytes(native, "native", (2, 256), bad)


@pytest.mark.parametrize("fmt", TQ)
@pytest.mark.parametrize("d", [-1.0, float("inf"), float("nan")])
def test_tq_bad_block_scale(fmt, d):
    data = bytearray(ops.pack(_ternary(2, 512), fmt, 1.0).tobytes())
    data[BLOCK_BYTES[fmt] - 2 : BLOCK_BYTES[fmt]] = np.float16(d).tobytes()
    with pytest.raises(ValueError, match=rf"{fmt}: block scale .* not a positive finite number"):
        ops.from_bytes(bytes(data), fmt, (2, 512))
    with pytest.raises(ValueError, match="positive finite"):
        R.unpack(bytes(data), fmt, 2, 512)


@pytest.mark.parametrize("fmt", TQ)
def test_tq_block_scales_differ(fmt):
    n, k = 3, 768
    data = bytearray(ops.pack(make_ternary(n, k, "dense"), fmt, 0.5).tobytes())
    nb = k // 256
    blk = 1 * nb + 2  # row 1, block 2
    end = (blk + 1) * BLOCK_BYTES[fmt]
    data[end - 2 : end] = np.float16(0.25).tobytes()
    with pytest.raises(ValueError, match=rf"{fmt}: block scales differ .*row 1, block 2"):
        ops.from_bytes(bytes(data), fmt, (n, k))
    with pytest.raises(ValueError, match="block scales differ"):
        R.unpack(bytes(data), fmt, n, k)
    # A zero block (d = 0) may sit among blocks of one scale.
    data[end - 2 : end] = b"\0\0"
    v = ops.from_bytes(bytes(data), fmt, (n, k))
    assert v.scale == 0.5
    t, s = ops.unpack(v)
    assert s == 0.5 and not t[1, 512:].any()


@pytest.mark.parametrize(
    "fmt,n,k", [("i2_s", 3, 384), ("tq2_0", 3, 512), ("native", 3, 300), ("native", 2, 7)]
)
def test_corrupt_code_3(fmt, n, k):
    t = make_ternary(n, k, "uniform")
    good = ops.pack(t, fmt, 0.5).tobytes()
    rng = np.random.default_rng(5)
    for r, c in [(0, 0), (n - 1, k - 1), (int(rng.integers(n)), int(rng.integers(k)))]:
        data = bytearray(good)
        set_code(data, fmt, n, k, r, c, 3)
        v = ops.from_bytes(bytes(data), fmt, (n, k), 0.5)
        msg = rf"{fmt}: invalid 2-bit code 3 at \[{r}, {c}\]"
        with pytest.raises(ValueError, match=msg):
            ops.unpack(v)
        with pytest.raises(ValueError, match=msg):
            v.prepare()
        with pytest.raises(ValueError, match=msg):  # the failed repack is not cached
            ops.bitlinear(np.ones((2, k), np.float32), v)
        with pytest.raises(ValueError, match=msg):
            R.unpack(bytes(data), fmt, n, k)
        # The same data without the corrupt code works.
        set_code(data, fmt, n, k, r, c, int(t[r, c]) + 1)
        v = ops.from_bytes(bytes(data), fmt, (n, k), 0.5)
        v.prepare()
        np.testing.assert_array_equal(ops.unpack(v)[0], t)


def test_native_padding_is_code_1():
    t = make_ternary(2, 300, "uniform")
    data = np.frombuffer(ops.pack(t, "native", 1.0).tobytes(), np.uint8).reshape(2, 2, 64)
    # Values 300..511 of each row: block 1, j = 44..255 -> bytes (j % 64), shift 2 * (j // 64).
    for j in range(44, 256):
        assert np.all((data[:, 1, j % 64] >> (2 * (j // 64))) & 3 == 1), j


def test_from_bytes_holds_the_buffer_export():
    """A view keeps the exporter's buffer locked: resizing a bytearray under it must fail, not
    leave the view reading freed memory."""
    raw = bytearray(ops.pack(np.ones((1, 256), np.int8), "tq2_0", 1.0).tobytes())
    view = ops.from_bytes(raw, "tq2_0", (1, 256))
    with pytest.raises(BufferError):
        raw.extend(b"x" * 1_000_000)
    assert view.tobytes() == bytes(raw)
    del view
    raw.extend(b"x")  # released with the view

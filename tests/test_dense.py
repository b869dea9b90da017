"""Dense (embedding / LM head) matrices: ``bitnet._ext.DenseMatrix`` over F32, F16, BF16, Q8_0
and Q4_0 bytes, on every kernel ISA this machine runs (the ``isa`` fixture of conftest.py).

Every numeric result is checked against a numpy reference written here from the formulas
(kernels/cpu/dense_kernels.h):

* ``row(r)``: exact dequantization (f16 / bf16 widened, Q8_0 ``d * q``, Q4_0 ``d * (c - 8)``),
  bit for bit, also against ``bitnet.ops.dequantize_blocks`` and the ``gguf`` package.
* float ``matmul``: ``y = x @ W.T`` in fp32. Versus the exact (float64) product the error of any
  evaluation order of fp32 sums is at most ``gamma_n * sum_k |x_k w_k|`` with ``n`` the depth of
  the summation (Higham, *Accuracy and Stability*, 4.2): a sequential sum of ``cols`` rounded
  products has ``n = cols + 1``; the SIMD kernels' lane chains (cols / lanes fused steps) plus
  their accumulator and horizontal adds (<= 8 levels) and the scalar tail (< 16 terms) stay
  below ``cols + 8``. The tests use ``(cols + 8) * 2^-24 * sum|x w|`` (times 1.01 for the
  ``1 / (1 - n u)`` factor of gamma_n). The scalar reference kernel (``ref``) is also
  checked bit for bit against the same sequential fp32 loop written in numpy.
* quantized ``matmul``: x quantized per 32-block as ggml's ``quantize_row_q8_0`` (the numpy
  reference of ``bitnet.quant.reference``), exact int64 block dots, ``D = fp32(d_w * d_x)``.
  The exact value ``sum_b dot_b * D_b`` is computed in float64 (each product is exact: a 24-bit
  D times a < 2^20 integer). Kernels accumulate ``dot * D`` in fp32 (the reference per block,
  the SIMD kernels per int32 lane partial with FMA), so the error is at most
  ``(nb + 16) * 2^-24 * sum_b D_b * sum_j |q_x q_w|`` (depth: nb blocks, <= 8 levels of lane /
  accumulator reduction, the slice partials of M > 1). ``ref`` is checked bit for bit against
  the sequential fp32 loop. Separately the whole result must be within the a-priori quantization
  bound of the fp32 product: ``|x_j - d_x q_j| <= d_x / 2 + 127 |d - fp16(d)|
  <= (amax_b / 127) (1/2 + 127 * 2^-11)`` per value, times ``sum_j |w_j|``.
* Overflow: extreme codes (x codes +-127, Q8_0 codes -128 / 127, Q4_0 codes 0 / 15, the cases
  that would saturate a careless vpmaddubsw) with scales of exactly 1 give integer results below
  2^24, so every ISA must return them exactly.
"""

from __future__ import annotations

import gc
import os
import zlib
from collections.abc import Iterator

import numpy as np
import pytest

import bitnet
from bitnet import _ext, ops
from bitnet.quant import reference

FLOAT_TYPES = ("f32", "f16", "bf16")
QUANT_TYPES = ("q8_0", "q4_0")
ALL_TYPES = FLOAT_TYPES + QUANT_TYPES
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18}
U = 2.0**-24  # unit roundoff of fp32


# ----------------------------------------------------------------------------- references


def _bf16_bits(w: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (truncation: any bf16 value will do as test data)."""
    return (np.ascontiguousarray(w, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def make_matrix(
    t: str, rows: int, cols: int, rng: np.random.Generator, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Random ``[rows, cols]`` weights of type ``t``: ``(bytes uint8, exact float32 values)``."""
    w = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
    if t == "f32":
        return w.reshape(-1).view(np.uint8), w
    if t == "f16":
        h = w.astype(np.float16)
        return h.reshape(-1).view(np.uint8), h.astype(np.float32)
    if t == "bf16":
        b = _bf16_bits(w)
        return b.reshape(-1).view(np.uint8), _bf16_to_f32(b)
    data = reference.quantize_q8_0(w) if t == "q8_0" else reference.quantize_q4_0(w)
    deq = (
        reference.dequantize_q8_0(data, w.shape)
        if t == "q8_0"
        else reference.dequantize_q4_0(data, w.shape)
    )
    return data.reshape(-1), deq


def raw_quant_matrix(
    t: str, rows: int, cols: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random block bytes of type ``t`` (every code, Q8_0's -128 included) with random finite
    positive and negative fp16 scales: ``(bytes, exact float32 values)``."""
    nb = cols // 32
    blocks = rng.integers(0, 256, size=(rows * nb, BLOCK_BYTES[t]), dtype=np.uint8)
    d = (rng.uniform(0.5, 2.0, rows * nb) * rng.choice([-1, 1], rows * nb) * 2.0**-7).astype(
        np.float16
    )
    blocks[:, :2] = d.view(np.uint8).reshape(-1, 2)
    data = blocks.reshape(-1)
    deq = (reference.dequantize_q8_0 if t == "q8_0" else reference.dequantize_q4_0)(
        data, (rows, cols)
    )
    return data, deq


def parse_blocks(t: str, data: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Block bytes -> (fp32 scales ``[rows, nb]``, integer values ``[rows, nb, 32]`` int64:
    Q8_0 q, Q4_0 code - 8)."""
    nb = cols // 32
    blocks = data.reshape(rows, nb, BLOCK_BYTES[t])
    d = np.ascontiguousarray(blocks[:, :, :2]).view("<f2")[..., 0].astype(np.float32)
    if t == "q8_0":
        q = np.ascontiguousarray(blocks[:, :, 2:]).view(np.int8).astype(np.int64)
    else:
        qs = blocks[:, :, 2:].astype(np.int64)
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=2) - 8
    return d, q


def quantize_x(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x [M, cols] -> ggml Q8_0 (numpy reference): (fp32 d [M, nb], codes [M, nb, 32] int64)."""
    m, cols = x.shape
    return parse_blocks("q8_0", reference.quantize_q8_0(x).reshape(-1), m, cols)


def float_reference(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(exact float64 product, sum |x w| [M, rows], the sequential fp32 loop of the ref kernel)."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    exact = x64 @ w64.T
    mag = np.abs(x64) @ np.abs(w64).T
    acc = np.zeros((x.shape[0], w.shape[0]), np.float32)
    for k in range(x.shape[1]):  # acc = fp32(acc + fp32(x_k * w_k)), k in order
        acc = acc + x[:, None, k] * w[None, :, k]
    return exact, mag, acc


def quant_reference(
    t: str, data: np.ndarray, rows: int, cols: int, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(exact sum_b dot_b * D_b in float64, sum_b D_b sum_j |q_x q_w|, the ref kernel's
    sequential fp32 loop), all [M, rows]."""
    dw, qw = parse_blocks(t, data, rows, cols)
    dx, qx = quantize_x(x)
    dots = np.einsum("mbj,rbj->mrb", qx, qw)  # exact int64
    absdots = np.einsum("mbj,rbj->mrb", np.abs(qx), np.abs(qw))
    big_d = dw[None, :, :] * dx[:, None, :]  # fp32 products, [M, rows, nb]
    exact = np.sum(dots.astype(np.float64) * big_d.astype(np.float64), axis=2)
    mag = np.sum(absdots.astype(np.float64) * np.abs(big_d.astype(np.float64)), axis=2)
    acc = np.zeros((x.shape[0], rows), np.float32)
    for b in range(cols // 32):  # acc = fp32(acc + fp32(fp32(dot_b) * D_b)), b in order
        acc = acc + dots[:, :, b].astype(np.float32) * big_d[:, :, b]
    return exact, mag, acc


def assert_within(y: np.ndarray, exact: np.ndarray, bound: np.ndarray, what: str) -> None:
    err = np.abs(y.astype(np.float64) - exact)
    bad = err > bound
    if np.any(bad):
        i = np.unravel_index(np.argmax(err - bound), err.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())} outputs outside the bound; worst at {i}: got {y[i]!r}, "
            f"exact {exact[i]!r}, error {err[i]:.3e} > bound {bound[i]:.3e}"
        )


def assert_bits_equal(a: np.ndarray, b: np.ndarray, what: str) -> None:
    a32 = np.ascontiguousarray(a, np.float32).view(np.uint32)
    b32 = np.ascontiguousarray(b, np.float32).view(np.uint32)
    if not np.array_equal(a32, b32):
        i = np.unravel_index(np.argmax(a32 != b32), a32.shape)
        raise AssertionError(
            f"{what}: {int((a32 != b32).sum())} mismatches; first at {i}: {a[i]!r} vs {b[i]!r}"
        )


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A generator seeded from the test id (crc32: stable across runs), so every parametrization
    gets its own reproducible data."""
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


@pytest.fixture
def one_thread() -> Iterator[None]:
    saved = bitnet.get_num_threads()
    yield
    bitnet.set_num_threads(saved)


# ----------------------------------------------------------------------------- row()

ROW_SHAPES = [(1, 32), (5, 64), (37, 96), (3, 2560)]


ROW_CASES = [(t, r, c) for t in ALL_TYPES for r, c in ROW_SHAPES] + [
    (t, r, c) for t in FLOAT_TYPES for r, c in [(4, 1), (6, 7), (3, 33)]
]  # quantized rows are multiples of 32


@pytest.mark.parametrize("t,rows,cols", ROW_CASES)
def test_row_is_exact(t: str, rows: int, cols: int, rng: np.random.Generator) -> None:
    data, deq = make_matrix(t, rows, cols, rng, scale=3.0)
    d = _ext.DenseMatrix(t, rows, cols, data, "tok")
    assert (d.type, d.rows, d.cols, d.shape) == (t, rows, cols, (rows, cols))
    assert d.nbytes == data.size == rows * d.row_bytes
    for r in sorted({0, rows - 1, int(rng.integers(0, rows))}):
        got = d.row(r)
        assert got.dtype == np.float32 and got.shape == (cols,)
        assert_bits_equal(got, deq[r], f"{t} row {r}")
        if t in QUANT_TYPES:
            rb = d.row_bytes
            other = ops.dequantize_blocks(data[r * rb : (r + 1) * rb], t, (cols,))
            assert_bits_equal(got, other, f"{t} row {r} vs ops.dequantize_blocks")


@pytest.mark.parametrize("t", QUANT_TYPES)
def test_row_matches_gguf_package(t: str, rng: np.random.Generator) -> None:
    gguf = pytest.importorskip("gguf")
    rows, cols = 9, 128
    data, _ = raw_quant_matrix(t, rows, cols, rng)
    d = _ext.DenseMatrix(t, rows, cols, data)
    qt = gguf.GGMLQuantizationType.Q8_0 if t == "q8_0" else gguf.GGMLQuantizationType.Q4_0
    want = gguf.quants.dequantize(data.reshape(rows, -1), qt).reshape(rows, cols)
    for r in range(rows):
        assert_bits_equal(d.row(r), want[r].astype(np.float32), f"{t} row {r} vs gguf")


# ----------------------------------------------------------------------------- float matmul

FLOAT_SHAPES = [  # (rows, cols, M): odd rows, cols not a multiple of any vector width
    (1, 1, 1),
    (37, 7, 2),
    (5, 33, 7),
    (37, 100, 1),
    (13, 257, 64),
    (40, 640, 7),
    (3, 2560, 2),
    (29, 4103, 5),
]


@pytest.mark.parametrize("t", FLOAT_TYPES)
@pytest.mark.parametrize("rows,cols,m", FLOAT_SHAPES)
def test_matmul_float(
    isa: str, t: str, rows: int, cols: int, m: int, rng: np.random.Generator
) -> None:
    data, w = make_matrix(t, rows, cols, rng)
    x = rng.standard_normal((m, cols)).astype(np.float32)
    x[0, 0] = 0.0  # zeros and a large value: the bound is relative to sum |x w| per output
    x[-1, -1] *= 1e3
    y = _ext.DenseMatrix(t, rows, cols, data).matmul(x)
    assert y.dtype == np.float32 and y.shape == (m, rows)
    exact, mag, seq = float_reference(x, w)
    assert_within(y, exact, (cols + 8) * U * mag * 1.01, f"{isa} {t} [{rows}, {cols}] M={m}")
    if isa == "ref":
        assert_bits_equal(y, seq, f"ref {t}: sequential fp32 sum")


# ----------------------------------------------------------------------------- quantized matmul

QUANT_SHAPES = [(1, 32, 1), (37, 32, 2), (5, 96, 7), (37, 320, 1), (13, 352, 64), (7, 2560, 2)]


@pytest.mark.parametrize("t", QUANT_TYPES)
@pytest.mark.parametrize("rows,cols,m", QUANT_SHAPES)
@pytest.mark.parametrize("weights", ["quantized", "raw"])
def test_matmul_quantized(
    isa: str, t: str, rows: int, cols: int, m: int, weights: str, rng: np.random.Generator
) -> None:
    if weights == "quantized":
        data, w = make_matrix(t, rows, cols, rng, scale=0.05)
    else:
        data, w = raw_quant_matrix(t, rows, cols, rng)
    x = rng.standard_normal((m, cols)).astype(np.float32) * np.float32(2.0)
    x[:, :32] *= np.float32(100.0)  # blocks of very different scales
    y = _ext.DenseMatrix(t, rows, cols, data).matmul(x)
    assert y.dtype == np.float32 and y.shape == (m, rows)
    exact, mag, seq = quant_reference(t, data, rows, cols, x)
    nb = cols // 32
    what = f"{isa} {t} ({weights}) [{rows}, {cols}] M={m}"
    assert_within(y, exact, (nb + 16) * U * mag * 1.01, what)
    if isa == "ref":
        assert_bits_equal(y, seq, f"ref {t}: sequential fp32 sum of blocks")
    # The quantized product against the fp32 product of the same (dequantized) weights.
    amax = np.abs(x.reshape(m, nb, 32)).max(axis=2).astype(np.float64)  # [M, nb]
    wabs = np.abs(w.astype(np.float64)).reshape(rows, nb, 32).sum(axis=2)  # [rows, nb]
    q_bound = (amax / 127.0 * (0.5 + 127 * 2.0**-11)) @ wabs.T
    fp_exact = x.astype(np.float64) @ w.astype(np.float64).T
    assert_within(y, fp_exact, q_bound + (nb + 16) * U * mag * 1.01, what + " vs fp32 product")
    # Not vacuous: about 1% of sum |x w| for Gaussian blocks.
    assert np.all(q_bound < 0.05 * (np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)).T))


@pytest.mark.parametrize("t", QUANT_TYPES)
@pytest.mark.parametrize("nb", [1, 2, 3, 31])
def test_matmul_quantized_extremes_exact(isa: str, t: str, nb: int) -> None:
    """Extreme codes with scales of exactly 1: every block dot is an integer of magnitude up to
    32 * 128 * 127 and the total (< 2^24 for nb <= 31) is exact in fp32 in any order."""
    rng = np.random.default_rng(nb)
    cols, rows = 32 * nb, 6
    one = np.frombuffer(np.float16(1.0).tobytes(), np.uint8)
    blocks = np.zeros((rows, nb, BLOCK_BYTES[t]), np.uint8)
    blocks[:, :, :2] = one
    if t == "q8_0":
        codes = [
            np.full(32, -128),
            np.full(32, 127),
            np.full(32, -128),
            np.where(np.arange(32) % 2, 127, -128),
            rng.choice([-128, 127], 32),
            np.zeros(32),
        ]
        for r, c in enumerate(codes):
            blocks[r, :, 2:] = np.asarray(c, np.int8).view(np.uint8)
    else:
        nib = [
            np.zeros(32),
            np.full(32, 15),
            np.where(np.arange(32) % 2, 15, 0),
            rng.choice([0, 15], 32),
            np.full(32, 8),
            rng.choice([0, 15], 32),
        ]
        for r, c in enumerate(nib):
            c = np.asarray(c, np.uint8)
            blocks[r, :, 2:] = c[:16] | (c[16:] << 4)
    data = blocks.reshape(-1)
    # x blocks of +-127 have amax 127, so d = 1 exactly and the codes are +-127.
    xs = [
        np.full(cols, 127.0),
        np.full(cols, -127.0),
        rng.choice([-127.0, 127.0], cols),
        np.where(np.arange(cols) % 2, -127.0, 127.0),
    ]
    x = np.asarray(xs, np.float32)
    y = _ext.DenseMatrix(t, rows, cols, data).matmul(x)
    _, qw = parse_blocks(t, data, rows, cols)
    want = x.astype(np.int64) @ qw.reshape(rows, cols).T
    assert np.max(np.abs(want)) < 2**24
    np.testing.assert_array_equal(y, want.astype(np.float32), err_msg=f"{isa} {t} nb={nb}")


# ----------------------------------------------------------------------------- threads, layout


@pytest.mark.parametrize("t", ALL_TYPES)
@pytest.mark.parametrize("m", [1, 7])
def test_thread_count_does_not_change_results(
    isa: str, t: str, m: int, rng: np.random.Generator, one_thread: None
) -> None:
    rows, cols = 101, 320
    data, _ = make_matrix(t, rows, cols, rng)
    x = rng.standard_normal((m, cols)).astype(np.float32)
    d = _ext.DenseMatrix(t, rows, cols, data)
    outs = []
    for n in (1, 2, 3):
        bitnet.set_num_threads(n)
        outs.append(d.matmul(x))
    for n, y in zip((2, 3), outs[1:], strict=True):
        assert_bits_equal(y, outs[0], f"{isa} {t} M={m}: {n} threads vs 1")


@pytest.mark.parametrize("t", ALL_TYPES)
def test_matmul_rows_agree_with_single_row_calls(
    isa: str, t: str, rng: np.random.Generator
) -> None:
    """M > 1 takes the blocked path; each of its rows must equal the M = 1 product within the
    bound (both are bounded against the same exact value)."""
    rows, cols = 23, 2560 + 64
    data, w = make_matrix(t, rows, cols, rng, scale=0.1)
    x = rng.standard_normal((9, cols)).astype(np.float32)
    d = _ext.DenseMatrix(t, rows, cols, data)
    y = d.matmul(x)
    for i in range(x.shape[0]):
        single = d.matmul(x[i : i + 1])
        if t in FLOAT_TYPES:
            _, mag, _ = float_reference(x[i : i + 1], w)
            bound = 2 * (cols + 8) * U * mag * 1.01
        else:
            _, mag, _ = quant_reference(t, data, rows, cols, x[i : i + 1])
            bound = 2 * (cols // 32 + 16) * U * mag * 1.01
        assert_within(y[i : i + 1], single.astype(np.float64), bound, f"{isa} {t} row {i}")


def test_out_argument_and_buffer_lifetime(rng: np.random.Generator) -> None:
    rows, cols = 17, 64
    w = rng.standard_normal((rows, cols)).astype(np.float16)
    d = _ext.DenseMatrix("f16", rows, cols, w.view(np.uint8).reshape(-1), "head")
    del w
    gc.collect()
    x = rng.standard_normal((3, cols)).astype(np.float32)
    out = np.full((3, rows), np.nan, np.float32)
    y = d.matmul(x, out)
    assert y is out or np.shares_memory(y, out)
    np.testing.assert_array_equal(out, d.matmul(x))
    assert "head" in repr(d) and d.name == "head"


def test_dispatch_follows_max_isa(rng: np.random.Generator) -> None:
    """The dense table follows BITNET_MAX_ISA (ref: bit-exact sequential sums)."""
    rows, cols = 11, 257
    data, w = make_matrix("f32", rows, cols, rng)
    x = rng.standard_normal((2, cols)).astype(np.float32)
    d = _ext.DenseMatrix("f32", rows, cols, data)
    old = os.environ.get("BITNET_MAX_ISA")
    os.environ["BITNET_MAX_ISA"] = "ref"
    try:
        assert _ext.reload_dispatch() == "ref"
        assert_bits_equal(d.matmul(x), float_reference(x, w)[2], "ref table")
    finally:
        if old is None:
            os.environ.pop("BITNET_MAX_ISA", None)
        else:
            os.environ["BITNET_MAX_ISA"] = old
        _ext.reload_dispatch()


# ----------------------------------------------------------------------------- bad input


def test_bad_construction() -> None:
    ok = np.zeros(34 * 2, np.uint8)
    with pytest.raises(ValueError, match="tq2_0.*not supported"):
        _ext.DenseMatrix("tq2_0", 1, 256, np.zeros(66, np.uint8), "emb")
    with pytest.raises(ValueError, match="unknown"):
        _ext.DenseMatrix("q9_9", 1, 32, ok)
    with pytest.raises(ValueError, match=r"'emb'.*multiple of 32"):
        _ext.DenseMatrix("q8_0", 2, 48, ok, "emb")
    with pytest.raises(ValueError, match=r"'emb'.*needs 2 x 34 = 68 bytes, got 67"):
        _ext.DenseMatrix("q8_0", 2, 32, ok[:67], "emb")
    with pytest.raises(ValueError, match="non-empty"):
        _ext.DenseMatrix("f32", 0, 4, np.zeros(0, np.uint8))
    with pytest.raises(ValueError, match="non-empty"):
        _ext.DenseMatrix("f16", 3, -1, np.zeros(0, np.uint8))
    with pytest.raises(TypeError, match="byte buffer"):
        _ext.DenseMatrix("f32", 2, 4, np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        _ext.DenseMatrix("f16", 2, 4, np.zeros((2, 32), np.uint8)[:, ::2])
    # Any C-contiguous byte buffer of the right size works (bytes, 2-D arrays).
    _ext.DenseMatrix("q8_0", 2, 32, bytes(68))
    _ext.DenseMatrix("q8_0", 2, 32, ok.reshape(2, 34))


def test_bad_matmul_arguments(rng: np.random.Generator) -> None:
    d = _ext.DenseMatrix("q4_0", 3, 64, np.zeros(3 * 36, np.uint8), "head")
    with pytest.raises(ValueError, match=r"'head'.*x has shape \(2, 32\), expected \[M >= 1, 64\]"):
        d.matmul(np.zeros((2, 32), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        d.matmul(np.zeros(64, np.float32))
    with pytest.raises(TypeError, match="float32"):
        d.matmul(np.zeros((1, 64), np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        d.matmul(np.zeros((1, 128), np.float32)[:, ::2])
    with pytest.raises(ValueError, match="M >= 1"):
        d.matmul(np.zeros((0, 64), np.float32))
    with pytest.raises(ValueError, match=r"out has shape"):
        d.matmul(np.zeros((1, 64), np.float32), np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="out overlaps x"):
        buf = np.zeros((1, 64), np.float32)
        d.matmul(buf, buf[:, :3])
    with pytest.raises(ValueError, match="out of range"):
        d.row(3)
    with pytest.raises(ValueError, match="out of range"):
        d.row(-1)


@pytest.mark.parametrize("t", ALL_TYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_x_is_rejected(isa: str, t: str, bad: float, rng: np.random.Generator) -> None:
    data, _ = make_matrix(t, 5, 64, rng)
    d = _ext.DenseMatrix(t, 5, 64, data, "head")
    x = rng.standard_normal((3, 64)).astype(np.float32)
    x[2, 41] = bad
    with pytest.raises(ValueError, match=r"'head'.*x row 2 holds a non-finite value .* column 41"):
        d.matmul(x)


@pytest.mark.parametrize("t", ALL_TYPES)
@pytest.mark.parametrize("m", [1, 5])
def test_corrupt_weights_are_named(isa: str, t: str, m: int, rng: np.random.Generator) -> None:
    rows, cols = 9, 96
    data, _ = make_matrix(t, rows, cols, rng)
    data = data.copy()
    x = rng.standard_normal((m, cols)).astype(np.float32)
    r, c = 6, 70
    if t == "f32":
        data.view(np.float32).reshape(rows, cols)[r, c] = np.inf
    elif t == "f16":
        data.view(np.float16).reshape(rows, cols)[r, c] = np.nan
    elif t == "bf16":
        data.view(np.uint16).reshape(rows, cols)[r, c] = 0x7F80  # +inf
    else:
        blocks = data.reshape(rows, cols // 32, BLOCK_BYTES[t])
        blocks[r, c // 32, :2] = np.frombuffer(np.float16(np.inf).tobytes(), np.uint8)
    d = _ext.DenseMatrix(t, rows, cols, data, "token_embd.weight")
    where = f"row {r}, block {c // 32}" if t in QUANT_TYPES else f"row {r} holds a non-finite"
    with pytest.raises(ValueError, match=rf"'token_embd.weight'.*{where}"):
        d.matmul(x)
    with pytest.raises(ValueError, match=rf"'token_embd.weight'.*{where}"):
        d.row(r)
    d.row(r - 1)  # other rows are fine


def test_fp32_overflow_is_reported(isa: str) -> None:
    w = np.full((4, 8), 3e38, np.float32)
    d = _ext.DenseMatrix("f32", 4, 8, w.view(np.uint8).reshape(-1), "head")
    with pytest.raises(ValueError, match=r"'head'.*x row 0 .* overflows fp32"):
        d.matmul(np.full((1, 8), 10.0, np.float32))


def test_activation_scale_overflow_is_reported() -> None:
    """x blocks whose Q8_0 scale overflows fp16 (|x| > 65504 * 127) cannot be quantized."""
    d = _ext.DenseMatrix("q8_0", 2, 32, np.zeros(68, np.uint8), "head")
    x = np.ones((1, 32), np.float32)
    x[0, 5] = 1e8
    with pytest.raises(ValueError, match=r"'head'.*matmul: x:.*row 0.*overflows fp16"):
        d.matmul(x)

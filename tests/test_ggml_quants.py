"""ggml's Q8_0 / Q4_0 blocks: the C++ core (bitnet.ops.quantize_blocks / dequantize_blocks)
against the numpy reference (bitnet.quant.reference) and against ggml's own quantizer as the
`gguf` package reproduces it (gguf.quants), byte for byte; plus the block layout written out a
second time here, the fp16 conversions the scales rely on, and the error paths.
"""

from __future__ import annotations

import gguf
import gguf.quants as gq
import numpy as np
import pytest
import torch

import bitnet
from bitnet import _ext, ops
from bitnet.quant import reference as R

TYPES = ("q8_0", "q4_0")
GGML = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18}
REF_Q = {"q8_0": R.quantize_q8_0, "q4_0": R.quantize_q4_0}
REF_DQ = {"q8_0": R.dequantize_q8_0, "q4_0": R.dequantize_q4_0}
# Largest |x| whose block scale still fits fp16 (d = 65504 exactly for both types).
FP16_MAX_AMAX = {"q8_0": 65504.0 * 127, "q4_0": 65504.0 * 8}

SHAPES = [(1, 32), (1, 96), (3, 32), (5, 96), (1, 2560), (7, 2560), (33, 96)]
DISTS = ("normal", "scales", "zeros", "ties", "negative", "huge", "tiny")


# ------------------------------------------------------------------------------ data
def _ties(rng: np.random.Generator, n_blocks: int, fmt: str) -> np.ndarray:
    """Blocks whose scaled values land exactly on the rounding boundaries.

    The block's extreme is a power of two times 127 (Q8_0) or +-8 (Q4_0), so d = +-2^e and
    id = 1 / d are exact; every other value is (an integer + 0.5) * d, i.e. x * id is exactly a
    tie of Q8_0's rounding, or lands exactly on an integer after Q4_0's + 8.5.
    """
    e = rng.integers(-20, 8, (n_blocks, 1)).astype(np.float64)
    if fmt == "q8_0":
        half = rng.integers(-127, 127, (n_blocks, 32)) + 0.5  # -126.5 .. 126.5
        ext = np.float64(127)
    else:
        half = rng.integers(-8, 8, (n_blocks, 32)) + 0.5  # -7.5 .. 7.5
        ext = np.float64(8)
    sign = rng.choice([-1.0, 1.0], (n_blocks, 1))
    b = half * 2.0**e
    b[:, :1] = sign * ext * 2.0**e
    idx = rng.permuted(np.tile(np.arange(32), (n_blocks, 1)), axis=1)
    return np.take_along_axis(b, idx, axis=1).astype(np.float32)


def make_data(n: int, k: int, dist: str, fmt: str, seed: int = 0) -> np.ndarray:
    """Seeded float32 [n, k] test data of one of DISTS (every block's scale fits fp16)."""
    rng = np.random.default_rng([seed, n, k, DISTS.index(dist), TYPES.index(fmt)])
    nb = n * k // 32
    if dist == "normal":
        x = rng.standard_normal((n, k))
    elif dist == "scales":  # every block at its own magnitude, 1e-7 .. 1e4
        x = rng.standard_normal((nb, 32)) * 10.0 ** rng.uniform(-7, 4, (nb, 1))
    elif dist == "zeros":  # zero rows, zero blocks, -0.0 blocks, lone non-zeros
        x = rng.standard_normal((nb, 32))
        x[rng.random(nb) < 0.3] = 0.0
        x[rng.random(nb) < 0.2] = -0.0
        lone = rng.random(nb) < 0.2
        x[lone] = 0.0
        x[lone, rng.integers(0, 32, int(lone.sum()))] = rng.choice([-3.0, 5e-3], int(lone.sum()))
        x = x.reshape(n, k)
        x[::2] = 0.0
    elif dist == "ties":
        x = _ties(rng, nb, fmt)
    elif dist == "negative":  # small positives with one dominant negative (or +-a pairs)
        x = rng.uniform(0, 1, (nb, 32))
        j = rng.integers(0, 32, nb)
        x[np.arange(nb), j] = -rng.uniform(1, 4, nb)
        pair = rng.random(nb) < 0.3  # equal magnitudes of both signs: the first one wins
        a = rng.uniform(4, 8, int(pair.sum()))
        order = rng.random(int(pair.sum())) < 0.5
        x[pair, 3] = np.where(order, a, -a)
        x[pair, 17] = np.where(order, -a, a)
    elif dist == "huge":  # extremes near the largest scale fp16 holds
        top = FP16_MAX_AMAX[fmt]
        amax = top * rng.uniform(0.5, 1.0, (nb, 1))
        amax[rng.random(nb) < 0.3] = top
        amax[rng.random(nb) < 0.2] = top / 65504 * 65519  # d rounds down to fp16's max
        x = rng.uniform(-1, 1, (nb, 32)) * amax
        x[np.arange(nb), rng.integers(0, 32, nb)] = amax[:, 0] * rng.choice([-1, 1], nb)
    else:  # tiny: scales in fp16's subnormal range, at its bottom, and below it (d -> 0)
        d = 2.0 ** rng.uniform(-40, -14, (nb, 1))
        d[rng.random(nb) < 0.2] = 2.0**-25  # a tie between fp16 zero and its smallest subnormal
        d[rng.random(nb) < 0.2] = 2.0**-24 * 1.5  # a tie between two subnormals
        x = rng.uniform(-1, 1, (nb, 32)) * d * (127 if fmt == "q8_0" else 8)
        x[:, 0] = d[:, 0] * (127 if fmt == "q8_0" else -8)
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(n, k))


def gguf_quantize(x: np.ndarray, fmt: str) -> np.ndarray:
    return gq.quantize(x, GGML[fmt])


def gguf_dequantize(data: np.ndarray, fmt: str) -> np.ndarray:
    return gq.dequantize(data, GGML[fmt])


def assert_bytes_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == np.uint8 and want.dtype == np.uint8, what
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    diff = np.flatnonzero(got.reshape(-1) != want.reshape(-1))
    if diff.size:
        i = int(diff[0])
        raise AssertionError(
            f"{what}: {diff.size} bytes differ, first at {i}: {got.reshape(-1)[i]} != "
            f"{want.reshape(-1)[i]}"
        )


def assert_floats_identical(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Bit-identical float32 (so -0.0 and +0.0 are told apart)."""
    assert got.dtype == np.float32 and want.dtype == np.float32, what
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    a, b = got.reshape(-1).view(np.uint32), want.reshape(-1).view(np.uint32)
    diff = np.flatnonzero(a != b)
    if diff.size:
        i = int(diff[0])
        raise AssertionError(
            f"{what}: {diff.size} values differ, first at {i}: {got.reshape(-1)[i]!r} != "
            f"{want.reshape(-1)[i]!r}"
        )


# ------------------------------------------------------------------------------ bit exactness
@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("fmt", TYPES)
def test_matches_reference_and_gguf(fmt, shape, dist):
    x = make_data(*shape, dist, fmt)
    ours = ops.quantize_blocks(x, fmt)
    want = gguf_quantize(x, fmt)
    assert ours.shape == (shape[0], shape[1] // 32 * BLOCK_BYTES[fmt])
    assert_bytes_equal(ours, want, f"{fmt} {shape} {dist}: ours vs gguf")
    assert_bytes_equal(REF_Q[fmt](x), want, f"{fmt} {shape} {dist}: reference vs gguf")

    back = ops.dequantize_blocks(ours, fmt, shape)
    assert_floats_identical(back, gguf_dequantize(want, fmt), f"{fmt} {dist}: dequantize vs gguf")
    assert_floats_identical(REF_DQ[fmt](ours, shape), back, f"{fmt} {dist}: reference dequantize")


@pytest.mark.parametrize("fmt", TYPES)
def test_round_trip_error_bound(fmt):
    """Dequantized values are within half a step d of x (plus the fp16 rounding of d); Q4_0's
    codes reach -8 d but only +7 d, so values beyond 7.5 d on the far side clamp to 7 d."""
    x = make_data(9, 2560, "scales", fmt, seed=3)
    back = ops.dequantize_blocks(ops.quantize_blocks(x, fmt), fmt, x.shape)
    blocks = x.reshape(-1, 32).astype(np.float64)
    amax = np.abs(blocks).max(axis=1, keepdims=True)
    step = amax / (127 if fmt == "q8_0" else 8)
    quant_err = step / 2 if fmt == "q8_0" else np.maximum(step / 2, np.abs(blocks) - 7 * step)
    # + |d - fp16(d)| |q| <= 2^-11 * amax (relative fp16 rounding), + fp16 subnormal spacing * 128
    bound = quant_err * (1 + 1e-5) + amax * 2.0**-11 + 2.0**-24 * 128
    err = np.abs(back.reshape(-1, 32).astype(np.float64) - blocks)
    assert np.all(err <= bound), float((err - bound).max())
    assert np.any(err > step / 4)  # the bound is not vacuous


@pytest.mark.parametrize("fmt", TYPES)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_threads_give_identical_bytes(fmt, n_threads, threads):
    """Row splitting over the pool (several tasks: 1000 x 96 and 40 x 2560) changes nothing."""
    for shape in [(1000, 96), (40, 2560), (1, 32)]:
        x = make_data(*shape, "scales", fmt, seed=11)
        bitnet.set_num_threads(n_threads)
        ours = ops.quantize_blocks(x, fmt)
        back = ops.dequantize_blocks(ours, fmt, shape)
        assert_bytes_equal(ours, gguf_quantize(x, fmt), f"{fmt} {shape} threads={n_threads}")
        assert_floats_identical(back, gguf_dequantize(ours, fmt), f"{fmt} {shape} dequantize")


@pytest.mark.parametrize("fmt", TYPES)
def test_degenerate_tiny_blocks_are_defined(fmt):
    """amax so small that 1 / d overflows fp32 (ggml's casts are undefined there): ours equals the
    reference (NaN products -> 0, infinite ones saturate) and every such block reads back as 0."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (3, 96)).astype(np.float32)
    x[0, :32] *= np.float32(1e-38)
    x[1, 32:64] = 0.0
    x[1, 40] = 1e-40  # an fp32 subnormal alone in its block
    x[1, 41] = -3e-39
    x[2, 64:] *= np.float32(2e-45)
    ours = ops.quantize_blocks(x, fmt)
    assert_bytes_equal(ours, REF_Q[fmt](x), f"{fmt}: degenerate blocks vs reference")
    back = ops.dequantize_blocks(ours, fmt, x.shape)
    assert not back[0, :32].any() and not back[1, 32:64].any() and not back[2, 64:].any()
    assert_floats_identical(back, gguf_dequantize(ours, fmt), f"{fmt}: gguf reads them the same")
    for r, b in [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]:  # the ordinary blocks
        bb = BLOCK_BYTES[fmt]
        want = gguf_quantize(x[r : r + 1, 32 * b : 32 * b + 32], fmt)
        assert_bytes_equal(ours[r : r + 1, bb * b : bb * b + bb], want, f"{fmt} [{r}, {b}]")


# ------------------------------------------------------------------------------ the formulas
def test_q8_0_layout_and_rounding_half_away_from_zero():
    """d = amax / 127 as fp16 in bytes 0..1, then q[j] as int8; ties round away from zero."""
    x = np.zeros((1, 64), np.float32)
    x[0, :8] = [127.0, 2.5, -2.5, 0.5, -0.5, 1.5, -126.5, 0.49999997]
    x[0, 32:] = np.arange(32, dtype=np.float32) - 16  # amax 16: d = 16 / 127, inexact
    out = ops.quantize_blocks(x, "q8_0").reshape(-1)
    assert out.size == 68
    assert out[:2].tobytes() == np.float16(1.0).tobytes()  # d = 127 / 127 = 1
    q = out[2:34].view(np.int8)
    assert q[:8].tolist() == [127, 3, -3, 1, -1, 2, -127, 0]  # not rint's [.., 2, -2, 0, 0, ..]
    assert not q[8:].any()
    d = np.float32(16) / np.float32(127)
    assert out[34:36].tobytes() == d.astype(np.float16).tobytes()
    scaled = x[0, 32:] * (np.float32(1) / d)
    want = np.sign(scaled) * np.floor(np.abs(scaled).astype(np.float64) + 0.5)
    assert out[36:68].view(np.int8).tolist() == want.astype(int).tolist()


def test_q4_0_layout_signed_max_and_nibbles():
    """d = max / -8 with the signed max; code = min(15, trunc(x / d + 8.5)); values 0..15 in the
    low nibbles of bytes 2..17, values 16..31 in the high nibbles."""
    x = np.zeros((1, 32), np.float32)
    x[0, :16] = np.arange(-8, 8)  # max = -8 (negative): d = 1, codes 0..15
    x[0, 16:] = np.arange(7, -9, -1)  # codes 15..0
    out = ops.quantize_blocks(x, "q4_0").reshape(-1)
    assert out[:2].tobytes() == np.float16(1.0).tobytes()
    lo, hi = out[2:] & 0x0F, out[2:] >> 4
    assert lo.tolist() == list(range(16)) and hi.tolist() == list(range(15, -1, -1))

    # A positive max maps to code 0 with a negative d; the opposite extreme clamps to 15.
    y = np.full((1, 32), 0.25, np.float32)
    y[0, 5], y[0, 9] = 8.0, -8.0  # equal magnitudes: the first (+8) is the max
    out = ops.quantize_blocks(y, "q4_0").reshape(-1)
    assert out[:2].tobytes() == np.float16(-1.0).tobytes()
    codes = np.concatenate([out[2:] & 0x0F, out[2:] >> 4])
    assert codes[5] == 0 and codes[9] == 15  # trunc(8 + 8.5) = 16 -> 15
    assert codes[0] == 8  # trunc(-0.25 + 8.5) = 8
    y[0, 5], y[0, 9] = -8.0, 8.0
    assert ops.quantize_blocks(y, "q4_0").reshape(-1)[:2].tobytes() == np.float16(1).tobytes()
    back = ops.dequantize_blocks(out, "q4_0", 32)
    assert back[5] == 8.0 and back[9] == -7.0 and back[0] == -0.0


def _boundary_blocks(fmt: str, n: int, seed: int) -> np.ndarray:
    """Blocks whose values sit within an fp32 ulp of a rounding boundary of their block: Q8_0
    values near (m + 0.5) d, Q4_0 values near (m - 8.5) d (where x * id + 8.5 is an integer)."""
    rng = np.random.default_rng(seed)
    amax = (10.0 ** rng.uniform(-4, 5, (n, 1))).astype(np.float32)
    if fmt == "q8_0":
        d = amax / np.float32(127)
        m = rng.integers(-127, 127, (n, 31)) + 0.5
        first = amax
    else:
        sign = rng.choice([-1.0, 1.0], (n, 1)).astype(np.float32)
        d = sign * amax / np.float32(-8)
        m = rng.integers(1, 17, (n, 31)) - 8.5
        first = sign * amax
    x = (m * d).astype(np.float32)
    step = rng.integers(-1, 2, x.shape)  # one ulp down, none, one ulp up
    x = np.where(step < 0, np.nextafter(x, np.float32(-np.inf)), x)
    x = np.where(step > 0, np.nextafter(x, np.float32(np.inf)), x)
    x = np.clip(x, -amax, amax)
    return np.concatenate([first, x], axis=1).astype(np.float32)


def _alt_q8_0(blocks: np.ndarray, how: str) -> np.ndarray:
    """Q8_0 quants computed a wrong way (for showing that the test data tells them apart)."""
    amax = np.abs(blocks).max(axis=1, keepdims=True)
    if how == "reciprocal_of_127":
        d = amax * (np.float32(1) / np.float32(127))
    else:
        d = amax / np.float32(127)
    if how == "fp16_d":
        d = d.astype(np.float16).astype(np.float32)
    v = blocks / d if how == "divide" else blocks * (np.float32(1) / d)
    if how == "round_half_even":
        return np.rint(v)
    return np.sign(v) * np.floor(np.abs(v).astype(np.float64) + 0.5)


def _alt_q4_0(blocks: np.ndarray, how: str) -> np.ndarray:
    """Q4_0 codes computed a wrong way (for showing that the test data tells them apart)."""
    first = np.argmax(np.abs(blocks), axis=1)
    d = (blocks[np.arange(len(blocks)), first] / np.float32(-8))[:, None]
    if how == "fp16_d":
        d = d.astype(np.float16).astype(np.float32)
    if how == "divide":
        v = blocks / d + np.float32(8.5)
    elif how == "fused":  # fma(x, id, 8.5): one rounding of the exact x * id + 8.5
        v = (blocks.astype(np.float64) * (np.float32(1) / d).astype(np.float64) + 8.5).astype(
            np.float32
        )
    elif how == "round_not_trunc":
        v = np.rint(blocks * (np.float32(1) / d) + np.float32(8))
    else:
        v = blocks * (np.float32(1) / d) + np.float32(8.5)
    return np.clip(np.trunc(v), 0, 15)


@pytest.mark.parametrize("fmt", TYPES)
def test_rounding_boundaries(fmt):
    """Values within an ulp of the rounding boundaries: the data distinguishes ggml's exact order
    of fp32 operations from near-miss implementations (one division for d, x * (1 / d) rather
    than x / d, the fp32 d rather than the fp16 one, no fused multiply-add, Q8_0's half away from
    zero, Q4_0's truncation); ours and the reference equal gguf on all of it."""
    with np.errstate(all="ignore"):
        blocks = _boundary_blocks(fmt, 4000, seed=21)
        if fmt == "q8_0":
            right = _alt_q8_0(blocks, "ggml")
            alts = ("reciprocal_of_127", "fp16_d", "divide", "round_half_even")
            wrong = {a: _alt_q8_0(blocks, a) for a in alts}
        else:
            right = _alt_q4_0(blocks, "ggml")
            alts = ("fp16_d", "divide", "fused", "round_not_trunc")
            wrong = {a: _alt_q4_0(blocks, a) for a in alts}
    for a, w in wrong.items():
        assert np.any(w != right, axis=1).sum() >= 10, f"the data does not exercise {a}"
    x = blocks.reshape(100, 40 * 32)
    want = gguf_quantize(x, fmt)
    assert_bytes_equal(ops.quantize_blocks(x, fmt), want, f"{fmt} boundaries")
    assert_bytes_equal(REF_Q[fmt](x), want, f"{fmt} boundaries: reference")


@pytest.mark.parametrize("fmt", TYPES)
def test_zero_and_negative_zero_blocks(fmt):
    """All-zero blocks store d = 0 (Q4_0: -0 / -8 gives -0.0 for +0 blocks, +0.0 for -0 ones)."""
    x = np.zeros((2, 32), np.float32)
    x[1] = -0.0
    out = ops.quantize_blocks(x, fmt)
    assert_bytes_equal(out, gguf_quantize(x, fmt), f"{fmt} zeros")
    q_bytes = out[:, 2:]
    assert np.all(q_bytes == (8 * 17 if fmt == "q4_0" else 0))  # code 8 in both nibbles: 0x88
    assert not ops.dequantize_blocks(out, fmt, (2, 32)).any()


# ------------------------------------------------------------------------------ inputs
@pytest.mark.parametrize("fmt", TYPES)
def test_input_dtypes_and_ranks(fmt):
    """float16 / bfloat16 (torch) are widened exactly; 1-D and 3-D keep their leading axes."""
    rng = np.random.default_rng(7)
    x32 = (rng.standard_normal((5, 96)) * 3).astype(np.float32)
    x16 = x32.astype(np.float16)
    want16 = gguf_quantize(x16.astype(np.float32), fmt)
    assert_bytes_equal(ops.quantize_blocks(x16, fmt), want16, "numpy float16")
    assert_bytes_equal(ops.quantize_blocks(torch.from_numpy(x16), fmt), want16, "torch float16")
    assert_bytes_equal(REF_Q[fmt](x16), want16, "reference float16")
    tb = torch.from_numpy(x32).to(torch.bfloat16)
    want_b = gguf_quantize(tb.float().numpy(), fmt)
    assert_bytes_equal(ops.quantize_blocks(tb, fmt), want_b, "torch bfloat16")
    assert_bytes_equal(ops.quantize_blocks(torch.from_numpy(x32), fmt), gguf_quantize(x32, fmt), "")
    # bf16 patterns whose widening is easy to get wrong: fp32 subnormals, -0.0, and the largest
    # bf16 below Q4_0's scale limit 65504 * 8 (2^19 would give d = 65536, inf in fp16)
    special = torch.tensor([[1e-39, -3e-40, -0.0, 1.0] * 8], dtype=torch.bfloat16)
    special[0, 31] = 522240.0  # 2^18 * (2 - 2^-7), exact in bf16
    want_s = gguf_quantize(special.float().numpy(), fmt)
    assert_bytes_equal(ops.quantize_blocks(special, fmt), want_s, "bf16 specials")

    one = ops.quantize_blocks(x32[2], fmt)
    assert one.shape == (96 // 32 * BLOCK_BYTES[fmt],)
    assert_bytes_equal(one, gguf_quantize(x32[2], fmt), "1-D")
    x3 = x32.reshape(5, 3, 32)
    three = ops.quantize_blocks(x3, fmt)
    assert three.shape == (5, 3, BLOCK_BYTES[fmt])
    assert_bytes_equal(three, gguf_quantize(x3, fmt), "3-D")
    back = ops.dequantize_blocks(three, fmt, (5, 3, 32))
    assert back.shape == (5, 3, 32)
    assert_floats_identical(back, gguf_dequantize(three, fmt), "3-D dequantize")

    # non-contiguous views are copied first
    big = rng.standard_normal((3, 128)).astype(np.float32)
    view = big[:, ::2]
    assert not view.flags.c_contiguous
    want_v = gguf_quantize(np.ascontiguousarray(view), fmt)
    assert_bytes_equal(ops.quantize_blocks(view, fmt), want_v, "strided")
    assert_bytes_equal(ops.quantize_blocks(torch.from_numpy(big)[:, ::2], fmt), want_v, "torch")
    fortran = np.asfortranarray(big)
    assert_bytes_equal(ops.quantize_blocks(fortran, fmt), gguf_quantize(big, fmt), "fortran")


@pytest.mark.parametrize("fmt", TYPES)
def test_dequantize_accepts_bytes_like(fmt):
    x = make_data(3, 64, "normal", fmt, seed=9)
    q = ops.quantize_blocks(x, fmt)
    want = gguf_dequantize(q, fmt)
    for data in (q, q.reshape(-1), q.tobytes(), bytearray(q.tobytes()), memoryview(q.tobytes())):
        assert_floats_identical(
            ops.dequantize_blocks(data, fmt, (3, 64)), want, type(data).__name__
        )
    flat = ops.dequantize_blocks(q.tobytes(), fmt, 192)
    assert flat.shape == (192,)
    assert_floats_identical(flat, want.reshape(-1), "int shape")
    assert ops.dequantize_blocks(q, fmt.upper(), [3, 64]).shape == (3, 64)


# ------------------------------------------------------------------------------ fp16
def test_fp16_to_fp32_every_pattern():
    bits = np.arange(1 << 16, dtype=np.uint16)
    got = _ext.fp16_to_fp32(bits)
    want = bits.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


def _fp16_edge_cases() -> np.ndarray:
    """float32 values at every fp16 decision point: each fp16 value, the exact midpoints between
    neighbours (ties to even), one fp32 ulp either side of them, the overflow and underflow
    thresholds, fp32 subnormals, infinities, and a large random sample of bit patterns."""
    h = np.arange(0, 0x7C00, dtype=np.uint16)  # every finite non-negative fp16
    lo = h.view(np.float16).astype(np.float64)
    hi = (h + 1).astype(np.uint16).view(np.float16).astype(np.float64)
    hi[-1] = 65536.0  # the rounding limit beyond 65504
    mids = ((lo + hi) / 2).astype(np.float32)  # exact in fp32
    up, down = np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(0))
    special = np.array(
        [65504, 65519.996, 65520, 65536, 1e10, 2.0**-25, 2.0**-26, 1e-45, 1e-40, np.inf, 0],
        np.float32,
    )
    rng = np.random.default_rng(16)
    rand = rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32).view(np.float32)
    pos = np.concatenate([lo.astype(np.float32), mids, up, down, special])
    return np.concatenate([pos, -pos, rand])


def test_fp32_to_fp16_rounds_to_nearest_even_like_numpy():
    x = _fp16_edge_cases()
    got = _ext.fp32_to_fp16(x)
    with np.errstate(over="ignore", invalid="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    nan = np.isnan(x)
    assert np.all((got[nan] & 0x7C00) == 0x7C00) and np.all((got[nan] & 0x3FF) != 0)
    bad = np.flatnonzero(got[~nan] != want[~nan])
    assert bad.size == 0, f"{bad.size} differ, e.g. {x[~nan][bad[0]]!r}: {got[~nan][bad[0]]:#x}"


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("fmt", TYPES)
def test_bad_shapes_and_types(fmt):
    x = np.ones((2, 48), np.float32)
    with pytest.raises(ValueError, match=r"48 is not a multiple of 32"):
        ops.quantize_blocks(x, fmt)
    with pytest.raises(ValueError, match=r"multiple of 32"):
        R.quantize_q8_0(x) if fmt == "q8_0" else R.quantize_q4_0(x)
    with pytest.raises(TypeError, match=r"float64"):
        ops.quantize_blocks(np.ones((2, 32)), fmt)
    with pytest.raises(TypeError, match=r"int8"):
        ops.quantize_blocks(np.ones((2, 32), np.int8), fmt)
    with pytest.raises(TypeError, match=r"torch.int32"):
        ops.quantize_blocks(torch.ones(2, 32, dtype=torch.int32), fmt)
    with pytest.raises(TypeError, match=r"list"):
        ops.quantize_blocks([[1.0] * 32], fmt)
    with pytest.raises(ValueError, match=r"scalar"):
        ops.quantize_blocks(np.ones((), np.float32), fmt)
    with pytest.raises(ValueError, match=r"empty"):
        ops.quantize_blocks(np.ones((0, 32), np.float32), fmt)
    with pytest.raises(ValueError, match=r"unknown block type 'q5_0'"):
        ops.quantize_blocks(np.ones((1, 32), np.float32), "q5_0")
    with pytest.raises(TypeError, match=r"type must be a str"):
        ops.quantize_blocks(np.ones((1, 32), np.float32), 8)


@pytest.mark.parametrize("fmt", TYPES)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_non_finite_input_names_the_row(fmt, n_threads, threads):
    bitnet.set_num_threads(n_threads)
    for bad in (np.nan, np.inf, -np.inf):
        x = np.ones((600, 96), np.float32)  # two pool tasks of 341 rows
        x[523, 70] = bad
        x[599, 3] = bad  # a later bad row in another task: the first one is reported
        with pytest.raises(
            ValueError, match=rf"{fmt}: row 523 holds a non-finite value.*column 70"
        ):
            ops.quantize_blocks(x, fmt)
        with pytest.raises(ValueError, match=r"row 523"):
            REF_Q[fmt](x)
        t = torch.from_numpy(x).to(torch.bfloat16)
        with pytest.raises(ValueError, match=r"row 523"):
            ops.quantize_blocks(t, fmt)


@pytest.mark.parametrize("fmt", TYPES)
def test_scale_overflowing_fp16_is_an_error(fmt):
    top = FP16_MAX_AMAX[fmt]
    x = np.zeros((3, 64), np.float32)
    x[:, 0] = top  # d = 65504 exactly: fine
    ok = ops.quantize_blocks(x, fmt)
    assert_bytes_equal(ok, gguf_quantize(x, fmt), "fp16 max scale")
    assert np.abs(ops.dequantize_blocks(ok, fmt, x.shape)).max() == top
    x[2, 40] = -top / 65504 * 65520  # d rounds to 65536: inf in fp16
    with pytest.raises(ValueError, match=r"row 2, block 1 .*overflows fp16"):
        ops.quantize_blocks(x, fmt)
    with pytest.raises(ValueError, match=r"row 2, block 1.*overflows fp16"):
        REF_Q[fmt](x)


@pytest.mark.parametrize("fmt", TYPES)
def test_dequantize_bad_input(fmt):
    bb = BLOCK_BYTES[fmt]
    q = ops.quantize_blocks(np.ones((4, 64), np.float32), fmt)
    with pytest.raises(ValueError, match=rf"needs 4 x {2 * bb} bytes, got {8 * bb - 1}"):
        ops.dequantize_blocks(q.reshape(-1)[:-1], fmt, (4, 64))
    with pytest.raises(ValueError, match=r"got " + str(8 * bb)):
        ops.dequantize_blocks(q, fmt, (4, 96))
    with pytest.raises(ValueError, match=rf"shape \(4, 64\) needs {8 * bb} bytes, got {7 * bb}"):
        REF_DQ[fmt](q.reshape(-1)[:-bb], (4, 64))
    with pytest.raises(ValueError, match=r"row length 48 is not a multiple of 32"):
        ops.dequantize_blocks(q, fmt, (8, 48))
    with pytest.raises(ValueError, match=r"shape must be positive ints"):
        ops.dequantize_blocks(q, fmt, (4, 0))
    with pytest.raises(ValueError, match=r"shape must be positive ints"):
        ops.dequantize_blocks(q, fmt, ())
    with pytest.raises(TypeError, match=r"uint8.*float32"):
        ops.dequantize_blocks(q.view(np.float32), fmt, (4, 64))
    with pytest.raises(TypeError, match=r"bytes-like.*list"):
        ops.dequantize_blocks(list(q.reshape(-1)), fmt, (4, 64))
    for d_bits in (0x7C00, 0xFC00, 0x7E00):  # +inf, -inf, nan
        corrupt = q.copy()
        corrupt[3, bb : bb + 2] = np.array([d_bits], "<u2").view(np.uint8)
        with pytest.raises(ValueError, match=r"row 3, block 1 has a non-finite scale"):
            ops.dequantize_blocks(corrupt, fmt, (4, 64))
        with pytest.raises(ValueError, match=r"row 3, block 1"):
            REF_DQ[fmt](corrupt, (4, 64))

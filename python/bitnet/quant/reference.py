"""Numpy reference implementations of BitNet b1.58 quantization and the ternary formats.

Written from ``docs/formats.md`` (sections 1 and 2) and the K256 drawing in
``kernels/cpu/kernels.h``, independently of the C++ core, so that tests can compare the two bit
for bit. Clarity comes first; everything is vectorized, nothing is fast.

Ternary matrices are int8 ``[N, K]`` with values in {-1, 0, 1}; in every format a value is stored
as the code ``t + 1`` in {0, 1, 2}. Packed data is a flat uint8 array (``.tobytes()`` gives the
file bytes).

* **I2_S** (bitnet.cpp): the tensor flattened row-major in blocks of 128 values / 32 bytes; value
  ``j`` of a block at byte ``j % 32``, bit shift ``6 - 2 * (j // 32)``; then a 32-byte tail whose
  first 4 bytes are the fp32 scale. ``K % 128 == 0``.
* **TQ2_0** (ggml type 35): 66-byte blocks of 256 values ``{qs[64], fp16 d}``; ``qs[h*32 + m]``
  holds values ``h*128 + n*32 + m`` at bit shift ``2n``. ``K % 256 == 0``.
* **TQ1_0** (ggml type 34): 54-byte blocks ``{qs[48], qh[4], fp16 d}``; 5 trits per byte (base
  3, first value most significant) stored as ``ceil(v * 256 / 243)``. ``K % 256 == 0``.
* **native** (K256, the kernels' layout): rows padded to a multiple of 256 with code 1; value
  ``j`` of a 256-value block at byte ``j % 64``, bit shift ``2 * (j // 64)``. Any ``K``; no scale.

For the TQ types every block stores ``d = fp16(scale)``, or 0 when all its values are 0, which is
exactly what ggml's quantizer produces on the dequantized tensor ``t * scale``. Unpacking requires
the non-zero blocks to share one ``d`` (BitNet's one scale per tensor).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "FORMATS",
    "GGML_BLOCK_BYTES",
    "GGML_QK",
    "I2S_BLOCK",
    "QK",
    "dequantize_q4_0",
    "dequantize_q8_0",
    "pack",
    "pack_i2_s",
    "pack_native",
    "pack_tq1_0",
    "pack_tq2_0",
    "packed_nbytes",
    "quantize_activations_ref",
    "quantize_q4_0",
    "quantize_q8_0",
    "quantize_weights_ref",
    "row_multiple",
    "unpack",
    "unpack_i2_s",
    "unpack_native",
    "unpack_tq1_0",
    "unpack_tq2_0",
]

FORMATS = ("i2_s", "tq1_0", "tq2_0", "native")
I2S_BLOCK = 128  # values per I2_S block (32 bytes)
I2S_TAIL = 32  # bytes of the I2_S scale tail
QK = 256  # values per TQ / K256 block
TQ2_0_BLOCK_BYTES = 66
TQ1_0_BLOCK_BYTES = 54
K256_BLOCK_BYTES = 64

_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)


# ------------------------------------------------------------------------------ helpers
def row_multiple(fmt: str) -> int:
    """The row length ``K`` must be a multiple of this for ``fmt``."""
    return {"i2_s": I2S_BLOCK, "tq1_0": QK, "tq2_0": QK, "native": 1}[fmt]


def packed_nbytes(fmt: str, n: int, k: int) -> int:
    """Bytes of a packed ``[n, k]`` matrix (I2_S includes its 32-byte tail)."""
    _check_k(fmt, k)
    if fmt == "i2_s":
        return n * k // 4 + I2S_TAIL
    if fmt == "tq2_0":
        return n * (k // QK) * TQ2_0_BLOCK_BYTES
    if fmt == "tq1_0":
        return n * (k // QK) * TQ1_0_BLOCK_BYTES
    return n * (-(-k // QK)) * K256_BLOCK_BYTES


def _check_k(fmt: str, k: int) -> None:
    mult = row_multiple(fmt)
    if k <= 0 or k % mult:
        raise ValueError(f"{fmt}: row length K = {k} is not a multiple of {mult}")


def _codes(t: Any, fmt: str) -> np.ndarray:
    """Validates a ternary ``[N, K]`` matrix and returns its codes ``t + 1`` as uint8."""
    t = np.asarray(t)
    if t.ndim != 2 or t.size == 0:
        raise ValueError(f"{fmt}: expected a non-empty 2-D ternary matrix, got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"{fmt}: expected an integer matrix, got {t.dtype}")
    bad = np.argwhere((t < -1) | (t > 1))
    if len(bad):
        r, c = (int(i) for i in bad[0])
        raise ValueError(f"ternary weights must be -1, 0 or 1; found {t[r, c]} at [{r}, {c}]")
    _check_k(fmt, t.shape[1])
    return (t.astype(np.int16) + 1).astype(np.uint8)


def _check_scale(scale: float) -> np.float32:
    s = np.float32(scale)
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"scale must be positive and finite, got {scale}")
    return s


def _fp16_scale(scale: float) -> np.float16:
    """``fp16(fp32(scale))``, rejecting scales that fp16 cannot hold (0 or inf)."""
    with np.errstate(over="ignore"):
        d = _check_scale(scale).astype(np.float16)
    if not (np.isfinite(d) and d > 0):
        raise ValueError(f"scale {scale} is not representable in fp16")
    return d


def _as_bytes(data: Any, nbytes: int, fmt: str) -> np.ndarray:
    arr = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    arr = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    if arr.size != nbytes:
        raise ValueError(f"{fmt}: expected {nbytes} bytes, got {arr.size}")
    return arr


def _values(codes: np.ndarray, fmt: str, n: int, k: int) -> np.ndarray:
    """Codes (``n * k`` of them, row-major) -> int8 ``[n, k]``, rejecting the 2-bit code 3."""
    codes = codes.reshape(n, k)
    bad = np.argwhere(codes == 3)
    if len(bad):
        r, c = (int(i) for i in bad[0])
        raise ValueError(f"{fmt}: invalid 2-bit code 3 at [{r}, {c}] (corrupt data?)")
    return codes.astype(np.int8) - 1


def _tq_d(t_blocks: np.ndarray, scale: float) -> np.ndarray:
    """The per-block fp16 ``d`` bytes ``[blocks, 2]``: fp16(scale), 0 for all-zero blocks."""
    d = np.where(np.any(t_blocks != 1, axis=1), _fp16_scale(scale), np.float16(0))
    return d.astype("<f2").reshape(-1, 1).view(np.uint8)


def _tq_scale(d_bytes: np.ndarray, fmt: str, k: int) -> tuple[np.ndarray, float]:
    """Reads the ``d`` of every block; returns (mask of zero blocks, the shared scale)."""
    bits = np.ascontiguousarray(d_bytes).view("<u2").reshape(-1)
    zero = (bits & 0x7FFF) == 0
    nonzero = np.unique(bits[~zero])
    if nonzero.size == 0:
        return zero, 0.0
    first = bits[np.argmax(~zero)]
    d = float(np.array([first], dtype="<u2").view("<f2")[0])
    if not (np.isfinite(d) and d > 0):
        raise ValueError(f"{fmt}: block scale {d} is not a positive finite number")
    if nonzero.size > 1:
        b = int(np.argmax(~zero & (bits != first)))
        raise ValueError(
            f"{fmt}: block scales differ (row {b // (k // QK)}, block {b % (k // QK)})"
        )
    return zero, d


# ------------------------------------------------------------------------------ I2_S
def pack_i2_s(t: Any, scale: float) -> np.ndarray:
    """Packs ternary ``t`` int8 ``[N, K]`` (``K % 128 == 0``) as I2_S with fp32 ``scale``."""
    c = _codes(t, "i2_s").reshape(-1, 4, 32)  # block, group g = j // 32, byte m = j % 32
    body = (c[:, 0] << 6) | (c[:, 1] << 4) | (c[:, 2] << 2) | c[:, 3]
    tail = np.zeros(I2S_TAIL, dtype=np.uint8)
    tail[:4] = np.array([_check_scale(scale)], dtype="<f4").view(np.uint8)
    return np.concatenate([body.reshape(-1), tail])


def unpack_i2_s(data: Any, n: int, k: int) -> tuple[np.ndarray, float]:
    """Inverse of :func:`pack_i2_s`: returns ``(t int8 [n, k], fp32 scale)``."""
    raw = _as_bytes(data, packed_nbytes("i2_s", n, k), "i2_s")
    body = raw[: n * k // 4].reshape(-1, 1, 32)
    shifts = np.array([6, 4, 2, 0], dtype=np.uint8).reshape(1, 4, 1)
    t = _values((body >> shifts) & 3, "i2_s", n, k)
    scale = float(raw[n * k // 4 : n * k // 4 + 4].view("<f4")[0])
    return t, scale


# ------------------------------------------------------------------------------ TQ2_0
def pack_tq2_0(t: Any, scale: float) -> np.ndarray:
    """Packs ternary ``t`` int8 ``[N, K]`` (``K % 256 == 0``) as TQ2_0 blocks."""
    c = _codes(t, "tq2_0").reshape(-1, QK)
    nb = c.shape[0]
    parts = c.reshape(nb, 2, 4, 32)  # half h, group n, byte m: value h*128 + n*32 + m
    qs = np.zeros((nb, 2, 32), dtype=np.uint8)
    for g in range(4):
        qs |= parts[:, :, g, :] << (2 * g)
    blocks = np.concatenate([qs.reshape(nb, 64), _tq_d(c, scale)], axis=1)
    return blocks.reshape(-1)


def unpack_tq2_0(data: Any, n: int, k: int) -> tuple[np.ndarray, float]:
    """Inverse of :func:`pack_tq2_0`: returns ``(t int8 [n, k], fp16 scale as float)``."""
    raw = _as_bytes(data, packed_nbytes("tq2_0", n, k), "tq2_0")
    blocks = raw.reshape(-1, TQ2_0_BLOCK_BYTES)
    nb = blocks.shape[0]
    zero, scale = _tq_scale(blocks[:, 64:66], "tq2_0", k)
    qs = blocks[:, :64].reshape(nb, 2, 1, 32)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    codes = ((qs >> shifts) & 3).reshape(nb, QK)
    t = _values(codes, "tq2_0", n, k).reshape(nb, QK)
    t[zero] = 0
    return t.reshape(n, k), scale


# ------------------------------------------------------------------------------ TQ1_0
def _base3(c: np.ndarray) -> np.ndarray:
    """Codes ``[..., digits, m]`` -> base-3 numbers ``[..., m]``, first digit most significant."""
    digits = c.shape[-2]
    weights = (3 ** np.arange(digits - 1, -1, -1, dtype=np.uint16)).reshape(digits, 1)
    return np.sum(c.astype(np.uint16) * weights, axis=-2, dtype=np.uint16)


def _trits(b: np.ndarray, digits: int) -> np.ndarray:
    """Stored bytes ``[..., m]`` -> codes ``[..., digits, m]``: ``((uint8)(b * 3^j) * 3) >> 8``."""
    prod = (b[..., None, :] * _POW3[:digits].reshape(digits, 1)).astype(np.uint8)  # wraps mod 256
    return ((prod.astype(np.uint16) * 3) >> 8).astype(np.uint8)


def pack_tq1_0(t: Any, scale: float) -> np.ndarray:
    """Packs ternary ``t`` int8 ``[N, K]`` (``K % 256 == 0``) as TQ1_0 blocks."""
    c = _codes(t, "tq1_0").reshape(-1, QK)
    nb = c.shape[0]
    v0 = _base3(c[:, :160].reshape(nb, 5, 32))  # qs[m]: values m + 32j
    v1 = _base3(c[:, 160:240].reshape(nb, 5, 16))  # qs[32 + m]: values 160 + m + 16j
    v2 = _base3(c[:, 240:].reshape(nb, 4, 4)) * 3  # qh[m]: values 240 + m + 4j, shifted once more
    v = np.concatenate([v0, v1, v2], axis=1).astype(np.uint32)
    stored = ((v * 256 + 242) // 243).astype(np.uint8)  # ceil(v * 256 / 243)
    blocks = np.concatenate([stored, _tq_d(c, scale)], axis=1)
    return blocks.reshape(-1)


def unpack_tq1_0(data: Any, n: int, k: int) -> tuple[np.ndarray, float]:
    """Inverse of :func:`pack_tq1_0`: returns ``(t int8 [n, k], fp16 scale as float)``."""
    raw = _as_bytes(data, packed_nbytes("tq1_0", n, k), "tq1_0")
    blocks = raw.reshape(-1, TQ1_0_BLOCK_BYTES)
    nb = blocks.shape[0]
    zero, scale = _tq_scale(blocks[:, 52:54], "tq1_0", k)
    c0 = _trits(blocks[:, :32], 5).reshape(nb, 160)
    c1 = _trits(blocks[:, 32:48], 5).reshape(nb, 80)
    c2 = _trits(blocks[:, 48:52], 4).reshape(nb, 16)
    codes = np.concatenate([c0, c1, c2], axis=1)
    t = codes.astype(np.int8) - 1
    t[zero] = 0
    return t.reshape(n, k), scale


# ------------------------------------------------------------------------------ native (K256)
def pack_native(t: Any) -> np.ndarray:
    """Packs ternary ``t`` int8 ``[N, K]`` (any ``K``) into the kernels' K256 layout."""
    c = _codes(t, "native")
    n, k = c.shape
    kp = -(-k // QK) * QK
    padded = np.ones((n, kp), dtype=np.uint8)  # code 1 (t = 0) pads the rows
    padded[:, :k] = c
    parts = padded.reshape(n, kp // QK, 4, 64)  # block, group g = j // 64, byte m = j % 64
    qs = np.zeros((n, kp // QK, 64), dtype=np.uint8)
    for g in range(4):
        qs |= parts[:, :, g, :] << (2 * g)
    return qs.reshape(-1)


def unpack_native(data: Any, n: int, k: int) -> np.ndarray:
    """Inverse of :func:`pack_native`: returns ``t`` int8 ``[n, k]`` (the padding is ignored)."""
    raw = _as_bytes(data, packed_nbytes("native", n, k), "native")
    kp = -(-k // QK) * QK
    qs = raw.reshape(n, kp // QK, 1, 64)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    codes = ((qs >> shifts) & 3).reshape(n, kp)[:, :k]
    return _values(codes, "native", n, k)


# ------------------------------------------------------------------------------ by name
def pack(t: Any, fmt: str, scale: float) -> np.ndarray:
    """Packs ``t`` into ``fmt`` (``native`` ignores ``scale``)."""
    if fmt == "i2_s":
        return pack_i2_s(t, scale)
    if fmt == "tq1_0":
        return pack_tq1_0(t, scale)
    if fmt == "tq2_0":
        return pack_tq2_0(t, scale)
    if fmt == "native":
        return pack_native(t)
    raise ValueError(f"unknown ternary format '{fmt}'")


def unpack(data: Any, fmt: str, n: int, k: int) -> tuple[np.ndarray, float | None]:
    """Unpacks ``fmt`` data: ``(t, scale)``, with scale ``None`` for ``native``."""
    if fmt == "i2_s":
        return unpack_i2_s(data, n, k)
    if fmt == "tq1_0":
        return unpack_tq1_0(data, n, k)
    if fmt == "tq2_0":
        return unpack_tq2_0(data, n, k)
    if fmt == "native":
        return unpack_native(data, n, k), None
    raise ValueError(f"unknown ternary format '{fmt}'")


# ------------------------------------------------------------------------------ quantizers
def quantize_weights_ref(w: Any) -> tuple[np.ndarray, np.float32]:
    """BitNet b1.58 weight quantization (one scale per tensor), numpy float32 math.

    ``s_w = max(fp32(mean(|w|) in float64), 1e-5)``, ``t = clip(rint(w / s_w), -1, 1)``
    (``rint`` rounds half to even, as ``torch.round``).

    Args:
        w: float32 or float16 array, any shape (float16 is widened exactly).

    Returns:
        ``(t, s_w)``: int8 ``t`` of ``w``'s shape and the float32 scale.
    """
    w = np.asarray(w)
    if w.dtype not in (np.float32, np.float16):
        raise TypeError(f"quantize_weights_ref: expected float32 or float16, got {w.dtype}")
    w = w.astype(np.float32)
    if w.size == 0:
        raise ValueError("quantize_weights_ref: empty tensor")
    if not np.all(np.isfinite(w)):
        raise ValueError("quantize_weights_ref: weights hold NaN or Inf")
    mean = np.mean(np.abs(w.astype(np.float64)), dtype=np.float64)
    s_w = np.maximum(np.float32(mean), np.float32(1e-5))
    t = np.clip(np.rint(w / s_w), -1, 1).astype(np.int8)
    return t, np.float32(s_w)


def quantize_activations_ref(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """BitNet b1.58 activation quantization (one scale per row), numpy float32 math.

    ``s_x = 127 / max(max|x|, 1e-5)`` per row and ``q = clip(rint(x * s_x), -128, 127)``, all
    in float32 in that order (bit-exact with PyTorch's ``activation_quant``). PyTorch evaluates
    the authors' ``127.0 / t`` as ``t.reciprocal() * 127`` (two fp32 roundings, which differ
    from one division for some ``t``), so ``s_x`` is computed that way here too.

    Args:
        x: float32 ``[M, K]``.

    Returns:
        ``(q, s_x)``: int8 ``[M, K]`` and float32 ``[M]``.
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"quantize_activations_ref: expected float32, got {x.dtype}")
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"quantize_activations_ref: expected a non-empty 2-D array, got {x.shape}")
    bad = ~np.all(np.isfinite(x), axis=1)
    if np.any(bad):
        raise ValueError(f"quantize_activations_ref: row {int(np.argmax(bad))} holds NaN or Inf")
    amax = np.max(np.abs(x), axis=1)
    s_x = (np.float32(1) / np.maximum(amax, np.float32(1e-5))) * np.float32(127)
    q = np.clip(np.rint(x * s_x[:, None]), -128, 127).astype(np.int8)
    return q, s_x.astype(np.float32)


# ------------------------------------------------------------------------------ ggml Q8_0 / Q4_0
# ggml's block types for the (full precision) embedding / LM head, docs/formats.md section 2.
# Rows are cut into blocks of 32 values; every block is ``{fp16 d; quants}``:
#
# * **Q8_0** (ggml type 8), 34 bytes ``{d, int8 q[32]}``, ``x = d * q``. In fp32:
#   ``d = amax / 127``, ``id = 1 / d`` (0 if ``d == 0``), ``q = round_half_away(x * id)``.
# * **Q4_0** (ggml type 2), 18 bytes ``{d, uint8 qs[16]}``, ``x = d * (code - 8)``; byte ``m``
#   holds the code of value ``m`` in its low nibble and of value ``m + 16`` in its high nibble. In
#   fp32: ``max`` = the value of largest ``|x|`` (signed, first on ties), ``d = max / -8``,
#   ``id = 1 / d`` (0 if ``d == 0``), ``code = min(15, trunc(x * id + 8.5))``.
#
# Both store ``fp16(d)`` (round to nearest even) but compute the quants with the fp32 ``d``, as
# ggml's reference quantizer does. A scale that overflows fp16 is an error, so is a NaN or Inf in
# the input. When ``1 / d`` overflows fp32 (``amax`` below ~1e-37, where fp16(d) is 0 anyway),
# a NaN product (0 * inf) quantizes as 0 and an infinite one saturates.

GGML_QK = 32  # values per Q8_0 / Q4_0 block
GGML_BLOCK_BYTES = {"q8_0": 34, "q4_0": 18}


def _ggml_blocks(x: Any, fmt: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """Validates ``x`` (float32 / float16, rank >= 1) -> fp32 blocks ``[n, 32]`` and its shape."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float16):
        raise TypeError(f"{fmt}: expected float32 or float16, got {x.dtype}")
    if x.ndim < 1 or x.size == 0:
        raise ValueError(f"{fmt}: expected a non-empty array of rank >= 1, got shape {x.shape}")
    if x.shape[-1] % GGML_QK:
        raise ValueError(
            f"{fmt}: shape {x.shape}: the row length {x.shape[-1]} is not a multiple of {GGML_QK}"
        )
    x = x.astype(np.float32)
    rows = x.reshape(-1, x.shape[-1])
    bad = ~np.all(np.isfinite(rows), axis=1)
    if np.any(bad):
        raise ValueError(f"{fmt}: row {int(np.argmax(bad))} holds a non-finite value")
    return rows.reshape(-1, GGML_QK), x.shape


def _ggml_scale(d: np.ndarray, fmt: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """fp32 ``d`` ``[n]`` -> (the fp16 bytes ``[n, 2]``, ``id = 1 / d`` or 0), rejecting
    scales that overflow fp16."""
    with np.errstate(over="ignore"):
        d16 = d.astype("<f2")
    bad = ~np.isfinite(d16)
    if np.any(bad):
        b = int(np.argmax(bad))
        nb = k // GGML_QK
        raise ValueError(
            f"{fmt}: row {b // nb}, block {b % nb}: scale d = {d[b]} overflows fp16 (max 65504)"
        )
    with np.errstate(divide="ignore", over="ignore"):
        inv = np.float32(1) / np.where(d == 0, np.float32(1), d)
    inv = np.where(d == 0, np.float32(0), inv).astype(np.float32)
    return d16.reshape(-1, 1).view(np.uint8), inv


def _round_half_away(v: np.ndarray) -> np.ndarray:
    """Rounds fp32 ``v`` to the nearest integer, halves away from zero (C's ``roundf``)."""
    a = np.abs(v)
    whole = np.trunc(a)
    frac = a - whole  # exact in fp32
    return np.copysign(whole + (frac >= np.float32(0.5)), v).astype(np.float32)


def quantize_q8_0(x: Any) -> np.ndarray:
    """ggml Q8_0 of ``x`` (float32 / float16 ``[..., k]``, ``k % 32 == 0``).

    Returns:
        uint8 ``[..., k // 32 * 34]``: the GGUF tensor bytes.
    """
    blocks, shape = _ggml_blocks(x, "q8_0")
    amax = np.max(np.abs(blocks), axis=1)
    d = (amax / np.float32(127)).astype(np.float32)
    d_bytes, inv = _ggml_scale(d, "q8_0", shape[-1])
    with np.errstate(invalid="ignore"):
        v = blocks * inv[:, None]
    v = np.where(np.isnan(v), np.float32(0), np.clip(v, np.float32(-127), np.float32(127)))
    q = _round_half_away(v).astype(np.int8).view(np.uint8)
    out = np.concatenate([d_bytes, q], axis=1)
    return out.reshape(*shape[:-1], shape[-1] // GGML_QK * GGML_BLOCK_BYTES["q8_0"])


def quantize_q4_0(x: Any) -> np.ndarray:
    """ggml Q4_0 of ``x`` (float32 / float16 ``[..., k]``, ``k % 32 == 0``).

    Returns:
        uint8 ``[..., k // 32 * 18]``: the GGUF tensor bytes.
    """
    blocks, shape = _ggml_blocks(x, "q4_0")
    first_max = np.argmax(np.abs(blocks), axis=1)  # argmax returns the first of equal values
    signed_max = blocks[np.arange(blocks.shape[0]), first_max]
    d = (signed_max / np.float32(-8)).astype(np.float32)
    d_bytes, inv = _ggml_scale(d, "q4_0", shape[-1])
    with np.errstate(invalid="ignore"):
        v = (blocks * inv[:, None]).astype(np.float32) + np.float32(8.5)
    codes = np.where(np.isnan(v), np.float32(8), np.clip(np.trunc(v), 0, 15)).astype(np.uint8)
    qs = codes[:, :16] | (codes[:, 16:] << 4)
    out = np.concatenate([d_bytes, qs], axis=1)
    return out.reshape(*shape[:-1], shape[-1] // GGML_QK * GGML_BLOCK_BYTES["q4_0"])


def _ggml_data(data: Any, fmt: str, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Raw bytes -> (blocks ``[n, block_bytes]``, fp32 ``d`` ``[n]``), checking the size."""
    k = shape[-1]
    if k <= 0 or k % GGML_QK:
        raise ValueError(f"{fmt}: row length {k} of shape {shape} is not a multiple of {GGML_QK}")
    n_blocks = int(np.prod(shape)) // GGML_QK
    raw = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    if raw.dtype != np.uint8 or raw.size != n_blocks * GGML_BLOCK_BYTES[fmt]:
        raise ValueError(
            f"{fmt}: shape {shape} needs {n_blocks * GGML_BLOCK_BYTES[fmt]} bytes, got "
            f"{raw.size} {raw.dtype} values"
        )
    blocks = raw.reshape(n_blocks, GGML_BLOCK_BYTES[fmt])
    d = np.ascontiguousarray(blocks[:, :2]).view("<f2").reshape(-1)
    bad = ~np.isfinite(d)
    if np.any(bad):
        b = int(np.argmax(bad))
        raise ValueError(
            f"{fmt}: row {b // (k // GGML_QK)}, block {b % (k // GGML_QK)} has a non-finite scale d"
        )
    return blocks, d.astype(np.float32)


def dequantize_q8_0(data: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`quantize_q8_0` up to rounding: float32 ``d * q`` of ``shape``."""
    blocks, d = _ggml_data(data, "q8_0", tuple(shape))
    q = np.ascontiguousarray(blocks[:, 2:]).view(np.int8).astype(np.float32)
    return (d[:, None] * q).reshape(shape)


def dequantize_q4_0(data: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`quantize_q4_0` up to rounding: float32 ``d * (code - 8)`` of ``shape``."""
    blocks, d = _ggml_data(data, "q4_0", tuple(shape))
    qs = blocks[:, 2:]
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int16) - 8
    return (d[:, None] * codes.astype(np.float32)).reshape(shape)

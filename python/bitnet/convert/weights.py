"""How each checkpoint tensor becomes a GGUF tensor.

Planning (:func:`plan_tensor`) works from file headers only and checks presence, shape, dtype and
the row length the chosen type needs, so a conversion fails before anything is written.
Conversion (:func:`convert_tensor`) then reads one tensor and returns the value for
``bitnet.gguf.write`` plus its report line.

BitLinear matrices come in three forms:

* **master** weights (bf16/f16/f32/f64, ``[out, in]``, no ``weight_scale``) are ternarized with
  ``bitnet.ops.quantize_weights``: ``s_w = max(mean|W|, 1e-5)``, ``t = clamp(round(W / s_w))``.
* **packed** HF weights (uint8 ``[out/4, in]`` + ``weight_scale``, microsoft/bitnet-b1.58-2B-4T):
  bits ``2i`` of packed row ``r`` hold the code ``t + 1`` of row ``i * (out/4) + r``. They are
  unpacked, never re-ternarized; code 3 is corrupt data.
* **ternary** float weights (values in {-1, 0, 1}, ``[out, in]``, + ``weight_scale``), as an
  offline ``autobitlinear`` checkpoint may store them unpacked.

The scale of the last two forms follows ``quantization_config.linear_class`` (docs/formats.md
section 2): ``autobitlinear`` computes ``W = t * weight_scale`` (``s_w = weight_scale``),
``bitlinear`` computes ``W = t / weight_scale`` (``s_w = 1 / weight_scale`` in fp32).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .architectures import TensorSpec
from .checkpoint import Checkpoint, TensorInfo
from .errors import ConversionError
from .report import TensorReport

__all__ = [
    "EMBED_TYPES",
    "ROW_MULTIPLE",
    "TensorPlan",
    "WEIGHT_TYPES",
    "convert_tensor",
    "plan_tensor",
    "unpack_hf_packed",
]

WEIGHT_TYPES = ("i2_s", "tq1_0", "tq2_0", "f16", "f32")
"""Storage types of the ternary BitLinear matrices."""
EMBED_TYPES = ("f16", "f32", "q8_0", "q4_0")
"""Storage types of the token embedding (and an untied output head)."""
ROW_MULTIPLE = {"i2_s": 128, "tq1_0": 256, "tq2_0": 256, "q8_0": 32, "q4_0": 32, "f16": 1, "f32": 1}
"""The row length (innermost dimension) must be a multiple of this for each type."""

FLOAT_DTYPES = ("bf16", "f16", "f32", "f64")


@dataclass(frozen=True)
class TensorPlan:
    """How one GGUF tensor is produced.

    Attributes:
        spec: the expected tensor (names, kind, logical shape).
        weight: the checkpoint tensor read.
        form: ``float`` (master weights, embedding, norm), ``packed`` or ``ternary``.
        scale: the ``weight_scale`` tensor of a packed / ternary matrix.
        convention: ``autobitlinear`` or ``bitlinear`` for packed / ternary matrices.
        stored_type: the GGUF type written (``tq2_0``, ``f16``, ...).
    """

    spec: TensorSpec
    weight: TensorInfo
    form: str
    scale: TensorInfo | None
    convention: str | None
    stored_type: str

    @property
    def source_bytes(self) -> int:
        return self.weight.nbytes + (self.scale.nbytes if self.scale is not None else 0)

    @property
    def source_dtype(self) -> str:
        if self.form == "packed":
            return f"u8 packed, {self.scale.dtype} scale"  # type: ignore[union-attr]
        if self.form == "ternary":
            return f"{self.weight.dtype} ternary"
        return self.weight.dtype


def _describe(spec: TensorSpec) -> str:
    return f"tensor {spec.src} ({spec.gguf})"


def _suggest(row: int, kind: str) -> str:
    types = WEIGHT_TYPES if kind == "ternary" else EMBED_TYPES
    flag = "--type" if kind == "ternary" else "--embed-type"
    fits = [t for t in types if row % ROW_MULTIPLE[t] == 0]
    return f"use {flag} {' or '.join(fits)}"


def plan_tensor(
    spec: TensorSpec,
    ckpt: Checkpoint,
    linear_class: str | None,
    weight_type: str,
    embed_type: str,
) -> TensorPlan:
    """Checks one expected tensor against the checkpoint headers and decides how to convert it.

    Raises:
        ConversionError: wrong shape or dtype, a packed matrix without ``weight_scale`` or
            without a known scale convention, or a row length ``weight_type`` / ``embed_type``
            cannot hold. (Presence is checked by the caller, which lists all missing tensors.)
    """
    info = ckpt.tensors[spec.src]
    where = _describe(spec)
    stored = {"ternary": weight_type, "embedding": embed_type, "norm": "f32"}[spec.kind]
    form, scale = "float", None
    if spec.kind == "ternary":
        scale = ckpt.tensors.get(spec.src + "_scale")  # "...q_proj.weight_scale"
        if info.dtype == "u8":
            form = "packed"
            out, k = spec.shape
            want = (out // 4, k)
            if out % 4 or info.shape != want:
                raise ConversionError(
                    f"{where}: packed uint8 weight has shape {list(info.shape)}, expected "
                    f"{list(want)} (= [out/4, in] for the logical shape {list(spec.shape)})"
                )
        elif scale is not None:
            form = "ternary"
        if scale is not None:
            n = 1
            for d in scale.shape:
                n *= d
            if n != 1 or scale.dtype not in FLOAT_DTYPES:
                raise ConversionError(
                    f"tensor {spec.src}_scale: expected one float value, got dtype "
                    f"{scale.dtype} shape {list(scale.shape)}"
                )
            if linear_class is None:
                raise ConversionError(
                    f"{where} has a weight_scale but config.json has no quantization_config "
                    "(quant_method 'bitnet' with linear_class autobitlinear or bitlinear), so "
                    "it is unknown whether the scale multiplies or divides the weights"
                )
        elif form == "packed":
            raise ConversionError(f"{where}: packed uint8 weight without {spec.src}_scale")
    if form != "packed":
        if info.dtype not in FLOAT_DTYPES:
            allowed = ", ".join(FLOAT_DTYPES) + (
                " (or packed u8)" if spec.kind == "ternary" else ""
            )
            raise ConversionError(
                f"{where} has dtype {info.dtype}, which is not supported ({allowed})"
            )
        if info.shape != spec.shape:
            raise ConversionError(
                f"{where} has shape {list(info.shape)}, expected {list(spec.shape)} from "
                "config.json"
            )
    row = spec.shape[-1]
    if row % ROW_MULTIPLE[stored]:
        raise ConversionError(
            f"{where}, shape {list(spec.shape)}: row length {row} is not a multiple of "
            f"{ROW_MULTIPLE[stored]}, which {stored} needs; {_suggest(row, spec.kind)}"
        )
    return TensorPlan(spec, info, form, scale, linear_class if scale is not None else None, stored)


# ------------------------------------------------------------------------------ conversion
def unpack_hf_packed(packed: np.ndarray, name: str = "weight") -> np.ndarray:
    """HF packed uint8 ``[out/4, in]`` -> ternary int8 ``[out, in]``.

    Bits ``2i`` (i = 0..3) of packed row ``r`` hold the code ``t + 1`` of original row
    ``i * (out/4) + r``.

    Raises:
        ConversionError: a 2-bit code 3 (naming ``name`` and the original row and column).
    """
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    codes = np.concatenate([(packed >> (2 * i)) & 3 for i in range(4)], axis=0)
    bad = codes == 3
    if bad.any():
        r, c = (int(v) for v in np.argwhere(bad)[0])
        raise ConversionError(
            f"tensor {name}: invalid 2-bit code 3 at row {r}, column {c} of the unpacked "
            f"[{codes.shape[0]}, {codes.shape[1]}] matrix (packed codes are t + 1 in 0..2; "
            "corrupt checkpoint?)"
        )
    return (codes.astype(np.int8) - 1).astype(np.int8)


def _f32(tensor: Any, name: str) -> np.ndarray:
    """A torch tensor -> contiguous float32 numpy, rejecting NaN / Inf."""
    arr = np.ascontiguousarray(tensor.float().numpy(), dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ConversionError(f"tensor {name}: non-finite value {arr[idx]} at {list(idx)}")
    return arr


def _scale_of(plan: TensorPlan, ckpt: Checkpoint) -> float:
    name = plan.scale.name  # type: ignore[union-attr]
    ws = np.float32(_f32(ckpt.load(name), name).reshape(-1)[0])
    s_w = ws if plan.convention == "autobitlinear" else np.float32(1) / ws
    if not (np.isfinite(s_w) and s_w > 0):
        raise ConversionError(
            f"tensor {name}: weight_scale {float(ws)} gives the scale {float(s_w)} "
            f"({plan.convention}); it must be positive and finite"
        )
    return float(s_w)


_CHUNK = 1 << 20  # values per block of the error sums (bounds the float64 temporaries)


def _rel_error(source: np.ndarray, stored_rows: Callable[[slice], np.ndarray]) -> float:
    """``||stored - source||_F / ||source||_F`` (0 when both are zero), summed in float64 over
    blocks of rows; ``stored_rows(rows)`` dequantizes the stored value of those rows, so the
    whole tensor is never held in float64 (or dequantized) at once."""
    rows = source.reshape(source.shape[0], -1) if source.ndim > 1 else source.reshape(1, -1)
    step = max(1, _CHUNK // rows.shape[1])
    num = den = 0.0
    for r in range(0, rows.shape[0], step):
        sl = slice(r, r + step)
        src = rows[sl].astype(np.float64).ravel()
        diff = stored_rows(sl).astype(np.float64).ravel() - src
        num += float(np.dot(diff, diff))
        den += float(np.dot(src, src))
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return math.sqrt(num) / math.sqrt(den)


def _ternary(plan: TensorPlan, ckpt: Checkpoint) -> tuple[np.ndarray, float, np.ndarray]:
    """(t int8, s_w, the source as float32 for the error) of a BitLinear matrix."""
    from .. import ops

    name = plan.spec.src
    raw = ckpt.load(name)
    if plan.form == "packed":
        t = unpack_hf_packed(raw.numpy(), name)
        s_w = _scale_of(plan, ckpt)
        return t, s_w, t.astype(np.float32) * np.float32(s_w)
    w = _f32(raw, name)
    if plan.form == "ternary":
        bad = (w != -1) & (w != 0) & (w != 1)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ConversionError(
                f"tensor {name}: value {w[idx]} at {list(idx)} is not -1, 0 or 1, but the "
                f"tensor has a weight_scale (offline {plan.convention} weights are ternary)"
            )
        s_w = _scale_of(plan, ckpt)
        return w.astype(np.int8), s_w, w * np.float32(s_w)
    try:
        t, s_w = ops.quantize_weights(w)
    except (ValueError, TypeError) as e:
        raise ConversionError(f"tensor {name}: {e}") from None
    return t, s_w, w


def _fp16(x: np.ndarray, name: str, option: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = x.astype(np.float16)
    if not np.all(np.isfinite(h)):
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(h))[0])
        raise ConversionError(
            f"tensor {name}: value {x[idx]} at {list(idx)} overflows float16; use {option} f32"
        )
    return h


def convert_tensor(plan: TensorPlan, ckpt: Checkpoint) -> tuple[Any, TensorReport]:
    """Reads and converts one tensor.

    Returns:
        ``(value, report)``: ``value`` is what ``bitnet.gguf.write`` stores (a numpy array, a
        ``PackedWeights`` or a ``bitnet.gguf.Tensor``) with type ``plan.stored_type``; the
        report line compares the dequantized stored value with the source.

    Raises:
        ConversionError: non-finite values, invalid packed codes or scales, fp16 overflow.
    """
    from .. import gguf, ops

    spec, kind = plan.spec, plan.stored_type
    t: np.ndarray | None = None
    if spec.kind == "ternary":
        t, s_w, source = _ternary(plan, ckpt)
        if kind in ("i2_s", "tq1_0", "tq2_0"):
            try:
                value: Any = ops.pack(t, kind, s_w)
            except ValueError as e:
                raise ConversionError(f"{_describe(spec)}: cannot store as {kind}: {e}") from None
        else:
            dense = t.astype(np.float32) * np.float32(s_w)
            value = dense if kind == "f32" else _fp16(dense, spec.src, "--type")
            del dense
    else:
        source = _f32(ckpt.load(spec.src), spec.src)
        if kind == "f32":
            value = source
        elif kind == "f16":
            value = _fp16(source, spec.src, "--embed-type")
        else:
            try:
                data = np.ascontiguousarray(ops.quantize_blocks(source, kind))  # [rows, bytes]
            except ValueError as e:
                raise ConversionError(f"{_describe(spec)}: cannot store as {kind}: {e}") from None
            value = gguf.Tensor(kind, spec.shape, data)

    # The stored values, dequantized a block of rows at a time, for the error.
    if isinstance(value, np.ndarray):
        nbytes = int(value.nbytes)
        rows2d = value.reshape(value.shape[0], -1) if value.ndim > 1 else value.reshape(1, -1)

        def stored_rows(sl: slice) -> np.ndarray:
            return rows2d[sl]

    elif isinstance(value, gguf.Tensor):
        blocks, row_len = value.data, spec.shape[-1]
        nbytes = int(blocks.nbytes)

        def stored_rows(sl: slice) -> np.ndarray:
            return ops.dequantize_blocks(blocks[sl], kind, (blocks[sl].shape[0], row_len))

    else:  # PackedWeights: t * the scale the format stores (TQ: fp16(s_w), I2_S: fp32)
        nbytes, scale, tern = int(value.nbytes), np.float32(value.scale), t
        assert tern is not None

        def stored_rows(sl: slice) -> np.ndarray:
            return tern[sl].astype(np.float32) * scale

    report = TensorReport(
        name=spec.src,
        gguf_name=spec.gguf,
        source_dtype=plan.source_dtype,
        shape=tuple(spec.shape),
        stored_type=kind,
        rel_error=_rel_error(source, stored_rows),
        source_bytes=plan.source_bytes,
        stored_bytes=nbytes,
    )
    return value, report

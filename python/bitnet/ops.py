"""Tensor-level ops: BitNet b1.58 quantization, ternary formats and the BitLinear product.

Every function accepts numpy arrays; the quantizers and :func:`bitlinear` also accept torch
tensors (CPU) and then return torch tensors. The compute runs in the C++ core with the GIL
released, on the thread pool sized by :func:`set_num_threads`.

Formulas (BitNet b1.58, see docs/formats.md):

* weights: ``s_w = max(mean|W|, 1e-5)``, ``t = clamp(round(W / s_w), -1, 1)``
* activations: ``s_x = 127 / max(max|x|, 1e-5)`` per row, ``q = clamp(round(x * s_x), -128, 127)``
* output: ``y = (q . t) / s_x * s_w`` accumulated in int32.

``round`` is round-half-to-even, as ``torch.round``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _ext

PackedWeights = _ext.PackedWeights
"""A packed ternary matrix ``[N, K]``: ``.format``, ``.shape``, ``.scale``, ``.nbytes``,
``.tobytes()`` (the raw file-format bytes) and ``.prepare()`` (build the kernel layout now
instead of on the first :func:`bitlinear`)."""

FORMATS = ("i2_s", "tq1_0", "tq2_0", "native")
"""Ternary formats of :func:`pack`: the GGUF file formats I2_S (bitnet.cpp), TQ1_0 and TQ2_0
(llama.cpp), and ``native``, the kernels' own layout (any K)."""

__all__ = [
    "FORMATS",
    "GGML_BLOCK_TYPES",
    "PackedWeights",
    "active_isa",
    "available_isas",
    "bitlinear",
    "cpu_features",
    "dequantize_blocks",
    "from_bytes",
    "get_num_threads",
    "pack",
    "quantize_activations",
    "quantize_blocks",
    "quantize_weights",
    "set_num_threads",
    "unpack",
]


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _to_numpy(x: Any, name: str, allow_half: bool = False) -> np.ndarray:
    """Converts a torch tensor or array-like to a numpy array without changing its dtype,
    except that bf16 (torch only) and, where allowed, float16 become float32 exactly."""
    if _is_torch(x):
        import torch

        t = x.detach()
        if t.device.type != "cpu":
            raise ValueError(f"{name}: tensor is on {t.device}; move it to the CPU first")
        if t.dtype == torch.bfloat16 or (allow_half and t.dtype == torch.float16):
            t = t.float()
        return t.numpy()
    if isinstance(x, np.ndarray):
        if allow_half and x.dtype == np.float16:
            return x.astype(np.float32)
        return x
    raise TypeError(f"{name}: expected a numpy array or a torch tensor, got {type(x).__name__}")


def _like(out: np.ndarray, was_torch: bool) -> Any:
    if was_torch:
        import torch

        return torch.from_numpy(out)
    return out


def quantize_weights(w: Any) -> tuple[Any, float]:
    """Ternarizes a weight tensor with BitNet b1.58's absmean scale.

    Args:
        w: float32 or float16 numpy array, or a torch tensor (float32, float16 or bfloat16),
            any shape.

    Returns:
        ``(t, scale)``: ``t`` int8 in {-1, 0, 1} of ``w``'s shape (a torch tensor if ``w`` was
        one) and the fp32 tensor scale ``s_w = max(mean|w|, 1e-5)`` (mean accumulated in
        float64), so that ``w ~ t * scale``.

    Raises:
        TypeError: on another dtype. ValueError: on an empty tensor or NaN/Inf.
    """
    was_torch = _is_torch(w)
    arr = _to_numpy(w, "quantize_weights: w", allow_half=True)
    if arr.dtype != np.float32:
        raise TypeError(
            f"quantize_weights: w must be float32, float16 or bfloat16, got {arr.dtype}"
        )
    t, scale = _ext.quantize_weights(np.ascontiguousarray(arr))
    return _like(t, was_torch), float(scale)


def quantize_activations(x: Any) -> tuple[Any, Any]:
    """Quantizes activations per token (row) to int8 with BitNet b1.58's absmax scale.

    Args:
        x: float32 ``[M, K]`` numpy array or torch tensor, C-contiguous.

    Returns:
        ``(q, s_x)``: ``q`` int8 ``[M, K]`` and ``s_x`` float32 ``[M]`` with
        ``s_x = 127 / max(max|x|, 1e-5)``, so that ``x ~ q / s_x``. Bit-exact with PyTorch's
        ``(x * s_x).round().clamp(-128, 127)``.

    Raises:
        TypeError: wrong dtype. ValueError: wrong rank, non-contiguous, empty, NaN/Inf.
    """
    was_torch = _is_torch(x)
    q, s = _ext.quantize_activations(_to_numpy(x, "quantize_activations: x"))
    return _like(q, was_torch), _like(s, was_torch)


def pack(t: Any, fmt: str, scale: float) -> PackedWeights:
    """Packs a ternary matrix ``t`` (int8 ``[N, K]``, values in {-1, 0, 1}) into ``fmt``.

    Args:
        t: int8 ``[N, K]`` array or tensor. ``K`` must be a multiple of 128 for ``i2_s`` and
            of 256 for ``tq1_0`` / ``tq2_0``; ``native`` takes any ``K``.
        fmt: one of :data:`FORMATS`.
        scale: the tensor scale ``s_w`` (> 0). TQ formats store it as fp16, so their
            ``.scale`` is the fp16-rounded value; I2_S stores fp32.

    Returns:
        A :class:`PackedWeights`; its ``.tobytes()`` are the file-format bytes (for I2_S
        including the 32-byte scale tail).
    """
    arr = _to_numpy(t, "pack: t")
    return _ext.pack(arr, fmt, float(scale))


def unpack(packed: PackedWeights) -> tuple[np.ndarray, float]:
    """Inverse of :func:`pack`: returns ``(t int8 [N, K], scale)``."""
    t, scale = _ext.unpack(packed)
    return t, float(scale)


def from_bytes(data: Any, fmt: str, shape: tuple[int, int], scale: float = 1.0) -> PackedWeights:
    """Wraps raw file-format bytes (e.g. a GGUF tensor) as :class:`PackedWeights`, zero-copy.

    ``data`` is any contiguous byte buffer (bytes, memoryview, uint8 numpy array); it is kept
    alive by the result. The scale is read from the data for I2_S and TQ formats; ``scale`` is
    used only for ``native``.
    """
    if isinstance(data, np.ndarray):
        data = data.reshape(-1).view(np.uint8)
    return _ext.from_bytes(data, fmt, (int(shape[0]), int(shape[1])), float(scale))


def bitlinear(x: Any, packed: PackedWeights, out: Any = None) -> Any:
    """BitLinear forward: ``y = (q . t) / s_x * s_w`` for ``x`` float32 ``[M, K]``.

    Quantizes ``x`` per token, multiplies with the ternary weights in int32 (GEMV for
    ``M == 1``, GEMM for ``M > 1``, on all threads), and rescales by both scales.

    Args:
        x: float32 ``[M, K]`` array or tensor, C-contiguous, finite.
        packed: weights ``[N, K]`` in any format (repacked once into the kernel layout on first
            use; call ``packed.prepare()`` to do it ahead).
        out: optional preallocated float32 ``[M, N]`` C-contiguous output (numpy array or torch
            tensor), written in place and returned.

    Returns:
        ``y`` float32 ``[M, N]`` (a torch tensor if ``x`` was one).
    """
    was_torch = _is_torch(x)
    arr = _to_numpy(x, "bitlinear: x")
    if out is None:
        return _like(_ext.bitlinear(arr, packed), was_torch)
    if _is_torch(out):
        _ext.bitlinear(arr, packed, _to_numpy(out, "bitlinear: out"))
        return out
    return _ext.bitlinear(arr, packed, out)


def set_num_threads(n: int) -> None:
    """Sets the number of threads of the core's pool (default: physical cores)."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    _ext.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads the core's pool uses."""
    return int(_ext.get_num_threads())


def cpu_features() -> list[str]:
    """SIMD features of this CPU that the OS enables (e.g. ``['avx2', 'fma', ...]``)."""
    return list(_ext.cpu_features())


def active_isa() -> str:
    """The kernel ISA in use: the best available, capped by env ``BITNET_MAX_ISA``
    (``ref < avx2 < avx512 < avx512_vnni``; ``ref < neon < neon_dotprod``)."""
    return str(_ext.active_isa())


def available_isas() -> list[str]:
    """ISAs compiled into this build that this CPU can run."""
    return list(_ext.available_isas())


# ------------------------------------------------------------------------------ ggml blocks
GGML_BLOCK_TYPES = ("q8_0", "q4_0")
"""ggml block types of :func:`quantize_blocks` (for the embedding / LM head): ``q8_0`` (ggml
type 8, 34-byte blocks of 32 values) and ``q4_0`` (type 2, 18-byte blocks of 32 values)."""


def _block_type(type: Any, fn: str) -> str:
    if not isinstance(type, str):
        raise TypeError(f"{fn}: type must be a str, got {_type_name(type)}")
    name = type.lower()
    if name not in GGML_BLOCK_TYPES:
        raise ValueError(f"{fn}: unknown block type {type!r}; expected one of {GGML_BLOCK_TYPES}")
    return name


def _type_name(obj: Any) -> str:
    return obj.__class__.__name__


def quantize_blocks(x: Any, type: str) -> np.ndarray:
    """Quantizes ``x`` into ggml Q8_0 or Q4_0 blocks, bit-exact with ggml's reference quantizer.

    Every row (the last axis) is cut into blocks of 32 values, each stored as an fp16 scale ``d``
    and its quants: Q8_0 ``x ~ d * q`` with ``d = absmax / 127`` and ``q`` int8 rounded half
    away from zero; Q4_0 ``x ~ d * (code - 8)`` with ``d = max / -8`` (``max`` the signed value
    of largest magnitude), 4-bit codes, values 0..15 of a block in the low nibbles and 16..31 in
    the high ones. See docs/formats.md section 2.

    Args:
        x: ``[rows, k]`` or 1-D ``[k]`` (any rank works: the last axis holds the rows), ``k`` a
            multiple of 32; a numpy array (float32 or float16) or a CPU torch tensor (float32,
            float16 or bfloat16; bf16 and fp16 are widened exactly, without a float32 copy).
        type: ``"q8_0"`` or ``"q4_0"``.

    Returns:
        uint8 ``[rows, k // 32 * bytes_per_block]`` (``[k // 32 * bytes_per_block]`` for 1-D
        input): exactly the GGUF tensor data. Runs on the thread pool, GIL released.

    Raises:
        TypeError: ``x`` of another dtype or type. ValueError: unknown ``type``, a scalar or empty
        ``x``, ``k`` not a multiple of 32, a NaN/Inf (the row is named), or a block whose scale
        overflows fp16 (``|x|`` above about 65504 * 127 for Q8_0, 65504 * 8 for Q4_0).
    """
    name = _block_type(type, "quantize_blocks")
    what = f"quantize_blocks({name}): x"
    bf16 = False
    if _is_torch(x):
        import torch

        t = x.detach()
        if t.device.type != "cpu":
            raise ValueError(f"{what}: tensor is on {t.device}; move it to the CPU first")
        if t.dtype == torch.bfloat16:
            arr = t.contiguous().view(torch.int16).numpy().view(np.uint16)
            bf16 = True
        elif t.dtype in (torch.float32, torch.float16):
            arr = t.numpy()
        else:
            raise TypeError(f"{what}: expected float32, float16 or bfloat16, got {t.dtype}")
    elif isinstance(x, np.ndarray):
        arr = x
        if arr.dtype not in (np.float32, np.float16):
            raise TypeError(f"{what}: expected float32, float16 or bfloat16, got {arr.dtype}")
    else:
        raise TypeError(f"{what}: expected a numpy array or a torch tensor, got {_type_name(x)}")
    if arr.ndim == 0:
        raise ValueError(f"{what}: expected a [rows, k] or 1-D array, got a scalar")
    return _ext.ggml_quantize(np.ascontiguousarray(arr), name, bf16)


def dequantize_blocks(data: Any, type: str, shape: int | tuple[int, ...]) -> np.ndarray:
    """Dequantizes ggml Q8_0 / Q4_0 blocks (e.g. a GGUF tensor's bytes) to float32.

    Args:
        data: the raw blocks, exactly ``prod(shape) // 32 * bytes_per_block`` bytes: bytes,
            bytearray, memoryview or a uint8 numpy array of any shape (read zero-copy).
        type: ``"q8_0"`` or ``"q4_0"``.
        shape: the tensor's shape, ``(rows, k)``, ``(k,)`` or an int; ``k`` a multiple of 32.

    Returns:
        float32 array of ``shape``: ``d * q`` (Q8_0) or ``d * (code - 8)`` (Q4_0), exact.

    Raises:
        TypeError: ``data`` not bytes-like or not uint8. ValueError: unknown ``type``, bad
        ``shape``, wrong byte count, or a block whose fp16 scale is Inf/NaN (corrupt data).
    """
    name = _block_type(type, "dequantize_blocks")
    what = f"dequantize_blocks({name})"
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    if (
        not dims
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in dims)
        or any(int(v) <= 0 for v in dims)
    ):
        raise ValueError(f"{what}: shape must be positive ints like (rows, k), got {shape!r}")
    dims = tuple(int(v) for v in dims)
    k = dims[-1]
    rows = int(np.prod(dims[:-1], dtype=np.int64)) if len(dims) > 1 else 1
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise TypeError(f"{what}: data must be uint8 bytes, got an array of {data.dtype}")
        raw = np.ascontiguousarray(data).reshape(-1)
    else:
        try:
            raw = np.frombuffer(data, dtype=np.uint8)
        except TypeError as e:
            raise TypeError(
                f"{what}: data must be bytes-like or a uint8 array, got {_type_name(data)}"
            ) from e
    return _ext.ggml_dequantize(raw, name, rows, k).reshape(dims)

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
    "PackedWeights",
    "active_isa",
    "available_isas",
    "bitlinear",
    "cpu_features",
    "from_bytes",
    "get_num_threads",
    "pack",
    "quantize_activations",
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

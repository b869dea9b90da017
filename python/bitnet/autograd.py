"""Reverse-mode autograd for training BitNet models: tensors, differentiable ops, the tape.

::

    import numpy as np
    from bitnet import autograd as ag

    w = ag.tensor(np.random.randn(8, 16) * 0.02, requires_grad=True)
    x = ag.tensor(np.random.randn(4, 16))
    loss = ag.cross_entropy(ag.bitlinear(x, w), [1, 2, 3, 4])
    ag.backward(loss)          # w.grad is now d loss / d w (straight-through estimator)

Everything here is a thin, documented layer over the C++ core (``bitnet._ext.autograd``,
``cpp/include/bitnet/tape.h`` and ``autograd_ops.h``). A :class:`Tensor` is a dense, row-major
fp32 array with an optional gradient. Each op computes its output eagerly and, when gradients
are enabled and an input requires one, records its backward on the calling thread's tape;
:func:`backward` replays the tape in reverse (accumulating into ``.grad``) and clears it.

Layout: activations are 2-D ``[rows, features]``; a batch of ``B`` sequences of ``T`` tokens is
``[B * T, C]`` (sequence ``b``'s token ``t`` at row ``b * T + t``); multi-head tensors are
``[B * T, H * D]`` with head ``h`` in columns ``h * D .. (h + 1) * D``. Bad shapes or ids raise
``ValueError`` naming the op and the shapes. Compute runs with the GIL released, on the pool of
:func:`bitnet.set_num_threads`.

Optimizers (AdamW, SGD, gradient clipping, schedules) are in :mod:`bitnet.optim`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import numpy as np

from ._ext import autograd as _ag

__all__ = [
    "Tensor",
    "tensor",
    "no_grad",
    "enable_grad",
    "set_grad_enabled",
    "is_grad_enabled",
    "backward",
    "backward_with",
    "clear_tape",
    "tape_size",
    "tape_ops",
    "pool_stats",
    "reset_peak",
    "release_cached_memory",
    "linear",
    "bitlinear",
    "bitlinear_frozen",
    "embedding",
    "rmsnorm",
    "rope",
    "attention",
    "add",
    "mul",
    "scale",
    "gated",
    "dropout",
    "cross_entropy",
]

Tensor = _ag.Tensor
"""A dense fp32 tensor with an optional gradient (``bitnet._ext.autograd.Tensor``).

``Tensor(array_float32, requires_grad=False)`` copies a C-contiguous float32 array (see
:func:`tensor` for anything else); ``Tensor.zeros(shape, requires_grad=False)``. Attributes:
``.shape`` (tuple), ``.numel``, ``.requires_grad`` (settable), ``.numpy()`` (a writable float32
view, no copy), ``.grad`` (a float32 copy or None; assign an array of the same shape to set it,
None to clear), ``.zero_grad()``, ``.item()`` (one-element tensors)."""

Ids = Sequence[int] | np.ndarray
_F = TypeVar("_F", bound=Callable[..., Any])


# ------------------------------------------------------------------ tensors and grad mode
def tensor(data: Any, requires_grad: bool = False) -> Tensor:
    """A new :class:`Tensor` holding a float32 copy of ``data``.

    ``data`` may be a numpy array (any real dtype, any strides), a torch tensor (detached and
    moved to the CPU; torch is not imported here), a (nested) list or a number, or a
    :class:`Tensor` (copied).

    Raises:
        TypeError: ``data`` is not numeric (strings, objects, complex numbers).
    """
    if isinstance(data, Tensor):
        arr: np.ndarray = data.numpy()
    elif hasattr(data, "detach") and hasattr(data, "cpu") and hasattr(data, "numpy"):
        arr = data.detach().cpu().float().numpy()  # a torch.Tensor
    else:
        arr = np.asarray(data)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"tensor: expected real numbers, got an array of dtype {arr.dtype}")
    return Tensor(np.ascontiguousarray(arr, dtype=np.float32), requires_grad=bool(requires_grad))


def set_grad_enabled(on: bool) -> None:
    """Turns gradient recording on or off for the calling thread (on by default)."""
    _ag.set_grad_enabled(bool(on))


def is_grad_enabled() -> bool:
    """Whether ops on the calling thread record their backward on the tape."""
    return bool(_ag.is_grad_enabled())


class _GradMode:
    """A context manager (and decorator) that sets the calling thread's grad mode in its scope
    and restores the previous mode on exit (also on exceptions)."""

    def __init__(self, on: bool) -> None:
        self._on = on
        self._prev: list[bool] = []

    def __enter__(self) -> None:
        self._prev.append(is_grad_enabled())
        set_grad_enabled(self._on)

    def __exit__(self, *exc: object) -> None:
        set_grad_enabled(self._prev.pop())

    def __call__(self, fn: _F) -> _F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _GradMode(self._on):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def no_grad() -> _GradMode:
    """Gradients off in a scope: ``with ag.no_grad(): logits = model.forward(ids)``.

    Ops inside record nothing (no saved activations, outputs do not require a gradient).
    Also usable as a decorator: ``@ag.no_grad()``."""
    return _GradMode(False)


def enable_grad() -> _GradMode:
    """Gradients on in a scope (e.g. inside a :func:`no_grad` block); also a decorator."""
    return _GradMode(True)


def backward(loss: Tensor) -> None:
    """Runs the tape backwards from ``loss`` (a one-element tensor produced by recorded ops),
    seeded with ``d loss / d loss = 1``: accumulates into the ``.grad`` of every tensor that
    requires one, then clears the tape (releasing the saved activations).

    Raises:
        ValueError: ``loss`` has more than one element or was not produced on the tape.
    """
    _ag.backward(loss)


def backward_with(root: Tensor, grad: np.ndarray) -> None:
    """Like :func:`backward` from any recorded tensor ``root``, seeded with ``grad`` (a float32
    array of ``root``'s shape): ``d L / d root = grad`` for an implicit scalar ``L``."""
    _ag.backward_with(root, np.ascontiguousarray(grad, dtype=np.float32))


def clear_tape() -> None:
    """Drops every recorded node without running it (e.g. after a forward that needs no
    backward, run with gradients on)."""
    _ag.clear_tape()


def tape_size() -> int:
    """The number of nodes recorded on the calling thread's tape."""
    return int(_ag.tape_size())


def tape_ops() -> list[str]:
    """The op names recorded on the calling thread's tape, in recording order."""
    return list(_ag.tape_ops())


def pool_stats() -> dict[str, int]:
    """The tensor memory pool: ``{"in_use", "cached", "peak"}`` in bytes (peak of in_use since
    the last :func:`reset_peak`)."""
    return dict(_ag.pool_stats())


def reset_peak() -> None:
    """Restarts the pool's ``peak`` measurement from the bytes in use now."""
    _ag.reset_peak()


def release_cached_memory() -> None:
    """Frees every buffer the pool keeps cached for reuse."""
    _ag.release_cached_memory()


# ------------------------------------------------------------------ ops
def linear(x: Tensor, w: Tensor) -> Tensor:
    """Dense linear layer without bias: ``y[M, N] = x[M, K] @ w[N, K]^T`` (fp32).

    Backward: ``dx = dy @ w``, ``dw = dy^T @ x``. Used for the full-precision LM head."""
    return _ag.linear(x, w)


def bitlinear(x: Tensor, w: Tensor, lambda_: float = 1.0) -> Tensor:
    """BitLinear (BitNet b1.58) with the straight-through estimator: ``y[M, N]`` from
    ``x[M, K]`` and master weights ``w[N, K]``.

    ``s_w = max(mean|w|, 1e-5)``, ``wq = clamp(round(w / s_w), -1, 1) * s_w`` (per tensor);
    ``s_x = 127 / max(max_k |x[m]|, 1e-5)``, ``xq = clamp(round(x * s_x), -128, 127) / s_x``
    (per row); ``y = (x + lambda_ (xq - x)) @ (w + lambda_ (wq - w))^T``. ``lambda_ = 1`` (fully
    quantized) runs the same int8 x ternary kernels as inference; ``lambda_ < 1`` is the fp32
    warm-up mix. Backward treats the quantizers as the identity (scales get no gradient):
    ``dx = dy @ w_eff``, ``dw = dy^T @ x_eff``.

    Raises:
        ValueError: shapes disagree, ``w`` is empty, or ``lambda_`` is outside [0, 1].
    """
    return _ag.bitlinear(x, w, lambda_=float(lambda_))


def bitlinear_frozen(x: Tensor, w: Any) -> Tensor:
    """BitLinear on frozen packed ternary weights (``bitnet.ops.PackedWeights`` [N, K], any
    packed format): ``y[M, N]`` from ``x[M, K]`` by the inference kernels (per-token int8
    activations x ternary weights, int32 sums, rescaled), bit-identical to
    :func:`bitnet.ops.bitlinear`. The weights get no gradient; backward is straight-through
    for ``x``: ``dx += dy @ (s_w * T)``, with the ternary values unpacked block by block into
    a transient buffer (no fp32 copy of the weights is kept). Used by :mod:`bitnet.lora`.

    Raises:
        ValueError: ``x`` is not ``[M, K]`` with the weights' K.
    """
    return _ag.bitlinear_frozen(x, w)


def embedding(table: Tensor, ids: Ids) -> Tensor:
    """Row gather ``out[n, E] = table[ids[n], :]`` from ``table[V, E]``; ``ids`` is a 1-D
    integer array or list. Backward scatter-adds into ``table``'s gradient.

    Raises:
        ValueError: an id outside ``[0, V)`` (the message names its index), or ``ids`` not 1-D.
    """
    return _ag.embedding(table, ids)


def rmsnorm(x: Tensor, w: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """RMSNorm over each row of ``x[M, C]``: ``x / sqrt(mean(x^2) + eps) * w`` with ``w[C]``
    (or no weight when None)."""
    return _ag.rmsnorm(x, w, eps=float(eps))


def rope(x: Tensor, T: int, H: int, D: int, theta: float = 10000.0, pos0: int = 0) -> Tensor:
    """Rotary position embedding, NEOX style (pairs ``(i, i + D/2)``), on ``x[B * T, H * D]``:
    row ``b * T + t`` is at position ``pos0 + t``, angle ``pos * theta^(-2i / D)``; D even."""
    return _ag.rope(x, T, H, D, theta=float(theta), pos0=pos0)


def attention(q: Tensor, k: Tensor, v: Tensor, B: int, T: int, Hq: int, Hkv: int, D: int) -> Tensor:
    """Causal grouped-query self-attention: ``q[B * T, Hq * D]``, ``k, v[B * T, Hkv * D]``
    (query head ``h`` reads kv head ``h // (Hq // Hkv)``), scores scaled by ``1 / sqrt(D)``,
    token ``t`` attends to tokens ``0 .. t`` of its own sequence. Returns ``[B * T, Hq * D]``."""
    return _ag.attention(q, k, v, B, T, Hq, Hkv, D)


def add(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise ``a + b`` (same shapes)."""
    return _ag.add(a, b)


def mul(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise ``a * b`` (same shapes)."""
    return _ag.mul(a, b)


def scale(a: Tensor, s: float) -> Tensor:
    """``a * s`` for a Python float ``s``."""
    return _ag.scale(a, float(s))


def gated(gate: Tensor, up: Tensor, act: Literal["relu2", "silu"] = "relu2") -> Tensor:
    """The gated FFN activation ``act(gate) * up`` on ``[M, F]`` tensors: ``relu2`` is
    ``relu(g)^2`` (BitNet b1.58), ``silu`` is ``g * sigmoid(g)``."""
    return _ag.gated(gate, up, act=act)


def dropout(x: Tensor, p: float, seed: int) -> Tensor:
    """Inverted dropout: zeroes each element with probability ``p`` and scales the others by
    ``1 / (1 - p)``; the mask is a function of ``seed`` (reproducible). ``p == 0``, or gradients
    disabled (evaluation), returns ``x`` itself. ``0 <= p < 1``."""
    return _ag.dropout(x, float(p), int(seed))


def cross_entropy(logits: Tensor, targets: Ids, ignore_index: int = -100) -> Tensor:
    """Mean softmax cross-entropy of ``logits[N, V]`` over the rows whose target is not
    ``ignore_index``; ``targets`` has ``N`` ids in ``[0, V)``. Returns a one-element tensor
    (0 when every row is ignored)."""
    return _ag.cross_entropy(logits, targets, ignore_index=int(ignore_index))

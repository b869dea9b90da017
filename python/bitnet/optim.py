"""Optimizers and learning-rate schedules for training on the C++ tape.

The optimizers live in the C++ core (``cpp/include/bitnet/optim.h``) and are re-exported here:

* :class:`AdamW` -- ``torch.optim.AdamW`` semantics (decoupled weight decay, bias correction,
  non-amsgrad), with an optional per-parameter ``decay_mask`` (``False`` for norms and biases).
* :class:`SGD` -- ``torch.optim.SGD`` semantics (momentum, dampening, Nesterov, L2 decay).
* :func:`clip_grad_norm` -- ``torch.nn.utils.clip_grad_norm_`` (global L2 norm, computed in
  double; returns the norm before clipping).

Both optimizers take a list of ``bitnet._ext.autograd.Tensor`` parameters, update them in place
from their ``.grad`` (parameters without a gradient are skipped, their state does not move), and
expose ``lr`` and ``weight_decay`` as settable properties so that a schedule can drive them::

    opt = AdamW(params, lr=1e-3, weight_decay=0.1, decay_mask=[p.ndim >= 2 for p in arrays])
    sched = TwoStageSchedule(total=10_000, warmup=375, peak_lr=1.5e-3, stage2_lr=1e-3,
                             weight_decay=0.1)
    for step in range(10_000):
        opt.lr, opt.weight_decay = sched(step)
        ...  # forward, backward
        clip_grad_norm(params, 1.0)
        opt.step()
        opt.zero_grad()

Checkpoints: ``opt.get_state()`` returns plain numpy arrays (AdamW: ``[(step, m, v)]``, SGD:
``[momentum_buffer or None]``) and ``opt.set_state(state)`` restores them after validating every
shape, so a resumed run continues bit for bit.

The schedules are plain functions of the 0-based optimizer step ``step`` (the value to use for
the ``step + 1``-th update); they allocate nothing and are cheap to call every step.
"""

from __future__ import annotations

import math

from . import _ext

AdamW = _ext.autograd.AdamW
SGD = _ext.autograd.SGD
clip_grad_norm = _ext.autograd.clip_grad_norm

__all__ = [
    "AdamW",
    "SGD",
    "clip_grad_norm",
    "warmup_cosine",
    "warmup_linear",
    "TwoStageSchedule",
]

_DECAYS = ("cosine", "linear")


def _check_schedule(step: int, total: int, warmup: int) -> None:
    if total < 1:
        raise ValueError(f"schedule: total must be >= 1, got {total}")
    if not 0 <= warmup <= total:
        raise ValueError(f"schedule: warmup must be in [0, total = {total}], got {warmup}")
    if step < 0:
        raise ValueError(f"schedule: step must be >= 0, got {step}")


def _decay(progress: float, start: float, end: float, kind: str) -> float:
    """Value at ``progress`` in [0, 1] of a ``kind`` ("cosine" | "linear") decay start -> end."""
    progress = min(max(progress, 0.0), 1.0)
    if kind == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "linear":
        return start + (end - start) * progress
    raise ValueError(f"schedule: decay must be one of {', '.join(_DECAYS)}, got {kind!r}")


def _warmup_decay(
    step: int, total: int, warmup: int, peak_lr: float, min_lr: float, kind: str
) -> float:
    _check_schedule(step, total, warmup)
    if step < warmup:
        return peak_lr * (step + 1) / warmup
    return _decay((step - warmup) / max(1, total - warmup), peak_lr, min_lr, kind)


def warmup_cosine(step: int, total: int, warmup: int, peak_lr: float, min_lr: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to ``min_lr``.

    For ``step < warmup`` the rate is ``peak_lr * (step + 1) / warmup`` (so the first update
    already moves and step ``warmup - 1`` reaches ``peak_lr``); afterwards, with
    ``progress = (step - warmup) / (total - warmup)`` clamped to [0, 1],
    ``min_lr + (peak_lr - min_lr) * (1 + cos(pi * progress)) / 2``: ``peak_lr`` at
    ``step == warmup``, ``min_lr`` from ``step == total`` on.
    """
    return _warmup_decay(step, total, warmup, peak_lr, min_lr, "cosine")


def warmup_linear(step: int, total: int, warmup: int, peak_lr: float, min_lr: float = 0.0) -> float:
    """Linear warm-up (as :func:`warmup_cosine`), then linear decay from ``peak_lr`` at
    ``step == warmup`` to ``min_lr`` at ``step == total`` (and after)."""
    return _warmup_decay(step, total, warmup, peak_lr, min_lr, "linear")


class TwoStageSchedule:
    """The two-stage learning-rate and weight-decay schedule of BitNet b1.58 2B4T.

    Calling the schedule with a 0-based step returns ``(lr, weight_decay)`` for that update.
    With ``split_step = round(split * total)``:

    * Stage 1 (``step < split_step``): warm-up over ``warmup`` steps to ``peak_lr``, then a
      ``decay`` ("cosine" or "linear") curve laid out over the *whole* run, from ``peak_lr`` at
      ``warmup`` towards ``min_lr`` at ``total`` -- stage 1 uses its first part, a high learning
      rate that is still far from ``min_lr`` at the split. Weight decay is ``weight_decay``
      (``wd_decay="constant"``) or follows a cosine from ``weight_decay`` at step 0 to 0 at the
      split (``wd_decay="cosine"``, the report's "cosine schedule peaking at 0.1").
    * Stage 2 (``step >= split_step``): the learning rate drops abruptly to ``stage2_lr`` and
      decays (same ``decay`` shape) to ``min_lr`` at ``total``; weight decay is 0.

    The BitNet b1.58 2B4T technical report (pre-training schedules) motivates it: 1.58-bit
    models tolerate a high learning rate early on; halfway through, a "cool-down" with a lower
    rate and weight decay disabled lets the parameters settle guided by higher-quality data.
    """

    def __init__(
        self,
        total: int,
        warmup: int,
        peak_lr: float,
        stage2_lr: float,
        weight_decay: float,
        split: float = 0.5,
        *,
        min_lr: float = 0.0,
        decay: str = "cosine",
        wd_decay: str = "constant",
    ) -> None:
        """Validates the arguments; see the class docstring for their meaning."""
        _check_schedule(0, total, warmup)
        if not 0.0 < split <= 1.0:
            raise ValueError(f"TwoStageSchedule: split must be in (0, 1], got {split}")
        split_step = round(split * total)
        if split_step < warmup:
            raise ValueError(
                f"TwoStageSchedule: the split (step {split_step}) comes before the end of the "
                f"warm-up ({warmup} steps)"
            )
        for name, value in (
            ("peak_lr", peak_lr),
            ("stage2_lr", stage2_lr),
            ("min_lr", min_lr),
            ("weight_decay", weight_decay),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"TwoStageSchedule: {name} must be finite and >= 0, got {value}")
        if decay not in _DECAYS:
            raise ValueError(f"TwoStageSchedule: decay must be one of {_DECAYS}, got {decay!r}")
        if wd_decay not in ("constant", "cosine"):
            raise ValueError(
                f"TwoStageSchedule: wd_decay must be 'constant' or 'cosine', got {wd_decay!r}"
            )
        self.total, self.warmup, self.split_step = total, warmup, split_step
        self.peak_lr, self.stage2_lr, self.min_lr = peak_lr, stage2_lr, min_lr
        self.weight_decay, self.decay, self.wd_decay = weight_decay, decay, wd_decay

    def __call__(self, step: int) -> tuple[float, float]:
        """``(lr, weight_decay)`` for the 0-based optimizer step ``step``."""
        if step < 0:
            raise ValueError(f"TwoStageSchedule: step must be >= 0, got {step}")
        if step < self.split_step:
            lr = _warmup_decay(step, self.total, self.warmup, self.peak_lr, self.min_lr, self.decay)
            wd = self.weight_decay
            if self.wd_decay == "cosine":
                wd = _decay(step / self.split_step, self.weight_decay, 0.0, "cosine")
            return lr, wd
        progress = (step - self.split_step) / max(1, self.total - self.split_step)
        return _decay(progress, self.stage2_lr, self.min_lr, self.decay), 0.0

    def __repr__(self) -> str:
        return (
            f"TwoStageSchedule(total={self.total}, warmup={self.warmup}, "
            f"peak_lr={self.peak_lr}, stage2_lr={self.stage2_lr}, "
            f"weight_decay={self.weight_decay}, split_step={self.split_step}, "
            f"min_lr={self.min_lr}, decay={self.decay!r}, wd_decay={self.wd_decay!r})"
        )

"""The LoRA training loop: AdamW on the adapters over an :class:`InstructionDataset`.

``bitnet.train.Trainer`` is built around :class:`~bitnet.train.data.TokenDataset` (fixed windows
of a token stream, ``isinstance``-checked) and full-model checkpoints, so LoRA has this small
loop instead: same schedules (:mod:`bitnet.optim`), same AdamW, same progress bar style.

One step ``s``: learning rate of the schedule at ``s``; batch ``s`` of the shuffled examples
(:meth:`InstructionDataset.batch_at`, trimmed to the longest example); mean loss over the
response tokens; backward; global-norm clipping (a non-finite norm skips the update); AdamW.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Any

import numpy as np

from .. import autograd as ag
from .. import optim
from .data import IGNORE_INDEX, InstructionDataset

__all__ = ["LoraTrainConfig", "LoraTrainer"]


@dataclasses.dataclass
class LoraTrainConfig:
    """Hyperparameters of a LoRA run.

    Attributes:
        steps: optimizer steps. batch_size: examples per step. lr: peak learning rate.
        min_lr: end of the decay. warmup: linear warm-up steps. schedule: ``cosine`` or
        ``linear`` (after warm-up) or ``constant``. weight_decay: AdamW's, on the adapters.
        betas, eps: AdamW. grad_clip: max global gradient norm (0: off). seed: data order.
        progress: tqdm bar on stderr.
    """

    steps: int = 100
    batch_size: int = 4
    lr: float = 2e-4
    min_lr: float = 0.0
    warmup: int = 0
    schedule: str = "cosine"
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"LoraTrainConfig: {name} must be an integer >= 1, got {v!r}")
        if not (isinstance(self.warmup, int) and 0 <= self.warmup <= self.steps):
            raise ValueError(f"LoraTrainConfig: warmup must be in [0, steps], got {self.warmup!r}")
        for name in ("lr", "min_lr", "weight_decay", "eps", "grad_clip"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"LoraTrainConfig: {name} must be a finite number >= 0, got {v!r}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(
                f"LoraTrainConfig: schedule must be cosine, linear or constant, got "
                f"{self.schedule!r}"
            )

    def lr_at(self, step: int) -> float:
        """Learning rate of the 0-based step."""
        if self.schedule == "constant":
            return float(self.lr) * (min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0)
        f = optim.warmup_cosine if self.schedule == "cosine" else optim.warmup_linear
        return f(step, self.steps, self.warmup, float(self.lr), float(self.min_lr))


class LoraTrainer:
    """Trains a :class:`~bitnet.lora.LoraModel`'s adapters.

    Attributes:
        history: per step ``step`` (1-based), ``loss``, ``lr``, ``grad_norm``, ``tokens``
            (response tokens in the batch), ``tokens_per_s`` (positions processed per second,
            the batch trimmed to its longest example), ``skipped``.
    """

    def __init__(self, model: Any, data: InstructionDataset, config: LoraTrainConfig) -> None:
        if not isinstance(data, InstructionDataset):
            raise TypeError(f"LoraTrainer: data must be an InstructionDataset, got {type(data)}")
        vocab = int(model.config.vocab_size)
        if data.max_id >= vocab:
            raise ValueError(
                f"LoraTrainer: the data holds token id {data.max_id}, outside the model's "
                f"vocabulary of {vocab}"
            )
        self.model, self.data, self.config = model, data, config
        self.params = model.parameters()
        self.optimizer = optim.AdamW(
            self.params,
            lr=config.lr_at(0),
            betas=config.betas,
            eps=float(config.eps),
            weight_decay=float(config.weight_decay),
            decay_mask=model.decay_mask(),
        )
        self.step = 0
        self.history: list[dict[str, Any]] = []

    def train_step(self) -> dict[str, Any]:
        """One optimizer step; returns its history record."""
        cfg = self.config
        s = self.step
        self.optimizer.lr = cfg.lr_at(s)
        t0 = time.perf_counter()
        x, y = self.data.batch_at(s, cfg.batch_size, cfg.seed)
        self.optimizer.zero_grad()
        loss = self.model.loss(x, y)
        value = float(loss.item())
        ag.backward(loss)
        norm = None
        skipped = not math.isfinite(value)
        if cfg.grad_clip > 0:
            norm = float(optim.clip_grad_norm(self.params, float(cfg.grad_clip)))
            skipped = skipped or not math.isfinite(norm)
        if not skipped:
            self.optimizer.step()
        self.optimizer.zero_grad()
        dt = time.perf_counter() - t0
        self.step = s + 1
        return {
            "step": self.step,
            "loss": value,
            "lr": float(self.optimizer.lr),
            "grad_norm": norm,
            "tokens": int(np.count_nonzero(y != IGNORE_INDEX)),
            "tokens_per_s": x.size / dt if dt > 0 else float("inf"),
            "skipped": skipped,
        }

    def train(self) -> list[dict[str, Any]]:
        """Runs the remaining steps; returns :attr:`history`."""
        cfg = self.config
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=cfg.steps, initial=self.step, desc="finetune", unit="step", file=sys.stderr
            )
        try:
            while self.step < cfg.steps:
                rec = self.train_step()
                self.history.append(rec)
                if bar is not None:
                    bar.set_postfix(
                        {
                            "loss": f"{rec['loss']:.4f}",
                            "tok/s": f"{rec['tokens_per_s']:.0f}",
                            "lr": f"{rec['lr']:.2e}",
                        },
                        refresh=False,
                    )
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return self.history

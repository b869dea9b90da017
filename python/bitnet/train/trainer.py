"""The training loop: AdamW on the tape, LR / weight-decay schedules, evaluation, checkpoints.

::

    from bitnet.train import BitNetForTraining, TrainModelConfig
    from bitnet.train.data import TokenDataset
    from bitnet.train.trainer import TrainConfig, Trainer

    model = BitNetForTraining(TrainModelConfig(...), seed=0)
    trainer = Trainer(model, TokenDataset(train_ids, 256), TokenDataset(val_ids, 256),
                      TrainConfig(steps=1000, batch_size=8, seq_len=256, out_dir="run"),
                      tokenizer=tok)
    history = trainer.train()          # checkpoints in run/checkpoint-<step>/
    trainer.export_gguf("run/model.gguf")

    # later, or after a crash: the same result as one uninterrupted run, bit for bit
    trainer = Trainer(BitNetForTraining(cfg), train, val, config).resume("run")
    trainer.train()

One optimizer step ``s`` (0-based) does:

1. the schedule's learning rate (and, for ``two_stage``, weight decay) for step ``s``, and
   ``model.lambda_ = min(1, s / lambda_warmup_steps)`` when the BitLinear warm-up is on;
2. batch ``s`` of the shuffled training windows: ``batch_size * grad_accum`` sequences
   (:meth:`TokenDataset.batch_at`), split into ``grad_accum`` micro-batches of ``batch_size``;
   each micro-batch's mean loss is scaled by ``1 / grad_accum`` and back-propagated, so the
   accumulated gradient is the mean over all ``batch_size * grad_accum * seq_len`` tokens: the
   same as one batch of ``batch_size * grad_accum`` (up to fp32 rounding);
3. clipping by global L2 norm (``grad_clip > 0``); a non-finite gradient norm skips the update
   (recorded as ``skipped`` in the history);
4. ``AdamW.step()`` (weight decay on 2-D matrices only: ``model.decay_mask()``).

Everything a step depends on is a function of ``(config, s)`` plus the weights and AdamW's
moments, which checkpoints store exactly (fp32), so a resumed run reproduces the uninterrupted
one bit for bit (same thread count: the kernels' results do not depend on it, but keep it
equal to be safe).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import autograd as ag
from .. import optim
from . import checkpoint as ckpt
from .data import TokenDataset

__all__ = ["SCHEDULES", "TrainConfig", "Trainer"]

SCHEDULES = ("cosine", "linear", "two_stage")
# Fields that decide which batch a step sees: a resume with other values changes the data order.
_DATA_FIELDS = ("seed", "batch_size", "seq_len", "grad_accum")


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters of a training run.

    Attributes:
        steps: optimizer steps in the run (the schedules span them).
        batch_size: sequences per micro-batch; one step sees ``batch_size * grad_accum``.
        seq_len: tokens per sequence.
        lr: peak learning rate (after warm-up).
        min_lr: final learning rate of the decay.
        warmup: linear warm-up steps (``lr * (s + 1) / warmup`` at step ``s``).
        weight_decay: AdamW's decoupled weight decay on matrices (norms are never decayed).
        betas, eps: AdamW's moment coefficients and denominator epsilon.
        grad_clip: max global L2 norm of the gradients (0: no clipping).
        grad_accum: micro-batches accumulated per optimizer step.
        schedule: ``cosine`` / ``linear`` (warm-up then decay to ``min_lr``, constant weight
            decay) or ``two_stage`` (:class:`bitnet.optim.TwoStageSchedule`: BitNet b1.58
            2B4T's high-LR first stage with cosine weight decay, then a drop to ``stage2_lr``
            and no weight decay after ``two_stage_split`` of the run).
        stage2_lr: ``two_stage``'s learning rate right after the split (default ``0.4 * lr``,
            below stage 1's value at the split, about ``lr / 2``).
        two_stage_split: fraction of the run where ``two_stage`` switches, in (0, 1].
        lambda_warmup_steps: 0: BitLinear fully quantized from the start; else ``lambda_``
            ramps linearly from 0 (full precision) to 1 (ternary) over that many steps.
        eval_every: evaluate on the validation data every that many steps (0: only at the
            end); needs validation data.
        eval_batches: at most that many validation batches (of ``batch_size``) per evaluation.
        save_every: checkpoint every that many steps (0: only at the end); needs ``out_dir``.
        out_dir: where checkpoints go (``<out_dir>/checkpoint-<step>/``); None: no checkpoints.
        seed: data order seed (>= 0); the model's init seed is separate.
        threads: core thread count for the run (None: leave as is).
        log_every: write a log line every that many steps (0: none); the progress bar shows
            loss, tokens/s and lr at every step.
        progress: show a tqdm progress bar (on stderr).
    """

    steps: int = 1000
    batch_size: int = 8
    seq_len: int = 256
    lr: float = 1.5e-3
    min_lr: float = 0.0
    warmup: int = 0
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0
    grad_accum: int = 1
    schedule: str = "cosine"
    stage2_lr: float | None = None
    two_stage_split: float = 0.5
    lambda_warmup_steps: int = 0
    eval_every: int = 0
    eval_batches: int = 8
    save_every: int = 0
    out_dir: str | None = None
    seed: int = 0
    threads: int | None = None
    log_every: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        def need(cond: bool, what: str) -> None:
            if not cond:
                raise ValueError(f"TrainConfig: {what}")

        def is_int(v: Any) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        for name in ("steps", "batch_size", "seq_len", "grad_accum"):
            v = getattr(self, name)
            need(is_int(v) and v >= 1, f"{name} must be an integer >= 1, got {v!r}")
        for name in (
            "warmup",
            "lambda_warmup_steps",
            "eval_every",
            "eval_batches",
            "save_every",
            "seed",
            "log_every",
        ):
            v = getattr(self, name)
            need(is_int(v) and v >= 0, f"{name} must be an integer >= 0, got {v!r}")
        for name in ("lr", "min_lr", "weight_decay", "eps", "grad_clip"):
            v = getattr(self, name)
            need(
                isinstance(v, (int, float)) and math.isfinite(v) and v >= 0,
                f"{name} must be a finite number >= 0, got {v!r}",
            )
        need(self.warmup <= self.steps, f"warmup {self.warmup} exceeds steps {self.steps}")
        need(
            self.schedule in SCHEDULES,
            f"schedule must be one of {SCHEDULES}, got {self.schedule!r}",
        )
        b = tuple(self.betas)
        need(
            len(b) == 2 and all(0.0 <= float(x) < 1.0 for x in b),
            f"betas must be two numbers in [0, 1), got {self.betas!r}",
        )
        self.betas = (float(b[0]), float(b[1]))
        need(
            0.0 < float(self.two_stage_split) <= 1.0,
            f"two_stage_split must be in (0, 1], got {self.two_stage_split!r}",
        )
        if self.stage2_lr is not None:
            need(
                math.isfinite(self.stage2_lr) and self.stage2_lr >= 0,
                f"stage2_lr must be a finite number >= 0, got {self.stage2_lr!r}",
            )
        need(
            self.threads is None or (is_int(self.threads) and self.threads >= 1),
            f"threads must be None or an integer >= 1, got {self.threads!r}",
        )
        if self.out_dir is not None:
            self.out_dir = os.fspath(self.out_dir)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (``from_dict`` reads it back)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config of a :meth:`to_dict` dict; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "betas" in kw:
            kw["betas"] = tuple(kw["betas"])
        return cls(**kw)

    def schedule_fn(self) -> Callable[[int], tuple[float, float]]:
        """``step -> (lr, weight_decay)`` for the 0-based optimizer step (bitnet.optim's
        :func:`~bitnet.optim.warmup_cosine`, :func:`~bitnet.optim.warmup_linear` or
        :class:`~bitnet.optim.TwoStageSchedule`)."""
        steps, warmup, lr, min_lr, wd = (
            self.steps,
            self.warmup,
            float(self.lr),
            float(self.min_lr),
            float(self.weight_decay),
        )
        if self.schedule == "two_stage":
            stage2 = 0.4 * lr if self.stage2_lr is None else float(self.stage2_lr)
            return optim.TwoStageSchedule(
                total=steps,
                warmup=warmup,
                peak_lr=lr,
                stage2_lr=stage2,
                weight_decay=wd,
                split=float(self.two_stage_split),
                min_lr=min_lr,
                decay="cosine",
                wd_decay="cosine",
            )
        f = optim.warmup_cosine if self.schedule == "cosine" else optim.warmup_linear

        def fn(step: int) -> tuple[float, float]:
            return f(step, steps, warmup, lr, min_lr), wd

        return fn


class Trainer:
    """Trains a :class:`~bitnet.train.model.BitNetForTraining` on a :class:`TokenDataset`.

    Args:
        model: the model (its parameters are updated in place).
        train_data: training windows; their ``seq_len`` must equal ``config.seq_len``.
        val_data: validation windows, or None (no evaluation).
        config: the :class:`TrainConfig`.
        tokenizer: a ``tokenizers.Tokenizer`` saved with every checkpoint and carried into the
            GGUF file by :meth:`export_gguf`; None: none.

    Attributes:
        step: optimizer steps done so far.
        history: one dict per step: ``step`` (1-based: after the update), ``loss`` (mean
            training loss of the step's batch, before the update), ``lr``, ``weight_decay``,
            ``lambda``, ``grad_norm`` (before clipping; None without clipping), ``tokens_per_s``,
            ``skipped`` (a non-finite gradient), and ``eval_loss`` / ``eval_ppl`` on
            evaluation steps.
        optimizer: the ``AdamW`` (``bitnet.optim.AdamW``).

    Raises:
        ValueError: a dataset whose windows do not match ``config.seq_len``, token ids outside
            the model's vocabulary, or a batch larger than the data.
    """

    def __init__(
        self,
        model: Any,
        train_data: TokenDataset,
        val_data: TokenDataset | None,
        config: TrainConfig,
        tokenizer: Any = None,
    ) -> None:
        self.model = model
        self.train_data = train_data
        self.val_data = val_data
        self.config = config
        self.tokenizer = tokenizer
        vocab = int(model.config.vocab_size)
        for what, data in (("train_data", train_data), ("val_data", val_data)):
            if data is None:
                continue
            if not isinstance(data, TokenDataset):
                raise TypeError(
                    f"Trainer: {what} must be a TokenDataset, got {type(data).__name__}"
                )
            if data.seq_len != config.seq_len:
                raise ValueError(
                    f"Trainer: {what} has seq_len {data.seq_len}, the config {config.seq_len}"
                )
            if data.max_id >= vocab:
                raise ValueError(
                    f"Trainer: {what} holds token id {data.max_id}, outside the model's "
                    f"vocab_size {vocab}; use a tokenizer that fits the model (or a larger "
                    "vocab_size)"
                )
        if train_data is None:
            raise TypeError("Trainer: train_data is required")
        # Raises a clear error now if one step's batch does not fit the data.
        train_data.batches_per_epoch(config.batch_size * config.grad_accum)
        if tokenizer is not None and tokenizer.get_vocab_size() > vocab:
            raise ValueError(
                f"Trainer: the tokenizer has {tokenizer.get_vocab_size()} tokens, more than "
                f"the model's vocab_size {vocab}"
            )
        if config.threads is not None:
            from .. import ops

            ops.set_num_threads(int(config.threads))
        self.param_names = [n for n, _ in model.named_parameters()]
        self.params = model.parameters()
        self.schedule = config.schedule_fn()
        lr0, wd0 = self.schedule(0)
        self.optimizer = optim.AdamW(
            self.params,
            lr=lr0,
            betas=config.betas,
            eps=float(config.eps),
            weight_decay=wd0,
            decay_mask=model.decay_mask(),
        )
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.last_checkpoint: Path | None = None

    # ------------------------------------------------------------------ schedule
    def lambda_at(self, step: int) -> float:
        """BitLinear ``lambda_`` for the 0-based step: ``min(1, step / lambda_warmup_steps)``,
        or 1 when the warm-up is off."""
        n = self.config.lambda_warmup_steps
        return 1.0 if n <= 0 else min(1.0, step / n)

    # ------------------------------------------------------------------ steps
    def _train_step(self) -> dict[str, Any]:
        cfg = self.config
        s = self.step
        lr, wd = self.schedule(s)
        self.optimizer.lr = lr
        self.optimizer.weight_decay = wd
        lam = self.lambda_at(s)
        self.model.lambda_ = lam
        micro, accum = cfg.batch_size, cfg.grad_accum
        t0 = time.perf_counter()
        inputs, targets = self.train_data.batch_at(s, micro * accum, cfg.seed)
        total = 0.0
        self.optimizer.zero_grad()
        for j in range(accum):
            loss = self.model.loss(
                inputs[j * micro : (j + 1) * micro], targets[j * micro : (j + 1) * micro]
            )
            total += float(loss.item())
            if accum > 1:
                loss = ag.scale(loss, 1.0 / accum)
            ag.backward(loss)
        norm: float | None = None
        skipped = False
        if cfg.grad_clip > 0:
            norm = float(optim.clip_grad_norm(self.params, float(cfg.grad_clip)))
            skipped = not math.isfinite(norm)
        if not skipped and not math.isfinite(total):
            skipped = True
        if not skipped:
            self.optimizer.step()
        self.optimizer.zero_grad()
        dt = time.perf_counter() - t0
        self.step = s + 1
        return {
            "step": self.step,
            "loss": total / accum,
            "lr": float(self.optimizer.lr),  # read back: what the update used
            "weight_decay": float(self.optimizer.weight_decay),
            "lambda": float(self.model.lambda_),
            "grad_norm": norm,
            "tokens_per_s": micro * accum * cfg.seq_len / dt if dt > 0 else float("inf"),
            "skipped": skipped,
        }

    def evaluate(self, max_batches: int | None = None) -> dict[str, float]:
        """Mean loss (per token) and perplexity over the first ``max_batches`` (default
        ``config.eval_batches``; 0: all) validation batches, in stream order, under no_grad at
        the current ``lambda_``.

        Raises:
            ValueError: no validation data.
        """
        if self.val_data is None:
            raise ValueError("Trainer.evaluate: no validation data")
        n = self.config.eval_batches if max_batches is None else max_batches
        total, count = 0.0, 0
        with ag.no_grad():
            for x, y in self.val_data.sequential_batches(self.config.batch_size, n or None):
                total += float(self.model.loss(x, y).item()) * y.size
                count += y.size
        ag.clear_tape()
        loss = total / count
        return {"eval_loss": loss, "eval_ppl": math.exp(loss) if loss < 700 else float("inf")}

    def train(self, until: int | None = None) -> list[dict[str, Any]]:
        """Runs optimizer steps from :attr:`step` up to ``until`` (default ``config.steps``).

        Evaluates every ``eval_every`` steps and at the last step of the run (with validation
        data), checkpoints every ``save_every`` steps, at the last step of the run and where
        ``until`` stops it early (with ``out_dir``). Returns :attr:`history` (every step so far,
        including those before a resume).
        """
        cfg = self.config
        end = cfg.steps if until is None else min(int(until), cfg.steps)
        if end <= self.step:
            return self.history
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=cfg.steps, initial=self.step, desc="train", unit="step", file=sys.stderr
            )
        try:
            while self.step < end:
                rec = self._train_step()
                s = self.step
                final = s == cfg.steps
                if self.val_data is not None and (
                    final or (cfg.eval_every > 0 and s % cfg.eval_every == 0)
                ):
                    rec.update(self.evaluate())
                self.history.append(rec)
                if bar is not None:
                    post = {
                        "loss": f"{rec['loss']:.4f}",
                        "tok/s": f"{rec['tokens_per_s']:.0f}",
                        "lr": f"{rec['lr']:.2e}",
                    }
                    if "eval_loss" in rec:
                        post["eval"] = f"{rec['eval_loss']:.4f}"
                    bar.set_postfix(post, refresh=False)
                    bar.update(1)
                if cfg.log_every > 0 and (s % cfg.log_every == 0 or final or "eval_loss" in rec):
                    self._log(rec, bar)
                if rec["skipped"]:
                    warnings.warn(
                        f"step {s}: non-finite loss or gradient norm; update skipped",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                if cfg.out_dir is not None and (
                    final or s == end or (cfg.save_every > 0 and s % cfg.save_every == 0)
                ):
                    self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        return self.history

    def _log(self, rec: dict[str, Any], bar: Any) -> None:
        line = (
            f"step {rec['step']}/{self.config.steps}  loss {rec['loss']:.4f}  "
            f"lr {rec['lr']:.3e}  tok/s {rec['tokens_per_s']:.0f}"
        )
        if "eval_loss" in rec:
            line += f"  eval_loss {rec['eval_loss']:.4f}  eval_ppl {rec['eval_ppl']:.2f}"
        if bar is not None:
            bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ checkpoints
    def _trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "train_config": self.config.to_dict(),
            "data": {"seed": self.config.seed, "next_batch": self.step},
            "lambda": float(self.model.lambda_),
            "optimizer": {
                "type": "AdamW",
                "lr": float(self.optimizer.lr),
                "weight_decay": float(self.optimizer.weight_decay),
                "betas": list(self.optimizer.betas),
                "eps": float(self.optimizer.eps),
            },
            "history": self.history,
        }

    def save_checkpoint(self, directory: str | os.PathLike[str] | None = None) -> Path:
        """Writes a checkpoint of the current state (default ``<out_dir>/checkpoint-<step>``;
        see :mod:`bitnet.train.checkpoint`) and returns its path.

        Raises:
            ValueError: no directory given and no ``out_dir`` in the config.
        """
        if directory is None:
            if self.config.out_dir is None:
                raise ValueError("Trainer.save_checkpoint: no directory and no config.out_dir")
            directory = Path(self.config.out_dir) / f"checkpoint-{self.step}"
        path = ckpt.save_checkpoint(
            directory,
            model_state=self.model.state_dict(),
            model_config=self.model.config.to_hf_config(),
            optimizer_state=self.optimizer.get_state(),
            param_names=self.param_names,
            trainer_state=self._trainer_state(),
            tokenizer=self.tokenizer,
        )
        self.last_checkpoint = path
        return path

    def resume(self, path: str | os.PathLike[str]) -> Trainer:
        """Restores the weights, AdamW's moments and step counts, the step, ``lambda_`` and the
        history from a checkpoint directory (or a run's out_dir: its latest checkpoint).
        The data position is the step, so :meth:`train` continues exactly where the saved run
        was. Returns ``self``.

        Raises:
            FileNotFoundError: no such checkpoint.
            CheckpointError: a missing or corrupt file, or a checkpoint of another model
                (different config or parameters); nothing is changed then.
        """
        where = ckpt.resolve_checkpoint(path)
        ckpt.read_trainer_state(where)  # a foreign / corrupt directory fails first
        self._check_model_config(where)
        shapes = [tuple(p.shape) for p in self.params]
        state, weights, opt_state = ckpt.load_checkpoint(where, self.param_names, shapes)
        try:
            # Checks every tensor before writing any: a mismatch leaves the model untouched.
            self.model.load_state_dict(weights, strict=True)
        except ValueError as e:
            raise ckpt.CheckpointError(f"{where / ckpt.MODEL_FILE}: {e}") from None
        self.optimizer.set_state(opt_state)
        saved = state.get("train_config") or {}
        changed = [k for k in _DATA_FIELDS if k in saved and saved[k] != getattr(self.config, k)]
        if changed:
            warnings.warn(
                f"resuming {where} with a different {', '.join(changed)} than it was trained "
                "with: the data order will differ from the original run",
                RuntimeWarning,
                stacklevel=2,
            )
        self.step = int(state["step"])
        self.history = list(state.get("history") or [])
        self.model.lambda_ = float(state.get("lambda", self.lambda_at(self.step)))
        self.last_checkpoint = where
        return self

    def _check_model_config(self, where: Path) -> None:
        import json

        from .config import TrainModelConfig

        try:
            d = json.loads((where / ckpt.CONFIG_FILE).read_text(encoding="utf-8"))
            saved = TrainModelConfig.from_hf_config(d)
        except FileNotFoundError:
            raise ckpt.CheckpointError(f"{where / ckpt.CONFIG_FILE}: missing") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise ckpt.CheckpointError(f"{where / ckpt.CONFIG_FILE}: invalid ({e})") from None
        if saved != self.model.config:
            mine = self.model.config
            diff = [
                f"{f.name} {getattr(saved, f.name)!r} (model: {getattr(mine, f.name)!r})"
                for f in dataclasses.fields(saved)
                if getattr(saved, f.name) != getattr(mine, f.name)
            ]
            raise ckpt.CheckpointError(
                f"{where}: the checkpoint is of a different model: " + "; ".join(diff)
            )

    # ------------------------------------------------------------------ export
    def export_gguf(
        self,
        path: str | os.PathLike[str],
        weight_type: str = "i2_s",
        embed_type: str = "f16",
        *,
        progress: bool = False,
    ) -> Path:
        """Converts the current weights to a GGUF file (with the tokenizer, when the trainer has
        one) via ``save_pretrained`` into a temporary directory and :func:`bitnet.convert.convert`.

        Args:
            path: the ``.gguf`` file to write (its directory must exist).
            weight_type: ``i2_s``, ``tq1_0``, ``tq2_0``, ``f16`` or ``f32`` (i2_s needs
                hidden / intermediate sizes that are multiples of 128, tq* of 256).
            embed_type: ``f16``, ``f32``, ``q8_0`` or ``q4_0``.
            progress: show the converter's progress bar.

        Returns:
            The written path.
        """
        from ..convert import ConversionWarning, convert

        dst = Path(os.path.expanduser(os.fspath(path)))
        with tempfile.TemporaryDirectory(prefix="bitnet-export-") as tmp:
            src = Path(tmp) / (dst.stem or "model")  # the directory name becomes general.name
            self.model.save_pretrained(src)
            if self.tokenizer is not None:
                from .data import save_tokenizer

                save_tokenizer(self.tokenizer, src)
            with warnings.catch_warnings():
                if self.tokenizer is None:  # "no tokenizer.json": expected here
                    warnings.simplefilter("ignore", ConversionWarning)
                out = convert(src, dst, weight_type, embed_type, progress=progress, report=False)
        return Path(out)

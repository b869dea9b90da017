"""Next-token sampling: penalties, temperature, top-k, top-p, min-p and a seeded, portable draw.

The sampler runs in C++ (``bitnet._ext.Sampler``, see ``cpp/include/bitnet/sampler.h`` for the
exact arithmetic). One :class:`Sampler` per generated sequence::

    from bitnet.sampling import Sampler, SamplingParams

    sampler = Sampler(SamplingParams(temperature=0.8, top_k=40, top_p=0.95, seed=1), vocab_size)
    token = sampler.sample(logits, history=prompt_ids + generated_ids)

Pipeline (HF transformers' order): repetition penalty (CTRL / HF, then OpenAI frequency and
presence penalties, over the last ``penalty_last_n`` ids of the history) -> temperature ->
top-k -> top-p -> min-p -> softmax renormalised over the kept tokens -> draw. ``temperature <= 0``
is greedy decoding (argmax, ties to the lowest id). top-p and min-p follow HF's
``TopPLogitsWarper`` / ``MinPLogitsWarper``; top-k keeps exactly k tokens (ties at the boundary go
to the lowest ids, where HF keeps every tied token).

The draw uses xoshiro256** seeded with SplitMix64 and an exp() written with IEEE +, -, * only,
so a seed gives the same tokens on every platform.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _ext

__all__ = ["Sampler", "SamplingParams"]

_INT32_MAX = 2**31 - 1


def _check_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"SamplingParams.{name} must be a number, got {value!r}")
    f = float(value)
    if not math.isfinite(f):
        raise ValueError(f"SamplingParams.{name} must be finite, got {value!r}")
    if abs(f) > float(np.finfo(np.float32).max):
        raise ValueError(f"SamplingParams.{name} = {value!r} does not fit a float32")
    return f


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"SamplingParams.{name} must be an integer, got {value!r}")
    i = int(value)
    if not lo <= i <= hi:
        raise ValueError(f"SamplingParams.{name} must be in [{lo}, {hi}], got {i}")
    return i


@dataclass(frozen=True)
class SamplingParams:
    """Settings of a :class:`Sampler` (validated on construction; floats are used as float32).

    Attributes:
        temperature: divides the logits; ``<= 0`` means greedy (argmax, no randomness).
        top_k: keep the k most likely tokens (ties: lowest ids); 0 turns it off.
        top_p: nucleus sampling in (0, 1]: keep the smallest most-likely set whose probability
            reaches ``top_p`` (HF semantics); 1 turns it off.
        min_p: in [0, 1]: keep tokens with ``p >= min_p * p_max``; 0 turns it off.
        repetition_penalty: > 0; for each distinct id in the penalty window, a positive logit
            is divided by it and a negative one multiplied (CTRL / HF); 1 turns it off.
        frequency_penalty: subtracted ``count`` times from the logit of an id seen ``count``
            times in the window (OpenAI).
        presence_penalty: subtracted once from the logit of every id in the window (OpenAI).
        penalty_last_n: how many of the latest history ids the penalties see; -1 all, 0 none.
        seed: the RNG seed, in [0, 2**64).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "temperature",
            "top_p",
            "min_p",
            "repetition_penalty",
            "frequency_penalty",
            "presence_penalty",
        ):
            object.__setattr__(self, name, _check_float(name, getattr(self, name)))
        object.__setattr__(self, "top_k", _check_int("top_k", self.top_k, 0, _INT32_MAX))
        last_n = _check_int("penalty_last_n", self.penalty_last_n, -1, _INT32_MAX)
        object.__setattr__(self, "penalty_last_n", last_n)
        object.__setattr__(self, "seed", _check_int("seed", self.seed, 0, 2**64 - 1))
        # The ranges (top_p in (0, 1], min_p in [0, 1], repetition_penalty > 0) are checked by
        # the C++ core, on the float32 values it will use; its message names the field.
        _ext.validate_sampler_params(self._to_ext())

    @property
    def greedy(self) -> bool:
        """True when sampling is plain argmax (temperature <= 0)."""
        return self.temperature <= 0.0

    def _to_ext(self) -> Any:
        p = _ext.SamplerParams()
        p.temperature = self.temperature
        p.top_k = self.top_k
        p.top_p = self.top_p
        p.min_p = self.min_p
        p.repetition_penalty = self.repetition_penalty
        p.frequency_penalty = self.frequency_penalty
        p.presence_penalty = self.presence_penalty
        p.penalty_last_n = self.penalty_last_n
        p.seed = self.seed
        return p


class Sampler:
    """Samples token ids for one sequence (owns its RNG; not shared between sequences).

    Args:
        params: the settings (None: ``SamplingParams()``, temperature 1 and nothing else).
        vocab_size: V, the length of every logits vector, in [1, 2**31).
    """

    def __init__(self, params: SamplingParams | None, vocab_size: int) -> None:
        if params is None:
            params = SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
            raise TypeError(f"vocab_size must be an integer, got {vocab_size!r}")
        if not 1 <= int(vocab_size) <= _INT32_MAX:
            raise ValueError(f"vocab_size must be in [1, 2**31 - 1], got {vocab_size}")
        self.params = params
        self.vocab_size = int(vocab_size)
        self._impl = _ext.Sampler(params._to_ext(), self.vocab_size)

    def reseed(self, seed: int) -> None:
        """Restarts the random stream as if the sampler had been created with ``seed``."""
        self._impl.reseed(_check_int("seed", seed, 0, 2**64 - 1))

    def sample(self, logits: np.ndarray, history: Sequence[int] | np.ndarray = ()) -> int:
        """The next token id.

        Args:
            logits: float32 numpy array of shape ``(vocab_size,)``; ``-inf`` masks a token,
                NaN or ``+inf`` is an error.
            history: prompt + generated ids so far (oldest first); the penalties look at its
                last ``penalty_last_n`` ids.
        """
        return int(self._impl.sample(self._logits(logits), self._history(history)))

    def distribution(
        self, logits: np.ndarray, history: Sequence[int] | np.ndarray = ()
    ) -> np.ndarray:
        """The probabilities :meth:`sample` draws from, float32 of shape ``(vocab_size,)``:
        zero for removed tokens, one-hot at the argmax when greedy. Consumes no randomness."""
        return self._impl.distribution(self._logits(logits), self._history(history))

    def _logits(self, logits: Any) -> np.ndarray:
        if not isinstance(logits, np.ndarray):
            raise TypeError(f"logits must be a numpy float32 array, got {type(logits).__name__}")
        if logits.dtype != np.float32:
            raise ValueError(f"logits must be float32, got {logits.dtype}")
        if logits.shape != (self.vocab_size,):
            raise ValueError(
                f"logits must have shape ({self.vocab_size},) (the vocabulary size), "
                f"got {logits.shape}"
            )
        return np.ascontiguousarray(logits)

    @staticmethod
    def _history(history: Any) -> np.ndarray:
        if isinstance(history, np.ndarray) and history.dtype == np.int32 and history.ndim == 1:
            return np.ascontiguousarray(history)
        h = np.asarray(history)
        if h.size == 0:
            return np.zeros(0, dtype=np.int32)
        if h.ndim != 1:
            raise ValueError(f"history must be 1-D, got shape {h.shape}")
        if h.dtype == np.bool_ or not np.issubdtype(h.dtype, np.integer):
            raise ValueError(f"history must hold integer token ids, got dtype {h.dtype}")
        bad = np.flatnonzero((h < 0) | (h > _INT32_MAX))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"history[{i}] = {int(h[i])} is not a token id")
        return h.astype(np.int32)

"""The generation loop: prompt ids -> prefill -> sample -> decode, as text pieces.

The pieces, each usable on its own:

* :class:`KVSlots` keeps the C++ model's sequence slots (KV caches) and the token ids each one
  holds, so a prompt that extends what a slot already holds is evaluated from where they part
  (``reuse=True``, used by chat).
* :class:`StopStrings` finds stop strings in streamed text, also across token boundaries, and
  holds back text that could still turn into one, so nothing after (or part of) a stop string
  is ever emitted.
* :class:`SequenceState` is one generated sequence: its sampler and penalty history, stop ids,
  incremental decoder, stop strings and token budget.
* :func:`stream_one` runs one sequence and yields its text pieces; :func:`run_batch` runs many
  over the model's ``n_seq`` slots, decoding one token of every active sequence per batched
  evaluation (``eval_batch``) and refilling a slot with the next prompt when one finishes.

A sequence ends at a stop id (EOS / end-of-turn, or an id in ``stop``; the stop token is not part
of the text), at a stop string (the text is cut where it starts), after ``max_new_tokens``
tokens, or when its slot's context is full (the text so far is returned: the documented policy is
to stop, never to slide the window).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .tokenizer import StreamDecoder

__all__ = [
    "KVSlots",
    "SequenceState",
    "StopStrings",
    "TextStream",
    "run_batch",
    "split_stop",
    "stream_one",
]


def split_stop(stop: str | int | Sequence[str | int] | None) -> tuple[list[str], list[int]]:
    """``stop`` as (stop strings, stop token ids): a str, an int id, or a list mixing both.

    Raises:
        ValueError: an empty stop string or a negative id. TypeError: anything else.
    """
    if stop is None:
        return [], []
    items = [stop] if isinstance(stop, (str, int)) else stop
    if isinstance(items, (bytes, dict)) or not isinstance(items, Sequence):
        raise TypeError(f"stop must be a str, an int token id or a list of them, got {stop!r}")
    strings: list[str] = []
    ids: list[int] = []
    for i, s in enumerate(items):
        if isinstance(s, str):
            if not s:
                raise ValueError(f"stop[{i}] is an empty string")
            if s not in strings:
                strings.append(s)
        elif isinstance(s, (int, np.integer)) and not isinstance(s, bool):
            if s < 0:
                raise ValueError(f"stop[{i}] = {s} is not a token id")
            ids.append(int(s))
        else:
            raise TypeError(f"stop[{i}] must be a str or an int token id, got {s!r}")
    return strings, ids


class StopStrings:
    """Stop-string matching over streamed text.

    :meth:`feed` returns the text that can be emitted: everything before the earliest stop
    string once one appears, else everything but the longest tail that is a prefix of some stop
    string (it is held until the next piece shows whether the stop string follows). Text handed
    out never contains or overlaps a stop string: a stop string can only start inside the held
    tail, so only that tail is searched.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = list(stops)
        self.stopped = False
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Adds ``text``; returns (text safe to emit, whether a stop string was reached)."""
        if self.stopped:
            return "", True
        if not self.stops:
            return text, False
        held = self._held + text
        cut = -1
        for s in self.stops:
            j = held.find(s)
            if j >= 0 and (cut < 0 or j < cut):
                cut = j
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return held[:cut], True
        keep = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(held)), keep, -1):
                if held.endswith(s[:k]):
                    keep = k
                    break
        self._held = held[len(held) - keep :]
        return held[: len(held) - keep], False

    def flush(self) -> str:
        """The held tail, at the end of generation (it never became a stop string)."""
        out, self._held = self._held, ""
        return "" if self.stopped else out


class KVSlots:
    """The model's sequence slots and the token ids whose keys/values each one holds.

    Args:
        engine: a ``bitnet._ext.Model`` (``eval``, ``eval_batch``, ``truncate``, ``reset``).
        n_seq: number of slots.
    """

    def __init__(self, engine: Any, n_seq: int) -> None:
        self.engine = engine
        self.tokens: list[list[int]] = [[] for _ in range(n_seq)]

    def length(self, seq: int) -> int:
        """Tokens held by slot ``seq``."""
        return len(self.tokens[seq])

    def clear(self, seq: int = -1) -> None:
        """Empties slot ``seq`` (-1: every slot)."""
        self.engine.reset(seq)
        for s in range(len(self.tokens)) if seq < 0 else (seq,):
            self.tokens[s] = []

    def prefill(self, seq: int, ids: Sequence[int], reuse: bool = False) -> np.ndarray:
        """Makes slot ``seq`` hold exactly ``ids``; returns the last token's logits float32 [V].

        Without ``reuse`` the slot is emptied and ``ids`` evaluated from scratch; with it, the
        ids the slot already holds in common with ``ids`` are kept (at most ``len(ids) - 1``:
        the last one is evaluated again for its logits).
        """
        held = self.tokens[seq]
        keep = 0
        if reuse:
            n = min(len(held), len(ids) - 1)
            while keep < n and held[keep] == ids[keep]:
                keep += 1
        self.engine.truncate(seq, keep)
        self.tokens[seq] = held[:keep]
        logits = self.engine.eval(np.asarray(ids[keep:], dtype=np.int32), seq)
        self.tokens[seq] = [int(i) for i in ids]
        return logits[0]

    def append(self, seq: int, ids: Sequence[int], all_logits: bool = False) -> np.ndarray:
        """Appends ``ids`` to slot ``seq``; returns float32 logits [len(ids), V] (all_logits)
        or [1, V] (the last token's)."""
        logits = self.engine.eval(np.asarray(ids, dtype=np.int32), seq, all_logits)
        self.tokens[seq].extend(int(i) for i in ids)
        return logits

    def decode(self, seq: int, token: int) -> np.ndarray:
        """Appends one token to slot ``seq``; returns its logits float32 [V]."""
        logits = self.engine.eval(np.array([token], dtype=np.int32), seq)
        self.tokens[seq].append(int(token))
        return logits[0]

    def decode_batch(self, tokens: Sequence[int], seqs: Sequence[int]) -> np.ndarray:
        """Appends ``tokens[i]`` to slot ``seqs[i]`` for every i in one batched evaluation;
        returns logits float32 [B, V]."""
        logits = self.engine.eval_batch(
            np.asarray(tokens, dtype=np.int32), np.asarray(seqs, dtype=np.int32)
        )
        for t, s in zip(tokens, seqs, strict=True):
            self.tokens[s].append(int(t))
        return logits


class SequenceState:
    """One sequence being generated.

    Args:
        prompt_ids: the prompt (for the penalty window and the decoder's context).
        sampler: a :class:`bitnet.sampling.Sampler` (owns its seeded RNG).
        decoder: the incremental decoder, or None to produce no text (ids only).
        stop_ids: token ids that end the sequence (not included in the output).
        stop_strings: strings that end it (the text is cut where the first one starts).
        max_new_tokens: the token budget (>= 1).
    """

    def __init__(
        self,
        prompt_ids: Sequence[int],
        sampler: Any,
        decoder: StreamDecoder | None,
        stop_ids: Sequence[int],
        stop_strings: Sequence[str],
        max_new_tokens: int,
    ) -> None:
        self.prompt_ids = [int(i) for i in prompt_ids]
        self.sampler = sampler
        self.decoder = decoder
        self.stop_ids = frozenset(int(i) for i in stop_ids)
        self.stops = StopStrings(stop_strings)
        self.max_new_tokens = int(max_new_tokens)
        n = len(self.prompt_ids)
        self._history = np.zeros(n + self.max_new_tokens, dtype=np.int32)
        self._history[:n] = self.prompt_ids
        self._n = n
        self.generated: list[int] = []
        self.pieces: list[str] = []
        self.finish_reason: str | None = None  # "stop", "length" or "context"

    @property
    def text(self) -> str:
        """The text produced so far."""
        return "".join(self.pieces)

    def sample(self, logits: np.ndarray) -> int:
        """The next token id from this step's logits [V]."""
        return int(self.sampler.sample(logits, self._history[: self._n]))

    def _emit(self, text: str) -> str:
        out, hit = self.stops.feed(text)
        if hit:
            self.finish_reason = "stop"
        if out:
            self.pieces.append(out)
        return out

    def _close(self, reason: str) -> str:
        """Flushes decoder and stop matcher at the end; returns the final text."""
        out = ""
        if self.decoder is not None and not self.stops.stopped:
            out = self._emit(self.decoder.flush())
        if not self.stops.stopped:
            tail = self.stops.flush()
            if tail:
                self.pieces.append(tail)
            out += tail
        if self.finish_reason is None:
            self.finish_reason = reason
        return out

    def accept(self, token: int) -> tuple[str, bool]:
        """Takes a sampled token; returns (text to emit now, whether the sequence is done)."""
        if token in self.stop_ids:
            return self._close("stop"), True
        self.generated.append(int(token))
        self._history[self._n] = token
        self._n += 1
        out = ""
        if self.decoder is not None:
            out = self._emit(self.decoder.push(token))
            if self.stops.stopped:
                return out, True
        if len(self.generated) >= self.max_new_tokens:
            return out + self._close("length"), True
        return out, False

    def end_of_context(self) -> str:
        """Ends the sequence because its slot is full; returns the final text."""
        return self._close("context")


class TextStream(Iterator[str]):
    """An iterator of generated text pieces that also tells what was generated.

    Attributes (complete once the iterator is exhausted):
        token_ids: the generated token ids (stop token excluded).
        finish_reason: ``"stop"`` (stop token or string), ``"length"`` (max_new_tokens) or
            ``"context"`` (the context filled up); None while running.
        prompt_ids: the prompt's token ids.
    """

    def __init__(self, pieces: Iterator[str], state: SequenceState) -> None:
        self._pieces = pieces
        self._state = state

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stops the generation early (frees the model for the next one)."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

    @property
    def token_ids(self) -> list[int]:
        return list(self._state.generated)

    @property
    def prompt_ids(self) -> list[int]:
        return list(self._state.prompt_ids)

    @property
    def finish_reason(self) -> str | None:
        return self._state.finish_reason


def stream_one(
    slots: KVSlots,
    seq: int,
    state: SequenceState,
    n_ctx: int,
    reuse: bool = False,
) -> Iterator[str]:
    """Generates ``state`` in slot ``seq`` and yields its non-empty text pieces.

    The prompt must fit the context (``len(prompt) <= n_ctx``; the caller checks it, with a
    clear message). The prompt is evaluated in one call (the engine runs it as GEMMs), then one
    token per step.
    """
    if state.max_new_tokens < 1:
        state.finish_reason = "length"
        return
    logits = slots.prefill(seq, state.prompt_ids, reuse)
    while True:
        piece, done = state.accept(state.sample(logits))
        if piece:
            yield piece
        if done:
            return
        if slots.length(seq) >= n_ctx:
            tail = state.end_of_context()
            if tail:
                yield tail
            return
        logits = slots.decode(seq, state.generated[-1])


def run_batch(slots: KVSlots, states: Sequence[SequenceState], n_ctx: int) -> None:
    """Generates every state to its end, using every slot of ``slots``.

    Prompts are prefilled one slot at a time; each step then samples one token for every
    active sequence and evaluates them together with ``eval_batch``. A finished sequence frees
    its slot for the next waiting prompt. A token's logits do not depend on how it was batched
    (the engine's contract), so each result equals running that state alone.
    """
    waiting = collections.deque(range(len(states)))
    free = collections.deque(range(len(slots.tokens)))
    active: dict[int, tuple[SequenceState, np.ndarray]] = {}

    def refill() -> None:
        while free and waiting:
            state = states[waiting.popleft()]
            if state.max_new_tokens < 1:
                state.finish_reason = "length"
                continue
            seq = free.popleft()
            active[seq] = (state, slots.prefill(seq, state.prompt_ids))

    refill()
    while active:
        tokens: list[int] = []
        seqs: list[int] = []
        for seq, (state, logits) in list(active.items()):
            _, done = state.accept(state.sample(logits))
            if not done and slots.length(seq) >= n_ctx:
                state.end_of_context()
                done = True
            if done:
                del active[seq]
                free.append(seq)
            else:
                tokens.append(state.generated[-1])
                seqs.append(seq)
        if tokens:
            rows = slots.decode_batch(tokens, seqs)
            for i, seq in enumerate(seqs):
                active[seq] = (active[seq][0], rows[i])
        refill()

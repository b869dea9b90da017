"""Instruction data for LoRA fine-tuning: JSONL records to ids / targets with the loss on the
responses only.

A JSONL file holds one record per line (blank lines are skipped), either

* ``{"prompt": "...", "response": "..."}``: a completion pair used verbatim (put any formatting
  you want into the prompt): ``[bos] prompt response [eos]``, the loss on ``response [eos]``;
* ``{"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}``: a
  conversation rendered with the tokenizer's chat template (``tokenizer.chat_template`` of the
  GGUF file / ``tokenizer_config.json``), or, when it has none, :data:`SIMPLE_TEMPLATE`::

      ### User:
      {content}

      ### Assistant:
      {content}{eos}

  The loss covers every assistant message: the text the template adds for it after the
  generation prompt (its content and end-of-turn marker), nothing of the system / user turns.

The rendered conversation is tokenized piece by piece (the prefix up to each assistant turn,
with ``add_generation_prompt=True``, then the turn), so the tokens before each answer are
exactly those :meth:`Tokenizer.apply_chat_template` + ``encode`` give at inference time.

Each example becomes ``inputs = s[:-1]`` and ``targets = s[1:]`` (next-token prediction) with
targets ``-100`` on prompt tokens; it is truncated to ``seq_len`` (from the right) and padded
with ``pad_id`` (targets ``-100``). Examples whose answer is cut off entirely are dropped (and
counted in :attr:`InstructionDataset.dropped`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..train.data import DataError

__all__ = [
    "IGNORE_INDEX",
    "SIMPLE_TEMPLATE",
    "DataError",
    "InstructionDataset",
    "encode_example",
    "load_instructions",
    "read_jsonl",
]

IGNORE_INDEX = -100

SIMPLE_TEMPLATE = (
    "{% for m in messages %}### {{ m['role'] | capitalize }}:\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n\n{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)
"""The chat template used when the tokenizer has none (Jinja, as transformers renders it)."""

_ROLES = ("system", "user", "assistant", "tool")


def read_jsonl(path: str | os.PathLike[str]) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of every non-blank line of a JSONL instruction file, each
    validated (prompt/response strings, or a messages list of role/content strings with at
    least one assistant message).

    Raises:
        FileNotFoundError: no such file. DataError: bad JSON or a malformed record, naming the
            file and line; an empty file.
    """
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    out: list[tuple[int, dict[str, Any]]] = []
    with open(p, encoding="utf-8", errors="strict") as f:
        try:
            lines = list(f)
        except UnicodeDecodeError as e:
            raise DataError(f"{p}: not UTF-8 text ({e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{p}:{n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        _check_record(rec, where)
        out.append((n, rec))
    if not out:
        raise DataError(f"{p}: no records")
    return out


def _check_record(rec: Any, where: str) -> None:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if "messages" in rec:
        msgs = rec["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"{where}: 'messages' must be a non-empty list")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise DataError(f"{where}: messages[{i}] must be an object with a 'role' string")
            if m["role"] not in _ROLES:
                raise DataError(
                    f"{where}: messages[{i}] has role {m['role']!r}; expected one of "
                    + ", ".join(_ROLES)
                )
            if not isinstance(m.get("content"), str):
                raise DataError(f"{where}: messages[{i}] needs a 'content' string")
        if not any(m["role"] == "assistant" for m in msgs):
            raise DataError(f"{where}: no assistant message to train on")
        return
    if "prompt" in rec or "response" in rec:
        for key in ("prompt", "response"):
            if not isinstance(rec.get(key), str):
                raise DataError(f"{where}: '{key}' must be a string")
        if not rec["response"]:
            raise DataError(f"{where}: 'response' is empty")
        return
    raise DataError(
        f"{where}: expected {{'prompt', 'response'}} or {{'messages': [...]}}, got keys "
        + ", ".join(sorted(map(str, rec)))
    )


def encode_example(
    tokenizer: Any, record: Mapping[str, Any], chat_template: str | None = None
) -> tuple[list[int], list[bool]]:
    """Token ids of one record and, per token, whether it is trained on (response tokens).

    ``chat_template`` overrides the tokenizer's template for ``messages`` records (default:
    the tokenizer's, else :data:`SIMPLE_TEMPLATE`)."""
    if "messages" not in record:
        head = tokenizer.encode(record["prompt"]) if record["prompt"] else []
        if not record["prompt"] and tokenizer.add_bos and tokenizer.bos_id is not None:
            head = [tokenizer.bos_id]
        body = tokenizer.encode(record["response"], add_bos=False)
        if tokenizer.eos_id is not None:
            body.append(tokenizer.eos_id)
        return head + body, [False] * len(head) + [True] * len(body)
    template = chat_template or tokenizer.chat_template or SIMPLE_TEMPLATE
    msgs = [dict(m) for m in record["messages"]]
    ids: list[int] = []
    mask: list[bool] = []
    done = ""  # rendered text already tokenized

    def push(text: str, train: bool) -> None:
        if not text:
            return
        first = not ids
        enc = tokenizer.encode(text, add_bos=None if first else False)
        ids.extend(enc)
        mask.extend([train] * len(enc))

    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        prefix = tokenizer.apply_chat_template(msgs[:i], True, template)
        full = tokenizer.apply_chat_template(msgs[: i + 1], False, template)
        if not prefix.startswith(done) or not full.startswith(prefix):
            raise DataError(
                "the chat template does not render conversations incrementally (a prefix of "
                "the conversation is not a prefix of its rendering); use prompt/response records"
            )
        push(prefix[len(done) :], False)
        push(full[len(prefix) :], True)
        done = full
    return ids, mask


class InstructionDataset:
    """Fixed-length training examples (``inputs``, ``targets`` int32 ``[n, seq_len]``).

    Attributes:
        inputs, targets: the padded examples (targets ``-100`` outside the responses).
        lengths: real (unpadded) length of each example.
        dropped: examples left out because truncation removed every response token.
        pad_id: the padding id of ``inputs``.
    """

    def __init__(
        self,
        examples: Sequence[tuple[Sequence[int], Sequence[bool]]],
        seq_len: int,
        pad_id: int = 0,
        source: str = "<data>",
    ) -> None:
        if int(seq_len) < 1:
            raise ValueError(f"InstructionDataset: seq_len must be >= 1, got {seq_len}")
        self.seq_len = int(seq_len)
        self.pad_id = int(pad_id)
        rows_in, rows_t, lengths = [], [], []
        self.dropped = 0
        for ids, mask in examples:
            ids = list(ids)[: self.seq_len + 1]
            mask = list(mask)[: self.seq_len + 1]
            tgt = [t if m else IGNORE_INDEX for t, m in zip(ids[1:], mask[1:], strict=True)]
            if len(ids) < 2 or all(t == IGNORE_INDEX for t in tgt):
                self.dropped += 1
                continue
            n = len(ids) - 1
            pad = self.seq_len - n
            rows_in.append(ids[:-1] + [self.pad_id] * pad)
            rows_t.append(tgt + [IGNORE_INDEX] * pad)
            lengths.append(n)
        if not rows_in:
            raise DataError(
                f"{source}: no example has a response token within seq_len {seq_len} "
                f"({self.dropped} dropped); use a longer --seq-len"
            )
        self.inputs = np.asarray(rows_in, np.int32)
        self.targets = np.asarray(rows_t, np.int32)
        self.lengths = np.asarray(lengths, np.int64)
        self._order: tuple[tuple[int, int], np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def trained_tokens(self) -> int:
        """Number of target tokens that carry loss."""
        return int(np.count_nonzero(self.targets != IGNORE_INDEX))

    @property
    def max_id(self) -> int:
        """The largest token id of the inputs and targets."""
        return int(max(self.inputs.max(), self.targets.max()))

    def batch_at(
        self, index: int, batch_size: int, seed: int = 0, trim: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``index`` (counted across epochs) of the examples shuffled per epoch with
        ``(seed, epoch)``; with fewer examples than ``batch_size`` a batch repeats some.
        ``trim`` cuts the columns after the longest example of the batch (padding only:
        causal attention makes the result identical)."""
        n = len(self)
        bs = int(batch_size)
        if bs < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        per_epoch = max(1, n // bs)
        epoch, j = divmod(int(index), per_epoch)
        key = (int(seed), epoch)
        if self._order is None or self._order[0] != key:
            order = np.random.default_rng(list(key)).permutation(n)
            if n < bs:
                order = np.resize(order, bs)
            self._order = (key, order)
        idx = self._order[1][j * bs : (j + 1) * bs]
        x, y = self.inputs[idx], self.targets[idx]
        if trim:
            w = int(self.lengths[idx].max())
            x, y = x[:, :w], y[:, :w]
        return np.ascontiguousarray(x), np.ascontiguousarray(y)


def load_instructions(
    path: str | os.PathLike[str],
    tokenizer: Any,
    seq_len: int,
    *,
    chat_template: str | None = None,
) -> InstructionDataset:
    """Reads a JSONL instruction file (see the module docstring) into an
    :class:`InstructionDataset` of ``seq_len`` tokens per example.

    Args:
        path: the ``.jsonl`` file.
        tokenizer: a :class:`bitnet.tokenizer.Tokenizer` (``LoraModel.tokenizer``).
        seq_len: tokens per example (longer ones are truncated).
        chat_template: a Jinja template for ``messages`` records instead of the tokenizer's.

    Raises:
        FileNotFoundError: no such file. DataError: malformed JSON / records (naming the file
            and line), a template error, or no usable example.
    """
    if tokenizer is None:
        raise DataError(f"{path}: the model has no tokenizer to encode the instruction data")
    recs = read_jsonl(path)
    examples = []
    for line, rec in recs:
        try:
            examples.append(encode_example(tokenizer, rec, chat_template))
        except (DataError, ValueError) as e:
            raise DataError(f"{Path(path)}:{line}: {e}") from None
    pad = tokenizer.eos_id if tokenizer.eos_id is not None else 0
    ds = InstructionDataset(examples, seq_len, pad, str(path))
    if ds.dropped:
        warnings.warn(
            f"{path}: {ds.dropped} of {len(recs)} examples dropped: the prompt fills seq_len "
            f"{seq_len}",
            RuntimeWarning,
            stacklevel=2,
        )
    return ds

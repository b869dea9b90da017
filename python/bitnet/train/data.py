"""Training data: text loading, BPE tokenizer training and a deterministic token-window dataset.

::

    from bitnet.train.data import TokenDataset, encode_texts, load_texts, train_bpe_tokenizer

    texts = load_texts("corpus/")  # .txt / .jsonl / .csv / .parquet files, or a directory of them
    tok = train_bpe_tokenizer(texts, 4096, "run/tokenizer")  # writes run/tokenizer/tokenizer.json
    ids = encode_texts(tok, texts)  # <|bos|> doc <|eos|> <|bos|> doc <|eos|> ... (int32)
    train_ids, val_ids = split_train_val(ids, 0.05, seq_len=256)
    data = TokenDataset(train_ids, seq_len=256)
    inputs, targets = data.batch_at(step=0, batch_size=8, seed=0)  # [8, 256] each

Text formats (:func:`load_texts`), one *document* each:

* ``.txt``: the whole file is one document (paragraph breaks stay part of the text); with
  ``txt_blocks=True`` every block of lines separated by one or more blank lines is a document.
* ``.jsonl``: one JSON object per non-empty line; the document is its ``text_field``
  (default ``"text"``).
* ``.csv``: one row per document, the column ``text_field`` (header row required).
* ``.parquet``: the column ``text_field`` (needs ``pyarrow``).
* a directory: every file above below it (recursively, sorted by path; other files ignored).

Token stream: documents are encoded separately and concatenated as ``bos doc eos`` (the ids of
the tokenizer's BOS / EOS tokens when it has them), so the model sees document boundaries.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BOS_TOKEN",
    "EOS_TOKEN",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "TEXT_SUFFIXES",
    "DataError",
    "TokenDataset",
    "encode_texts",
    "load_texts",
    "load_tokenizer",
    "save_tokenizer",
    "special_token_ids",
    "split_train_val",
    "train_bpe_tokenizer",
]

BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)
"""The special tokens of :func:`train_bpe_tokenizer`, at ids 0, 1, 2."""

TEXT_SUFFIXES = (".txt", ".jsonl", ".csv", ".parquet")
"""File types :func:`load_texts` reads."""

# Other tokenizers' names for BOS / EOS, tried in order by special_token_ids().
_BOS_NAMES = (BOS_TOKEN, "<|begin_of_text|>", "<s>", "<|startoftext|>", "<bos>")
_EOS_NAMES = (EOS_TOKEN, "<|end_of_text|>", "</s>", "<|endoftext|>", "<eos>")
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n(?:[ \t\r\f\v]*\n)*")


class DataError(ValueError):
    """A data file or tokenizer that cannot be used (the message names the file and line)."""


# ----------------------------------------------------------------------------- text loading
def _read_txt(path: Path, blocks: bool) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    if not blocks:
        return [text] if text.strip() else []
    text = text.replace("\r\n", "\n")
    return [b.strip("\n") for b in _BLANK_LINES.split(text) if b.strip()]


def _read_jsonl(path: Path, field: str) -> list[str]:
    out: list[str] = []
    with open(path, encoding="utf-8") as f:
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise DataError(
                        f"{path}:{lineno}: expected a JSON object with a {field!r} field, got "
                        f"{type(obj).__name__}"
                    )
                if field not in obj:
                    keys = ", ".join(map(repr, list(obj)[:8])) or "none"
                    raise DataError(f"{path}:{lineno}: no field {field!r} (fields: {keys})")
                value = obj[field]
                if not isinstance(value, str):
                    raise DataError(
                        f"{path}:{lineno}: field {field!r} is {type(value).__name__}, "
                        "expected a string"
                    )
                out.append(value)
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e})") from None
    return out


def _read_csv(path: Path, field: str) -> list[str]:
    csv.field_size_limit(2**31 - 1)  # documents can be long; the default limit is 128 KiB
    out: list[str] = []
    with open(path, encoding="utf-8", newline="") as f:
        try:
            reader = csv.DictReader(f)
            columns = reader.fieldnames
            if not columns:
                return []
            if field not in columns:
                cols = ", ".join(map(repr, columns[:8]))
                raise DataError(f"{path}: no column {field!r} in the header (columns: {cols})")
            for row in reader:
                value = row.get(field)
                if value is None:
                    raise DataError(
                        f"{path}:{reader.line_num}: row has no value for column {field!r}"
                    )
                out.append(value)
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e})") from None
    return out


def _read_parquet(path: Path, field: str) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"{path}: reading .parquet files needs pyarrow; install it with `pip install pyarrow`"
        ) from None
    try:
        schema = pq.read_schema(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError subclasses
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    if field not in schema.names:
        cols = ", ".join(map(repr, schema.names[:8]))
        raise DataError(f"{path}: no column {field!r} (columns: {cols})")
    column = pq.read_table(path, columns=[field]).column(field).to_pylist()
    for i, value in enumerate(column):
        if not isinstance(value, str):
            raise DataError(
                f"{path}: row {i}: column {field!r} is {type(value).__name__}, expected a string"
            )
    return column


def _read_file(path: Path, text_field: str, txt_blocks: bool) -> list[str]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return _read_txt(path, txt_blocks)
    if suffix == ".jsonl":
        return _read_jsonl(path, text_field)
    if suffix == ".csv":
        return _read_csv(path, text_field)
    if suffix == ".parquet":
        return _read_parquet(path, text_field)
    raise DataError(
        f"{path}: unsupported file type {suffix or '(no suffix)'!r}; expected one of "
        f"{', '.join(TEXT_SUFFIXES)} or a directory of them"
    )


def load_texts(
    path: str | os.PathLike[str], *, text_field: str = "text", txt_blocks: bool = False
) -> list[str]:
    """Reads the documents of a text file or of every text file in a directory.

    Args:
        path: a ``.txt``, ``.jsonl``, ``.csv`` or ``.parquet`` file, or a directory searched
            recursively for them (in sorted path order; files of other types are ignored).
        text_field: the JSON field / CSV or parquet column that holds the text.
        txt_blocks: split ``.txt`` files into documents at blank lines (default: one
            document per file).

    Returns:
        The documents in file order (empty ``.txt`` files and blocks are skipped).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: an unsupported file type, malformed JSON / CSV (naming the file and line),
            a missing field or column, a non-string value, a directory without text files,
            or no documents at all.
    """
    root = Path(os.path.expanduser(os.fspath(path)))
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or directory")
    if root.is_dir():
        files = sorted(
            p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
        )
        if not files:
            raise DataError(f"{root}: no {', '.join(TEXT_SUFFIXES)} files in this directory")
    else:
        files = [root]
    texts: list[str] = []
    for f in files:
        texts += _read_file(f, text_field, txt_blocks)
    if not texts:
        raise DataError(f"{root}: no text found")
    return texts


# ----------------------------------------------------------------------------- tokenizers
def train_bpe_tokenizer(
    texts: Sequence[str], vocab_size: int, path: str | os.PathLike[str] | None = None
) -> Any:
    """Trains a byte-level BPE tokenizer (HF ``tokenizers``) on ``texts``.

    The tokenizer is GPT-2 style: a ``ByteLevel`` pre-tokenizer (GPT-2's split regex, no
    prefix space) over the 256 byte symbols, so any text encodes without unknown tokens. The
    special tokens are ``<|bos|>`` (id 0), ``<|eos|>`` (1) and ``<|pad|>`` (2); the
    post-processor prepends ``<|bos|>`` when encoding with ``add_special_tokens=True``
    (so a converted GGUF file gets ``tokenizer.ggml.add_bos_token = true``).

    Args:
        texts: the training documents.
        vocab_size: the target vocabulary size including the special tokens and the 256 byte
            symbols (>= 259); a small corpus can end with fewer merges, so check
            ``get_vocab_size()``.
        path: where to save: a directory (``tokenizer.json`` and a ``tokenizer_config.json``
            naming the special tokens are written into it, created if needed) or a ``.json``
            file path (the config goes next to it). None: not saved.

    Returns:
        The trained ``tokenizers.Tokenizer``.

    Raises:
        ValueError: ``vocab_size`` below 259 or no non-empty text.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers import trainers as tk_trainers

    minimum = 256 + len(SPECIAL_TOKENS)
    if int(vocab_size) < minimum:
        raise ValueError(
            f"train_bpe_tokenizer: vocab_size {vocab_size} is too small; a byte-level BPE "
            f"needs at least {minimum} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)"
        )
    if not any(t for t in texts):
        raise ValueError("train_bpe_tokenizer: no text to train on")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = tk_trainers.BpeTrainer(
        vocab_size=int(vocab_size),
        special_tokens=[AddedToken(s, special=True) for s in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    bos = tok.token_to_id(BOS_TOKEN)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, bos)],
    )
    if path is not None:
        save_tokenizer(tok, path)
    return tok


def save_tokenizer(tokenizer: Any, path: str | os.PathLike[str]) -> Path:
    """Saves ``tokenizer`` as ``tokenizer.json`` (into directory ``path``, or as the ``.json``
    file ``path``) plus a ``tokenizer_config.json`` beside it naming its BOS / EOS / PAD
    tokens (what ``bitnet convert`` reads for the GGUF special ids). Returns the json path."""
    p = Path(os.path.expanduser(os.fspath(path)))
    file = p if p.suffix.lower() == ".json" else p / "tokenizer.json"
    file.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(file))
    bos, eos = special_token_ids(tokenizer)
    cfg: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast"}
    if bos is not None:
        cfg["bos_token"] = tokenizer.id_to_token(bos)
        cfg["add_bos_token"] = True
    if eos is not None:
        cfg["eos_token"] = tokenizer.id_to_token(eos)
    if tokenizer.token_to_id(PAD_TOKEN) is not None:
        cfg["pad_token"] = PAD_TOKEN
    (file.parent / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return file


def load_tokenizer(path_or_dir: str | os.PathLike[str]) -> Any:
    """Loads a ``tokenizers.Tokenizer`` from a ``tokenizer.json`` file or a directory holding one.

    Raises:
        FileNotFoundError: no such file, or a directory without ``tokenizer.json``.
        DataError: the file is not a valid tokenizer.
    """
    from tokenizers import Tokenizer

    p = Path(os.path.expanduser(os.fspath(path_or_dir)))
    file = p / "tokenizer.json" if p.is_dir() else p
    if not file.is_file():
        where = f"{p}: no tokenizer.json in this directory" if p.is_dir() else f"{p}: no such file"
        raise FileNotFoundError(where)
    try:
        return Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises a bare Exception on malformed files
        raise DataError(f"{file}: not a valid tokenizer.json ({e})") from None


def special_token_ids(tokenizer: Any) -> tuple[int | None, int | None]:
    """The (bos, eos) ids of ``tokenizer``: ``<|bos|>`` / ``<|eos|>``, else the usual names of
    other tokenizers (``<|begin_of_text|>`` / ``<|end_of_text|>``, ``<s>`` / ``</s>``, ...);
    None where it has none."""

    def first(names: tuple[str, ...]) -> int | None:
        for n in names:
            i = tokenizer.token_to_id(n)
            if i is not None:
                return int(i)
        return None

    return first(_BOS_NAMES), first(_EOS_NAMES)


def encode_texts(
    tokenizer: Any, texts: Sequence[str], *, add_bos: bool = True, add_eos: bool = True
) -> np.ndarray:
    """Encodes ``texts`` into one int32 token stream: ``[bos] doc [eos]`` per document, in order.

    The documents are encoded without the post-processor's special tokens; BOS / EOS (see
    :func:`special_token_ids`) are added here when the tokenizer has them and ``add_bos`` /
    ``add_eos`` are set. Encoding runs in parallel inside ``tokenizers``.
    """
    bos, eos = special_token_ids(tokenizer)
    head = [bos] if add_bos and bos is not None else []
    tail = [eos] if add_eos and eos is not None else []
    parts: list[np.ndarray] = []
    for enc in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        parts.append(np.asarray(head + enc.ids + tail, dtype=np.int32))
    if not parts:
        return np.zeros(0, dtype=np.int32)
    return np.concatenate(parts)


# ----------------------------------------------------------------------------- dataset
def split_train_val(
    token_ids: np.ndarray, val_fraction: float, seq_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Splits a token stream into (train, validation): the last ``val_fraction`` of the tokens
    (at least one window of ``seq_len + 1`` tokens) is the validation stream.

    ``val_fraction == 0`` returns (all, empty). The split is contiguous, so no window straddles
    the two parts.

    Raises:
        ValueError: a fraction outside [0, 1), or a stream too short to leave one window on
            each side.
    """
    ids = np.ascontiguousarray(token_ids, dtype=np.int32).reshape(-1)
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"split_train_val: val_fraction {val_fraction} is not in [0, 1)")
    if val_fraction == 0:
        return ids, ids[:0]
    window = int(seq_len) + 1
    n_val = max(window, int(round(len(ids) * float(val_fraction))))
    if len(ids) - n_val < window:
        raise ValueError(
            f"split_train_val: {len(ids)} tokens cannot hold a training and a validation "
            f"window of seq_len {seq_len} + 1 tokens each; use more text or a shorter seq_len"
        )
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


class TokenDataset:
    """A token stream cut into non-overlapping windows of ``seq_len`` inputs.

    Window ``i`` holds tokens ``[i * seq_len, (i + 1) * seq_len + 1)``: the inputs are its
    first ``seq_len`` tokens and the targets the same shifted by one (next-token prediction),
    so consecutive windows share one boundary token and the stream's last
    ``(len - 1) % seq_len`` tokens are left out.

    Batches are drawn by global batch index ``k`` (an optimizer step, or a micro-batch
    counter): epoch ``e = k // batches_per_epoch`` visits the windows in the order of a
    permutation seeded by ``(seed, e)``; batch ``k`` is the next ``batch_size`` windows of that
    order (the last incomplete batch of an epoch is dropped). So a batch depends only on
    ``(seed, k, batch_size)``: a run resumed at step ``k`` sees exactly the batches the
    uninterrupted run would have.
    """

    def __init__(self, token_ids: np.ndarray, seq_len: int):
        """Args:
        token_ids: a 1-D stream of token ids (converted to int32; ids must be >= 0).
        seq_len: tokens per window (the model's context for training), >= 1.

        Raises:
            ValueError: seq_len < 1, a negative id, or fewer than ``seq_len + 1`` tokens.
        """
        ids = np.ascontiguousarray(np.asarray(token_ids).reshape(-1), dtype=np.int32)
        if int(seq_len) < 1:
            raise ValueError(f"TokenDataset: seq_len must be >= 1, got {seq_len}")
        if len(ids) < int(seq_len) + 1:
            raise ValueError(
                f"TokenDataset: {len(ids)} tokens are fewer than one window of seq_len "
                f"{seq_len} + 1; use more text or a shorter seq_len"
            )
        if ids.min() < 0:
            raise ValueError(f"TokenDataset: negative token id {int(ids.min())}")
        self.tokens = ids
        self.seq_len = int(seq_len)
        self._cached_order: tuple[tuple[int, int], np.ndarray] | None = None

    def __len__(self) -> int:
        """Number of windows."""
        return (len(self.tokens) - 1) // self.seq_len

    @property
    def max_id(self) -> int:
        """The largest token id in the stream."""
        return int(self.tokens.max())

    def window(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(inputs [seq_len], targets [seq_len]) of window ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(f"TokenDataset: window {i} out of range [0, {len(self)})")
        s = i * self.seq_len
        w = self.tokens[s : s + self.seq_len + 1]
        return w[:-1], w[1:]

    def _gather(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = idx[:, None] * self.seq_len + np.arange(self.seq_len + 1)[None, :]
        w = self.tokens[rows]
        return np.ascontiguousarray(w[:, :-1]), np.ascontiguousarray(w[:, 1:])

    def batches_per_epoch(self, batch_size: int) -> int:
        """Full batches of ``batch_size`` windows in one epoch.

        Raises:
            ValueError: batch_size < 1 or larger than the number of windows.
        """
        if int(batch_size) < 1:
            raise ValueError(f"TokenDataset: batch_size must be >= 1, got {batch_size}")
        n = len(self) // int(batch_size)
        if n == 0:
            raise ValueError(
                f"TokenDataset: batch_size {batch_size} is larger than the {len(self)} windows "
                f"of seq_len {self.seq_len} in {len(self.tokens)} tokens; use more text, a "
                "smaller batch or a shorter seq_len"
            )
        return n

    def _order(self, seed: int, epoch: int) -> np.ndarray:
        key = (int(seed), int(epoch))
        if self._cached_order is None or self._cached_order[0] != key:
            # The permutation of one epoch, kept while consecutive batches draw from it.
            self._cached_order = (key, np.random.default_rng(list(key)).permutation(len(self)))
        return self._cached_order[1]

    def batches(
        self, batch_size: int, seed: int = 0, epoch: int = 0
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yields the batches of one epoch: (inputs [B, T], targets [B, T]) int32, in the
        order of the permutation seeded by ``(seed, epoch)``; the same as
        ``batch_at(epoch * batches_per_epoch(B) + j, B, seed)`` for j = 0, 1, ..."""
        nb = self.batches_per_epoch(batch_size)
        order = self._order(seed, epoch)
        for j in range(nb):
            yield self._gather(order[j * batch_size : (j + 1) * batch_size])

    def batch_at(self, index: int, batch_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Batch number ``index`` (counted across epochs) of the shuffled stream; see the class
        docstring."""
        if int(index) < 0:
            raise ValueError(f"TokenDataset: batch index must be >= 0, got {index}")
        nb = self.batches_per_epoch(batch_size)
        epoch, j = divmod(int(index), nb)
        order = self._order(seed, epoch)
        return self._gather(order[j * batch_size : (j + 1) * batch_size])

    def sequential_batches(
        self, batch_size: int, max_batches: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches of consecutive windows in stream order, no shuffling (evaluation); the last
        one may be smaller than ``batch_size``. At most ``max_batches`` batches."""
        if int(batch_size) < 1:
            raise ValueError(f"TokenDataset: batch_size must be >= 1, got {batch_size}")
        n = len(self)
        count = 0
        for s in range(0, n, int(batch_size)):
            if max_batches is not None and count >= max_batches:
                return
            yield self._gather(np.arange(s, min(n, s + int(batch_size))))
            count += 1

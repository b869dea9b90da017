"""Tokenizers for BitNet models: built from GGUF metadata (or a ``tokenizer.json``) on HF
``tokenizers``, with special tokens, chat templates and streaming decode.

Where the tokenizer comes from, in order:

* ``tokenizer.huggingface.json`` (the verbatim ``tokenizer.json`` that ``bitnet convert``
  stores): the exact HF tokenizer is rebuilt from it.
* llama.cpp's keys otherwise: ``tokenizer.ggml.model = gpt2`` is a byte-level BPE (tokens +
  merges; the pre-tokenizer is LLaMA-3's regex for ``tokenizer.ggml.pre = llama-bpe``, GPT-2's for
  ``default`` / ``gpt2`` / ``gpt-2``); ``llama`` is a SentencePiece-style BPE with byte fallback
  (``<0xXX>`` tokens, ``▁`` for spaces) whose merges come from ``tokenizer.ggml.merges``, or when
  the file has none, from ``tokenizer.ggml.scores`` (SentencePiece merges the adjacent pair whose
  concatenation scores highest).

Special ids come from ``tokenizer.ggml.{bos,eos,eot,eom}_token_id``; generation also ends at the
end-of-turn control tokens that llama.cpp recognises by their text (``<|eot_id|>``, ...).
``encode`` never relies on a post-processor: the BOS id is prepended by :meth:`Tokenizer.encode`
itself (``tokenizer.ggml.add_bos_token``), and never twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["END_OF_TURN_TOKENS", "StreamDecoder", "Tokenizer"]

LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""LLaMA-3's pre-tokenizer split (``tokenizer.ggml.pre = llama-bpe``)."""

END_OF_TURN_TOKENS = (
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "</s>",
)
"""Texts of control tokens that end generation besides ``eos`` (as llama.cpp's end-of-generation
set): chat templates close a turn with them."""

_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_BYTE_PRE = {"default", "gpt2", "gpt-2"}
_LLAMA3_PRE = {"llama-bpe", "llama3", "llama-v3"}
_SPIECE = "\u2581"


def _hf() -> Any:
    try:
        import tokenizers
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise ImportError("bitnet's tokenizer needs the 'tokenizers' package") from e
    return tokenizers


# ---------------------------------------------------------------------------------- building
def _list(md: Mapping[str, Any], key: str, source: str, kind: type) -> list[Any] | None:
    v = md.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, kind) for x in v):
        raise ValueError(f"{source}: {key} must be an array of {kind.__name__}")
    return v


def _added(tokens: list[str], types: list[int]) -> list[dict[str, Any]]:
    """HF ``added_tokens`` entries for control (special) and user-defined tokens."""
    out = []
    for i, (tok, ty) in enumerate(zip(tokens, types, strict=True)):
        if ty in (_CONTROL, _USER_DEFINED):
            out.append(
                {
                    "id": i,
                    "content": tok,
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "special": ty == _CONTROL,
                }
            )
    return out


def _vocab(tokens: list[str], types: list[int]) -> dict[str, int]:
    """token -> id over the used tokens (``[PAD]`` fillers left out); the lowest id wins."""
    vocab: dict[str, int] = {}
    for i, (tok, ty) in enumerate(zip(tokens, types, strict=True)):
        if ty != _UNUSED and tok not in vocab:
            vocab[tok] = i
    return vocab


def _merge_pairs(merges: list[str], source: str) -> list[tuple[str, str]]:
    pairs = []
    for i, m in enumerate(merges):
        parts = m.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise ValueError(f"{source}: tokenizer.ggml.merges[{i}] = {m!r} is not 'a b'")
        pairs.append((parts[0], parts[1]))
    return pairs


def _merges_from_scores(
    tokens: list[str], types: list[int], scores: list[float], vocab: Mapping[str, int]
) -> list[tuple[str, str]]:
    """SentencePiece BPE as merges: every split ``a + b`` of a normal token into two vocabulary
    pieces, ranked by the token's score (highest first), then by the ids of ``a`` and ``b``."""
    ranked = []
    for i, (tok, ty) in enumerate(zip(tokens, types, strict=True)):
        if ty != _NORMAL or len(tok) < 2:
            continue
        for cut in range(1, len(tok)):
            a, b = tok[:cut], tok[cut:]
            if a in vocab and b in vocab:
                ranked.append((-scores[i], vocab[a], vocab[b], a, b))
    ranked.sort()
    return [(a, b) for *_, a, b in ranked]


def _byte_level_json(md: Mapping[str, Any], tokens: list[str], types: list[int], source: str):
    t = _hf()
    pre = str(md.get("tokenizer.ggml.pre") or "default")
    merges = _list(md, "tokenizer.ggml.merges", source, str) or []
    llama3 = pre in _LLAMA3_PRE
    if not llama3 and pre not in _BYTE_PRE:
        raise ValueError(
            f"{source}: tokenizer.ggml.pre = {pre!r} is not supported for a gpt2 (byte-level) "
            f"tokenizer; supported: {', '.join(sorted(_LLAMA3_PRE | _BYTE_PRE))} (or store "
            "tokenizer.huggingface.json)"
        )
    model = t.models.BPE(
        vocab=_vocab(tokens, types),
        merges=_merge_pairs(merges, source),
        ignore_merges=llama3,  # as llama.cpp does for LLaMA-3: whole words in the vocab win
    )
    tok = t.Tokenizer(model)
    if llama3:
        tok.pre_tokenizer = t.pre_tokenizers.Sequence(
            [
                t.pre_tokenizers.Split(t.Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
                t.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tok.pre_tokenizer = t.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = t.decoders.ByteLevel()
    return tok


def _llama_json(md: Mapping[str, Any], tokens: list[str], types: list[int], source: str):
    t = _hf()
    vocab = _vocab(tokens, types)
    merges = _list(md, "tokenizer.ggml.merges", source, str)
    if merges:
        pairs = _merge_pairs(merges, source)
    else:
        scores = md.get("tokenizer.ggml.scores")
        if not isinstance(scores, list) or len(scores) != len(tokens):
            raise ValueError(
                f"{source}: a llama tokenizer needs tokenizer.ggml.merges or "
                f"tokenizer.ggml.scores with one score per token ({len(tokens)})"
            )
        pairs = _merges_from_scores(tokens, types, [float(s) for s in scores], vocab)
    unk_id = md.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[unk_id] if isinstance(unk_id, int) and 0 <= unk_id < len(tokens) else None
    model = t.models.BPE(
        vocab=vocab, merges=pairs, unk_token=unk, fuse_unk=True, byte_fallback=True
    )
    tok = t.Tokenizer(model)
    prefix = bool(md.get("tokenizer.ggml.add_space_prefix", True))
    norms = [t.normalizers.Replace(" ", _SPIECE)]
    if prefix:
        norms.insert(0, t.normalizers.Prepend(_SPIECE))
    tok.normalizer = t.normalizers.Sequence(norms)
    decs = [t.decoders.Replace(_SPIECE, " "), t.decoders.ByteFallback(), t.decoders.Fuse()]
    if prefix:
        decs.append(t.decoders.Strip(" ", 1, 0))
    tok.decoder = t.decoders.Sequence(decs)
    return tok


def _from_ggml_keys(md: Mapping[str, Any], source: str) -> Any:
    kind = md.get("tokenizer.ggml.model")
    tokens = _list(md, "tokenizer.ggml.tokens", source, str)
    if not tokens:
        raise ValueError(f"{source}: tokenizer.ggml.tokens is missing or empty")
    types = _list(md, "tokenizer.ggml.token_type", source, int)
    if types is None:
        types = [_NORMAL] * len(tokens)
    if len(types) != len(tokens):
        raise ValueError(
            f"{source}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens"
        )
    if kind == "gpt2":
        tok = _byte_level_json(md, tokens, types, source)
    elif kind == "llama":
        tok = _llama_json(md, tokens, types, source)
    else:
        raise ValueError(
            f"{source}: tokenizer.ggml.model = {kind!r} is not supported (gpt2 or llama); "
            "store tokenizer.huggingface.json instead"
        )
    # Added tokens with their file ids: through the JSON form, since add_tokens() renumbers.
    tj = json.loads(tok.to_str())
    tj["added_tokens"] = _added(tokens, types)
    return _hf().Tokenizer.from_str(json.dumps(tj))


def _optional_id(md: Mapping[str, Any], key: str, source: str) -> int | None:
    v = md.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{source}: {key} = {v!r} is not a token id")
    return v


# ---------------------------------------------------------------------------------- chat
def _render_template(template: str, **variables: Any) -> str:
    """Renders a chat template the way transformers does (``_compile_jinja_template``)."""
    try:
        import jinja2
        from jinja2 import nodes
        from jinja2.ext import Extension
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as e:  # pragma: no cover - jinja2 is a dependency
        raise ImportError("chat templates need the 'jinja2' package") from e

    class _Generation(Extension):
        """``{% generation %}...{% endgeneration %}`` (assistant masks): renders its body."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            call = self.call_method("_body")
            return nodes.CallBlock(call, [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: Any = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(fmt: str) -> str:
        from datetime import datetime

        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_Generation, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        return env.from_string(template).render(**variables)
    except jinja2.exceptions.TemplateError as e:
        raise ValueError(f"chat template: {e}") from None


# ---------------------------------------------------------------------------------- tokenizer
class Tokenizer:
    """A model's tokenizer: HF ``tokenizers`` plus BOS/EOS handling and the chat template.

    Build it with :meth:`from_gguf_metadata`, :meth:`from_gguf` or :meth:`from_file`; the HF
    object is :attr:`hf`.

    Attributes:
        hf: the ``tokenizers.Tokenizer`` (no post-processor is relied on).
        bos_id: the BOS id, or None.
        eos_id: the EOS id, or None.
        eos_ids: every id that ends generation: EOS, ``eot`` / ``eom`` ids and the control
            tokens of :data:`END_OF_TURN_TOKENS` in the vocabulary.
        add_bos: whether :meth:`encode` prepends BOS by default.
        chat_template: the Jinja chat template, or None.
        source: where the tokenizer came from (for messages).
    """

    def __init__(
        self,
        hf: Any,
        *,
        bos_id: int | None = None,
        eos_id: int | None = None,
        extra_eos_ids: Iterable[int] = (),
        add_bos: bool = False,
        chat_template: str | None = None,
        source: str = "<tokenizer>",
    ) -> None:
        self.hf = hf
        self.hf.no_padding()
        self.hf.no_truncation()
        self.source = source
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.add_bos = bool(add_bos) and bos_id is not None
        self.chat_template = chat_template
        specials = {a.content for a in self._added().values() if a.special}
        eog = [] if eos_id is None else [eos_id]
        eog += list(extra_eos_ids)
        for text in END_OF_TURN_TOKENS:
            i = hf.token_to_id(text)
            if i is not None and text in specials:
                eog.append(i)
        self.eos_ids: tuple[int, ...] = tuple(dict.fromkeys(eog))

    def _added(self) -> dict[int, Any]:
        return self.hf.get_added_tokens_decoder()

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_gguf_metadata(cls, metadata: Mapping[str, Any], source: str = "<gguf>") -> Tokenizer:
        """Builds the tokenizer from GGUF ``tokenizer.*`` metadata (see the module docstring).

        Raises:
            ValueError: no tokenizer in the metadata, an unsupported tokenizer model or
                pre-tokenizer, or malformed keys (the message names ``source`` and the key).
        """
        md = metadata
        hf_json = md.get("tokenizer.huggingface.json")
        if isinstance(hf_json, str) and hf_json:
            try:
                hf = _hf().Tokenizer.from_str(hf_json)
            except Exception as e:
                raise ValueError(
                    f"{source}: tokenizer.huggingface.json is not a valid tokenizer: {e}"
                ) from None
        elif "tokenizer.ggml.tokens" in md or "tokenizer.ggml.model" in md:
            hf = _from_ggml_keys(md, source)
        else:
            raise ValueError(f"{source}: the file has no tokenizer (no tokenizer.* metadata)")
        bos = _optional_id(md, "tokenizer.ggml.bos_token_id", source)
        eos = _optional_id(md, "tokenizer.ggml.eos_token_id", source)
        extra = [
            i
            for k in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")
            if (i := _optional_id(md, k, source)) is not None
        ]
        add_bos = md.get("tokenizer.ggml.add_bos_token")
        if not isinstance(add_bos, bool):  # llama.cpp's defaults when the key is absent
            add_bos = md.get("tokenizer.ggml.model") == "llama" or (
                md.get("tokenizer.ggml.pre") in _LLAMA3_PRE
            )
        template = md.get("tokenizer.chat_template")
        return cls(
            hf,
            bos_id=bos,
            eos_id=eos,
            extra_eos_ids=extra,
            add_bos=add_bos,
            chat_template=template if isinstance(template, str) else None,
            source=source,
        )

    @classmethod
    def from_gguf(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """The tokenizer stored in a GGUF file (see :meth:`from_gguf_metadata`)."""
        from . import gguf

        with gguf.read(path) as f:
            md = {k: v for k, v in f.metadata.items() if k.startswith("tokenizer.")}
            where = str(f.path)
        return cls.from_gguf_metadata(md, where)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """A tokenizer from a ``.gguf`` file, a ``tokenizer.json`` or a checkpoint directory.

        A ``tokenizer.json`` (or a directory holding one) is read as ``bitnet convert`` reads
        it: special tokens, ``add_bos_token`` and the chat template come from the
        ``tokenizer_config.json`` / ``chat_template.jinja`` / ``config.json`` beside it.

        Raises:
            FileNotFoundError: nothing at ``path``. ValueError: not a usable tokenizer.
        """
        p = Path(os.path.expanduser(os.fspath(path)))
        if p.is_dir():
            p = p / "tokenizer.json"
        if not p.is_file():
            raise FileNotFoundError(f"tokenizer file '{p}' does not exist")
        if p.suffix.lower() == ".gguf":
            return cls.from_gguf(p)
        try:
            text = p.read_text(encoding="utf-8")
            tj = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{p}: not a tokenizer.json ({e})") from None
        if not isinstance(tj, dict):
            raise ValueError(f"{p}: not a tokenizer.json (expected a JSON object)")
        if p.name != "tokenizer.json":
            return cls.from_gguf_metadata({"tokenizer.huggingface.json": text}, str(p))
        from .convert.tokenizer import tokenizer_metadata

        config: dict[str, Any] = {}
        cfg = p.parent / "config.json"
        if cfg.is_file():
            try:
                loaded = json.loads(cfg.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"{cfg}: not valid JSON ({e})") from None
            config = loaded if isinstance(loaded, dict) else {}
        ids = [i for i in (tj.get("model") or {}).get("vocab", {}).values() if isinstance(i, int)]
        ids += [a.get("id") for a in tj.get("added_tokens") or [] if isinstance(a.get("id"), int)]
        info = tokenizer_metadata(p.parent, config, max(ids, default=-1) + 1)
        assert info is not None  # tokenizer.json exists
        return cls.from_gguf_metadata(info.metadata, str(p))

    # ---------------------------------------------------------------- basics
    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer knows (added tokens included)."""
        return int(self.hf.get_vocab_size(with_added_tokens=True))

    def token_to_id(self, token: str) -> int | None:
        """The id of a token string, or None."""
        return self.hf.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        """The token string of an id, or None for an id the tokenizer does not use."""
        return self.hf.id_to_token(int(token_id))

    def is_special(self, token_id: int) -> bool:
        """True for special (control) tokens."""
        a = self._added().get(int(token_id))
        return a is not None and bool(a.special)

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of ``text``; special tokens written in the text (``<|eot_id|>``) are
        recognised. ``add_bos`` (default :attr:`add_bos`) prepends BOS unless the text already
        starts with it."""
        if not isinstance(text, str):
            raise TypeError(f"encode: expected a str, got {type(text).__name__}")
        ids = list(self.hf.encode(text, add_special_tokens=False).ids)
        if add_bos is None:
            add_bos = self.add_bos
        if add_bos:
            if self.bos_id is None:
                raise ValueError(f"{self.source}: add_bos=True but the tokenizer has no BOS token")
            if not ids or ids[0] != self.bos_id:
                ids.insert(0, self.bos_id)
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; special tokens are left out unless ``skip_special_tokens=False``.
        Ids the tokenizer does not use (vocabulary padding) decode to nothing."""
        return str(self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens))

    def stream_decoder(
        self, context: Sequence[int] = (), skip_special_tokens: bool = True
    ) -> StreamDecoder:
        """A :class:`StreamDecoder` continuing after ``context`` (e.g. the prompt ids)."""
        return StreamDecoder(self, context, skip_special_tokens)

    # ---------------------------------------------------------------- chat
    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Renders ``messages`` (``[{"role": ..., "content": ...}, ...]``) with the chat
        template, as transformers does (sandboxed Jinja, ``trim_blocks``, ``lstrip_blocks``,
        ``raise_exception``, ``tojson``, ``strftime_now``; ``bos_token`` / ``eos_token`` set).

        Args:
            messages: the conversation; every message a mapping with a ``role`` string.
            add_generation_prompt: end with the assistant header, so the model answers.
            chat_template: a template to use instead of the model's.
            **kwargs: more template variables (``tools``, ``documents``, ...).

        Raises:
            ValueError: no template, malformed messages, or a template error (its message).
        """
        template = chat_template if chat_template is not None else self.chat_template
        if template is None:
            raise ValueError(
                f"{self.source}: the model has no chat template (tokenizer.chat_template); "
                "pass chat_template=... or use generate() with a plain prompt"
            )
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
            raise ValueError("messages must be a list of {'role': ..., 'content': ...} dicts")
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
                raise ValueError(f"messages[{i}] must be a dict with a 'role' string, got {m!r}")
            if "content" not in m:
                raise ValueError(f"messages[{i}] has no 'content'")
        specials: dict[str, str] = {}
        for name, i in (("bos_token", self.bos_id), ("eos_token", self.eos_id)):
            tok = None if i is None else self.id_to_token(i)
            if tok is not None:
                specials[name] = tok
        return _render_template(
            template,
            messages=[dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            **{**specials, **kwargs},
        )

    def __repr__(self) -> str:
        return (
            f"Tokenizer({self.source!r}, vocab {self.vocab_size}, bos {self.bos_id}, "
            f"eos {list(self.eos_ids)}, add_bos {self.add_bos})"
        )


class StreamDecoder:
    """Incremental detokenization: :meth:`push` one id at a time and get the text it completes.

    Text is decoded over a window of ids that starts at a clean boundary (a point where the
    decoded text did not end mid-character) a few tokens back, in the ``context`` at first, so
    decoders that depend on neighbours (SentencePiece's leading space, byte-level tokens that
    split a UTF-8 character) give the same text as decoding everything at once. A trailing run
    of U+FFFD (an incomplete UTF-8 sequence, or invalid bytes not yet followed by valid text) is
    held back until a later token completes it, so a valid character is never emitted broken;
    :meth:`flush` returns whatever is still held (invalid bytes then show as U+FFFD). A context
    that ends mid-character counts that character as new text.
    """

    _CONTEXT = 5  # context ids kept before the first new one

    def __init__(
        self, tokenizer: Tokenizer, context: Sequence[int] = (), skip_special_tokens: bool = True
    ) -> None:
        self._tok = tokenizer
        self._skip = skip_special_tokens
        ctx = [int(i) for i in context]
        # Start the window at a character boundary: the ids before it decode to text that
        # does not end mid-character (checked on a few ids: UTF-8 resynchronises).
        s = max(0, len(ctx) - self._CONTEXT)
        while s > 0 and self._decode(ctx[max(0, s - 8) : s]).endswith("\ufffd"):
            s -= 1
        ids = ctx[s:]
        text = self._decode(ids)
        safe = text.rstrip("\ufffd")
        self._ids = ids
        self._start = 0  # window start (a clean boundary)
        # The latest clean boundary; a context ending mid-character is not one: the character
        # it starts is completed (and emitted) by the new ids.
        self._read = len(ids) if len(safe) == len(text) else 0
        self._done = len(safe)  # characters of the window's text handed out

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=self._skip)

    def push(self, token_id: int) -> str:
        """Adds one id; returns the newly completed text (possibly empty)."""
        self._ids.append(int(token_id))
        text = self._decode(self._ids[self._start :])
        safe = text.rstrip("\ufffd")
        piece = safe[self._done :] if len(safe) > self._done else ""
        self._done = max(self._done, len(safe))
        if len(safe) == len(text):  # a clean boundary: slide the window up to the previous one
            self._start, self._read = self._read, len(self._ids)
            self._done = len(self._decode(self._ids[self._start :]))
        return piece

    def flush(self) -> str:
        """The text still held back (an incomplete character decodes as U+FFFD)."""
        text = self._decode(self._ids[self._start :])
        piece = text[self._done :] if len(text) > self._done else ""
        self._done = max(self._done, len(text))
        return piece

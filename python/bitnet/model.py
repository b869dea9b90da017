"""``bitnet.Model``: load a BitNet model and generate text, chat, stream, score perplexity.

::

    import bitnet
    model = bitnet.Model.load("microsoft/bitnet-b1.58-2B-4T", threads=2)
    print(model.generate("The capital of France is", max_new_tokens=16, temperature=0))
    for piece in model.stream("Once upon a time", seed=1):
        print(piece, end="", flush=True)
    model.chat([{"role": "user", "content": "Hi!"}])

The forward pass, KV cache and sampler are C++ (``bitnet._ext``); this module resolves what to
load (a GGUF file, a Hugging Face repo id, a checkpoint directory converted once and cached),
checks arguments, and drives :mod:`bitnet.generation`. A Model is not thread-safe: one
generation runs at a time (a second one while a stream is open raises ``RuntimeError``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.resources
import math
import os
import secrets
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _ext
from .generation import KVSlots, SequenceState, TextStream, run_batch, split_stop, stream_one
from .tokenizer import Tokenizer

__all__ = ["DEFAULT_MODEL", "Model", "ModelConfig", "converted_cache_dir"]

DEFAULT_MODEL: Path = (
    Path(os.fspath(importlib.resources.files(__package__))) / "data" / "default.gguf"
)
"""The model shipped inside the package (a ~6M-parameter BitNet b1.58 trained on Shakespeare;
see ``data/DEFAULT_MODEL.md``): what :meth:`Model.load` and the CLI's model commands load when
no model is given."""

Prompt = str | Sequence[int]
Stop = str | int | Sequence[str | int] | None

# Sampling defaults (llama.cpp's): documented on Model.generate.
DEFAULTS: dict[str, Any] = {
    "max_new_tokens": 128,
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.95,
    "min_p": 0.05,
    "repetition_penalty": 1.0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "penalty_last_n": 64,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A loaded model's hyperparameters and storage (from the GGUF metadata).

    ``weight_type`` is the ggml type of the BitLinear matrices in the file (``i2_s``, ``tq1_0``,
    ``tq2_0``, ``f16``, ...), ``head_type`` that of the LM head; ``n_ctx`` is the KV cache
    length per sequence and ``n_seq`` the number of sequence slots of this load.
    """

    architecture: str
    vocab_size: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx_train: int
    rope_theta: float
    rms_eps: float
    hidden_act: str
    weight_type: str
    head_type: str
    tied: bool
    file_size: int
    n_ctx: int
    n_seq: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """From the engine's ``config`` dict (extra keys are ignored)."""
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


# ----------------------------------------------------------------------------- argument checks
def _int(name: str, v: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be an integer <= {hi}, got {v!r}")
    return int(v)


def _float(name: str, v: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
    f = float(v) if ok else math.nan
    if not ok or not math.isfinite(f) or f < lo or f > hi or (lo_open and f == lo):
        if math.isinf(lo) and math.isinf(hi):
            what = "a finite number"
        elif math.isinf(hi):
            what = f"a finite number {'>' if lo_open else '>='} {lo:g}"
        else:
            what = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise ValueError(f"{name} must be {what}, got {v!r}")
    return f


def _sampling_params(
    temperature: float,
    top_k: int,
    top_p: float,
    min_p: float,
    repetition_penalty: float,
    frequency_penalty: float,
    presence_penalty: float,
    penalty_last_n: int,
    seed: int,
) -> Any:
    """Validated :class:`bitnet.sampling.SamplingParams`."""
    from .sampling import SamplingParams

    inf = math.inf
    return SamplingParams(
        temperature=_float("temperature", temperature, 0.0, inf),
        top_k=_int("top_k", top_k, 0, 2**31 - 1),
        top_p=_float("top_p", top_p, 0.0, 1.0, lo_open=True),
        min_p=_float("min_p", min_p, 0.0, 1.0),
        repetition_penalty=_float("repetition_penalty", repetition_penalty, 0.0, inf, True),
        frequency_penalty=_float("frequency_penalty", frequency_penalty, -inf, inf),
        presence_penalty=_float("presence_penalty", presence_penalty, -inf, inf),
        penalty_last_n=_int("penalty_last_n", penalty_last_n, -1, 2**31 - 1),
        seed=_int("seed", seed, 0, 2**64 - 1),
    )


# ----------------------------------------------------------------------------- resolving models
def converted_cache_dir() -> Path:
    """Where converted checkpoints are kept: ``$BITNET_CACHE/converted``, by default
    ``~/.cache/bitnet/converted``."""
    root = os.environ.get("BITNET_CACHE")
    base = Path(os.path.expanduser(root)) if root else Path.home() / ".cache" / "bitnet"
    return base / "converted"


def _fingerprint(directory: Path) -> str:
    """A digest of a directory's top-level files (names, sizes, modification times)."""
    h = hashlib.sha256()
    for p in sorted(directory.iterdir()):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _convert_cached(
    checkpoint: Path, key: Path, weight_type: str, revision: str | None, progress: bool
) -> Path:
    """The GGUF of ``checkpoint`` under the cache key ``key``, converted on first use.

    Conversion holds a lock file, so concurrent loads convert once; the file appears
    atomically (the writer renames a complete ``.partial``)."""
    from .convert import convert

    dst = converted_cache_dir() / key / f"{weight_type}.gguf"
    if dst.is_file():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst.with_suffix(".lock"), "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - not POSIX: no lock
            pass
        if not dst.is_file():
            convert(checkpoint, dst, weight_type, progress=progress, report=False)
    return dst


def _resolve(
    path_or_repo: str | os.PathLike[str], revision: str | None, weight_type: str, progress: bool
) -> Path:
    """The local GGUF file to load (see :meth:`Model.load`)."""
    s = os.fspath(path_or_repo)
    local = Path(os.path.expanduser(s))
    if local.exists() and revision is not None:
        raise ValueError(
            f"revision {revision!r} given for the local path '{s}': revisions apply only to "
            "Hugging Face repo ids"
        )
    if local.is_file():
        return local
    if local.is_dir():
        if (local / "config.json").is_file():
            real = local.resolve()
            tag = hashlib.sha256(str(real).encode()).hexdigest()[:12]
            key = Path(f"local--{real.name}-{tag}") / _fingerprint(real)
            return _convert_cached(real, key, weight_type, None, progress)
        found = sorted(local.glob("*.gguf"))
        if len(found) == 1:
            return found[0]
        listing = f" (it holds {', '.join(p.name for p in found)})" if found else ""
        raise IsADirectoryError(
            f"'{s}' is a directory without config.json{listing}: give a .gguf file or a "
            "checkpoint directory"
        )
    if local.exists():
        raise FileNotFoundError(f"'{s}' is not a regular file or directory")
    from . import hub

    if isinstance(path_or_repo, str) and s.lower().endswith(".gguf"):
        return hub.resolve_gguf(s, revision=revision, progress=progress)
    if isinstance(path_or_repo, str) and hub.is_repo_id(s):
        ggufs = hub.list_gguf(s, revision)
        if ggufs:
            return hub.resolve_gguf(s, revision=revision, progress=progress)
        snapshot = hub.resolve_checkpoint(s, revision=revision, progress=progress)
        commit = snapshot.name if snapshot.parent.name == "snapshots" else _fingerprint(snapshot)
        key = Path(s.replace("/", "--")) / commit
        return _convert_cached(snapshot, key, weight_type, revision, progress)
    raise FileNotFoundError(
        f"model '{s}' does not exist: expected a .gguf file, a checkpoint directory, or a "
        "Hugging Face repo id 'owner/name' (or 'owner/name/file.gguf')"
    )


# ----------------------------------------------------------------------------- the model
class Model:
    """A loaded BitNet model: logits, generation, streaming, batches, chat and perplexity.

    Create it with :meth:`load`. Attributes: :attr:`config` (:class:`ModelConfig`),
    :attr:`tokenizer` (:class:`bitnet.tokenizer.Tokenizer`, or None when the file has none),
    :attr:`path` (the GGUF file).
    """

    def __init__(self, engine: Any, tokenizer: Tokenizer | None, path: Path | None = None):
        self._engine = engine
        self.config = ModelConfig.from_dict(engine.config)
        self.tokenizer = tokenizer
        self.path = path
        self._slots = KVSlots(engine, self.config.n_seq)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        path_or_repo: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        n_ctx: int | None = None,
        device: str = "cpu",
        n_seq: int = 1,
        revision: str | None = None,
        weight_type: str = "i2_s",
        *,
        tokenizer: str | os.PathLike[str] | Tokenizer | None = None,
        progress: bool = True,
    ) -> Model:
        """Loads a model.

        Args:
            path_or_repo: a ``.gguf`` file; a Hugging Face repo id (``"owner/name"``: its
                ``.gguf`` file when it has exactly one, else its checkpoint, converted; or
                ``"owner/name/file.gguf"``); or a local checkpoint directory (with
                ``config.json``), converted. Conversions are cached in
                :func:`converted_cache_dir` (``$BITNET_CACHE/converted``, default
                ``~/.cache/bitnet/converted``) under the repo and its revision's commit (a
                local directory: its path and its files' sizes and times) and the weight type,
                and reused by later loads. None (the default): :data:`DEFAULT_MODEL`, the small
                Shakespeare model shipped in the package (no download).
            threads: compute threads (:func:`bitnet.set_num_threads`; process-wide); None
                keeps the current setting.
            n_ctx: KV cache length per sequence; None: the file's context length.
            device: ``"cpu"``. ``"cuda"`` raises RuntimeError naming the reason when CUDA is
                unavailable (see :func:`bitnet.cuda.reason`), else NotImplementedError until
                the CUDA model runner lands (docs/cuda.md).
            n_seq: sequence slots (KV caches); :meth:`generate_batch` runs up to this many
                prompts at once.
            revision: branch, tag or commit of a repo id.
            weight_type: storage of the BitLinear matrices when converting a checkpoint
                (``i2_s``, ``tq1_0``, ``tq2_0``, ``f16``, ``f32``).
            tokenizer: a :class:`Tokenizer`, or a ``tokenizer.json`` / ``.gguf`` / checkpoint
                directory to read one from, instead of the file's own.
            progress: show download and conversion progress bars (stderr).

        Raises:
            FileNotFoundError: nothing to load at ``path_or_repo``.
            bitnet.hub.HubError: a download failed (an ``OSError``).
            bitnet.gguf.GGUFError: the file is malformed or not a supported model.
            ValueError: bad arguments. RuntimeError: ``device="cuda"`` without a usable CUDA
                backend. NotImplementedError: ``device="cuda"`` with one (runner not written).
        """
        from .convert import WEIGHT_TYPES
        from .ops import set_num_threads

        dev = str(device).lower()
        if dev.startswith("cuda") or dev == "gpu":
            from . import cuda

            if not cuda.is_available():
                raise RuntimeError(
                    f"device={device!r}: the CUDA backend is not available ({cuda.reason()}); "
                    "use device='cpu'"
                )
            raise NotImplementedError(
                f"device={device!r}: the CUDA kernels are built and a GPU is present, but the "
                "CUDA model runner is not written yet (docs/cuda.md); use device='cpu'"
            )
        if dev != "cpu":
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if threads is not None:
            threads = _int("threads", threads, 1)
        ctx = 0 if n_ctx is None else _int("n_ctx", n_ctx, 1)
        n_seq = _int("n_seq", n_seq, 1)
        if str(weight_type).lower() not in WEIGHT_TYPES:
            raise ValueError(
                f"weight_type must be one of {', '.join(WEIGHT_TYPES)}, got {weight_type!r}"
            )
        if path_or_repo is None:
            if not DEFAULT_MODEL.is_file():
                raise FileNotFoundError(
                    f"the default model {DEFAULT_MODEL} is missing from this installation; "
                    "give a model path or repo id (or remake it with "
                    "scripts/make_default_model.py)"
                )
            path_or_repo = DEFAULT_MODEL
        path = _resolve(path_or_repo, revision, str(weight_type).lower(), progress)
        if threads is not None:
            set_num_threads(threads)
        engine = _ext.Model(str(path), ctx, n_seq)
        if isinstance(tokenizer, Tokenizer):
            tok: Tokenizer | None = tokenizer
        elif tokenizer is not None:
            tok = Tokenizer.from_file(tokenizer)
        else:
            from . import gguf

            with gguf.read(path) as f:
                md = {k: v for k, v in f.metadata.items() if k.startswith("tokenizer.")}
            tok = Tokenizer.from_gguf_metadata(md, str(path)) if md else None
        return cls(engine, tok, path)

    # ------------------------------------------------------------------ basics
    @property
    def n_ctx(self) -> int:
        """KV cache length per sequence (tokens)."""
        return self.config.n_ctx

    @property
    def n_seq(self) -> int:
        """Number of sequence slots."""
        return self.config.n_seq

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Model('{self.path}', {c.architecture}, {c.n_layer} layers, n_embd {c.n_embd}, "
            f"vocab {c.vocab_size}, weights {c.weight_type}, head {c.head_type}, "
            f"n_ctx {c.n_ctx}, n_seq {c.n_seq})"
        )

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        if not self._lock.acquire(blocking=False):
            raise RuntimeError(
                "the model is busy with another generation (an unfinished stream?): finish or "
                "close() that iterator first; a Model runs one generation at a time"
            )
        try:
            yield
        finally:
            self._lock.release()

    def reset(self) -> None:
        """Empties every KV cache slot (forgets the chat prefix kept for reuse)."""
        with self._exclusive():
            self._slots.clear(-1)

    def _tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError(
                f"{self.path}: the model file has no tokenizer; pass token ids, or load with "
                "tokenizer='path/to/tokenizer.json'"
            )
        return self.tokenizer

    def _ids(self, prompt: Any, add_bos: bool | None, what: str = "prompt") -> list[int]:
        """Prompt token ids, checked: not empty, every id in the vocabulary, fits n_ctx."""
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError(f"{what} is empty")
            ids = self._tokenizer().encode(prompt, add_bos=add_bos)
        elif isinstance(prompt, (Sequence, np.ndarray)) and not isinstance(prompt, bytes):
            ids = [_int(f"{what}[{i}]", t, 0) for i, t in enumerate(prompt)]
            if not ids:
                raise ValueError(f"{what} is empty")
        else:
            raise TypeError(f"{what} must be a str or a list of token ids, got {prompt!r}")
        v = self.config.vocab_size
        for i, t in enumerate(ids):
            if t >= v:
                raise ValueError(f"{what} token {i} = {t} is out of range [0, {v}) (vocab_size)")
        if len(ids) > self.n_ctx:
            raise ValueError(
                f"{what} is {len(ids)} tokens long, more than the context of {self.n_ctx} "
                f"tokens (n_ctx; the model was trained with {self.config.n_ctx_train}): shorten "
                "it or load with a larger n_ctx"
            )
        return ids

    # ------------------------------------------------------------------ logits
    def logits(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Logits of every position of ``ids``, evaluated afresh: float32 [T, vocab_size].

        Row ``t`` is the next-token distribution after ``ids[: t + 1]``. The KV cache the call
        uses is bookkept, so later generations are unaffected.
        """
        if isinstance(ids, str):
            raise TypeError("logits() takes token ids; use model.tokenizer.encode(text)")
        toks = self._ids(ids, None, "ids")
        with self._exclusive():
            self._slots.clear(0)
            return self._slots.append(0, toks, all_logits=True)

    # ------------------------------------------------------------------ generation
    def _state(
        self,
        prompt: Prompt,
        add_bos: bool | None,
        stop: Stop,
        options: Mapping[str, Any],
        seed_offset: int = 0,
    ) -> SequenceState:
        """Checks everything and builds the sequence's state (sampler, decoder, stops)."""
        from .sampling import Sampler

        unknown = set(options) - set(DEFAULTS) - {"seed"}
        if unknown:
            raise TypeError(f"unexpected generation option(s): {', '.join(sorted(unknown))}")
        opts = {**DEFAULTS, "seed": None, **options}
        max_new = _int("max_new_tokens", opts.pop("max_new_tokens"), 0)
        seed = opts.pop("seed")
        seed = secrets.randbits(64) if seed is None else _int("seed", seed, 0, 2**64 - 1)
        params = _sampling_params(**opts, seed=(seed + seed_offset) % 2**64)
        strings, stop_ids = split_stop(stop)
        tok = self._tokenizer()  # the output is text
        ids = self._ids(prompt, add_bos)
        return SequenceState(
            ids,
            Sampler(params, self.config.vocab_size),
            tok.stream_decoder(ids),
            list(tok.eos_ids) + stop_ids,
            strings,
            max_new,
        )

    def _stream(self, state: SequenceState, reuse: bool) -> TextStream:
        def pieces() -> Iterator[str]:
            with self._exclusive():
                yield from stream_one(self._slots, 0, state, self.n_ctx, reuse)

        return TextStream(pieces(), state)

    def stream(
        self,
        prompt: Prompt,
        max_new_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repetition_penalty: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        seed: int | None = None,
        stop: Stop = None,
        add_bos: bool | None = None,
        *,
        penalty_last_n: int = 64,
        reuse_cache: bool = False,
    ) -> TextStream:
        """Like :meth:`generate`, but returns an iterator of text pieces as they are produced
        (``"".join`` of the pieces is :meth:`generate`'s text). Arguments are checked when
        this is called; the generation runs as the iterator is consumed. The iterator is a
        :class:`bitnet.generation.TextStream`: afterwards ``.token_ids`` and
        ``.finish_reason`` tell what was generated and why it ended; ``.close()`` stops early."""
        state = self._state(
            prompt,
            add_bos,
            stop,
            dict(
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                min_p=min_p,
                repetition_penalty=repetition_penalty,
                frequency_penalty=frequency_penalty,
                presence_penalty=presence_penalty,
                penalty_last_n=penalty_last_n,
                seed=seed,
            ),
        )
        return self._stream(state, reuse_cache)

    def generate(
        self,
        prompt: Prompt,
        max_new_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repetition_penalty: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        seed: int | None = None,
        stop: Stop = None,
        add_bos: bool | None = None,
        *,
        penalty_last_n: int = 64,
        reuse_cache: bool = False,
    ) -> str:
        """Generates a continuation of ``prompt``; returns the new text (not the prompt).

        Args:
            prompt: text, or a list of token ids.
            max_new_tokens: most tokens to generate (>= 0).
            temperature: 0 is greedy (argmax); higher is more random. Default 0.8.
            top_k: keep the k most likely tokens (0: off). Default 40.
            top_p: keep the smallest set of tokens whose probability reaches top_p (1: off).
                Default 0.95.
            min_p: drop tokens less likely than min_p times the most likely (0: off).
                Default 0.05.
            repetition_penalty: > 1 discourages tokens of the last ``penalty_last_n`` ids
                (HF/CTRL rule; 1: off).
            frequency_penalty, presence_penalty: OpenAI-style penalties over the same window.
            seed: RNG seed; the same seed and arguments give the same text. None: random.
            stop: stop string(s) (the text ends before the first one, even when it spans
                several tokens) and/or stop token ids (ints). EOS and end-of-turn tokens always
                stop.
            add_bos: prepend BOS (default: the tokenizer's ``add_bos_token``); text prompts only.
            penalty_last_n: penalty window in ids (-1: all, 0: none).
            reuse_cache: keep the KV cache of what slot 0 already holds in common with the
                prompt (chat does); False evaluates the prompt afresh.

        Defaults are llama.cpp's. Generation also ends when the context (``n_ctx``) is full.

        Raises:
            ValueError: empty prompt, prompt longer than the context, a token id outside the
                vocabulary, or a bad parameter (named in the message).
        """
        return "".join(
            self.stream(
                prompt,
                max_new_tokens,
                temperature,
                top_k,
                top_p,
                min_p,
                repetition_penalty,
                frequency_penalty,
                presence_penalty,
                seed,
                stop,
                add_bos,
                penalty_last_n=penalty_last_n,
                reuse_cache=reuse_cache,
            )
        )

    def generate_batch(
        self,
        prompts: Sequence[Prompt],
        max_new_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repetition_penalty: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        seed: int | None = None,
        stop: Stop = None,
        add_bos: bool | None = None,
        *,
        penalty_last_n: int = 64,
    ) -> list[str]:
        """Generates a continuation of every prompt, batching them over the model's ``n_seq``
        slots (load with ``n_seq=len(prompts)`` to run them all at once; with fewer slots a
        freed slot takes the next prompt). Parameters as :meth:`generate`; prompt ``i`` is
        sampled with seed ``seed + i``, so result ``i`` equals
        ``generate(prompts[i], seed=seed + i, ...)``.

        Raises:
            ValueError: an empty list, or a prompt or parameter :meth:`generate` rejects
                (the message names the prompt's index).
        """
        if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
            raise ValueError("prompts must be a non-empty list of prompts")
        if seed is None:
            seed = secrets.randbits(64)
        opts = dict(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
            repetition_penalty=repetition_penalty,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
            penalty_last_n=penalty_last_n,
            seed=seed,
        )
        states = []
        for i, p in enumerate(prompts):
            try:
                states.append(self._state(p, add_bos, stop, opts, seed_offset=i))
            except ValueError as e:
                raise ValueError(f"prompts[{i}]: {e}") from None
        with self._exclusive():
            run_batch(self._slots, states, self.n_ctx)
        return [s.text for s in states]

    # ------------------------------------------------------------------ chat
    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        stream: bool = False,
        chat_template: str | None = None,
        reuse_cache: bool = True,
        stop: Stop = None,
        **options: Any,
    ) -> str | TextStream:
        """The assistant's reply to ``messages`` (``[{"role": "user", "content": ...}, ...]``),
        rendered with the model's chat template (or ``chat_template``) and generated until an
        end-of-turn token.

        Args:
            messages: the whole conversation so far (the caller keeps the history).
            stream: return an iterator of text pieces instead of the text.
            chat_template: a Jinja template to use instead of the model's.
            reuse_cache: keep the KV cache of the previous turn's common prefix (default), so
                each turn evaluates only the new messages.
            stop, **options: as :meth:`generate` (``max_new_tokens``, ``temperature``,
                ``top_k``, ``top_p``, ``min_p``, penalties, ``seed``).
        """
        tok = self._tokenizer()
        text = tok.apply_chat_template(
            messages, add_generation_prompt=True, chat_template=chat_template
        )
        ids = tok.encode(text, add_bos=False)
        if not ids:
            raise ValueError("the rendered chat prompt is empty")
        state = self._state(self._ids(ids, None, "chat prompt"), None, stop, options)
        it = self._stream(state, reuse_cache)
        return it if stream else "".join(it)

    # ------------------------------------------------------------------ perplexity
    def perplexity(
        self,
        text: str | Sequence[int],
        n_ctx: int | None = None,
        stride: int | None = None,
        add_bos: bool | None = None,
    ) -> float:
        """Perplexity ``exp(mean NLL)`` of ``text`` under teacher forcing.

        The token ids (text encoded with BOS as :meth:`Tokenizer.encode`) are scored in windows
        of ``n_ctx`` tokens (default: the model's context) starting every ``stride`` tokens
        (default ``n_ctx // 2``), as in HF's sliding-window recipe: each token is scored once,
        in the first window that holds it after position 0 of that window, given the window's
        tokens before it. Logits come ``all_logits`` from the engine, 256 rows at a time; the
        log-softmax is float64.

        Raises:
            ValueError: fewer than 2 tokens, or ``n_ctx`` / ``stride`` out of range.
        """
        ids = text if not isinstance(text, str) else None
        if ids is None:
            if not text:
                raise ValueError("text is empty")
            ids = self._tokenizer().encode(text, add_bos=add_bos)
        toks = [_int(f"text[{i}]", t, 0, self.config.vocab_size - 1) for i, t in enumerate(ids)]
        if len(toks) < 2:
            raise ValueError(f"perplexity needs at least 2 tokens, the text has {len(toks)}")
        window = self.n_ctx if n_ctx is None else _int("n_ctx", n_ctx, 2, self.n_ctx)
        step = max(1, window // 2) if stride is None else _int("stride", stride, 1, window)
        nll = 0.0
        count = 0
        prev_end = 0
        chunk = 256
        with self._exclusive():
            for begin in range(0, len(toks), step):
                end = min(begin + window, len(toks))
                first = max(prev_end, begin + 1)  # first target scored in this window
                self._slots.clear(0)
                for c0 in range(begin, end, chunk):
                    c1 = min(c0 + chunk, end)
                    rows = self._slots.append(0, toks[c0:c1], all_logits=True)
                    # row r predicts token c0 + r + 1
                    lo = max(first - 1, c0)
                    hi = min(end - 1, c1)
                    if lo >= hi:
                        continue
                    x = rows[lo - c0 : hi - c0].astype(np.float64)
                    m = x.max(axis=1, keepdims=True)
                    lse = (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]
                    tgt = np.asarray(toks[lo + 1 : hi + 1])
                    nll += float(np.sum(lse - x[np.arange(len(tgt)), tgt]))
                    count += len(tgt)
                prev_end = end
                if end == len(toks):
                    break
        if count == 0:
            raise ValueError("no token could be scored (stride equals n_ctx and windows of 1?)")
        return math.exp(nll / count)

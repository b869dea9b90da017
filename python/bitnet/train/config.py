"""The hyperparameters of a BitNet b1.58 model trained with :mod:`bitnet.train`.

A :class:`TrainModelConfig` maps one to one onto transformers' ``BitNetForCausalLM`` config
(``config.json``), so a model saved by :meth:`BitNetForTraining.save_pretrained
<bitnet.train.model.BitNetForTraining.save_pretrained>` loads in transformers and converts to
GGUF with :func:`bitnet.convert.convert`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["TrainModelConfig"]

_ACTIVATIONS = {"relu2": "relu2", "silu": "silu", "swish": "silu"}


def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"TrainModelConfig: {name} must be a positive integer, got {v!r}")
    return v


def _positive_float(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v == float("inf"):
        raise ValueError(f"TrainModelConfig: {name} must be a positive number, got {v!r}")
    return float(v)


@dataclasses.dataclass
class TrainModelConfig:
    """Hyperparameters of a trainable BitNet b1.58 decoder (transformers' ``BitNetConfig``).

    Attributes:
        vocab_size: token vocabulary.
        hidden_size: model width; ``head_dim = hidden_size // num_attention_heads`` (even).
        intermediate_size: FFN width.
        num_hidden_layers: decoder layers.
        num_attention_heads: query heads.
        num_key_value_heads: key/value heads (grouped-query attention; divides the query heads).
        max_position_embeddings: context length the model is meant for (metadata: RoPE has no
            table, sequences may be longer).
        rms_norm_eps: epsilon of every RMSNorm.
        rope_theta: RoPE base frequency (NEOX pairing).
        hidden_act: FFN gate activation, ``relu2`` (BitNet b1.58) or ``silu`` (``swish`` is
            accepted as ``silu``).
        tie_word_embeddings: the LM head reuses the token embedding (no ``lm_head.weight``).
        bos_token_id, eos_token_id: optional special token ids written to ``config.json``.

    Raises:
        ValueError: a non-positive size, heads that do not divide, an odd head dimension, an
            unknown activation or a special token id outside the vocabulary.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    hidden_act: str = "relu2"
    tie_word_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self) -> None:
        for f in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "max_position_embeddings",
        ):
            _positive_int(f, getattr(self, f))
        self.rms_norm_eps = _positive_float("rms_norm_eps", self.rms_norm_eps)
        self.rope_theta = _positive_float("rope_theta", self.rope_theta)
        h, nh, nkv = self.hidden_size, self.num_attention_heads, self.num_key_value_heads
        if h % nh:
            raise ValueError(
                f"TrainModelConfig: hidden_size = {h} is not a multiple of "
                f"num_attention_heads = {nh}"
            )
        if nh % nkv:
            raise ValueError(
                f"TrainModelConfig: num_attention_heads = {nh} is not a multiple of "
                f"num_key_value_heads = {nkv}"
            )
        if (h // nh) % 2:
            raise ValueError(
                f"TrainModelConfig: head_dim = hidden_size / num_attention_heads = {h // nh} "
                "must be even (RoPE rotates pairs)"
            )
        act = _ACTIVATIONS.get(str(self.hidden_act))
        if act is None:
            raise ValueError(
                f"TrainModelConfig: hidden_act must be 'relu2' or 'silu', got {self.hidden_act!r}"
            )
        self.hidden_act = act
        if not isinstance(self.tie_word_embeddings, bool):
            raise ValueError(
                "TrainModelConfig: tie_word_embeddings must be a bool, got "
                f"{self.tie_word_embeddings!r}"
            )
        for f in ("bos_token_id", "eos_token_id"):
            v = getattr(self, f)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < self.vocab_size:
                raise ValueError(
                    f"TrainModelConfig: {f} = {v!r} is not a token id in [0, {self.vocab_size})"
                )

    @property
    def head_dim(self) -> int:
        """Per-head dimension: ``hidden_size // num_attention_heads``."""
        return self.hidden_size // self.num_attention_heads

    def to_hf_config(self) -> dict[str, Any]:
        """A transformers ``BitNetForCausalLM`` ``config.json`` (a JSON-serializable dict).

        RoPE theta is written both as transformers 5's ``rope_parameters`` and as the older
        top-level ``rope_theta``; ``dtype`` says the weights are float32 master weights."""
        return {
            "architectures": ["BitNetForCausalLM"],
            "model_type": "bitnet",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_theta": self.rope_theta, "rope_type": "default"},
            "hidden_act": self.hidden_act,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": None,
            "use_cache": True,
            "dtype": "float32",
        }

    @classmethod
    def from_hf_config(cls, d: Mapping[str, Any]) -> TrainModelConfig:
        """The config of a transformers ``BitNetForCausalLM`` ``config.json`` dict (also 1bitLLM's
        LLaMA-layout ``BitnetForCausalLM``). Missing keys take the architecture's defaults, as
        transformers would (``tie_word_embeddings``: False).

        Raises:
            ValueError: another architecture, missing or invalid sizes, RoPE scaling, biases,
                or a ``head_dim`` other than ``hidden_size // num_attention_heads``.
        """
        from ..convert.architectures import ARCHITECTURES, detect, parse_hparams

        where = Path("config.json")
        d = dict(d)
        if "architectures" not in d and d.get("model_type") == "bitnet":
            arch = ARCHITECTURES["BitNetForCausalLM"]
        else:
            arch = detect(d, where)
        hp = parse_hparams(d, arch, where)
        if hp.head_dim * hp.n_heads != hp.hidden_size:
            raise ValueError(
                f"{where}: head_dim = {hp.head_dim} with {hp.n_heads} heads does not span "
                f"hidden_size = {hp.hidden_size} (training supports head_dim = hidden_size / "
                "num_attention_heads only)"
            )
        special = {}
        for key in ("bos_token_id", "eos_token_id"):
            v = d.get(key)
            ok = isinstance(v, int) and not isinstance(v, bool) and 0 <= v < hp.vocab_size
            special[key] = v if ok else None
        return cls(
            vocab_size=hp.vocab_size,
            hidden_size=hp.hidden_size,
            intermediate_size=hp.intermediate_size,
            num_hidden_layers=hp.n_layers,
            num_attention_heads=hp.n_heads,
            num_key_value_heads=hp.n_kv_heads,
            max_position_embeddings=hp.context_length,
            rms_norm_eps=hp.rms_norm_eps,
            rope_theta=hp.rope_theta,
            hidden_act=hp.hidden_act,
            tie_word_embeddings=bool(hp.tie_word_embeddings),
            **special,
        )

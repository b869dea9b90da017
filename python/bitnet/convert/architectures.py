"""The HuggingFace BitNet architectures that :mod:`bitnet.convert` reads.

* ``BitNetForCausalLM`` (transformers' own BitNet, e.g. microsoft/bitnet-b1.58-2B-4T): ReLU^2
  FFN, grouped-query attention, sub-norms ``self_attn.attn_sub_norm`` / ``mlp.ffn_sub_norm``,
  usually tied embeddings; weights either bf16 master weights or packed uint8 + ``weight_scale``
  (``quantization_config.quant_method == "bitnet"``).
* ``BitnetForCausalLM`` (1bitLLM's remote-code models, e.g. 1bitLLM/bitnet_b1_58-large): LLaMA
  layout with SiLU, sub-norms ``self_attn.inner_attn_ln`` / ``mlp.ffn_layernorm``, usually an
  untied ``lm_head``; f16/f32 master weights.

Both map onto the same GGUF tensors (docs/formats.md section 3). This module turns ``config.json``
into validated hyperparameters, the list of expected tensors with their shapes, and the GGUF
``<arch>.*`` metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import ConversionError

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "HParams",
    "TensorSpec",
    "detect",
    "gguf_metadata",
    "linear_class",
    "parse_hparams",
    "tensor_specs",
]

ACTIVATIONS = {"relu2": "relu2", "silu": "silu", "swish": "silu"}
"""HF ``hidden_act`` values -> the GGUF ``<arch>.hidden_act`` value the runtime understands."""


@dataclass(frozen=True)
class Architecture:
    """How one HF architecture names its tensors and what its config defaults are."""

    hf_name: str
    description: str
    attn_sub_norm: str  # module path inside a layer
    ffn_sub_norm: str
    default_act: str
    default_rope_theta: float
    default_rms_eps: float


ARCHITECTURES: dict[str, Architecture] = {
    a.hf_name: a
    for a in (
        Architecture(
            "BitNetForCausalLM",
            "transformers BitNet (microsoft/bitnet-b1.58-2B-4T)",
            "self_attn.attn_sub_norm",
            "mlp.ffn_sub_norm",
            "relu2",
            500000.0,
            1e-5,
        ),
        Architecture(
            "BitnetForCausalLM",
            "1bitLLM BitNet b1.58 (LLaMA layout, remote code)",
            "self_attn.inner_attn_ln",
            "mlp.ffn_layernorm",
            "silu",
            10000.0,
            1e-6,
        ),
    )
}


@dataclass(frozen=True)
class HParams:
    """Validated hyperparameters of a checkpoint (from its ``config.json``)."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    context_length: int
    hidden_act: str  # "relu2" or "silu"
    tie_word_embeddings: bool | None  # None: config.json does not say


@dataclass(frozen=True)
class TensorSpec:
    """One tensor the GGUF file will hold.

    Attributes:
        src: the checkpoint name (for packed BitLinear weights, the uint8 ``.weight``).
        gguf: the GGUF name (``blk.0.attn_q.weight``).
        kind: ``ternary`` (a BitLinear matrix), ``embedding`` (token embedding or untied
            head) or ``norm`` (an RMSNorm weight, always stored f32).
        shape: the logical shape, numpy order (``[out, in]`` for matrices).
    """

    src: str
    gguf: str
    kind: Literal["ternary", "embedding", "norm"]
    shape: tuple[int, ...]


def detect(config: Mapping[str, Any], config_path: Path) -> Architecture:
    """The :class:`Architecture` named by ``config["architectures"]``.

    Raises:
        ConversionError: the key is missing, or names no supported architecture (the message
            lists the supported ones).
    """
    names = config.get("architectures")
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names:
        raise ConversionError(
            f"{config_path}: no 'architectures' list; supported: {', '.join(ARCHITECTURES)}"
        )
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise ConversionError(
        f"{config_path}: unknown architecture {', '.join(map(str, names))}; supported: "
        + ", ".join(f"{a.hf_name} ({a.description})" for a in ARCHITECTURES.values())
    )


def _int(config: Mapping[str, Any], key: str, path: Path, default: int | None = None) -> int:
    v = config.get(key, default)
    if v is None and default is not None:
        v = default
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        shown = "missing" if key not in config else repr(v)
        raise ConversionError(f"{path}: '{key}' must be a positive integer, got {shown}")
    return v


def _float(config: Mapping[str, Any], key: str, path: Path, default: float) -> float:
    v = config.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ConversionError(f"{path}: '{key}' must be a positive number, got {v!r}")
    return float(v)


def _rope_theta(config: Mapping[str, Any], arch: Architecture, path: Path) -> float:
    """``rope_theta`` (transformers 4) or ``rope_parameters.rope_theta`` (transformers 5);
    RoPE scaling of any kind is refused (the runtime implements plain RoPE only)."""
    params = config.get("rope_parameters")
    scaling = config.get("rope_scaling")
    for name, block in (("rope_parameters", params), ("rope_scaling", scaling)):
        if block is None:
            continue
        if not isinstance(block, dict):
            raise ConversionError(f"{path}: '{name}' must be an object, got {block!r}")
        kind = block.get("rope_type", block.get("type", "default"))
        if kind not in (None, "default"):
            raise ConversionError(
                f"{path}: RoPE scaling '{kind}' ({name}) is not supported; only plain RoPE is"
            )
    if config.get("rope_theta") is not None:
        return _float(config, "rope_theta", path, arch.default_rope_theta)
    if isinstance(params, dict) and params.get("rope_theta") is not None:
        return _float(params, "rope_theta", path, arch.default_rope_theta)
    return arch.default_rope_theta


def parse_hparams(config: Mapping[str, Any], arch: Architecture, path: Path) -> HParams:
    """Reads and checks the hyperparameters of ``config`` (the ``config.json`` at ``path``).

    Raises:
        ConversionError: a missing or non-positive size, heads that do not divide, an
            activation other than relu2/silu, RoPE scaling, or biases.
    """
    hidden = _int(config, "hidden_size", path)
    heads = _int(config, "num_attention_heads", path)
    kv = config.get("num_key_value_heads")
    kv_heads = heads if kv is None else _int(config, "num_key_value_heads", path)
    if heads % kv_heads:
        raise ConversionError(
            f"{path}: num_attention_heads = {heads} is not a multiple of "
            f"num_key_value_heads = {kv_heads}"
        )
    if config.get("head_dim") is not None:
        head_dim = _int(config, "head_dim", path)
    elif hidden % heads:
        raise ConversionError(
            f"{path}: hidden_size = {hidden} is not a multiple of num_attention_heads = {heads}"
        )
    else:
        head_dim = hidden // heads
    if head_dim % 2:
        raise ConversionError(f"{path}: head dimension {head_dim} must be even for RoPE")
    act_name = config.get("hidden_act", config.get("hidden_activation", arch.default_act))
    act = ACTIVATIONS.get(str(act_name))
    if act is None:
        raise ConversionError(f"{path}: hidden_act '{act_name}' is not supported (relu2 or silu)")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise ConversionError(f"{path}: '{key}': true is not supported (BitNet has no biases)")
    tie = config.get("tie_word_embeddings")
    return HParams(
        architecture=arch.hf_name,
        vocab_size=_int(config, "vocab_size", path),
        hidden_size=hidden,
        intermediate_size=_int(config, "intermediate_size", path),
        n_layers=_int(config, "num_hidden_layers", path),
        n_heads=heads,
        n_kv_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=_float(config, "rms_norm_eps", path, arch.default_rms_eps),
        rope_theta=_rope_theta(config, arch, path),
        context_length=_int(config, "max_position_embeddings", path, 2048),
        hidden_act=act,
        tie_word_embeddings=None if tie is None else bool(tie),
    )


def linear_class(config: Mapping[str, Any], path: Path) -> str | None:
    """The packed-weight scale convention of ``quantization_config``: ``"autobitlinear"``
    (``W = t * weight_scale``), ``"bitlinear"`` (``W = t / weight_scale``, transformers' default)
    or None when the config has no quantization_config.

    Raises:
        ConversionError: another quantization method, an unknown linear_class, or
            ``use_rms_norm`` (extra per-layer norms the GGUF layout has no place for).
    """
    qc = config.get("quantization_config")
    if qc is None:
        return None
    if not isinstance(qc, dict):
        raise ConversionError(f"{path}: 'quantization_config' must be an object")
    method = qc.get("quant_method")
    if method != "bitnet":
        raise ConversionError(
            f"{path}: quantization_config.quant_method '{method}' is not supported (bitnet only)"
        )
    lc = qc.get("linear_class", "bitlinear")
    if lc not in ("bitlinear", "autobitlinear"):
        raise ConversionError(
            f"{path}: quantization_config.linear_class '{lc}' is not supported "
            "(bitlinear or autobitlinear)"
        )
    if qc.get("use_rms_norm"):
        raise ConversionError(
            f"{path}: quantization_config.use_rms_norm = true is not supported (extra "
            "per-projection RMSNorm)"
        )
    return lc


def tensor_specs(hp: HParams, arch: Architecture, has_lm_head: bool) -> list[TensorSpec]:
    """Every tensor the GGUF file gets, in file order: ``token_embd``, the layers, then
    ``output_norm`` and (untied head only) ``output``.

    The head is untied when ``config.json`` says ``tie_word_embeddings: false``, or says nothing
    and the checkpoint has ``lm_head.weight``; a tied model's ``lm_head.weight`` copy is ignored.
    """
    h, f = hp.hidden_size, hp.intermediate_size
    q, kv = hp.n_heads * hp.head_dim, hp.n_kv_heads * hp.head_dim
    specs = [
        TensorSpec(
            "model.embed_tokens.weight", "token_embd.weight", "embedding", (hp.vocab_size, h)
        )
    ]
    layer = (
        ("input_layernorm", "attn_norm", "norm", (h,)),
        ("self_attn.q_proj", "attn_q", "ternary", (q, h)),
        ("self_attn.k_proj", "attn_k", "ternary", (kv, h)),
        ("self_attn.v_proj", "attn_v", "ternary", (kv, h)),
        (arch.attn_sub_norm, "attn_sub_norm", "norm", (h,)),
        ("self_attn.o_proj", "attn_output", "ternary", (h, q)),
        ("post_attention_layernorm", "ffn_norm", "norm", (h,)),
        ("mlp.gate_proj", "ffn_gate", "ternary", (f, h)),
        ("mlp.up_proj", "ffn_up", "ternary", (f, h)),
        (arch.ffn_sub_norm, "ffn_sub_norm", "norm", (f,)),
        ("mlp.down_proj", "ffn_down", "ternary", (h, f)),
    )
    for i in range(hp.n_layers):
        for src, dst, kind, shape in layer:
            specs.append(
                TensorSpec(f"model.layers.{i}.{src}.weight", f"blk.{i}.{dst}.weight", kind, shape)
            )
    specs.append(TensorSpec("model.norm.weight", "output_norm.weight", "norm", (h,)))
    untied = (not hp.tie_word_embeddings) if hp.tie_word_embeddings is not None else has_lm_head
    if untied:
        specs.append(TensorSpec("lm_head.weight", "output.weight", "embedding", (hp.vocab_size, h)))
    return specs


def gguf_metadata(hp: HParams, gguf_arch: str) -> dict[str, Any]:
    """The ``<arch>.*`` hyperparameter keys (ints are written u32, floats f32)."""
    p = gguf_arch
    return {
        f"{p}.vocab_size": hp.vocab_size,
        f"{p}.context_length": hp.context_length,
        f"{p}.embedding_length": hp.hidden_size,
        f"{p}.block_count": hp.n_layers,
        f"{p}.feed_forward_length": hp.intermediate_size,
        f"{p}.attention.head_count": hp.n_heads,
        f"{p}.attention.head_count_kv": hp.n_kv_heads,
        f"{p}.attention.layer_norm_rms_epsilon": hp.rms_norm_eps,
        f"{p}.rope.freq_base": hp.rope_theta,
        f"{p}.rope.dimension_count": hp.head_dim,
        f"{p}.hidden_act": hp.hidden_act,
    }

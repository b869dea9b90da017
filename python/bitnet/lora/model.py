"""``LoraModel``: LoRA adapters on a frozen, packed ternary BitNet base.

::

    from bitnet.lora import LoraConfig, LoraModel
    from bitnet import autograd as ag, optim

    model = LoraModel("model.gguf", LoraConfig(r=8, alpha=16, target_modules=["q_proj", "v_proj"]))
    opt = optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.0, decay_mask=model.decay_mask())
    loss = model.loss(ids, targets)        # int [B, T]; targets -100 where not trained
    ag.backward(loss); opt.step(); opt.zero_grad()
    model.save_adapter("adapter")          # PEFT layout: peft.PeftModel.from_pretrained reads it
    model.generate("Hello", max_new_tokens=16)
    report = model.merge("merged.gguf")    # on the base's grid; bitnet.Model.load runs it
    print(report.format())

The base is loaded once: from a GGUF file its ternary matrices (i2_s / tq1_0 / tq2_0) stay in
their packed form (zero-copy views of the mapped file, repacked once into the kernel layout on
first use), the embedding / head (f16, f32, q8_0, q4_0, ...) are dequantized to fp32 once and
the norms read as fp32; from a transformers checkpoint directory (or a
:class:`~bitnet.train.BitNetForTraining`) every BitLinear master weight is ternarized with
absmean and packed once. Each BitLinear of the forward is then
``bitlinear_frozen(x, W) + (alpha / r) * linear(linear(dropout(x), A), B)`` on the targeted
projections: the base runs on the int8 x ternary inference kernels and gets no gradient; only
the adapters ``A [r, in]`` and ``B [out, r]`` (fp32 tape tensors) are trained.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import autograd as ag
from .. import ops
from .config import ADAPTER_WEIGHTS, TARGET_MODULES, LoraConfig

__all__ = ["BaseConfig", "LayerMergeStats", "LoraModel", "MergeReport", "peft_key"]

_PARENT = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}
_GGUF_PROJ = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
_GGUF_NORMS = {
    "attn_norm": "input_layernorm",
    "attn_sub_norm": "self_attn.attn_sub_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_sub_norm": "mlp.ffn_sub_norm",
}
_TERNARY = ("i2_s", "tq1_0", "tq2_0")
_EMBED_TYPES = ("f16", "f32", "q8_0", "q4_0")
_PEFT_PREFIX = "base_model.model."


def peft_key(module: str, which: str) -> str:
    """PEFT's saved name of an adapter matrix: ``peft_key("model.layers.0.self_attn.q_proj",
    "A")`` is ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``."""
    return f"{_PEFT_PREFIX}{module}.lora_{which}.weight"


# ----------------------------------------------------------------------------- base config
@dataclasses.dataclass(frozen=True)
class BaseConfig:
    """The frozen base's hyperparameters (from the GGUF metadata or the checkpoint config)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    hidden_act: str
    tie_word_embeddings: bool
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def module_shape(self, module: str) -> tuple[int, int]:
        """``(out, in)`` of a projection (``q_proj`` ... ``down_proj``)."""
        e, f = self.hidden_size, self.intermediate_size
        q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        return {
            "q_proj": (q, e),
            "k_proj": (kv, e),
            "v_proj": (kv, e),
            "o_proj": (e, q),
            "gate_proj": (f, e),
            "up_proj": (f, e),
            "down_proj": (e, f),
        }[module]

    def to_train_config(self) -> Any:
        """The :class:`~bitnet.train.TrainModelConfig` (for :meth:`LoraModel.merge`).

        Raises:
            ValueError: a head size other than ``hidden_size / num_attention_heads``."""
        from ..train.config import TrainModelConfig

        if self.head_dim * self.num_attention_heads != self.hidden_size:
            raise ValueError(
                f"head_dim {self.head_dim} x {self.num_attention_heads} heads != hidden_size "
                f"{self.hidden_size}: a transformers BitNetForCausalLM cannot hold this model"
            )
        return TrainModelConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            hidden_act=self.hidden_act,
            tie_word_embeddings=self.tie_word_embeddings,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
        )


@dataclasses.dataclass
class _Base:
    config: BaseConfig
    embed: Any  # ag.Tensor [V, E], no grad
    head: Any  # ag.Tensor [V, E] (the embedding when tied)
    norms: dict[str, Any]  # HF name -> ag.Tensor
    weights: dict[str, Any]  # module path -> PackedWeights
    kind: str  # "gguf" | "checkpoint" | "model"
    source: str | None
    weight_type: str  # merge default
    embed_type: str  # merge default
    tokenizer: Any
    model_ref: Any = None  # the BitNetForTraining given directly


def _meta_int(md: Mapping[str, Any], key: str, path: Path, default: int | None = None) -> int:
    v = md.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        what = "missing" if key not in md else f"= {v!r} is not a positive integer"
        raise ValueError(f"{path}: metadata key {key} {what}")
    return int(v)


def _dense_ternary(arr: np.ndarray, where: str) -> tuple[np.ndarray, float]:
    """(t, s) of an F16/F32 tensor holding ``t * s`` (the dequantized ternary export)."""
    s = float(np.max(np.abs(arr))) if arr.size else 0.0
    if s == 0.0:
        raise ValueError(f"{where}: all-zero BitLinear weights")
    t = np.rint(arr / np.float32(s)).astype(np.int8)
    if np.any(np.abs(t) > 1) or not np.allclose(t.astype(np.float32) * np.float32(s), arr):
        raise ValueError(
            f"{where}: the weights are not ternary (t * s); LoRA needs a 1.58-bit base"
        )
    return t, s


def _load_gguf(path: Path) -> _Base:
    from .. import gguf
    from ..tokenizer import Tokenizer

    with gguf.read(path) as f:
        md = f.metadata
        arch = f.architecture
        if arch not in ("bitnet", "bitnet-b1.58", "bitnet-25"):
            raise ValueError(
                f"{path}: architecture {arch!r} is not a BitNet model (bitnet, bitnet-b1.58)"
            )
        p = arch + "."
        E = _meta_int(md, p + "embedding_length", path)
        L = _meta_int(md, p + "block_count", path)
        F = _meta_int(md, p + "feed_forward_length", path)
        H = _meta_int(md, p + "attention.head_count", path)
        Hkv = _meta_int(md, p + "attention.head_count_kv", path, H)
        D = md.get(p + "attention.key_length") or md.get(p + "rope.dimension_count") or E // H
        eps = md.get(p + "attention.layer_norm_rms_epsilon")
        if not isinstance(eps, float):
            raise ValueError(f"{path}: metadata key {p}attention.layer_norm_rms_epsilon missing")
        act = md.get(p + "hidden_act", "silu" if arch == "bitnet" else "relu2")
        act = {"swish": "silu"}.get(act, act)
        tensors = f.tensors

        def get(name: str, shape: tuple[int, ...]) -> Any:
            info = tensors.get(name)
            if info is None:
                raise ValueError(f"{path}: missing tensor '{name}'")
            if tuple(info.shape) != shape:
                raise ValueError(
                    f"{path}: tensor '{name}' has shape {tuple(info.shape)}, expected {shape}"
                )
            return info

        te = tensors.get("token_embd.weight")
        if te is None or len(te.shape) != 2 or te.shape[1] != E:
            raise ValueError(f"{path}: missing or misshapen tensor 'token_embd.weight'")
        V = int(te.shape[0])
        tok_md = {k: v for k, v in md.items() if k.startswith("tokenizer.")}
        tok = Tokenizer.from_gguf_metadata(tok_md, str(path)) if tok_md else None
        cfg = BaseConfig(
            vocab_size=V,
            hidden_size=E,
            intermediate_size=F,
            num_hidden_layers=L,
            num_attention_heads=H,
            num_key_value_heads=Hkv,
            head_dim=int(D),
            rms_norm_eps=float(eps),
            rope_theta=float(md.get(p + "rope.freq_base", 10000.0)),
            hidden_act=str(act),
            tie_word_embeddings="output.weight" not in tensors,
            max_position_embeddings=int(md.get(p + "context_length", 2048)),
            bos_token_id=None if tok is None else tok.bos_id,
            eos_token_id=None if tok is None else tok.eos_id,
        )
        embed = ag.Tensor(np.ascontiguousarray(te.dequantize(), np.float32))
        head = embed
        if not cfg.tie_word_embeddings:
            head = ag.Tensor(np.ascontiguousarray(get("output.weight", (V, E)).dequantize()))
        norms = {"model.norm.weight": ag.Tensor(get("output_norm.weight", (E,)).dequantize())}
        weights: dict[str, Any] = {}
        types: set[str] = set()
        q_dim = H * cfg.head_dim
        for i in range(L):
            for gname, hname in _GGUF_NORMS.items():
                n = q_dim if gname == "attn_sub_norm" else F if gname == "ffn_sub_norm" else E
                info = get(f"blk.{i}.{gname}.weight", (n,))
                norms[f"model.layers.{i}.{hname}.weight"] = ag.Tensor(info.dequantize())
            for mod in TARGET_MODULES:
                name = f"blk.{i}.{_GGUF_PROJ[mod]}.weight"
                info = get(name, cfg.module_shape(mod))
                types.add(info.type)
                if info.type in _TERNARY:
                    w = info.packed()
                elif info.type in ("f16", "f32", "bf16"):
                    t, s = _dense_ternary(info.dequantize(), f"{path}: tensor '{name}'")
                    w = ops.pack(t, "native", s)
                else:
                    raise ValueError(
                        f"{path}: tensor '{name}' has type {info.type}; expected a ternary "
                        "type (i2_s, tq1_0, tq2_0)"
                    )
                w.prepare()  # the kernel layout, once (validates every code)
                weights[f"model.layers.{i}.{_PARENT[mod]}.{mod}"] = w
        wtype = types.pop() if len(types) == 1 else "i2_s"
        return _Base(
            config=cfg,
            embed=embed,
            head=head,
            norms=norms,
            weights=weights,
            kind="gguf",
            source=str(path),
            weight_type=wtype if wtype in _TERNARY else "i2_s",
            embed_type=te.type if te.type in _EMBED_TYPES else "f16",
            tokenizer=tok,
        )


def _from_training_model(model: Any, kind: str, source: str | None, tok: Any) -> _Base:
    c = model.config
    cfg = BaseConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        head_dim=c.head_dim,
        rms_norm_eps=c.rms_norm_eps,
        rope_theta=c.rope_theta,
        hidden_act=c.hidden_act,
        tie_word_embeddings=c.tie_word_embeddings,
        max_position_embeddings=c.max_position_embeddings,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
    )
    state = model.params

    def copy(name: str) -> Any:
        return ag.Tensor(np.array(state[name].numpy(), np.float32, copy=True))

    embed = copy("model.embed_tokens.weight")
    head = embed if c.tie_word_embeddings else copy("lm_head.weight")
    norms = {"model.norm.weight": copy("model.norm.weight")}
    weights = {}
    for i in range(c.num_hidden_layers):
        for hname in _GGUF_NORMS.values():
            norms[f"model.layers.{i}.{hname}.weight"] = copy(f"model.layers.{i}.{hname}.weight")
        for mod in TARGET_MODULES:
            path = f"model.layers.{i}.{_PARENT[mod]}.{mod}"
            t, s = ops.quantize_weights(np.ascontiguousarray(state[path + ".weight"].numpy()))
            w = ops.pack(t, "native", s)
            w.prepare()
            weights[path] = w
    return _Base(
        config=cfg,
        embed=embed,
        head=head,
        norms=norms,
        weights=weights,
        kind=kind,
        source=source,
        weight_type="i2_s",
        embed_type="f16",
        tokenizer=tok,
        model_ref=model if kind == "model" else None,
    )


def _load_base(base: Any, tokenizer: Any) -> _Base:
    from ..tokenizer import Tokenizer
    from ..train.model import BitNetForTraining

    tok = tokenizer
    if tok is not None and not isinstance(tok, Tokenizer):
        tok = Tokenizer.from_file(tok)
    if isinstance(base, BitNetForTraining):
        return _from_training_model(base, "model", None, tok)
    if not isinstance(base, (str, os.PathLike)):
        raise TypeError(
            "LoraModel: base must be a .gguf path, a checkpoint directory or a "
            f"BitNetForTraining, got {type(base).__name__}"
        )
    path = Path(os.path.expanduser(os.fspath(base)))
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_dir():
        model = BitNetForTraining.from_pretrained(path)
        if tok is None and (path / "tokenizer.json").is_file():
            tok = Tokenizer.from_file(path)
        return _from_training_model(model, "checkpoint", str(path), tok)
    b = _load_gguf(path)
    if tok is not None:
        b.tokenizer = tok
    return b


# ----------------------------------------------------------------------------- merge report
@dataclasses.dataclass
class LayerMergeStats:
    """What merging did to one projection in :meth:`LoraModel.merge`.

    With ``W = s0 * T0`` the base's effective weights (what the unmerged model multiplies
    with), ``dW = (alpha / r) B @ A`` the adapter's update and ``W' = s1 * T1`` the merged
    model's ternary weights: for a GGUF base ``T1 = clamp(round(T0 + dW / s0), -1, 1)`` on
    the base's grid (``s1 = s0``, or ``s0`` as another requested type stores it), for a
    checkpoint base the absmean re-quantization of the merged master weights ``W0 + dW``:

    Attributes:
        name: the module path (``model.layers.0.self_attn.q_proj``).
        targeted: whether it has an adapter.
        update_norm: ``||dW||_F``.
        update_rel_error: ``||(W' - W) - dW||_F / ||dW||_F``: the share of the update lost (or
            distorted) by rounding to ternary (1.0: the merged model does not see the update
            at all); NaN without an update.
        weight_rel_error: ``||W' - (W + dW)||_F / ||W + dW||_F``: the merged weights against
            the unmerged model's effective weights.
        codes_changed: share of the ternary codes with ``T1 != T0``.
        scale_before, scale_after: ``s0`` and ``s1``.
    """

    name: str
    targeted: bool
    update_norm: float
    update_rel_error: float
    weight_rel_error: float
    codes_changed: float
    scale_before: float
    scale_after: float


@dataclasses.dataclass
class MergeReport:
    """The result of :meth:`LoraModel.merge`: per projection :class:`LayerMergeStats` and the
    overall figures (Frobenius norms summed over the projections before taking the ratio:
    ``update_rel_error`` over the targeted ones, ``weight_rel_error`` and ``codes_changed``
    over every projection), the method (``"grid"``: rounded onto the GGUF base's own scales;
    ``"absmean"``: master weights re-quantized) and the written files."""

    layers: list[LayerMergeStats]
    update_rel_error: float
    weight_rel_error: float
    codes_changed: float
    gguf: Path | None = None
    hf_dir: Path | None = None
    method: str = "absmean"

    def format(self) -> str:
        """A human-readable table (targeted or changed projections, then the totals)."""
        lines = [
            f"{'module':<44} {'|dW|':>10} {'upd err':>8} {'w err':>8} {'codes':>7} {'scale':>21}"
        ]
        for s in self.layers:
            if not s.targeted and s.codes_changed == 0 and s.weight_rel_error == 0:
                continue
            lines.append(
                f"{s.name:<44} {s.update_norm:>10.4g} {s.update_rel_error:>8.4f} "
                f"{s.weight_rel_error:>8.4f} {100 * s.codes_changed:>6.2f}% "
                f"{s.scale_before:>10.4g}->{s.scale_after:<10.4g}"
            )
        how = "rounding onto the base's grid" if self.method == "grid" else "re-quantization"
        lines.append(
            f"overall: update lost to {how} {self.update_rel_error:.4f} (relative "
            f"Frobenius), merged weights vs unmerged {self.weight_rel_error:.4f}, ternary codes "
            f"changed {100 * self.codes_changed:.3f}%"
        )
        return "\n".join(lines)


class _Totals:
    """Running sums of squares for the overall :class:`MergeReport` figures."""

    def __init__(self) -> None:
        self.upd_err = self.upd = self.w_err = self.w = 0.0
        self.changed = self.codes = 0

    def layer(
        self,
        name: str,
        t0: np.ndarray,
        s0: float,
        t1: np.ndarray,
        s1: float,
        dw: np.ndarray | None,
    ) -> LayerMergeStats:
        """The stats of one projection (``dw`` float64 or None without an adapter), added to
        the sums; every norm in float64."""
        q0 = t0.astype(np.float64) * float(s0)
        q1 = t1.astype(np.float64) * float(s1)
        delta = q1 - q0
        target = q0 if dw is None else q0 + dw
        dn = 0.0 if dw is None else float(np.linalg.norm(dw))
        upd_err = float(np.linalg.norm(delta if dw is None else delta - dw))
        w_err = float(np.linalg.norm(q1 - target))
        tn = float(np.linalg.norm(target))
        changed = int(np.count_nonzero(t1 != t0))
        if dw is not None:
            self.upd_err += upd_err**2
            self.upd += dn**2
        self.w_err += w_err**2
        self.w += tn**2
        self.changed += changed
        self.codes += t0.size
        return LayerMergeStats(
            name=name,
            targeted=dw is not None,
            update_norm=dn,
            update_rel_error=upd_err / dn if dn > 0 else math.nan,
            weight_rel_error=w_err / tn if tn > 0 else 0.0,
            codes_changed=changed / t0.size,
            scale_before=float(s0),
            scale_after=float(s1),
        )

    def report(self, layers: list[LayerMergeStats], method: str) -> MergeReport:
        return MergeReport(
            layers=layers,
            update_rel_error=math.sqrt(self.upd_err / self.upd) if self.upd > 0 else math.nan,
            weight_rel_error=math.sqrt(self.w_err / self.w) if self.w > 0 else 0.0,
            codes_changed=self.changed / max(1, self.codes),
            method=method,
        )


def grid_merge_codes(t0: np.ndarray, scale: float, dw: np.ndarray) -> np.ndarray:
    """The ternary codes of ``s * T0 + dW`` on the grid of scale ``s``:
    ``clamp(round_half_even(T0 + dW / s), -1, 1)`` as int8 (``dW`` float64 ``[N, K]``,
    ``T0`` int8 ``[N, K]``; computed in float64)."""
    return np.clip(np.rint(t0.astype(np.float64) + dw / float(scale)), -1, 1).astype(np.int8)


# ----------------------------------------------------------------------------- the model
class LoraModel:
    """A frozen ternary BitNet base with trainable LoRA adapters (PEFT-compatible).

    Args:
        base: a GGUF file (ternary i2_s / tq1_0 / tq2_0 matrices, or f16/f32 ``t * s``), a
            transformers ``BitNetForCausalLM`` checkpoint directory with master weights (read
            with :meth:`BitNetForTraining.from_pretrained <bitnet.train.BitNetForTraining>`,
            ternarized and packed once, then dropped), or a ``BitNetForTraining`` (quantized
            from its current weights; kept by reference for :meth:`merge`).
        config: the :class:`LoraConfig` (default: ``LoraConfig()``).
        seed: seed of the adapters' init (``A`` Kaiming-uniform as PEFT, ``U(-1/sqrt(in),
            1/sqrt(in))``, from ``numpy.random.default_rng(seed)`` in :meth:`parameters` order;
            ``B`` zeros) and of the dropout masks.
        tokenizer: a :class:`bitnet.tokenizer.Tokenizer` or a path to one, instead of the
            base's own (the GGUF metadata, or the checkpoint's ``tokenizer.json``).

    Attributes:
        config: the base's :class:`BaseConfig`. lora_config: the :class:`LoraConfig`.
        tokenizer: the tokenizer, or None. adapters: ``module path -> (A, B)`` tape tensors.

    Raises:
        FileNotFoundError: no such base. ValueError: not a BitNet model (the message names the
            file and the key or tensor).
    """

    def __init__(
        self,
        base: Any,
        config: LoraConfig | None = None,
        *,
        seed: int = 0,
        tokenizer: Any = None,
    ) -> None:
        if config is None:
            config = LoraConfig()
        if not isinstance(config, LoraConfig):
            raise TypeError(f"LoraModel: config must be a LoraConfig, got {type(config).__name__}")
        self._base = _load_base(base, tokenizer)
        self.config: BaseConfig = self._base.config
        self.tokenizer = self._base.tokenizer
        self.seed = int(seed)
        self._dropout_calls = 0
        self.lora_config = config
        self.adapters: dict[str, tuple[Any, Any]] = {}
        self._init_adapters(config)

    # ------------------------------------------------------------------ structure
    def _modules(self, config: LoraConfig) -> list[str]:
        return [
            f"model.layers.{i}.{_PARENT[m]}.{m}"
            for i in range(self.config.num_hidden_layers)
            for m in config.target_modules
        ]

    def _init_adapters(self, config: LoraConfig) -> None:
        rng = np.random.default_rng(self.seed)
        adapters = {}
        for name in self._modules(config):
            out, inp = self.config.module_shape(name.rsplit(".", 1)[1])
            bound = 1.0 / math.sqrt(inp)
            a = rng.uniform(-bound, bound, size=(config.r, inp)).astype(np.float32)
            b = np.zeros((out, config.r), np.float32)
            adapters[name] = (ag.Tensor(a, requires_grad=True), ag.Tensor(b, requires_grad=True))
        self.adapters = adapters
        self.lora_config = config

    def module_names(self) -> list[str]:
        """The adapted modules' paths (``model.layers.0.self_attn.q_proj``, ...) in order."""
        return list(self.adapters)

    def named_parameters(self) -> list[tuple[str, Any]]:
        """``(PEFT name, tensor)`` of every adapter matrix: per module ``lora_A`` then
        ``lora_B``, modules in layer then :data:`TARGET_MODULES` order."""
        out = []
        for name, (a, b) in self.adapters.items():
            out += [(peft_key(name, "A"), a), (peft_key(name, "B"), b)]
        return out

    def parameters(self) -> list[Any]:
        """The trainable tensors (adapters only), in :meth:`named_parameters` order."""
        return [t for _, t in self.named_parameters()]

    def decay_mask(self) -> list[bool]:
        """Weight decay applies to every adapter matrix (all are 2-D)."""
        return [True] * (2 * len(self.adapters))

    def num_parameters(self) -> int:
        """Trainable parameter count."""
        return int(sum(t.numel for t in self.parameters()))

    def zero_grad(self) -> None:
        """Drops every adapter gradient."""
        for t in self.parameters():
            t.zero_grad()

    def base_weights(self) -> dict[str, Any]:
        """``module path -> PackedWeights`` of the frozen base (read-only views)."""
        return dict(self._base.weights)

    def __repr__(self) -> str:
        c, lc = self.config, self.lora_config
        return (
            f"LoraModel({self._base.kind} {self._base.source or ''}, {c.num_hidden_layers} layers, "
            f"r={lc.r}, alpha={lc.alpha:g}, targets={','.join(lc.target_modules)}, "
            f"{self.num_parameters():,} trainable parameters)"
        )

    # ------------------------------------------------------------------ forward
    @staticmethod
    def _check_ids(ids: Any, what: str) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.ndim != 2:
            raise ValueError(
                f"{what} must be a 2-D [B, T] array of token ids, got shape {arr.shape}"
            )
        if arr.size == 0:
            raise ValueError(f"{what} is empty (shape {arr.shape})")
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{what} must hold integers, got dtype {arr.dtype}")
        return arr

    def _proj(self, x: Any, module: str) -> Any:
        y = ag.bitlinear_frozen(x, self._base.weights[module])
        ad = self.adapters.get(module)
        if ad is None:
            return y
        a, b = ad
        h = x
        p = self.lora_config.dropout
        if p > 0 and ag.is_grad_enabled():
            seed = (self.seed * 1_000_003 + self._dropout_calls) % (1 << 63)
            self._dropout_calls += 1
            h = ag.dropout(x, p, seed)
        z = ag.linear(ag.linear(h, a), b)
        return ag.add(y, ag.scale(z, self.lora_config.scaling))

    def forward(self, ids: Any) -> Any:
        """Logits ``[B * T, vocab_size]`` (a tape tensor) of ``ids[B, T]``; records on the
        tape when gradients are enabled (dropout is active only then).

        Raises:
            ValueError: ``ids`` not a non-empty 2-D int array, or an id outside the vocabulary.
        """
        arr = self._check_ids(ids, "ids")
        c, b = self.config, self._base
        V = c.vocab_size
        bad = np.argwhere((arr < 0) | (arr >= V))
        if len(bad):
            i, t = (int(v) for v in bad[0])
            raise ValueError(f"ids[{i}, {t}] = {int(arr[i, t])} is out of range [0, {V})")
        B, T = arr.shape
        H, Hkv, D = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        eps, theta, act, n = c.rms_norm_eps, c.rope_theta, c.hidden_act, b.norms
        x = ag.embedding(b.embed, arr.reshape(-1).astype(np.int32))
        for i in range(c.num_hidden_layers):
            pre = f"model.layers.{i}."
            h = ag.rmsnorm(x, n[pre + "input_layernorm.weight"], eps)
            q = self._proj(h, pre + "self_attn.q_proj")
            k = self._proj(h, pre + "self_attn.k_proj")
            v = self._proj(h, pre + "self_attn.v_proj")
            q = ag.rope(q, T, H, D, theta)
            k = ag.rope(k, T, Hkv, D, theta)
            a = ag.attention(q, k, v, B, T, H, Hkv, D)
            a = ag.rmsnorm(a, n[pre + "self_attn.attn_sub_norm.weight"], eps)
            x = ag.add(x, self._proj(a, pre + "self_attn.o_proj"))
            h = ag.rmsnorm(x, n[pre + "post_attention_layernorm.weight"], eps)
            g = self._proj(h, pre + "mlp.gate_proj")
            u = self._proj(h, pre + "mlp.up_proj")
            m = ag.rmsnorm(ag.gated(g, u, act), n[pre + "mlp.ffn_sub_norm.weight"], eps)
            x = ag.add(x, self._proj(m, pre + "mlp.down_proj"))
        x = ag.rmsnorm(x, n["model.norm.weight"], eps)
        return ag.linear(x, b.head)

    __call__ = forward

    def loss(self, ids: Any, targets: Any, ignore_index: int = -100) -> Any:
        """Mean next-token cross-entropy (one-element tensor) of :meth:`forward` against
        ``targets[B, T]``; positions equal to ``ignore_index`` (the prompt, padding) are
        skipped.

        Raises:
            ValueError: bad ids, ``targets`` of another shape or holding an id outside the
                vocabulary other than ``ignore_index``.
        """
        arr = self._check_ids(ids, "ids")
        tgt = self._check_ids(targets, "targets")
        if tgt.shape != arr.shape:
            raise ValueError(f"targets has shape {tgt.shape}, ids {arr.shape}: they must match")
        V = self.config.vocab_size
        bad = np.argwhere(((tgt < 0) | (tgt >= V)) & (tgt != ignore_index))
        if len(bad):
            i, t = (int(v) for v in bad[0])
            raise ValueError(
                f"targets[{i}, {t}] = {int(tgt[i, t])} is out of range [0, {V}) and is not "
                f"ignore_index ({ignore_index})"
            )
        logits = self.forward(arr)
        return ag.cross_entropy(logits, tgt.reshape(-1).astype(np.int64), ignore_index)

    def logits(self, ids: Any) -> np.ndarray:
        """Logits of the base with the adapters applied unmerged, evaluated without the tape:
        float32 ``[T, vocab]`` for one sequence (1-D ids), ``[B, T, vocab]`` for ``[B, T]``."""
        arr = np.asarray(ids)
        one = arr.ndim == 1
        if one:
            arr = arr[None, :]
        with ag.no_grad():
            out = np.array(self.forward(arr).numpy(), copy=True)
        out = out.reshape(arr.shape[0], arr.shape[1], -1)
        return out[0] if one else out

    def generate(
        self,
        prompt: str | Sequence[int],
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_k: int = 0,
        seed: int = 0,
        stop_at_eos: bool = True,
    ) -> str | list[int]:
        """Generates with the adapters applied unmerged (no KV cache: every new token
        recomputes the whole sequence, O(T^2) per token, fine for checks and short answers;
        merge and use :class:`bitnet.Model` for speed).

        Args:
            prompt: text (needs the tokenizer; BOS added as the tokenizer does) or token ids.
            max_new_tokens: tokens to generate at most.
            temperature: 0: greedy (argmax); otherwise softmax sampling at this temperature.
            top_k: sample among the k most likely tokens only (0: all).
            seed: sampling seed (numpy ``default_rng``).
            stop_at_eos: stop after an end-of-sequence token of the tokenizer.

        Returns:
            The generated text (without the prompt) for a text prompt, else the new token ids.
        """
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("generate: the base has no tokenizer; pass token ids")
            ids = self.tokenizer.encode(prompt)
        else:
            ids = [int(t) for t in prompt]
        if not ids:
            raise ValueError("generate: the prompt is empty")
        if not (isinstance(max_new_tokens, int) and max_new_tokens >= 0):
            raise ValueError(
                f"generate: max_new_tokens must be an integer >= 0, got {max_new_tokens!r}"
            )
        if not (math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"generate: temperature must be >= 0, got {temperature!r}")
        eos = set(self.tokenizer.eos_ids) if (self.tokenizer and stop_at_eos) else set()
        rng = np.random.default_rng(seed)
        new: list[int] = []
        for _ in range(max_new_tokens):
            row = self.logits(np.asarray(ids + new, np.int64))[-1].astype(np.float64)
            if temperature == 0:
                tok = int(np.argmax(row))
            else:
                z = row / temperature
                if 0 < top_k < len(z):
                    kth = np.partition(z, -top_k)[-top_k]
                    z = np.where(z >= kth, z, -np.inf)
                pr = np.exp(z - z.max())
                tok = int(rng.choice(len(pr), p=pr / pr.sum()))
            new.append(tok)
            if tok in eos:
                break
        if isinstance(prompt, str):
            return self.tokenizer.decode(new)
        return new

    # ------------------------------------------------------------------ adapters
    def adapter_state_dict(self) -> dict[str, np.ndarray]:
        """PEFT name -> float32 copy of every adapter matrix."""
        return {k: np.array(t.numpy(), copy=True) for k, t in self.named_parameters()}

    def load_adapter_state_dict(self, state: Mapping[str, Any], where: str = "adapter") -> None:
        """Copies adapter matrices (PEFT names, with or without the ``.default`` adapter name)
        into this model's adapters, checking every key and shape before writing any.

        Raises:
            ValueError: a missing or unexpected key, or a shape that does not fit this base
                (an adapter trained for another model); the message names the key.
        """
        got = {
            k.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B."): v
            for k, v in state.items()
        }
        mine = dict(self.named_parameters())
        unexpected = sorted(set(got) - set(mine))
        if unexpected:
            raise ValueError(
                f"{where}: unexpected tensor {unexpected[0]} (this base has "
                f"{self.config.num_hidden_layers} layers and adapters on "
                f"{', '.join(self.lora_config.target_modules)})"
            )
        missing = [k for k in mine if k not in got]
        if missing:
            raise ValueError(f"{where}: missing tensor {missing[0]}")
        arrays = {}
        for k, t in mine.items():
            arr = np.asarray(got[k].float().numpy() if hasattr(got[k], "float") else got[k])
            if arr.shape != tuple(t.shape):
                raise ValueError(
                    f"{where}: {k} has shape {arr.shape}, this base expects {tuple(t.shape)} "
                    "(an adapter for a different base model?)"
                )
            if not np.isfinite(arr).all():
                raise ValueError(f"{where}: {k} holds NaN or infinite values")
            arrays[k] = arr.astype(np.float32)
        for k, t in mine.items():
            t.numpy()[...] = arrays[k]

    def save_adapter(self, directory: str | os.PathLike[str]) -> Path:
        """Writes the adapter in PEFT's layout: ``adapter_config.json`` (``peft_type`` LORA,
        ``task_type`` CAUSAL_LM, ``base_model_name_or_path``, r, lora_alpha, lora_dropout,
        target_modules, bias "none", fan_in_fan_out false) and ``adapter_model.safetensors``
        (float32 ``...lora_A.weight [r, in]`` / ``...lora_B.weight [out, r]``). Returns the
        directory."""
        from safetensors.numpy import save_file

        out = Path(os.path.expanduser(os.fspath(directory)))
        out.mkdir(parents=True, exist_ok=True)
        self.lora_config.save(out, self._base.source)
        save_file(self.adapter_state_dict(), str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        return out

    def load_adapter(self, directory: str | os.PathLike[str]) -> LoraModel:
        """Replaces the adapters (and :attr:`lora_config`) with those saved in a PEFT adapter
        directory (``adapter_config.json`` + ``adapter_model.safetensors``, or
        ``adapter_model.bin``). Nothing changes on error. Returns ``self``.

        Raises:
            FileNotFoundError: no adapter there. ValueError: an unsupported config, or
                tensors that do not fit this base (named).
        """
        d = Path(os.path.expanduser(os.fspath(directory)))
        cfg = LoraConfig.load(d)
        st, binf = d / ADAPTER_WEIGHTS, d / "adapter_model.bin"
        if st.is_file():
            from safetensors.numpy import load_file

            try:
                state: Mapping[str, Any] = load_file(str(st))
            except Exception as e:  # safetensors raises its own error types
                raise ValueError(f"{st}: not a valid safetensors file ({e})") from None
            where = str(st)
        elif binf.is_file():
            import torch

            state = torch.load(binf, map_location="cpu", weights_only=True)
            where = str(binf)
        else:
            raise FileNotFoundError(f"{d}: no {ADAPTER_WEIGHTS} (or adapter_model.bin)")
        old = (self.adapters, self.lora_config)
        self._init_adapters(cfg)
        try:
            self.load_adapter_state_dict(state, where)
        except ValueError:
            self.adapters, self.lora_config = old
            raise
        return self

    @classmethod
    def from_pretrained(cls, base: Any, adapter: str | os.PathLike[str], **kw: Any) -> LoraModel:
        """The base with a saved adapter loaded (see :meth:`load_adapter`)."""
        cfg = LoraConfig.load(adapter)
        return cls(base, cfg, **kw).load_adapter(adapter)

    # ------------------------------------------------------------------ merge
    def _master_state(self) -> dict[str, np.ndarray]:
        """fp32 master weights of the base with HF names: the checkpoint's own, or for a GGUF
        base the dequantized ``s_w * T`` (projections), embedding / head and norms."""
        b = self._base
        if b.kind == "model":
            return b.model_ref.state_dict()
        if b.kind == "checkpoint":
            from ..train.model import BitNetForTraining

            return BitNetForTraining.from_pretrained(b.source).state_dict()
        state = {"model.embed_tokens.weight": np.array(b.embed.numpy(), copy=True)}
        if not self.config.tie_word_embeddings:
            state["lm_head.weight"] = np.array(b.head.numpy(), copy=True)
        for k, t in b.norms.items():
            state[k] = np.array(t.numpy(), copy=True)
        for k, w in b.weights.items():
            t, s = ops.unpack(w)
            state[k + ".weight"] = t.astype(np.float32) * np.float32(s)
        return state

    def _update(self, name: str) -> np.ndarray | None:
        """``dW = (alpha / r) B @ A`` of a module in float64, or None without an adapter."""
        ad = self.adapters.get(name)
        if ad is None:
            return None
        a = ad[0].numpy().astype(np.float64)
        b = ad[1].numpy().astype(np.float64)
        return self.lora_config.scaling * (b @ a)

    def _grid_layer(
        self, name: str, fmt: str, tot: _Totals
    ) -> tuple[LayerMergeStats, np.ndarray, float]:
        """One projection of a GGUF base merged on its grid: ``(stats, T1, s1)`` where
        ``T1 = clamp(round(T0 + dW / s0), -1, 1)`` and ``s1`` is ``s0`` as ``fmt`` stores it
        (fp32 for i2_s, fp16 for tq1_0 / tq2_0; ``s0`` itself when ``fmt`` is the base
        tensor's own type)."""
        t0, s0 = ops.unpack(self._base.weights[name])
        dw = self._update(name)
        t1 = t0 if dw is None else grid_merge_codes(t0, s0, dw)
        # A dense f16 / f32 / bf16 base (fmt is then its own type) holds s0 exactly.
        s1 = float(np.float16(np.float32(s0))) if fmt in ("tq1_0", "tq2_0") else float(s0)
        return tot.layer(name, t0, s0, t1, s1, dw), t1, s1

    def merged_state_dict(self) -> tuple[dict[str, np.ndarray], MergeReport]:
        """The merged fp32 weights with HF names and the :class:`MergeReport` (see
        :meth:`merge` for the two methods).

        * checkpoint / ``BitNetForTraining`` base: the master weights ``W0 + (alpha / r) B @ A``
          (``dW`` in float64, the sum rounded to fp32 once); the report measures their absmean
          re-quantization (what ``bitnet.convert`` will store).
        * GGUF base: the projections are the grid-merged ``s0 * T1`` (exactly what the merged
          GGUF holds, ternary times the base's scale); embedding, head and norms as loaded.
        """
        state = self._master_state()
        tot = _Totals()
        stats: list[LayerMergeStats] = []
        if self._base.kind == "gguf":
            for name in self._base.weights:
                st, t1, s1 = self._grid_layer(name, self._base.weights[name].format, tot)
                stats.append(st)
                state[name + ".weight"] = t1.astype(np.float32) * np.float32(s1)
            return state, tot.report(stats, "grid")
        for name, w in self._base.weights.items():
            t0, s0 = ops.unpack(w)
            dw = self._update(name)
            w0 = state[name + ".weight"]
            wm = w0 if dw is None else (w0.astype(np.float64) + dw).astype(np.float32)
            state[name + ".weight"] = wm
            t1, s1 = ops.quantize_weights(np.ascontiguousarray(wm))
            stats.append(tot.layer(name, t0, s0, t1, s1, dw))
        return state, tot.report(stats, "absmean")

    def _write_tokenizer(self, out: Path) -> None:
        b = self._base
        if b.kind == "checkpoint" and b.source is not None:
            src = Path(b.source)
            names = (
                "tokenizer.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "chat_template.jinja",
            )
            if (src / "tokenizer.json").is_file():
                for n in names:
                    if (src / n).is_file():
                        shutil.copyfile(src / n, out / n)
                return
        tok = self.tokenizer
        if tok is None:
            return
        tok.hf.save(str(out / "tokenizer.json"))
        cfg: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast"}
        if tok.bos_id is not None:
            cfg["bos_token"] = tok.id_to_token(tok.bos_id)
        if tok.eos_id is not None:
            cfg["eos_token"] = tok.id_to_token(tok.eos_id)
        cfg["add_bos_token"] = bool(tok.add_bos)
        if tok.chat_template is not None:
            cfg["chat_template"] = tok.chat_template
        (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")

    def merge(
        self,
        out: str | os.PathLike[str] | None = None,
        *,
        weight_type: str | None = None,
        embed_type: str | None = None,
        hf_dir: str | os.PathLike[str] | None = None,
        progress: bool = False,
    ) -> MergeReport:
        """Merges the adapters into the base and writes a GGUF that :class:`bitnet.Model` runs.

        **GGUF base: grid-preserving merge.** A GGUF file holds only the ternary codes ``T``
        and one scale ``s_w`` per matrix, not master weights. Re-quantizing ``s_w * T + dW``
        with absmean would give the new scale ``mean|s_w T + dW| ~ s_w * mean|T|`` (about
        0.7 ``s_w``): every matrix, adapted or not, would shrink by ~30% and the merged model
        would be ~30% off the unmerged one. So each adapted matrix keeps its scale and
        becomes ``T1 = clamp(round_half_even(T + dW / s_w), -1, 1)``: an update entry moves a
        code only where it crosses half a grid step (``|dW| > s_w / 2``), and the report says
        how much of ``dW`` that keeps. The output is the base file copied: every metadata key
        (tokenizer, chat template, ...) with its type, every tensor in order, byte-identical
        except the adapted matrices whose codes changed, which are re-packed in their own
        type with the same scale (a dequantized f16 / f32 / bf16 matrix gets ``T1 * s_w`` in
        its dtype, exact; an adapted matrix whose codes did not change is copied as it is).

        **Checkpoint / BitNetForTraining base: absmean re-quantization.** Here the master
        weights ``W0`` exist and define the model (its ternary weights are ``absmean(W0)``,
        as in training); the merged ``W0 + dW`` is saved as a transformers checkpoint and
        converted with ``bitnet.convert`` (``s1 = mean|W0 + dW|``, new codes), exactly what
        fine-tuning the master weights by ``dW`` and exporting would give. Matrices without
        an adapter re-quantize to themselves.

        Args:
            out: the GGUF file to write (None: only the report, and ``hf_dir`` if given). It
                may be the base file itself (written to ``out.partial``, then renamed).
            weight_type: ternary storage (i2_s, tq1_0, tq2_0). GGUF base: None (default)
                keeps every matrix's own type and copies untouched ones byte for byte; another
                type re-packs every BitLinear matrix into it (same codes and scale, the scale
                as the type stores it: fp16 for tq1_0 / tq2_0) and updates
                ``general.file_type`` and the architecture (``bitnet-b1.58`` for i2_s, else
                ``bitnet``, as ``bitnet.convert`` writes them). Checkpoint base: default i2_s.
            embed_type: embedding storage. GGUF base: the embedding is copied as it is, so
                this must be None or its own type (``token_embd.weight``'s). Checkpoint base:
                f16 (default), f32, q8_0 or q4_0.
            hf_dir: checkpoint base only: also keep the merged transformers checkpoint
                (config.json, model.safetensors, tokenizer) there (by default a temporary
                directory is used and removed).
            progress: a progress bar while writing.

        Returns:
            The :class:`MergeReport` (``method`` "grid" or "absmean"; ``gguf`` / ``hf_dir`` set
            to what was written).

        Raises:
            ValueError: an unknown or unsupported type, ``embed_type`` or ``hf_dir`` for a
                GGUF base, a base file changed since loading; for a checkpoint base, a config
                that no transformers BitNetForCausalLM can hold or conversion errors (e.g.
                i2_s needs rows that are multiples of 128).
        """
        if weight_type is not None and weight_type not in _TERNARY:
            raise ValueError(
                f"merge: weight_type {weight_type!r} is not a ternary type; choose one of "
                + ", ".join(_TERNARY)
            )
        if self._base.kind == "gguf":
            return self._merge_gguf(out, weight_type, embed_type, hf_dir, progress)
        if embed_type is not None and embed_type not in _EMBED_TYPES:
            raise ValueError(
                f"merge: embed_type {embed_type!r} is not one of " + ", ".join(_EMBED_TYPES)
            )
        state, report = self.merged_state_dict()
        if out is None and hf_dir is None:
            return report
        from ..train.model import BitNetForTraining

        cfg = self.config.to_train_config()
        model = BitNetForTraining(cfg, seed=None)
        model.load_state_dict(state, strict=True)
        tmp = None
        try:
            if hf_dir is None:
                tmp = tempfile.mkdtemp(prefix="bitnet-lora-merge-")
                directory = Path(tmp)
            else:
                directory = Path(os.path.expanduser(os.fspath(hf_dir)))
            model.save_pretrained(directory)
            del model
            self._write_tokenizer(directory)
            if hf_dir is not None:
                report.hf_dir = directory
            if out is not None:
                from ..convert import convert

                report.gguf = convert(
                    directory,
                    Path(os.path.expanduser(os.fspath(out))),
                    weight_type or self._base.weight_type,
                    embed_type or self._base.embed_type,
                    progress=progress,
                    report=False,
                )
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        return report

    def _merge_gguf(
        self,
        out: str | os.PathLike[str] | None,
        weight_type: str | None,
        embed_type: str | None,
        hf_dir: str | os.PathLike[str] | None,
        progress: bool,
    ) -> MergeReport:
        """:meth:`merge` for a GGUF base (grid-preserving, the base file copied)."""
        from .. import gguf
        from ..convert.pipeline import FILE_TYPES, GGUF_ARCH

        b = self._base
        if hf_dir is not None:
            raise ValueError(
                "merge: hf_dir needs a checkpoint base; a GGUF base has no master weights, "
                "its merged model is the GGUF file (out=...)"
            )
        src = Path(str(b.source))
        by_tensor = {
            f"blk.{i}.{_GGUF_PROJ[m]}.weight": f"model.layers.{i}.{_PARENT[m]}.{m}"
            for i in range(self.config.num_hidden_layers)
            for m in TARGET_MODULES
        }
        tot = _Totals()
        stats: dict[str, LayerMergeStats] = {}
        dst: Path | None = None
        with gguf.read(src) as f:
            te = f.tensors.get("token_embd.weight")
            if embed_type is not None and (te is None or embed_type != te.type):
                raise ValueError(
                    f"merge: embed_type {embed_type!r} differs from the base's token_embd type "
                    f"{None if te is None else te.type!r}; a GGUF base is merged by replacing "
                    "only its adapted ternary matrices, the embedding is copied as it is"
                )
            for tname, module in by_tensor.items():
                info = f.tensors.get(tname)
                want = tuple(b.weights[module].shape)
                if info is None or tuple(info.shape) != want:
                    raise ValueError(
                        f"merge: {src} changed since it was loaded (tensor '{tname}' is "
                        f"{None if info is None else tuple(info.shape)}, was {want})"
                    )
            changes_type = weight_type is not None and any(
                f.tensors[t].type != weight_type for t in by_tensor
            )

            def merged(tname: str, info: Any) -> Any:
                """The tensor to write for a BitLinear matrix (stats recorded)."""
                module = by_tensor[tname]
                fmt = weight_type or info.type
                st, t1, s1 = self._grid_layer(module, fmt, tot)
                stats[module] = st
                if fmt == info.type and st.codes_changed == 0:
                    return gguf.Tensor(info.type, info.shape, info.data)
                if fmt in _TERNARY:
                    try:
                        return ops.pack(t1, fmt, s1)
                    except ValueError as e:
                        raise ValueError(f"merge: tensor '{tname}' as {fmt}: {e}") from None
                dense = t1.astype(np.float32) * np.float32(s1)
                if fmt == "f32":
                    return dense
                if fmt == "f16":
                    return dense.astype(np.float16)
                return gguf.Tensor("bf16", info.shape, _to_bf16(dense))

            if out is None:
                for tname in by_tensor:
                    merged(tname, f.tensors[tname])
            else:
                md: dict[str, Any] = {}
                arch = f.architecture or "bitnet"
                new_arch = arch
                if changes_type and arch in ("bitnet", "bitnet-b1.58"):
                    new_arch = GGUF_ARCH.get(weight_type or "", "bitnet")
                for key, value in f.metadata.items():
                    if key == "general.architecture":
                        continue
                    typ = f.metadata_types[key]
                    if key == "general.file_type" and changes_type:
                        value = FILE_TYPES[str(weight_type)]
                    if new_arch != arch and key.startswith(arch + "."):
                        key = new_arch + key[len(arch) :]
                    # Every value keeps its stored type (an array of arrays of mixed inner
                    # types has no single type string: its types are inferred again).
                    md[key] = value if typ == "array[array]" else gguf.typed(value, typ)
                tensors: list[tuple[str, Any]] = []
                for tname, info in f.tensors.items():
                    module = by_tensor.get(tname)
                    if module is not None and (module in self.adapters or changes_type):
                        fmt = weight_type or info.type
                        tensors.append(
                            (
                                tname,
                                gguf.LazyTensor(
                                    fmt, info.shape, lambda n=tname, i=info: merged(n, i)
                                ),
                            )
                        )
                    else:
                        tensors.append((tname, gguf.Tensor(info.type, info.shape, info.data)))
                dst = Path(os.path.expanduser(os.fspath(out)))
                gguf.write(dst, new_arch, md, tensors, alignment=f.alignment, progress=progress)
                for tname in by_tensor:  # the copied ones
                    if by_tensor[tname] not in stats:
                        merged(tname, f.tensors[tname])
        report = tot.report([stats[m] for m in b.weights], "grid")
        report.gguf = dst
        return report


def _to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16), round-to-nearest-even (exact for bf16 values)."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return bits.astype(np.uint16)

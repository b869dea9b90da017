"""``BitNetForTraining``: a BitNet b1.58 decoder on the autograd tape (quantization-aware training).

::

    import numpy as np
    from bitnet import autograd as ag
    from bitnet.train import BitNetForTraining, TrainModelConfig

    cfg = TrainModelConfig(vocab_size=96, hidden_size=64, intermediate_size=160,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    model = BitNetForTraining(cfg, seed=0)
    opt = ag.AdamW(model.parameters(), lr=1e-3, decay_mask=model.decay_mask())
    loss = model.loss(ids, targets)          # ids, targets: int arrays [B, T]
    ag.backward(loss); opt.step(); opt.zero_grad()
    model.save_pretrained("out")             # transformers BitNetForCausalLM directory
    bitnet.convert.convert("out", "out.gguf")

The network is transformers' ``BitNetForCausalLM`` with BitNet online quantization: every
projection is a BitLinear (ternary weights per tensor, int8 activations per token, trained with
the straight-through estimator), norms are RMSNorm, attention is causal GQA with NEOX RoPE, the
FFN is ``relu2`` (or ``silu``) gated with a sub-norm before ``down_proj``, and the LM head is a
full-precision product with the (tied) embedding. Parameters are fp32 master weights named like
the transformers state dict, so checkpoints move between the two unchanged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .. import autograd as ag
from .config import TrainModelConfig

__all__ = ["BitNetForTraining", "LoadResult"]

_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


class LoadResult(NamedTuple):
    """What :meth:`BitNetForTraining.load_state_dict` left out (empty when strict)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _as_float32(name: str, value: Any) -> np.ndarray:
    """A C-contiguous float32 copy of a numpy array / torch tensor / nested list."""
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        value = value.detach().cpu().float().numpy()  # torch.Tensor
    elif isinstance(value, ag.Tensor):
        value = value.numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"load_state_dict: {name} has dtype {arr.dtype}, expected real numbers")
    return np.array(arr, dtype=np.float32, order="C", copy=True)


class BitNetForTraining:
    """A trainable BitNet b1.58 causal language model (fp32 master weights on the tape).

    Args:
        config: the hyperparameters.
        seed: initialization seed: every matrix is ``normal(0, 0.02)``, every norm weight ones,
            drawn in :meth:`param_shapes` order from ``numpy.random.default_rng(seed)``
            (deterministic across machines). None: zeros (the caller loads the weights).

    Attributes:
        config: the :class:`TrainModelConfig`.
        params: ``name -> Tensor`` (``requires_grad``), named like transformers'
            ``BitNetForCausalLM`` state dict; ``lm_head.weight`` only when the head is untied.
        lambda_: BitLinear warm-up mix in [0, 1] (1: fully quantized, see
            :func:`bitnet.autograd.bitlinear`).
    """

    def __init__(self, config: TrainModelConfig, seed: int | None = 0) -> None:
        if not isinstance(config, TrainModelConfig):
            raise TypeError(f"config must be a TrainModelConfig, got {type(config).__name__}")
        self.config = config
        self._lambda = 1.0
        self.params: dict[str, ag.Tensor] = {}
        rng = np.random.default_rng(seed) if seed is not None else None
        for name, shape in self.param_shapes().items():
            if rng is None:  # from_pretrained overwrites every value
                arr = np.zeros(shape, np.float32)
            elif len(shape) == 2:
                arr = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
            else:
                arr = np.ones(shape, np.float32)
            self.params[name] = ag.Tensor(arr, requires_grad=True)

    # ------------------------------------------------------------------ structure
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's name and shape, in initialization (and :meth:`parameters`) order."""
        c = self.config
        h, f, d = c.hidden_size, c.intermediate_size, c.head_dim
        q, kv = c.num_attention_heads * d, c.num_key_value_heads * d
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (c.vocab_size, h)}
        proj = {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q)}
        mlp = {"gate_proj": (f, h), "up_proj": (f, h), "down_proj": (h, f)}
        for i in range(c.num_hidden_layers):
            p = f"model.layers.{i}."
            shapes[p + "input_layernorm.weight"] = (h,)
            for n in _ATTN:
                shapes[p + f"self_attn.{n}.weight"] = proj[n]
            shapes[p + "self_attn.attn_sub_norm.weight"] = (h,)
            shapes[p + "post_attention_layernorm.weight"] = (h,)
            for n in _MLP:
                shapes[p + f"mlp.{n}.weight"] = mlp[n]
            shapes[p + "mlp.ffn_sub_norm.weight"] = (f,)
        shapes["model.norm.weight"] = (h,)
        if not c.tie_word_embeddings:
            shapes["lm_head.weight"] = (c.vocab_size, h)
        return shapes

    def parameters(self) -> list[ag.Tensor]:
        """The parameter tensors (the optimizer's list), in :meth:`param_shapes` order."""
        return list(self.params.values())

    def named_parameters(self) -> list[tuple[str, ag.Tensor]]:
        """``(name, tensor)`` pairs in :meth:`parameters` order."""
        return list(self.params.items())

    def decay_mask(self) -> list[bool]:
        """Per parameter whether weight decay applies: True for 2-D matrices (projections,
        embedding, head), False for norm weights. Pass it to ``AdamW(decay_mask=...)``."""
        return [len(t.shape) == 2 for t in self.params.values()]

    def num_parameters(self) -> int:
        """Total number of parameters (the tied head counted once)."""
        return int(sum(t.numel for t in self.params.values()))

    def zero_grad(self) -> None:
        """Drops every parameter's gradient."""
        for t in self.params.values():
            t.zero_grad()

    @property
    def lambda_(self) -> float:
        """The BitLinear warm-up mix: ``w_eff = w + lambda_ (wq - w)``, same for activations."""
        return self._lambda

    @lambda_.setter
    def lambda_(self, value: float) -> None:
        v = float(value)
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"lambda_ must be in [0, 1], got {value!r}")
        self._lambda = v

    def __repr__(self) -> str:
        c = self.config
        return (
            f"BitNetForTraining({c.num_hidden_layers} layers, hidden {c.hidden_size}, "
            f"heads {c.num_attention_heads}/{c.num_key_value_heads}, ffn {c.intermediate_size}, "
            f"vocab {c.vocab_size}, {self.num_parameters():,} parameters, lambda_ {self._lambda})"
        )

    # ------------------------------------------------------------------ forward
    def _check_ids(self, ids: Any, what: str) -> np.ndarray:
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

    def forward(self, ids: Any) -> ag.Tensor:
        """Logits ``[B * T, vocab_size]`` of a batch ``ids[B, T]`` (int): row ``b * T + t`` is
        the next-token prediction after ``ids[b, : t + 1]``. Records on the tape when gradients
        are enabled (:func:`bitnet.autograd.no_grad` for evaluation).

        Raises:
            ValueError: ``ids`` is not a non-empty 2-D array, or holds an id outside
                ``[0, vocab_size)`` (the message names its position).
        """
        arr = self._check_ids(ids, "ids")
        c, p, lam = self.config, self.params, self._lambda
        V = c.vocab_size
        bad = np.argwhere((arr < 0) | (arr >= V))
        if len(bad):
            b, t = (int(i) for i in bad[0])
            raise ValueError(f"ids[{b}, {t}] = {int(arr[b, t])} is out of range [0, {V})")
        B, T = arr.shape
        H, Hkv, D = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        eps, theta, act = c.rms_norm_eps, c.rope_theta, c.hidden_act

        x = ag.embedding(p["model.embed_tokens.weight"], arr.reshape(-1).astype(np.int32))
        for i in range(c.num_hidden_layers):
            pre = f"model.layers.{i}."
            h = ag.rmsnorm(x, p[pre + "input_layernorm.weight"], eps)
            q = ag.bitlinear(h, p[pre + "self_attn.q_proj.weight"], lam)
            k = ag.bitlinear(h, p[pre + "self_attn.k_proj.weight"], lam)
            v = ag.bitlinear(h, p[pre + "self_attn.v_proj.weight"], lam)
            q = ag.rope(q, T, H, D, theta)
            k = ag.rope(k, T, Hkv, D, theta)
            a = ag.attention(q, k, v, B, T, H, Hkv, D)
            a = ag.rmsnorm(a, p[pre + "self_attn.attn_sub_norm.weight"], eps)
            x = ag.add(x, ag.bitlinear(a, p[pre + "self_attn.o_proj.weight"], lam))
            h = ag.rmsnorm(x, p[pre + "post_attention_layernorm.weight"], eps)
            g = ag.bitlinear(h, p[pre + "mlp.gate_proj.weight"], lam)
            u = ag.bitlinear(h, p[pre + "mlp.up_proj.weight"], lam)
            m = ag.rmsnorm(ag.gated(g, u, act), p[pre + "mlp.ffn_sub_norm.weight"], eps)
            x = ag.add(x, ag.bitlinear(m, p[pre + "mlp.down_proj.weight"], lam))
        x = ag.rmsnorm(x, p["model.norm.weight"], eps)
        head = p["model.embed_tokens.weight" if c.tie_word_embeddings else "lm_head.weight"]
        return ag.linear(x, head)

    __call__ = forward

    def loss(self, ids: Any, targets: Any, ignore_index: int = -100) -> ag.Tensor:
        """Mean next-token cross-entropy (a one-element tensor) of ``forward(ids)`` against
        ``targets[B, T]`` (the same shape; positions equal to ``ignore_index`` are skipped).

        Raises:
            ValueError: bad ids (see :meth:`forward`), ``targets`` of another shape, or a
                target outside ``[0, vocab_size)`` other than ``ignore_index``.
        """
        arr = self._check_ids(ids, "ids")
        tgt = self._check_ids(targets, "targets")
        if tgt.shape != arr.shape:
            raise ValueError(f"targets has shape {tgt.shape}, ids {arr.shape}: they must match")
        V = self.config.vocab_size
        bad = np.argwhere(((tgt < 0) | (tgt >= V)) & (tgt != ignore_index))
        if len(bad):
            b, t = (int(i) for i in bad[0])
            raise ValueError(
                f"targets[{b}, {t}] = {int(tgt[b, t])} is out of range [0, {V}) and is not "
                f"ignore_index ({ignore_index})"
            )
        logits = self.forward(arr)
        return ag.cross_entropy(logits, tgt.reshape(-1).astype(np.int64), ignore_index)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, np.ndarray]:
        """A float32 copy of every parameter, keyed by its transformers name."""
        return {k: np.array(t.numpy(), copy=True) for k, t in self.params.items()}

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> LoadResult:
        """Copies ``state`` (numpy arrays, torch tensors or lists; any real dtype, converted to
        float32) into the parameters in place (an optimizer holding them stays valid).

        Every entry is checked before anything is written. A tied model accepts an
        ``lm_head.weight`` equal to ``model.embed_tokens.weight`` (transformers' state dict
        has one) and ignores it.

        Args:
            state: ``name -> array``.
            strict: missing and unexpected keys are errors; otherwise they are skipped and
                returned.

        Raises:
            ValueError: a shape mismatch, a non-finite value, or (strict) a missing or
                unexpected key, or a tied model given an ``lm_head.weight`` that differs from
                the embedding; the message names the key.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"load_state_dict: expected a mapping, got {type(state).__name__}")
        tied = self.config.tie_word_embeddings
        arrays: dict[str, np.ndarray] = {}
        unexpected: list[str] = []
        for name, value in state.items():
            if name in self.params:
                arr = _as_float32(name, value)
                want = tuple(self.params[name].shape)
                if arr.shape != want:
                    raise ValueError(
                        f"load_state_dict: {name} has shape {arr.shape}, the model expects {want}"
                    )
                if not np.isfinite(arr).all():
                    raise ValueError(f"load_state_dict: {name} holds NaN or infinite values")
                arrays[name] = arr
            elif not (tied and name == "lm_head.weight"):
                unexpected.append(str(name))
        missing = [k for k in self.params if k not in arrays]
        embed = arrays.get("model.embed_tokens.weight")
        if strict and tied and "lm_head.weight" in state and embed is not None:
            head = _as_float32("lm_head.weight", state["lm_head.weight"])
            if head.shape != embed.shape or not np.array_equal(head, embed):
                raise ValueError(
                    "load_state_dict: lm_head.weight differs from model.embed_tokens.weight, "
                    "but the config ties them (tie_word_embeddings=True)"
                )
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append("missing keys: " + ", ".join(missing))
            if unexpected:
                parts.append("unexpected keys: " + ", ".join(unexpected))
            raise ValueError("load_state_dict: " + "; ".join(parts))
        for name, arr in arrays.items():
            self.params[name].numpy()[...] = arr
        return LoadResult(missing, unexpected)

    # ------------------------------------------------------------------ files
    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Writes a transformers ``BitNetForCausalLM`` directory: ``config.json`` and
        ``model.safetensors`` (float32 master weights, transformers names, no ``lm_head`` when
        tied). ``bitnet.convert.convert(directory, "model.gguf")`` converts it; transformers
        loads it with ``BitNetForCausalLM.from_pretrained``. Returns the directory."""
        from safetensors.numpy import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(self.config.to_hf_config(), indent=2) + "\n")
        save_file(self.state_dict(), str(out / "model.safetensors"), metadata={"format": "pt"})
        return out

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> BitNetForTraining:
        """A model with the weights of a transformers checkpoint directory: ``config.json`` and
        safetensors (single or sharded) or PyTorch ``.bin`` files with bf16/f16/f32 master
        weights (converted to float32). Reads ``BitNetForCausalLM`` and 1bitLLM's LLaMA-layout
        ``BitnetForCausalLM`` (its sub-norms are renamed). When ``config.json`` does not say
        whether the head is tied, a checkpoint with ``lm_head.weight`` is untied. Reading
        bf16 and ``.bin`` files needs torch.

        Raises:
            ValueError (``bitnet.convert.ConversionError``): no checkpoint, an unsupported
                config, packed ternary weights (training needs master weights), or a missing,
                misshapen or unexpected tensor (named).
        """
        from ..convert.architectures import ARCHITECTURES, detect, linear_class
        from ..convert.checkpoint import Checkpoint

        with Checkpoint(directory) as ckpt:
            cfg_path = ckpt.path / "config.json"
            d = ckpt.config
            if linear_class(d, cfg_path) is not None:
                raise ValueError(
                    f"{cfg_path}: the checkpoint holds packed ternary weights "
                    "(quantization_config); training needs the fp master weights"
                )
            if "architectures" not in d and d.get("model_type") == "bitnet":
                arch = ARCHITECTURES["BitNetForCausalLM"]
            else:
                arch = detect(d, cfg_path)
            if d.get("tie_word_embeddings") is None:
                d = {**d, "tie_word_embeddings": "lm_head.weight" not in ckpt.tensors}
            config = TrainModelConfig.from_hf_config(d)
            rename = {
                f".{arch.attn_sub_norm}.weight": ".self_attn.attn_sub_norm.weight",
                f".{arch.ffn_sub_norm}.weight": ".mlp.ffn_sub_norm.weight",
            }
            state: dict[str, np.ndarray] = {}
            for name, info in ckpt.tensors.items():
                if name.endswith("rotary_emb.inv_freq"):
                    continue  # a RoPE buffer of old checkpoints, recomputed by the op
                if info.dtype not in ("f32", "f16", "bf16", "f64"):
                    raise ValueError(
                        f"{info.file}: tensor {name} has dtype {info.dtype}; training needs "
                        "floating-point master weights"
                    )
                key = name
                for old, new in rename.items():
                    if name.endswith(old):
                        key = name[: -len(old)] + new
                state[key] = ckpt.load(name).float().numpy()
        model = cls(config, seed=None)
        try:
            model.load_state_dict(state, strict=True)
        except ValueError as e:
            raise ValueError(f"{Path(directory)}: {e}") from None
        return model

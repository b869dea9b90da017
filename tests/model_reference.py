"""PyTorch references of the BitNet b1.58 forward pass for tests/test_model.py.

Two independent references, both fp32 on CPU, both with online BitNet quantization
(docs/formats.md section 1: every BitLinear computes ``F.linear(aq(x), wq(W))``):

* :func:`transformers_reference`: transformers' own ``BitNetForCausalLM`` loaded from a master
  checkpoint, with the forward of each of the seven projections of every layer replaced by
  ``F.linear(aq(x), wq(W))``. Everything else (RMSNorm, RoPE, GQA attention, relu2, sub-norms,
  final norm) is transformers' code.
* :class:`PlainModel`: the same network written here in plain PyTorch from the formulas, for
  checkpoints that have no transformers class (1bitLLM's ``BitnetForCausalLM``, remote code: SiLU
  FFN, sub-norms ``inner_attn_ln`` / ``ffn_layernorm``, untied head). The tests also run it on a
  ``BitNetForCausalLM`` checkpoint against transformers, which validates it.

Both return the final normed hidden states; :func:`head_logits` applies the LM head the way the
GGUF head type computes it (fp32 products, or ggml's Q8_0 activation quantization for Q8_0/Q4_0
heads), in float64.

``wq(W) = t * s`` with ``t, s_w = ternarize(W)`` (tests/checkpoints.py: absmean, fp64 mean) and
``s = s_w`` rounded the way the GGUF weight type stores it (fp16 for TQ1_0 / TQ2_0 / F16, fp32 for
I2_S / F32), so the reference multiplies with exactly the weights the file holds; the embedding
is replaced by the values the file stores (dequantized F16 / Q8_0 / Q4_0).

Rounding margins: int8 activation quantization is discontinuous, so two fp32 implementations that
differ in the last bits can round an element whose ``x * s`` lies next to a boundary ``k + 0.5``
differently. :func:`rounding_margins` measures, per token, how close the reference came to a
boundary; :func:`clean_prompt` builds prompts on which it never comes close (see test_model.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from checkpoints import BITLINEAR, ternarize

from bitnet.quant.reference import dequantize_q8_0, quantize_q8_0

STORED_SCALE = {"i2_s": "f32", "f32": "f32", "tq1_0": "f16", "tq2_0": "f16", "f16": "f16"}
"""How each GGUF weight type stores the tensor scale s_w (docs/formats.md sections 2 and 6)."""

_MARGINS: list[np.ndarray] | None = None


def activation_quant(x: torch.Tensor) -> torch.Tensor:
    """The authors' per-token int8 fake quantization, fp32: ``round(x * s).clamp(-128, 127) / s``
    with ``s = 127 / max(max|x|, 1e-5)`` (torch evaluates ``127.0 / t`` as ``t.reciprocal() * 127``
    and rounds half to even). Inside :func:`rounding_margins` it also records, per token, how
    close ``x * s`` came to a rounding boundary."""
    s = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    y = x * s
    if _MARGINS is not None:
        # |frac(y) - 0.5| is exact in fp32 (|y| < 2^23): the distance, in int8 code units, to the
        # nearest boundary k + 0.5 between two codes.
        dist = ((y - y.floor()) - 0.5).abs().reshape(-1, y.shape[-1])
        _MARGINS.append(dist.amin(dim=-1).numpy())
    return y.round().clamp(-128, 127) / s


def rounding_margins(fn: Callable[..., Any], *args: Any) -> tuple[Any, np.ndarray]:
    """Runs ``fn(*args)`` (one sequence through a reference) and returns (its result, margin [T]):
    margin[t] = the smallest distance, over every activation quantization of token t in every
    layer, between ``x * s`` and a rounding boundary ``k + 0.5``, in int8 code units.

    An implementation whose scaled activations ``x * s`` differ from the reference's by less than
    margin[t] (for this and every earlier token) makes the same int8 decisions for token t."""
    global _MARGINS
    _MARGINS = []
    try:
        out = fn(*args)
        rows = list(_MARGINS)
    finally:
        _MARGINS = None
    return out, np.min(np.stack(rows), axis=0)


def clean_prompt(
    hidden_fn: Callable[[list[int]], Any], vocab: int, length: int, seed: int, delta: float
) -> list[int]:
    """A prompt of ``length`` random token ids whose every token keeps a rounding margin of at
    least ``delta`` in the reference ``hidden_fn``. Built token by token: causality means adding
    a token never changes the margins of the tokens before it, so only the new one is checked,
    and random candidates are drawn until one is clean (for the test models about 60% are)."""
    rng = np.random.default_rng(seed)
    ids: list[int] = []
    for _ in range(50 * length):
        if len(ids) == length:
            return ids
        cand = [*ids, int(rng.integers(vocab))]
        _, margin = rounding_margins(hidden_fn, cand)
        if margin[-1] >= delta:
            ids = cand
    raise AssertionError(f"clean_prompt: could not find {length} clean tokens (delta {delta})")


def weight_quant(w: Any, scale: str = "f32") -> torch.Tensor:
    """``t * s`` (fp32) for a master weight: ``t, s_w = ternarize(w)``, ``s`` = ``s_w`` as the
    storage type keeps it (``"f32"`` or ``"f16"``)."""
    w = w.detach().float().numpy() if isinstance(w, torch.Tensor) else np.asarray(w, np.float32)
    t, s = ternarize(w)
    if scale == "f16":
        s = np.float32(np.float16(s))
    elif scale != "f32":
        raise ValueError(scale)
    return torch.from_numpy(t.astype(np.float32) * np.float32(s))


def head_logits(hidden: np.ndarray, w: np.ndarray, head_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Logits [T, V] (float64) of the final normed hidden states ``hidden`` [T, H] (float32) with
    the dequantized head ``w`` [V, H], computed the way bitnet's DenseMatrix defines it
    (cpp/include/bitnet/dense.h): a plain product for f32/f16/bf16; for q8_0/q4_0 the rows of
    ``hidden`` are first quantized per 32-block to Q8_0 (ggml's quantize_row_q8_0: d = absmax/127,
    codes rounded half away from zero, d kept as fp16), and every product of the codes and
    scales is exact in float64.

    Also returns the Q8_0 rounding margin per row (distance of ``|x / d|`` to ``k + 0.5``; inf for
    the float types): a row whose margin exceeds the fp32 noise of ``hidden`` quantizes the same."""
    hidden = np.asarray(hidden, np.float32)
    if head_type not in ("q8_0", "q4_0"):
        return hidden.astype(np.float64) @ w.astype(np.float64).T, np.full(len(hidden), np.inf)
    xq = dequantize_q8_0(quantize_q8_0(hidden), hidden.shape)
    blocks = hidden.reshape(len(hidden), -1, 32)
    d = np.abs(blocks).max(-1, keepdims=True) / np.float32(127)
    inv = np.float32(1) / np.where(d == 0, np.float32(1), d)
    v = np.abs(blocks * inv)
    margin = np.abs((v - np.trunc(v)) - np.float32(0.5)).reshape(len(hidden), -1).min(-1)
    return xq.astype(np.float64) @ w.astype(np.float64).T, margin


# ------------------------------------------------------------------------------ transformers
def _bitlinear_forward(weight: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.linear(activation_quant(x), weight)

    return forward


def transformers_reference(
    ckpt: Path, weight_type: str = "f32", embed: np.ndarray | None = None
) -> Any:
    """transformers' ``BitNetForCausalLM`` from ``ckpt`` in fp32, every BitLinear made
    ``F.linear(aq(x), wq(W))`` with the scale stored by ``weight_type``; ``embed`` (float32
    ``[vocab, hidden]``) replaces the token embedding."""
    from transformers import BitNetForCausalLM

    model = BitNetForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32)
    model.eval()
    scale = STORED_SCALE[weight_type]
    with torch.no_grad():
        for layer in model.model.layers:
            for path in BITLINEAR:
                mod = layer.get_submodule(path)
                mod.weight.copy_(weight_quant(mod.weight, scale))
                mod.forward = _bitlinear_forward(mod.weight)
        if embed is not None:
            model.model.embed_tokens.weight.copy_(torch.from_numpy(embed))
    return model


def transformers_hidden(model: Any, ids: list[int] | np.ndarray) -> np.ndarray:
    """The final normed hidden states [T, hidden] (float32) of one sequence."""
    with torch.no_grad():
        out = model.model(torch.tensor([list(map(int, ids))], dtype=torch.long), use_cache=False)
    return out.last_hidden_state[0].float().numpy()


def transformers_logits(model: Any, ids: list[int] | np.ndarray) -> np.ndarray:
    """transformers' own logits [T, vocab] (float32) of one sequence."""
    with torch.no_grad():
        out = model(torch.tensor([list(map(int, ids))], dtype=torch.long), use_cache=False)
    return out.logits[0].float().numpy()


# ------------------------------------------------------------------------------ plain PyTorch
def rmsnorm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """``w * (x * rsqrt(mean(x^2) + eps))`` over the last dimension, fp32."""
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope_neox(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE with rotate_half pairing on ``x`` [T, heads, d] at positions ``pos`` [T]:
    ``x * cos + rotate_half(x) * sin``, ``inv_freq_i = 1 / theta^(2i/d)``."""
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float) / d))
    freqs = pos.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
    rot = torch.cat((-x[..., d // 2 :], x[..., : d // 2]), dim=-1)
    return x * cos + rot * sin


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_past: int = 0
) -> torch.Tensor:
    """Causal GQA attention: q [T, H, d] at positions n_past .. n_past+T-1 over k, v [L, Hkv, d]
    (positions 0 .. L-1, L = n_past + T); query head h uses kv head h // (H / Hkv). Softmax in fp32
    with max subtraction, scale 1 / sqrt(d). Returns [T, H, d]."""
    T, H, d = q.shape
    L, Hkv, _ = k.shape
    group = H // Hkv
    kk = k.repeat_interleave(group, dim=1)  # [L, H, d]
    vv = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("thd,lhd->htl", q, kk) / float(np.sqrt(d))
    mask = torch.arange(L)[None, :] > (torch.arange(T)[:, None] + n_past)  # [T, L]
    p = torch.softmax(scores.masked_fill(mask[None], float("-inf")), dim=-1)
    return torch.einsum("htl,lhd->thd", p, vv)


class PlainModel:
    """The BitNet network in plain PyTorch from a state dict with HF names (either layout).

    Args:
        state: checkpoint tensors (``model.layers.N.self_attn.q_proj.weight``, ...).
        cfg: ``hidden``, ``heads``, ``kv_heads``, ``layers``, ``eps``, ``theta``, ``act``
            (``relu2`` / ``silu``), ``attn_sub_norm`` / ``ffn_sub_norm`` (module paths in a layer).
        weight_type: decides how ``wq(W)``'s scale is rounded (see ``STORED_SCALE``).
        embed: replacement for the token embedding (float32 [vocab, hidden]).
    """

    def __init__(
        self,
        state: dict[str, torch.Tensor],
        cfg: dict[str, Any],
        weight_type: str = "f32",
        embed: np.ndarray | None = None,
    ) -> None:
        self.cfg = cfg
        scale = STORED_SCALE[weight_type]
        f32 = {k: v.float() for k, v in state.items()}
        self.embed = (
            torch.from_numpy(embed) if embed is not None else f32["model.embed_tokens.weight"]
        )
        self.norm = f32["model.norm.weight"]
        self.layers = []
        for i in range(cfg["layers"]):
            p = f"model.layers.{i}."
            lay = {name: weight_quant(f32[p + name + ".weight"], scale) for name in BITLINEAR}
            lay["in_norm"] = f32[p + "input_layernorm.weight"]
            lay["post_norm"] = f32[p + "post_attention_layernorm.weight"]
            lay["attn_sub"] = f32[p + cfg["attn_sub_norm"] + ".weight"]
            lay["ffn_sub"] = f32[p + cfg["ffn_sub_norm"] + ".weight"]
            self.layers.append(lay)

    def hidden(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """The final normed hidden states [T, hidden] (float32) of one sequence."""
        c = self.cfg
        eps, H, Hkv = c["eps"], c["heads"], c["kv_heads"]
        d = c["hidden"] // H

        def bl(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return F.linear(activation_quant(x), w)

        with torch.no_grad():
            ids_t = torch.tensor(list(map(int, ids)), dtype=torch.long)
            T = len(ids_t)
            pos = torch.arange(T)
            x = self.embed[ids_t]
            for lay in self.layers:
                n = rmsnorm(x, lay["in_norm"], eps)
                q = bl(n, lay["self_attn.q_proj"]).view(T, H, d)
                k = bl(n, lay["self_attn.k_proj"]).view(T, Hkv, d)
                v = bl(n, lay["self_attn.v_proj"]).view(T, Hkv, d)
                q, k = rope_neox(q, pos, c["theta"]), rope_neox(k, pos, c["theta"])
                a = causal_attention(q, k, v).reshape(T, H * d)
                x = x + bl(rmsnorm(a, lay["attn_sub"], eps), lay["self_attn.o_proj"])
                n = rmsnorm(x, lay["post_norm"], eps)
                g, u = bl(n, lay["mlp.gate_proj"]), bl(n, lay["mlp.up_proj"])
                h = (torch.relu(g) ** 2 if c["act"] == "relu2" else F.silu(g)) * u
                x = x + bl(rmsnorm(h, lay["ffn_sub"], eps), lay["mlp.down_proj"])
            return rmsnorm(x, self.norm, eps).numpy()

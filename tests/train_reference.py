"""A plain PyTorch BitNet b1.58 model for quantization-aware training (tests/test_train_model.py).

Written from the formulas (docs/formats.md section 1 and 4), independently of bitnet's code:

* BitLinear with the straight-through estimator: ``y = F.linear(x_eff, w_eff)`` with
  ``x_eff = x + lambda * (aq(x) - x).detach()`` and ``w_eff = w + lambda * (wq(w) - w).detach()``
  (``lambda = 1``: the forward sees exactly the quantized operands, the backward the identity).
  ``aq`` is tests/model_reference.py's :func:`~model_reference.activation_quant` (per-token int8,
  fp32, round half to even; inside :func:`model_reference.rounding_margins` it records how close
  each token came to a rounding boundary); ``wq(w) = clamp(round(w / s), -1, 1) * s`` with
  ``s = max(fp32(mean |w|), 1e-5)``, the mean accumulated in float64 (tests/checkpoints.py's
  ``ternarize``).
* RMSNorm ``w * x * rsqrt(mean(x^2) + eps)``; NEOX RoPE (rotate_half pairs ``(i, i + D/2)``,
  ``inv_freq_i = theta^(-2i/D)``); causal grouped-query attention with an fp32 softmax, scale
  ``1 / sqrt(D)``; the FFN ``down(ffn_sub_norm(act(gate(h)) * up(h)))`` with ``act`` relu^2 or
  SiLU; ``o_proj(attn_sub_norm(attn))``; a full-precision head tied to the embedding (or an
  untied ``lm_head``).

Parameter names are transformers' ``BitNetForCausalLM`` state-dict names, so a state dict moves
between this module, ``bitnet.train.BitNetForTraining`` and transformers unchanged. The model
runs in fp32: the quantizers are defined in fp32 arithmetic (``x * s`` rounded in fp32), so a
float64 run would make different int8 decisions, not more accurate ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from model_reference import activation_quant
from torch import nn


def weight_quant(w: torch.Tensor) -> torch.Tensor:
    """``clamp(round(w / s), -1, 1) * s``, ``s = max(fp32(mean |w|), 1e-5)`` (mean in float64),
    on a detached fp32 tensor."""
    w = w.detach().float()
    s = w.abs().double().mean().float().clamp(min=1e-5)
    return (w / s).round().clamp(-1, 1) * s


class BitLinear(nn.Module):
    """A bias-free BitLinear ``[out, in]`` with the straight-through estimator."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_out, n_in))

    def forward(self, x: torch.Tensor, lam: float) -> torch.Tensor:
        """``F.linear(x + lam (aq(x) - x).detach(), w + lam (wq(w) - w).detach())``, x [M, in]."""
        xq = activation_quant(x.detach())
        wq = weight_quant(self.weight)
        x_eff = x + lam * (xq - x.detach())
        w_eff = self.weight + lam * (wq - self.weight.detach())
        return F.linear(x_eff, w_eff)


class RMSNorm(nn.Module):
    """``weight * x * rsqrt(mean(x^2) + eps)`` over the last dimension."""

    def __init__(self, n: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """NEOX RoPE on ``x [B, T, H, D]`` at positions ``0 .. T-1``: ``x cos + rotate_half(x) sin``
    with angle ``t * theta^(-2i/D)`` for the pair ``(i, i + D/2)``."""
    T, D = x.shape[1], x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]  # [T, D/2]
    ang = torch.cat((ang, ang), dim=-1).float()
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    rot = torch.cat((-x[..., D // 2 :], x[..., : D // 2]), dim=-1)
    return x * cos + rot * sin


def causal_gqa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention: q [B, T, H, D], k, v [B, T, Hkv, D] (query head h reads kv head
    h // (H / Hkv)); softmax(q k^T / sqrt(D)) v. Returns [B, T, H, D]."""
    H, Hkv, D = q.shape[2], k.shape[2], q.shape[3]
    T = q.shape[1]
    k = k.repeat_interleave(H // Hkv, dim=2)
    v = v.repeat_interleave(H // Hkv, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / float(np.sqrt(D))
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    p = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
    return torch.einsum("bhts,bshd->bthd", p, v)


class Attention(nn.Module):
    def __init__(self, c: Any) -> None:
        super().__init__()
        d = c.hidden_size // c.num_attention_heads
        q, kv = c.num_attention_heads * d, c.num_key_value_heads * d
        self.q_proj = BitLinear(c.hidden_size, q)
        self.k_proj = BitLinear(c.hidden_size, kv)
        self.v_proj = BitLinear(c.hidden_size, kv)
        self.o_proj = BitLinear(q, c.hidden_size)
        self.attn_sub_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.c = c

    def forward(self, h: torch.Tensor, B: int, T: int, lam: float) -> torch.Tensor:
        c = self.c
        H, Hkv = c.num_attention_heads, c.num_key_value_heads
        D = c.hidden_size // H
        q = rope(self.q_proj(h, lam).view(B, T, H, D), c.rope_theta)
        k = rope(self.k_proj(h, lam).view(B, T, Hkv, D), c.rope_theta)
        v = self.v_proj(h, lam).view(B, T, Hkv, D)
        a = causal_gqa(q, k, v).reshape(B * T, H * D)
        return self.o_proj(self.attn_sub_norm(a), lam)


class MLP(nn.Module):
    def __init__(self, c: Any) -> None:
        super().__init__()
        self.gate_proj = BitLinear(c.hidden_size, c.intermediate_size)
        self.up_proj = BitLinear(c.hidden_size, c.intermediate_size)
        self.down_proj = BitLinear(c.intermediate_size, c.hidden_size)
        self.ffn_sub_norm = RMSNorm(c.intermediate_size, c.rms_norm_eps)
        self.act = c.hidden_act

    def forward(self, h: torch.Tensor, lam: float) -> torch.Tensor:
        g, u = self.gate_proj(h, lam), self.up_proj(h, lam)
        a = torch.relu(g) ** 2 if self.act == "relu2" else F.silu(g)
        return self.down_proj(self.ffn_sub_norm(a * u), lam)


class Layer(nn.Module):
    def __init__(self, c: Any) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MLP(c)

    def forward(self, x: torch.Tensor, B: int, T: int, lam: float) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), B, T, lam)
        return x + self.mlp(self.post_attention_layernorm(x), lam)


class Decoder(nn.Module):
    def __init__(self, c: Any) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class TorchBitNet(nn.Module):
    """The reference model for a ``TrainModelConfig``-like ``c`` (attributes vocab_size,
    hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
    num_key_value_heads, rms_norm_eps, rope_theta, hidden_act, tie_word_embeddings).

    ``lambda_`` is the BitLinear warm-up mix. :meth:`forward` takes ids [B, T] and returns
    logits [B * T, vocab] (row b * T + t), like ``BitNetForTraining.forward``."""

    def __init__(self, c: Any, state: dict[str, Any] | None = None, lambda_: float = 1.0) -> None:
        super().__init__()
        self.c = c
        self.lambda_ = lambda_
        self.model = Decoder(c)
        self.lm_head = (
            None if c.tie_word_embeddings else nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        )
        if state is not None:
            self.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()})

    def forward(self, ids: Any) -> torch.Tensor:
        ids_t = torch.as_tensor(np.asarray(ids), dtype=torch.long)
        B, T = ids_t.shape
        x = self.model.embed_tokens(ids_t.reshape(-1))
        for layer in self.model.layers:
            x = layer(x, B, T, self.lambda_)
        x = self.model.norm(x)
        head = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(x, head)

    def loss(self, ids: Any, targets: Any, ignore_index: int = -100) -> torch.Tensor:
        """Mean cross-entropy of the next-token logits against ``targets`` [B, T]."""
        t = torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1)
        return F.cross_entropy(self.forward(ids), t, ignore_index=ignore_index)

    def numpy_state(self) -> dict[str, np.ndarray]:
        """The parameters as float32 numpy copies (transformers names)."""
        return {k: v.detach().numpy().copy() for k, v in self.state_dict().items()}

"""The fp32 building blocks of the forward pass (cpp/include/bitnet/nn.h, bound as bitnet._ext.nn)
against float64 references written here from the formulas and against PyTorch.

Tolerances are derived from the operation counts, with u = 2^-24 (the fp32 unit roundoff):
each bound names the roundings it allows. Inputs are fresh seeded random arrays in several
shapes, including odd sizes and sizes that cross the 4096-value work chunks of the threaded
elementwise loops.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from model_reference import causal_attention, rope_neox

from bitnet import _ext

nn = _ext.nn
U = 2.0**-24


# ------------------------------------------------------------------------------ RMSNorm
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (3, 256), (5, 1000), (2, 6912), (17, 40)])
def test_rmsnorm_matches_float64_and_torch(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * rng.uniform(0.01, 100)).astype(np.float32)
    w = (1 + 0.1 * rng.standard_normal(shape[1])).astype(np.float32)
    eps = 1e-5
    y = nn.rmsnorm(x, w, eps)
    x64 = x.astype(np.float64)
    exact = x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + eps) * w
    # The mean is accumulated in double and rounded once (u), eps added (u), sqrt (u/2, halving
    # the relative error of its argument), the reciprocal (u), then two products (2u): < 5u.
    assert np.all(np.abs(y - exact) <= 5 * U * np.abs(exact) + 1e-30)
    # transformers' BitNetRMSNorm (fp32 mean, rsqrt): its own error is of the same order.
    xt = torch.from_numpy(x)
    ref = (torch.from_numpy(w) * (xt * torch.rsqrt(xt.pow(2).mean(-1, keepdim=True) + eps))).numpy()
    np.testing.assert_allclose(y, ref, rtol=2e-6, atol=0)


def test_rmsnorm_zero_row_and_eps() -> None:
    x = np.zeros((2, 9), np.float32)
    x[1] = 3.0
    w = np.ones(9, np.float32)
    y = nn.rmsnorm(x, w, 0.5)
    assert np.all(y[0] == 0)
    np.testing.assert_allclose(y[1], 3.0 / np.sqrt(9.0 + 0.5), rtol=4 * U)
    with pytest.raises(ValueError, match="eps"):
        nn.rmsnorm(x, w, -1.0)
    with pytest.raises(ValueError, match="w has 8 values"):
        nn.rmsnorm(x, w[:8], 1e-5)


# ------------------------------------------------------------------------------ RoPE
@pytest.mark.parametrize(
    ("heads", "d", "theta", "max_pos"),
    [(1, 2, 10000.0, 10), (4, 64, 500000.0, 4096), (3, 40, 10000.0, 300), (5, 128, 500000.0, 70)],
)
def test_rope_matches_torch(heads: int, d: int, theta: float, max_pos: int) -> None:
    rng = np.random.default_rng(d + heads)
    M = 9
    x = rng.standard_normal((M, heads, d)).astype(np.float32)
    pos = np.sort(rng.integers(0, max_pos, M)).astype(np.int64)
    pos[0] = 0
    y = nn.rope_neox(x, pos, theta)
    # Position 0 is the identity (cos 0 = 1, sin 0 = 0 exactly).
    np.testing.assert_array_equal(y[pos == 0], x[pos == 0])
    # transformers' formula (model_reference.rope_neox: fp32 inv_freq and angles, torch cos/sin).
    # Both compute the same fp32 angle; cos/sin differ by at most an ulp (torch's vectorized
    # cos/sin are within 1 ulp, ours are correctly rounded), each output is two products and a sum:
    # |diff| <= 4u (|a| + |b|) of the pair (a, b).
    ref = rope_neox(torch.from_numpy(x), torch.from_numpy(pos), theta).numpy()
    h = d // 2
    pair = np.abs(x[..., :h]) + np.abs(x[..., h:])
    bound = 4 * U * np.concatenate([pair, pair], axis=-1) + 1e-30
    assert np.all(np.abs(y - ref) <= bound), float(np.max(np.abs(y - ref) / bound))
    # Rotations preserve the length of every pair (up to rounding).
    n_in = x[..., :h] ** 2 + x[..., h:] ** 2
    n_out = y[..., :h] ** 2 + y[..., h:] ** 2
    np.testing.assert_allclose(n_out, n_in, rtol=1e-5, atol=1e-6)


def test_rope_rejects_bad_input() -> None:
    x = np.zeros((1, 2, 7), np.float32)
    with pytest.raises(ValueError, match="head_dim must be even"):
        nn.rope_neox(x, np.zeros(1, np.int64), 10000.0)
    with pytest.raises(ValueError, match="position -1"):
        nn.rope_neox(np.zeros((1, 2, 8), np.float32), np.array([-1]), 10000.0)


# ------------------------------------------------------------------------------ attention
def _attention64(q: np.ndarray, k: np.ndarray, v: np.ndarray, n_past: int) -> np.ndarray:
    M, H, d = q.shape
    group = H // k.shape[1]
    out = np.zeros((M, H, d))
    for m in range(M):
        n = n_past + m + 1
        for h in range(H):
            s = k[:n, h // group].astype(np.float64) @ q[m, h].astype(np.float64) / np.sqrt(d)
            p = np.exp(s - s.max())
            out[m, h] = (p / p.sum()) @ v[:n, h // group].astype(np.float64)
    return out


@pytest.mark.parametrize(
    ("M", "H", "Hkv", "d", "n_past"),
    [
        (1, 1, 1, 1, 0),  # a single key: out = v
        (5, 4, 2, 64, 0),  # prefill, GQA group 2
        (1, 8, 2, 128, 250),  # decode at an offset, group 4
        (7, 6, 1, 40, 33),  # multi-query, odd head count
        (3, 5, 5, 7, 11),  # no grouping, odd head size
    ],
)
def test_attention_matches_float64_and_torch(M: int, H: int, Hkv: int, d: int, n_past: int) -> None:
    rng = np.random.default_rng(M * 100 + d)
    L = n_past + M
    q = (2 * rng.standard_normal((M, H, d))).astype(np.float32)
    k = rng.standard_normal((L, Hkv, d)).astype(np.float32)
    v = rng.standard_normal((L, Hkv, d)).astype(np.float32)
    out = nn.attention(q, k, v, n_past)
    exact = _attention64(q, k, v, n_past)
    # Error bound, fp32: each score is a dot of d products in 16 partial sums (<= (d/16 + 4) u of
    # sum |q_i k_i|, times the scale; the bound below keeps the looser d/8); p_j = exp(s_j - max)
    # / sum changes by at most 2 * max|ds| (relative, the exponent's argument error) plus (L + 4) u
    # for exp (the polynomial is within 2 u), the sum and the division;
    # the output sum of L terms p_j v_j adds (L + 2) u * max|v|.
    scale = 1 / np.sqrt(d)
    qk = np.abs(q.astype(np.float64)) @ np.abs(k.astype(np.float64)).reshape(L * Hkv, d).T
    ds = (d / 8 + 4) * U * qk.max() * scale
    bound = (2 * ds + (2 * L + 6) * U) * np.abs(v).max()
    assert np.max(np.abs(out - exact)) <= bound, (np.max(np.abs(out - exact)), bound)
    ref = causal_attention(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), n_past)
    assert np.max(np.abs(out - ref.numpy())) <= 2 * bound
    if L == 1:
        np.testing.assert_array_equal(out[0, 0], v[0, 0])


@pytest.mark.parametrize("isa", ["ref", "avx2", "avx512", "avx512_vnni", "neon", "neon_dotprod"])
def test_attention_is_identical_on_every_isa(isa: str) -> None:
    """The per-ISA attention kernels run the same fp32 operations in the same order (explicit
    16-lane sums, no FMA contraction, the same exp polynomial), so every ISA gives the scalar
    build's bits; decode (1 query, GQA group 4, the group split across tasks) and prefill."""
    if isa not in _ext.available_isas():
        pytest.skip(f"{isa} is not available on this CPU")
    rng = np.random.default_rng(7)
    cases = []
    for M, H, Hkv, d, n_past in [(1, 20, 5, 128, 300), (9, 6, 2, 40, 5), (3, 4, 4, 7, 0)]:
        L = n_past + M
        q = (2 * rng.standard_normal((M, H, d))).astype(np.float32)
        k = rng.standard_normal((L, Hkv, d)).astype(np.float32)
        v = rng.standard_normal((L, Hkv, d)).astype(np.float32)
        cases.append((q, k, v, n_past))
    old = os.environ.get("BITNET_MAX_ISA")
    try:
        os.environ["BITNET_MAX_ISA"] = "ref"
        assert _ext.reload_dispatch() == "ref"
        want = [nn.attention(*c) for c in cases]
        os.environ["BITNET_MAX_ISA"] = isa
        assert _ext.reload_dispatch() == isa
        for c, w in zip(cases, want, strict=True):
            np.testing.assert_array_equal(nn.attention(*c), w)
    finally:
        if old is None:
            os.environ.pop("BITNET_MAX_ISA", None)
        else:
            os.environ["BITNET_MAX_ISA"] = old
        _ext.reload_dispatch()


def test_attention_is_causal() -> None:
    """Changing keys/values at positions after a query never changes its output."""
    rng = np.random.default_rng(5)
    q = rng.standard_normal((4, 2, 16)).astype(np.float32)
    k = rng.standard_normal((10, 1, 16)).astype(np.float32)
    v = rng.standard_normal((10, 1, 16)).astype(np.float32)
    a = nn.attention(q, k, v, 3)  # queries at positions 3..6
    k2, v2 = k.copy(), v.copy()
    k2[7:], v2[7:] = 100.0, -100.0  # positions no query sees
    k2[6], v2[6] = 50.0, 50.0  # seen by the last query only
    b = nn.attention(q, k2, v2, 3)
    np.testing.assert_array_equal(a[:3], b[:3])
    assert np.all(a[3] != b[3])


def test_attention_rejects_bad_shapes() -> None:
    q = np.zeros((2, 3, 8), np.float32)
    kv = np.zeros((4, 2, 8), np.float32)
    with pytest.raises(ValueError, match="multiple of n_head_kv"):
        nn.attention(q, kv, kv, 0)
    with pytest.raises(ValueError, match="n_past 3"):
        nn.attention(np.zeros((2, 2, 8), np.float32), kv, kv, 3)


# ------------------------------------------------------------------------------ FFN activations
SHAPES = [(1, 1), (1, 7), (3, 513), (1, 6912), (2, 4097)]


@pytest.mark.parametrize("shape", SHAPES)
def test_relu2_is_bit_exact(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[1])
    g = (3 * rng.standard_normal(shape)).astype(np.float32)
    u = rng.standard_normal(shape).astype(np.float32)
    h = nn.gated_activation(g, u, "relu2")
    r = np.maximum(g, np.float32(0))
    np.testing.assert_array_equal(h, (r * r) * u)  # every step one fp32 rounding, same order
    # transformers' ReLUSquaredActivation (relu, then square) times up: the same roundings.
    ref = torch.square(torch.relu(torch.from_numpy(g))) * torch.from_numpy(u)
    np.testing.assert_array_equal(h, ref.numpy())


@pytest.mark.parametrize("shape", SHAPES)
def test_silu_matches_float64_and_torch(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[1] + 1)
    g = (4 * rng.standard_normal(shape)).astype(np.float32)
    g.flat[0] = -100.0  # exp(100) overflows fp32: g / inf = -0, exact value ~ -4e-42
    u = rng.standard_normal(shape).astype(np.float32)
    h = nn.gated_activation(g, u, "silu")
    g64 = g.astype(np.float64)
    exact = g64 / (1 + np.exp(-g64)) * u
    # expf (< 1 ulp), 1 + e (u, no cancellation), the division (u), the product (u): < 5u.
    assert np.all(np.abs(h - exact) <= 5 * U * np.abs(exact) + 1e-37)
    ref = torch.nn.functional.silu(torch.from_numpy(g)) * torch.from_numpy(u)
    np.testing.assert_allclose(h, ref.numpy(), rtol=1e-6, atol=1e-37)


def test_activation_names() -> None:
    g = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(
        nn.gated_activation(g, g, "swish"), nn.gated_activation(g, g, "silu")
    )
    with pytest.raises(ValueError, match="expected relu2 or silu"):
        nn.gated_activation(g, g, "gelu")
    with pytest.raises(TypeError, match="float32"):
        nn.gated_activation(g.astype(np.float64), g, "silu")

"""The tape ops rmsnorm, rope and attention (cpp/src/autograd/norm_ops.cpp, attention_ops.cpp,
bound as bitnet._ext.autograd) against float64 PyTorch references written here from the formulas
(torch autograd on float64 copies of the fp32 inputs), and their forwards against the inference
building blocks (bitnet._ext.nn), which they must reproduce bit for bit: a model trained with
these ops and exported runs identically in the inference engine.

Tolerances are first-order rounding bounds with u = 2^-24 (the fp32 unit roundoff), stated per
element from magnitudes computed in float64 alongside each reference; every test draws fresh
seeded random inputs (never only zeros) and a random upstream gradient for backward_with.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import bitnet
from bitnet import _ext

ag = _ext.autograd
nn = _ext.nn
U = 2.0**-24


def _t64(a: np.ndarray, grad: bool = True) -> torch.Tensor:
    """A float64 torch copy of a float32 array (exact), with a gradient if asked."""
    return torch.from_numpy(a.astype(np.float64)).requires_grad_(grad)


def _within(got: np.ndarray, ref: np.ndarray, bound: np.ndarray, what: str) -> None:
    """Asserts |got - ref| <= bound elementwise, reporting the worst ratio."""
    err = np.abs(got.astype(np.float64) - ref)
    ratio = float(np.max(err / (bound + 1e-300)))
    assert np.all(err <= bound), f"{what}: error exceeds the bound by x{ratio:.3g}"


# ------------------------------------------------------------------------------ RMSNorm
@pytest.mark.parametrize("shape", [(1, 8), (7, 100), (33, 2560)])
@pytest.mark.parametrize("weighted", [True, False])
def test_rmsnorm_forward_backward(shape: tuple[int, int], weighted: bool) -> None:
    M, n = shape
    rng = np.random.default_rng(M * 7 + n + weighted)
    x = (rng.standard_normal(shape) * rng.uniform(0.1, 10)).astype(np.float32)
    w = (1 + 0.3 * rng.standard_normal(n)).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    eps = 1e-5
    X = ag.Tensor(x, requires_grad=True)
    W = ag.Tensor(w, requires_grad=True) if weighted else None
    y = ag.rmsnorm(X, W, eps)
    assert ag.tape_ops() == ["rmsnorm"]
    # Inference computes the same fp32 operations in the same order: bit-identical (no weight
    # multiplies by 1, which is exact).
    np.testing.assert_array_equal(y.numpy(), nn.rmsnorm(x, w if weighted else np.ones_like(w), eps))
    ag.backward_with(y, g)

    x64, w64, g64 = _t64(x), _t64(w), torch.from_numpy(g.astype(np.float64))
    r64 = torch.rsqrt((x64 * x64).mean(-1, keepdim=True) + eps)
    ref = x64 * r64 * (w64 if weighted else 1.0)
    ref.backward(g64)
    wr = w64.detach() if weighted else torch.ones(n, dtype=torch.float64)
    # Forward: mean rounded once (u), + eps (u), sqrt (u/2), reciprocal (u), two products: < 5u.
    _within(y.numpy(), ref.detach().numpy(), 5 * U * np.abs(ref.detach().numpy()), "y")
    # dx = r * (g w) - x * c with c = r^3 mean(g w x): r carries <= 4u, g w one rounding, the
    # mean is double (negligible) with c rounded once (and r^3: 12u), two products and the
    # difference: each term <= 16u of its magnitude.
    rd = r64.detach()
    c = rd**3 * (g64 * wr * x64.detach()).mean(-1, keepdim=True)
    bound_dx = 16 * U * ((rd * (g64 * wr).abs()) + (x64.detach() * c).abs()).numpy()
    _within(X.grad, x64.grad.numpy(), bound_dx, "dx")
    if weighted:
        # dw = sum_m (g x) r: each term 2 roundings plus r's 4u, then M - 1 fp32 additions.
        terms = (g64 * x64.detach() * rd).abs().sum(0).numpy()
        _within(W.grad, w64.grad.numpy(), (M + 8) * U * terms, "dw")


def test_rmsnorm_grad_only_where_needed_and_accumulates() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 40)).astype(np.float32)
    w = (1 + 0.1 * rng.standard_normal(40)).astype(np.float32)
    g = rng.standard_normal((6, 40)).astype(np.float32)
    X, W = ag.Tensor(x), ag.Tensor(w, requires_grad=True)
    grads = []
    for _ in range(2):
        ag.backward_with(ag.rmsnorm(X, W, 1e-6), g)
        grads.append(W.grad)
    assert X.grad is None
    # The second pass adds the same values again: exactly twice the first.
    np.testing.assert_array_equal(grads[1], 2 * grads[0])
    # Nothing requires a gradient, or gradients are off: no node.
    ag.rmsnorm(X, None, 1e-6)
    assert ag.tape_size() == 0
    ag.set_grad_enabled(False)
    try:
        ag.rmsnorm(ag.Tensor(x, requires_grad=True), W)
        assert ag.tape_size() == 0
    finally:
        ag.set_grad_enabled(True)


def test_rmsnorm_threads_deterministic(threads: None) -> None:
    rng = np.random.default_rng(8)
    x = rng.standard_normal((33, 2560)).astype(np.float32)
    w = (1 + 0.1 * rng.standard_normal(2560)).astype(np.float32)
    g = rng.standard_normal((33, 2560)).astype(np.float32)
    out = []
    for n in (1, 2, 3):
        bitnet.set_num_threads(n)
        X, W = ag.Tensor(x, requires_grad=True), ag.Tensor(w, requires_grad=True)
        y = ag.rmsnorm(X, W)
        ag.backward_with(y, g)
        out.append((y.numpy().copy(), X.grad, W.grad))
    # Rows are independent and each column of dw is summed in row order by one task: the results
    # do not depend on how the work is split.
    for other in out[1:]:
        for a, b in zip(out[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_rmsnorm_errors() -> None:
    x = ag.Tensor(np.ones((3, 8), np.float32), requires_grad=True)
    with pytest.raises(ValueError, match=r"rmsnorm: x must be a 2-D tensor \[M, C\], got \[8\]"):
        ag.rmsnorm(ag.Tensor(np.ones(8, np.float32)))
    with pytest.raises(
        ValueError, match=r"rmsnorm: w must be \[8\] to match x \[3, 8\], got \[7\]"
    ):
        ag.rmsnorm(x, ag.Tensor(np.ones(7, np.float32)))
    with pytest.raises(ValueError, match=r"rmsnorm: x \[3, 0\] has no features"):
        ag.rmsnorm(ag.Tensor(np.ones((3, 0), np.float32)))
    with pytest.raises(ValueError, match="rmsnorm: eps must be finite and >= 0"):
        ag.rmsnorm(x, None, -1e-5)
    assert ag.tape_size() == 0


# ------------------------------------------------------------------------------ RoPE
def _rope_angles(T: int, D: int, theta: float, pos0: int) -> np.ndarray:
    """The angles [T, D/2] as the contract defines them: inv_freq_i = 1 / theta^(2i / D) with the
    exponent an fp32 quotient and the power rounded to fp32 once, angle = fp32(pos * inv_freq)
    (transformers' and inference's fp32 angle; cos / sin of it are then taken in float64)."""
    e = np.arange(0, D, 2).astype(np.float32) / np.float32(D)
    inv = (np.float32(1.0) / (float(theta) ** e.astype(np.float64)).astype(np.float32)).astype(
        np.float32
    )
    pos = np.arange(pos0, pos0 + T).astype(np.float32)
    return (pos[:, None] * inv[None, :]).astype(np.float32).astype(np.float64)


@pytest.mark.parametrize(
    ("B", "T", "H", "D", "theta", "pos0"),
    [
        (1, 1, 1, 2, 10000.0, 0),
        (2, 5, 3, 2, 10000.0, 3),
        (3, 7, 2, 8, 10000.0, 0),
        (2, 33, 4, 64, 500000.0, 100),
        (1, 9, 2, 128, 10000.0, 4000),
    ],
)
def test_rope_forward_backward(B: int, T: int, H: int, D: int, theta: float, pos0: int) -> None:
    rng = np.random.default_rng(B + T * 3 + D)
    x = rng.standard_normal((B * T, H * D)).astype(np.float32)
    g = rng.standard_normal((B * T, H * D)).astype(np.float32)
    X = ag.Tensor(x, requires_grad=True)
    y = ag.rope(X, T=T, H=H, D=D, theta=theta, pos0=pos0)
    assert ag.tape_ops() == ["rope"]
    # Inference (rope_neox on [M, H, D] rows at the given positions): bit-identical.
    pos = np.tile(np.arange(pos0, pos0 + T, dtype=np.int64), B)
    inf = nn.rope_neox(x.reshape(B * T, H, D), pos, theta).reshape(B * T, H * D)
    np.testing.assert_array_equal(y.numpy(), inf)
    ag.backward_with(y, g)

    ang = torch.from_numpy(np.tile(_rope_angles(T, D, theta, pos0), (B, 1)))  # [B*T, D/2]
    cos = torch.cat([ang.cos(), ang.cos()], -1)[:, None, :]
    sin = torch.cat([ang.sin(), ang.sin()], -1)[:, None, :]
    x64 = _t64(x)
    xh = x64.view(B * T, H, D)
    half = D // 2
    rot = torch.cat([-xh[..., half:], xh[..., :half]], -1)  # rotate_half
    ref = (xh * cos + rot * sin).reshape(B * T, H * D)
    ref.backward(torch.from_numpy(g.astype(np.float64)))

    # Each output (and each input gradient) is a * c +- b * s of a pair (a, b) with cos / sin
    # rounded to fp32 (u/2 each), two products and a sum: |error| <= 3u (|a| + |b|); bound 4u.
    def pair_bound(a: np.ndarray) -> np.ndarray:
        a = np.abs(a.reshape(B * T, H, D).astype(np.float64))
        p = a[..., :half] + a[..., half:]
        return 4 * U * np.concatenate([p, p], -1).reshape(B * T, H * D)

    _within(y.numpy(), ref.detach().numpy(), pair_bound(x), "y")
    _within(X.grad, x64.grad.numpy(), pair_bound(g), "dx")


def test_rope_is_a_rotation_and_accumulates() -> None:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((12, 2 * 16)).astype(np.float32)
    X = ag.Tensor(x, requires_grad=True)
    y = ag.rope(X, 4, 2, 16, 10000.0, 2)
    # The backward of a rotation is its inverse: seeding with y gives back x (up to rounding).
    ag.backward_with(y, y.numpy().copy())
    np.testing.assert_allclose(X.grad, x, rtol=0, atol=8 * U * float(np.abs(x).max()))
    first = X.grad
    ag.backward_with(ag.rope(X, 4, 2, 16, 10000.0, 2), y.numpy().copy())
    np.testing.assert_array_equal(X.grad, 2 * first)


def test_rope_errors() -> None:
    x = ag.Tensor(np.ones((6, 8), np.float32), requires_grad=True)
    with pytest.raises(ValueError, match="rope: head dimension D must be even"):
        ag.rope(ag.Tensor(np.ones((6, 9), np.float32)), 3, 3, 3)
    with pytest.raises(ValueError, match=r"rope: x must be \[B \* T, H \* D\] .* got \[6, 8\]"):
        ag.rope(x, 4, 2, 4)  # 6 rows are not whole sequences of T = 4
    with pytest.raises(ValueError, match=r"rope: x must be \[B \* T, H \* D\] .* got \[6, 8\]"):
        ag.rope(x, 3, 2, 8)  # 8 columns are not 2 heads of 8
    with pytest.raises(ValueError, match="rope: T, H and D must be > 0"):
        ag.rope(x, 0, 2, 4)
    with pytest.raises(ValueError, match="rope: theta must be finite and > 0"):
        ag.rope(x, 3, 2, 4, theta=0.0)
    with pytest.raises(ValueError, match=r"rope: positions pos0 = -1 .* must lie in \[0, 2\^24\)"):
        ag.rope(x, 3, 2, 4, pos0=-1)
    with pytest.raises(ValueError, match=r"rope: positions pos0 = 16777214 .*T = 3"):
        ag.rope(x, 3, 2, 4, pos0=2**24 - 2)
    assert ag.tape_size() == 0


# ------------------------------------------------------------------------------ attention
def _attention_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, B: int, T: int, Hq: int, Hkv: int, D: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal GQA attention in plain torch: returns the output [B*T, Hq*D] and the probabilities
    [B, Hq, T, T] (zeros above the diagonal)."""
    G = Hq // Hkv
    qh = q.view(B, T, Hq, D).transpose(1, 2)
    kh = k.view(B, T, Hkv, D).transpose(1, 2).repeat_interleave(G, dim=1)
    vh = v.view(B, T, Hkv, D).transpose(1, 2).repeat_interleave(G, dim=1)
    s = qh @ kh.transpose(-1, -2) / math.sqrt(D)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    p = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1)
    return (p @ vh).transpose(1, 2).reshape(B * T, Hq * D), p


def _heads(a: torch.Tensor, B: int, T: int, H: int, D: int, G: int = 1) -> torch.Tensor:
    """[B*T, H*D] -> [B, H*G, T, D] (each head repeated G times, as GQA reads them)."""
    return a.view(B, T, H, D).transpose(1, 2).repeat_interleave(G, dim=1)


def _flat(a: torch.Tensor, B: int, T: int, H: int, D: int, G: int = 1) -> np.ndarray:
    """[B, H*G, T, D] -> [B*T, H*D], summing each group of G heads."""
    return a.view(B, H, G, T, D).sum(2).transpose(1, 2).reshape(B * T, H * D).numpy()


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("T", [1, 5, 33])
@pytest.mark.parametrize(("Hq", "Hkv"), [(4, 4), (4, 2), (6, 1)])
@pytest.mark.parametrize("D", [8, 64])
def test_attention_forward_backward(B: int, T: int, Hq: int, Hkv: int, D: int) -> None:
    G = Hq // Hkv
    rng = np.random.default_rng(1000 * B + 100 * T + 10 * Hq + Hkv + D)
    q = rng.standard_normal((B * T, Hq * D)).astype(np.float32)
    k = rng.standard_normal((B * T, Hkv * D)).astype(np.float32)
    v = rng.standard_normal((B * T, Hkv * D)).astype(np.float32)
    g = rng.standard_normal((B * T, Hq * D)).astype(np.float32)
    Q, K, V = (ag.Tensor(a, requires_grad=True) for a in (q, k, v))
    out = ag.attention(Q, K, V, B=B, T=T, Hq=Hq, Hkv=Hkv, D=D)
    assert out.shape == (B * T, Hq * D)
    assert ag.tape_ops() == ["attention"]
    # Each sequence against inference's attention (same dot product, softmax and accumulation
    # order): bit-identical.
    for b in range(B):
        rows = slice(b * T, (b + 1) * T)
        inf = nn.attention(
            q[rows].reshape(T, Hq, D), k[rows].reshape(T, Hkv, D), v[rows].reshape(T, Hkv, D), 0
        )
        np.testing.assert_array_equal(out.numpy()[rows], inf.reshape(T, Hq * D))
    ag.backward_with(out, g)

    q64, k64, v64 = _t64(q), _t64(k), _t64(v)
    g64 = torch.from_numpy(g.astype(np.float64))
    ref, p = _attention_ref(q64, k64, v64, B, T, Hq, Hkv, D)
    ref.backward(g64)

    # First-order rounding bounds, with magnitudes from absolute values (per element):
    #   scores: D products and sums, times the fp32 scale: |ds_j| <= (D + 2) u S_j,
    #     S_j = |q| . |k_j| / sqrt(D); the softmax turns a score error e into a relative error
    #     <= 2 max|e| of every p_j, plus exp, the sum of <= T terms and the division:
    #     rel(p) <= eta = (2 (D + 2) max S + T + 4) u;
    #   out = sum_j p_j v_j: (eta + T u) sum_j p_j |v_j|.
    #   The gradients chain at most three more sums of length <= max(T, D) (dp = dO . v_j,
    #   r = sum p dp, then dq / dk / dv), each adding <= (T + D) u of the magnitudes below.
    with torch.no_grad():
        aq, ak, av, ag_ = q64.abs(), k64.abs(), v64.abs(), g64.abs()
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        S = (_heads(aq, B, T, Hq, D) @ _heads(ak, B, T, Hkv, D, G).transpose(-1, -2)) / math.sqrt(D)
        eta = (2 * (D + 2) * float(S.masked_fill(~mask, 0).max()) + T + 4) * U
        lo = eta + 3 * (T + D + 4) * U
        m_out = _flat(p @ _heads(av, B, T, Hkv, D, G), B, T, Hq, D)
        # dP magnitude |dO| |V|^T, dS magnitude p (|dP| + sum p |dP|).
        m_dp = _heads(ag_, B, T, Hq, D) @ _heads(av, B, T, Hkv, D, G).transpose(-1, -2)
        m_ds = p * (m_dp + (p * m_dp).sum(-1, keepdim=True)) / math.sqrt(D)
        m_dq = _flat(m_ds @ _heads(ak, B, T, Hkv, D, G), B, T, Hq, D)
        m_dk = _flat(m_ds.transpose(-1, -2) @ _heads(aq, B, T, Hq, D), B, T, Hkv, D, G)
        m_dv = _flat(p.transpose(-1, -2) @ _heads(ag_, B, T, Hq, D), B, T, Hkv, D, G)
    _within(out.numpy(), ref.detach().numpy(), (eta + T * U) * m_out + 1e-30, "out")
    _within(Q.grad, q64.grad.numpy(), lo * m_dq + 1e-30, "dq")
    _within(K.grad, k64.grad.numpy(), lo * m_dk + 1e-30, "dk")
    _within(V.grad, v64.grad.numpy(), lo * m_dv + 1e-30, "dv")


def test_attention_partial_grads_accumulate_and_threads(threads: None) -> None:
    B, T, Hq, Hkv, D = 2, 17, 6, 3, 16
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((B * T, h * D)).astype(np.float32) for h in (Hq, Hkv, Hkv))
    g = rng.standard_normal((B * T, Hq * D)).astype(np.float32)

    def grads(n_threads: int, need: tuple[bool, bool, bool]) -> list[np.ndarray | None]:
        bitnet.set_num_threads(n_threads)
        ts = [ag.Tensor(a, requires_grad=r) for a, r in zip((q, k, v), need, strict=True)]
        ag.backward_with(ag.attention(*ts, B, T, Hq, Hkv, D), g)
        return [t.grad for t in ts]

    full = grads(1, (True, True, True))
    # Results do not depend on the number of threads (fixed per-task summation order).
    for a, b in zip(full, grads(3, (True, True, True)), strict=True):
        np.testing.assert_array_equal(a, b)
    # Each input's gradient alone equals its value when all three are computed.
    for i in range(3):
        part = grads(2, (i == 0, i == 1, i == 2))
        for j in range(3):
            if j == i:
                np.testing.assert_array_equal(part[j], full[j])
            else:
                assert part[j] is None
    # Accumulation: two backward passes add the same values, exactly twice the first.
    Q = ag.Tensor(q, requires_grad=True)
    K, V = ag.Tensor(k), ag.Tensor(v)
    for _ in range(2):
        ag.backward_with(ag.attention(Q, K, V, B, T, Hq, Hkv, D), g)
    np.testing.assert_array_equal(Q.grad, 2 * full[0])
    # No input requires a gradient: no node.
    ag.attention(ag.Tensor(q), K, V, B, T, Hq, Hkv, D)
    assert ag.tape_size() == 0


def test_attention_errors() -> None:
    B, T, D = 2, 3, 4

    def t(rows: int, cols: int) -> ag.Tensor:
        return ag.Tensor(np.ones((rows, cols), np.float32), requires_grad=True)

    q, kv = t(B * T, 4 * D), t(B * T, 2 * D)
    # An empty batch is valid and gives an empty output.
    assert ag.attention(t(0, 4 * D), t(0, 2 * D), t(0, 2 * D), 0, T, 4, 2, D).shape == (0, 4 * D)
    ag.clear_tape()
    with pytest.raises(
        ValueError, match="attention: Hq = 4 query heads is not a multiple of Hkv = 3"
    ):
        ag.attention(q, t(B * T, 3 * D), t(B * T, 3 * D), B, T, 4, 3, D)
    with pytest.raises(
        ValueError,
        match=r"attention: q must be \[B \* T, Hq \* D\] = \[2 \* 4, 4 \* 4\], got \[6, 16\]",
    ):
        ag.attention(q, kv, kv, B, 4, 4, 2, D)  # B * T != rows
    with pytest.raises(
        ValueError, match=r"attention: k must be \[B \* T, Hkv \* D\] .* got \[6, 12\]"
    ):
        ag.attention(q, t(B * T, 3 * D), kv, B, T, 4, 2, D)
    with pytest.raises(
        ValueError, match=r"attention: v must be \[B \* T, Hkv \* D\] .* got \[5, 8\]"
    ):
        ag.attention(q, kv, t(5, 2 * D), B, T, 4, 2, D)
    with pytest.raises(ValueError, match=r"attention: q must be .* got \[6, 16\]"):
        ag.attention(q, kv, kv, B, T, 4, 2, 8)  # wrong D
    with pytest.raises(ValueError, match="attention: need B >= 0 and T, Hq, Hkv, D > 0"):
        ag.attention(q, kv, kv, B, 0, 4, 2, D)
    with pytest.raises(ValueError, match="attention: need B >= 0 and T, Hq, Hkv, D > 0"):
        ag.attention(q, kv, kv, B, T, 4, 0, D)
    assert ag.tape_size() == 0

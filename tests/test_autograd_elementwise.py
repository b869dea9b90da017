"""Tape ops add, mul, scale, gated, dropout and cross_entropy against float64 PyTorch autograd.

Tolerances, with u = 2**-24 (the fp32 unit roundoff). The references evaluate the same fp32
operands in float64 (exact to ~1e-16), so an fp32 result that rounds k times in the order written
is within about k * u of it, relative to the size of the terms involved:
  * add / mul / scale forward and backward round once (or not at all): <= u * |ref|;
  * relu2's gradients round 2-3 times; silu's backward goes through expf (< 1 ulp), the sigmoid
    (two more roundings) and 1 + g * (1 - s), which cancels near g = -1.28, so it is bounded
    relative to the magnitude of its terms, |g_out * up| * s * (1 + |g| * (1 - s));
  * cross_entropy: exp_nonpos is accurate to < 2u, but d = x - max is itself rounded, which
    costs |d| * u relative on e^d; the row sum adds at most ~(128 + 3) u (fp32 lane sums of at
    most 128 terms, then double); see each test.
Inputs are seeded random arrays of several shapes, including odd sizes and sizes past the 32k
element ranges that the ops split across threads.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bitnet
from bitnet import _ext

ag = _ext.autograd
U = 2.0**-24
SHAPES = [(1,), (3, 5), (2, 3, 7), (70, 1000)]  # the last crosses the 32k-element ranges


def t64(a: np.ndarray) -> torch.Tensor:
    """A float64 leaf tensor that requires a gradient."""
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


def close(ours: np.ndarray, ref: torch.Tensor | np.ndarray, bound: np.ndarray | float) -> None:
    """|ours - ref| <= bound elementwise, with the worst offender in the message."""
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else ref
    err = np.abs(ours.astype(np.float64) - ref)
    excess = err - bound
    i = np.unravel_index(np.argmax(excess), err.shape) if err.ndim else ()
    assert np.all(excess <= 0), f"at {i}: ours {ours[i]}, ref {ref[i]}, err {err[i]}"


# ------------------------------------------------------------------------- add, mul, scale
@pytest.mark.parametrize("shape", SHAPES)
def test_add_mul_scale_match_torch(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    a = rng.standard_normal(shape).astype(np.float32)
    b = (3 * rng.standard_normal(shape)).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    s = np.float32(-0.37)
    for name, fn, ref_fn in [
        ("add", lambda x, y: ag.add(x, y), lambda x, y: x + y),
        ("mul", lambda x, y: ag.mul(x, y), lambda x, y: x * y),
        ("scale", lambda x, y: ag.scale(x, float(s)), lambda x, y: x * float(s)),
    ]:
        A, B = ag.Tensor(a, requires_grad=True), ag.Tensor(b, requires_grad=True)
        out = fn(A, B)
        assert out.shape == shape and ag.tape_ops() == [name]
        a64, b64 = t64(a), t64(b)
        ref = ref_fn(a64, b64)
        close(out.numpy(), ref, U * np.abs(ref.detach().numpy()))  # one rounding
        ag.backward_with(out, g)
        ref.backward(torch.from_numpy(g.astype(np.float64)))
        close(A.grad, a64.grad, U * np.abs(a64.grad.numpy()))
        if name == "scale":
            assert B.grad is None  # b took no part
        else:
            close(B.grad, b64.grad, U * np.abs(b64.grad.numpy()))
        assert ag.tape_size() == 0


def test_gradients_accumulate_and_skip_inputs_without_grad() -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal((4, 9)).astype(np.float32)
    b = rng.standard_normal((4, 9)).astype(np.float32)
    A, B = ag.Tensor(a, requires_grad=True), ag.Tensor(b)  # b: a constant
    # y = (a * b + a) + a * a: a is used four times, its gradient sums the four paths.
    y = ag.add(ag.add(ag.mul(A, B), A), ag.mul(A, A))
    g = rng.standard_normal((4, 9)).astype(np.float32)
    ag.backward_with(y, g)
    a64 = t64(a)
    ((a64 * torch.from_numpy(b).double() + a64) + a64 * a64).backward(torch.from_numpy(g).double())
    # Each path rounds once, then three accumulations: 4 u of the sum of |terms|.
    terms = np.abs(g) * (np.abs(b) + 1 + 2 * np.abs(a))
    close(A.grad, a64.grad, 4 * U * terms)
    assert B.grad is None
    # No input needs a gradient: nothing is recorded.
    out = ag.add(ag.Tensor(a), ag.Tensor(b))
    assert not out.requires_grad and ag.tape_size() == 0


def test_add_mul_errors() -> None:
    a = ag.Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    b = ag.Tensor(np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"add: a and b must have the same shape, got a \[2, 3\]"):
        ag.add(a, b)
    with pytest.raises(ValueError, match=r"mul: .* b \[3, 2\]"):
        ag.mul(a, b)
    assert ag.tape_size() == 0


# ------------------------------------------------------------------------------ gated
def gated_ref(g: torch.Tensor, u: torch.Tensor, act: str) -> torch.Tensor:
    """relu(g)^2 * u or g * sigmoid(g) * u, written from the formulas."""
    if act == "relu2":
        return torch.square(torch.relu(g)) * u
    return g / (1 + torch.exp(-g)) * u


@pytest.mark.parametrize("act", ["relu2", "silu"])
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (5, 64), (33, 1001)])
def test_gated_matches_inference_and_torch(act: str, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] * 7 + shape[1] + len(act))
    g = (3 * rng.standard_normal(shape)).astype(np.float32)
    g.flat[0] = -100.0 if act == "silu" else g.flat[0]  # exp(100) overflows fp32: no NaN
    u = rng.standard_normal(shape).astype(np.float32)
    go = rng.standard_normal(shape).astype(np.float32)
    G, Uu = ag.Tensor(g, requires_grad=True), ag.Tensor(u, requires_grad=True)
    out = ag.gated(G, Uu, act=act)
    # Forward: bit for bit the inference routine.
    np.testing.assert_array_equal(out.numpy(), _ext.nn.gated_activation(g, u, act))
    g64, u64 = t64(g), t64(u)
    ref = gated_ref(g64, u64, act)
    close(out.numpy(), ref, 5 * U * np.abs(ref.detach().numpy()) + 1e-37)  # see test_nn.py
    ag.backward_with(out, go)
    ref.backward(torch.from_numpy(go).double())
    gd = g.astype(np.float64)
    if act == "relu2":
        # dg = (go * u) * (2 r): 2 roundings; du = go * (r * r): 2 roundings.
        close(G.grad, g64.grad, 2 * U * np.abs(g64.grad.numpy()))
        close(Uu.grad, u64.grad, 2 * U * np.abs(u64.grad.numpy()))
        assert np.all(G.grad[g <= 0] == 0) and np.all(Uu.grad[g <= 0] == 0)
    else:
        s = 1 / (1 + np.exp(-gd))
        terms = np.abs(go * u) * s * (1 + np.abs(gd) * (1 - s))
        close(G.grad, g64.grad, 16 * U * terms + 1e-37)
        close(Uu.grad, u64.grad, 6 * U * np.abs(u64.grad.numpy()) + 1e-37)
        assert np.all(np.isfinite(G.grad))


def test_gated_same_tensor_and_only_up() -> None:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 10)).astype(np.float32)
    go = rng.standard_normal((4, 10)).astype(np.float32)
    X = ag.Tensor(x, requires_grad=True)
    ag.backward_with(ag.gated(X, X, "silu"), go)  # x * sigmoid(x) * x
    x64 = t64(x)
    gated_ref(x64, x64, "silu").backward(torch.from_numpy(go).double())
    close(X.grad, x64.grad, 32 * U * np.abs(go) * (1 + np.abs(x)) ** 2)
    # gate without a gradient: only up's is computed.
    Ug = ag.Tensor(x, requires_grad=True)
    ag.backward_with(ag.gated(ag.Tensor(x), Ug, "relu2"), go)
    r = np.maximum(x, 0)
    np.testing.assert_array_equal(Ug.grad, go * (r * r))  # the same two fp32 roundings


def test_gated_names_and_errors() -> None:
    g = ag.Tensor(np.ones((2, 4), np.float32))
    np.testing.assert_array_equal(ag.gated(g, g, "swish").numpy(), ag.gated(g, g, "silu").numpy())
    np.testing.assert_array_equal(ag.gated(g, g).numpy(), np.ones((2, 4)))  # relu2 by default
    with pytest.raises(ValueError, match="expected relu2 or silu"):
        ag.gated(g, g, "gelu")
    with pytest.raises(
        ValueError, match=r"gated: up must have gate's shape \[2, 4\], got \[4, 2\]"
    ):
        ag.gated(g, ag.Tensor(np.ones((4, 2), np.float32)))
    with pytest.raises(ValueError, match=r"gated: gate must be a 2-D tensor \[M, F\], got \[8\]"):
        ag.gated(ag.Tensor(np.ones(8, np.float32)), ag.Tensor(np.ones(8, np.float32)))


# ------------------------------------------------------------------------------ dropout
M64 = (1 << 64) - 1


def xoshiro_uniforms(seed: int, n: int) -> np.ndarray:
    """n draws of xoshiro256** seeded by SplitMix64 (sampler.h), as (next >> 11) * 2^-53."""

    def splitmix(x: int) -> tuple[int, int]:
        x = (x + 0x9E3779B97F4A7C15) & M64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return x, z ^ (z >> 31)

    def rotl(x: int, k: int) -> int:
        return ((x << k) | (x >> (64 - k))) & M64

    s, x = [], seed
    for _ in range(4):
        x, z = splitmix(x)
        s.append(z)
    out = np.empty(n)
    for i in range(n):
        r = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        out[i] = (r >> 11) * 2.0**-53
    return out


@pytest.mark.parametrize(("shape", "p", "seed"), [((3, 50), 0.25, 1), ((7, 13), 0.5, 2**63 + 5)])
def test_dropout_mask_is_the_documented_stream(shape: tuple[int, int], p: float, seed: int) -> None:
    rng = np.random.default_rng(seed % 1000)
    x = rng.standard_normal(shape).astype(np.float32)
    go = rng.standard_normal(shape).astype(np.float32)
    keep = (xoshiro_uniforms(seed, x.size) >= np.float32(p)).reshape(shape)
    k = np.float32(1) / (np.float32(1) - np.float32(p))
    X = ag.Tensor(x, requires_grad=True)
    y = ag.dropout(X, p, seed)
    assert ag.tape_ops() == ["dropout"]
    np.testing.assert_array_equal(y.numpy(), np.where(keep, x * k, np.float32(0)))
    ag.backward_with(y, go)
    # The gradient uses the same mask and scale (exact, one rounding as in the forward).
    np.testing.assert_array_equal(X.grad, np.where(keep, go * k, np.float32(0)))
    # float64 torch reference with that mask.
    x64 = t64(x)
    ref = x64 * torch.from_numpy(keep) / (1 - p)
    ref.backward(torch.from_numpy(go).double())
    close(y.numpy(), ref, U * np.abs(ref.detach().numpy()) + 2 * U * np.abs(x))
    close(X.grad, x64.grad, 2 * U * np.abs(go))


def test_dropout_statistics_and_reproducibility() -> None:
    n = 200_000  # several 32k ranges
    x = np.ones((400, 500), np.float32)
    for p in (0.1, 0.5, 0.9):
        y = ag.dropout(ag.Tensor(x, requires_grad=True), p, 1234).numpy()
        dropped = np.mean(y == 0)
        # Binomial(n, p): 6 standard deviations (false failure rate ~1e-9).
        assert abs(dropped - p) <= 6 * np.sqrt(p * (1 - p) / n)
        k = np.float32(1) / (np.float32(1) - np.float32(p))  # the fp32 scale
        assert np.all((y == 0) | (y == k))
        assert abs(y.mean() - 1) <= 6 * np.sqrt(p / (1 - p) / n)  # inverted: mean preserved
        ag.clear_tape()
    a = ag.dropout(ag.Tensor(x, requires_grad=True), 0.3, 7).numpy()
    b = ag.dropout(ag.Tensor(x, requires_grad=True), 0.3, 7).numpy()
    c = ag.dropout(ag.Tensor(x, requires_grad=True), 0.3, 8).numpy()
    ag.clear_tape()
    np.testing.assert_array_equal(a, b)
    assert np.mean((a == 0) != (c == 0)) > 0.3  # an independent mask: ~42% of places differ


def test_dropout_identity_cases_and_errors() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    X = ag.Tensor(x, requires_grad=True)
    same = ag.dropout(X, 0.0, 1)
    assert ag.tape_size() == 0
    same.numpy()[0, 0] = 42.0  # p == 0 returns x itself: one buffer
    assert X.numpy()[0, 0] == 42.0
    ag.set_grad_enabled(False)
    try:
        ev = ag.dropout(X, 0.5, 1)  # evaluation: identity
        np.testing.assert_array_equal(ev.numpy(), X.numpy())
        assert ag.tape_size() == 0
    finally:
        ag.set_grad_enabled(True)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\)"):
            ag.dropout(X, bad, 1)
    with pytest.raises(TypeError):
        ag.dropout(X, 0.5, -1)  # the seed is an unsigned 64-bit integer


# ------------------------------------------------------------------------------ cross_entropy
def ce_reference(x: np.ndarray, t: np.ndarray, ignore: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 torch cross-entropy (mean over counted rows) and its leaf."""
    x64 = t64(x)
    return F.cross_entropy(x64, torch.from_numpy(t.astype(np.int64)), ignore_index=ignore), x64


def ce_grad_bound(x: np.ndarray, t: np.ndarray, ignore: int, scale: float) -> np.ndarray:
    """Elementwise bound on the gradient error: p * c with p = e^(x - m) / S relative error
    (|x - m| + 140) u (d's rounding, exp < 2u, the row sum <= 131u, 1/S and the products), plus
    the target's subtraction ((p - 1) c rounds once more, and c itself once: 2 u |c|)."""
    counted = t != ignore
    c = abs(scale) / max(counted.sum(), 1)
    x64 = x.astype(np.float64)
    m = x64.max(1, keepdims=True)
    p = np.exp(x64 - m)
    p /= p.sum(1, keepdims=True)
    bound = (np.abs(x64 - m) + 140) * U * p * c
    rows = np.nonzero(counted)[0]
    bound[rows, t[rows]] += 2 * U * c
    bound[~counted] = 0
    return bound


@pytest.mark.parametrize(
    ("shape", "ignore", "spread"),
    [
        ((1, 1), -100, 1.0),
        ((3, 7), -100, 3.0),
        ((16, 1000), 0, 5.0),
        ((4, 32000), -1, 2.0),
        ((9, 5003), -100, 10.0),
    ],
)
def test_cross_entropy_matches_torch(shape: tuple[int, int], ignore: int, spread: float) -> None:
    rng = np.random.default_rng(shape[0] * 31 + shape[1])
    n, v = shape
    x = (spread * rng.standard_normal(shape)).astype(np.float32)
    t = rng.integers(0, v, n)
    if n > 2:
        t[1] = ignore  # an ignored row (ignore_index 0 is also a valid class elsewhere)
    X = ag.Tensor(x, requires_grad=True)
    loss = ag.cross_entropy(X, t, ignore_index=ignore)
    assert loss.shape == (1,) and ag.tape_ops() == ["cross_entropy"]
    ref, x64 = ce_reference(x, t, ignore)
    # log S within ~140 u (see ce_grad_bound), the final rounding u |loss|.
    assert abs(loss.item() - ref.item()) <= 140 * U + 2 * U * abs(ref.item()) + 1e-12
    seed = 2.5  # an upstream gradient other than 1 scales every term
    ag.backward_with(loss, np.array([seed], np.float32))
    (ref * seed).backward()
    close(X.grad, x64.grad, ce_grad_bound(x, t, ignore, seed))
    if n > 2:
        assert np.all(X.grad[1] == 0)  # the ignored row gets nothing


def test_cross_entropy_masked_logits_nan_and_all_ignored() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 50)).astype(np.float32)
    x[0, :20] = -np.inf  # masked classes (probability 0)
    t = np.array([30, 4, 49])
    X = ag.Tensor(x, requires_grad=True)
    loss = ag.cross_entropy(X, t)
    ag.backward(loss)
    ref, x64 = ce_reference(x, t, -100)
    ref.backward()
    assert abs(loss.item() - ref.item()) <= 140 * U + 2 * U * abs(ref.item())
    assert np.all(X.grad[0, :20] == 0)
    close(X.grad, x64.grad, ce_grad_bound(np.nan_to_num(x, neginf=-1e30), t, -100, 1.0))

    x[1, 3] = np.nan
    assert np.isnan(ag.cross_entropy(ag.Tensor(x), t).item())  # as torch: NaN in, NaN out

    # Every row ignored: loss 0 (torch gives NaN) and a zero gradient (not none).
    X = ag.Tensor(x, requires_grad=True)
    loss = ag.cross_entropy(X, np.full(3, -100))
    assert loss.item() == 0.0 and loss.requires_grad
    ag.backward(loss)
    np.testing.assert_array_equal(X.grad, np.zeros_like(x))
    assert ag.cross_entropy(ag.Tensor(np.zeros((0, 5), np.float32)), []).item() == 0.0


def test_cross_entropy_is_deterministic_across_threads(threads: None) -> None:
    rng = np.random.default_rng(8)
    x = (4 * rng.standard_normal((64, 3000))).astype(np.float32)
    t = rng.integers(0, 3000, 64)
    results = []
    for n in (1, 2, 3):
        bitnet.set_num_threads(n)
        X = ag.Tensor(x, requires_grad=True)
        loss = ag.cross_entropy(X, t.astype(np.int32))
        ag.backward(loss)
        results.append((loss.item(), X.grad))
    for loss, grad in results[1:]:
        assert loss == results[0][0]
        np.testing.assert_array_equal(grad, results[0][1])


def test_cross_entropy_target_types_and_errors() -> None:
    x = np.random.default_rng(1).standard_normal((3, 10)).astype(np.float32)
    X = ag.Tensor(x)
    want = ag.cross_entropy(X, [1, 2, 3]).item()
    for t in (np.array([1, 2, 3], np.uint8), np.array([1, 2, 3], np.int64), (1, 2, 3)):
        assert ag.cross_entropy(X, t).item() == want
    with pytest.raises(ValueError, match=r"targets\[1\] = 10 is out of range for V = 10"):
        ag.cross_entropy(X, [0, 10, 1])
    with pytest.raises(ValueError, match=r"targets\[2\] = -1 .*not ignore_index = -100"):
        ag.cross_entropy(X, [0, 1, -1])
    with pytest.raises(ValueError, match=r"targets has 2 entries but logits \[3, 10\] has N = 3"):
        ag.cross_entropy(X, [0, 1])
    with pytest.raises(ValueError, match=r"logits must be a 2-D tensor \[N, V\], got \[10\]"):
        ag.cross_entropy(ag.Tensor(x[0].copy()), [1])
    with pytest.raises(ValueError, match="has no classes"):
        ag.cross_entropy(ag.Tensor(np.zeros((2, 0), np.float32)), [0, 0])
    with pytest.raises(TypeError, match="cross_entropy: targets: expected a 1-D sequence"):
        ag.cross_entropy(X, np.array([0.5, 1.0, 2.0]))
    with pytest.raises(ValueError, match="cross_entropy: targets: expected a 1-D array"):
        ag.cross_entropy(X, np.zeros((3, 1), np.int64))
    with pytest.raises(ValueError, match="does not fit in int32"):
        ag.cross_entropy(X, np.array([0, 1, 2**40]))
    assert ag.tape_size() == 0

"""Tape ops linear, bitlinear and embedding against PyTorch references written from the formulas.

Tolerances. Every fp32 product here is a sum of n rounded terms; whatever the summation order,
its error is at most about (n + 1) * u * sum|terms| with u = 2**-24 (the textbook bound
gamma_n for a dot product, plus the final rounding). The references are float64 evaluations of
the same fp32 operands (exact to ~1e-16), so `assert_dot_close` checks
    |ours - ref| <= (n + slack) * u * (|A| @ |B|)
elementwise: a rigorous bound that no correct fp32 implementation can exceed, yet a wrong index
or a missing term gives errors of the order of the terms themselves, far above it.

BitLinear (lambda == 1) forward: the kernel's int32 sum q . t is exact and it rounds at most
~3 times in fp32 while rescaling, so |y - exact| <= 3 u |y|; F.linear(aq(x), wq(w)) in fp32 adds
(K + 2) u sum|xq * wq| of its own (xq = q / s_x rounds once, the products once, the sum K times).
Against that fp32 reference we therefore allow (K + 5) u (|xq| @ |wq|^T).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bitnet
from bitnet import _ext, ops

ag = _ext.autograd
U = 2.0**-24  # fp32 unit roundoff


# ----------------------------------------------------------------------------- references
def aq(x: torch.Tensor) -> torch.Tensor:
    """BitNet b1.58 activation quantization (formats.md 1), fp32: round(x*s).clamp / s."""
    s = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    return (x * s).round().clamp(-128, 127) / s


def wq(w: torch.Tensor) -> torch.Tensor:
    """Absmean ternarization (formats.md 1): the mean in float64 rounded to fp32 once (as the
    C++ quantize_weights accumulates in double), then clamp(round(w / s), -1, 1) * s in fp32."""
    s = w.double().abs().mean().float().clamp(min=1e-5)
    return (w / s).round().clamp(-1, 1) * s


def assert_dot_close(
    ours: np.ndarray,
    ref: torch.Tensor,
    bound: torch.Tensor,
    n_terms: int,
    slack: int = 1,
    extra: torch.Tensor | float = 0.0,
) -> None:
    """|ours - ref| <= (n_terms + slack) * u * bound + extra elementwise (module docstring)."""
    assert ours.shape == tuple(ref.shape), (ours.shape, tuple(ref.shape))
    err = (torch.from_numpy(ours).double() - ref.double()).abs()
    tol = (n_terms + slack) * U * bound.double() + extra + 1e-30
    worst = (err - tol).max().item() if err.numel() else -1.0
    assert worst <= 0, f"max excess {worst:.3g} over the fp32 dot-product bound"


def assert_accumulated(
    ours: np.ndarray, before: np.ndarray, new_ref: torch.Tensor, bound: torch.Tensor, n_terms: int
) -> None:
    """ours == before + a new contribution: the new product's error bound (n_terms) plus one
    fp32 rounding of the accumulation (+=), u * |before + new| (2x: a blocked sgemm may add
    into C once per K block)."""
    total = torch.from_numpy(before).double() + new_ref.double()
    assert_dot_close(ours, total, bound, n_terms, extra=2 * U * total.abs())


def rand(*shape: int, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    """Seeded normal fp32 values (never all zeros)."""
    return torch.randn(*shape, generator=gen) * scale


def tensor(t: torch.Tensor, requires_grad: bool = True):
    return ag.Tensor(np.ascontiguousarray(t.numpy()), requires_grad=requires_grad)


@pytest.fixture
def two_threads():
    """Runs with 2 pool threads (the parallel paths), restoring the count afterwards."""
    saved = bitnet.get_num_threads()
    bitnet.set_num_threads(2)
    yield
    bitnet.set_num_threads(saved)


# ----------------------------------------------------------------------------- linear
LINEAR_SHAPES = [(m, k, n) for m in (1, 5, 64) for k in (3, 100, 256, 300) for n in (1, 7, 130)]


@pytest.mark.parametrize("m,k,n", LINEAR_SHAPES)
def test_linear_forward_and_grads(m: int, k: int, n: int) -> None:
    gen = torch.Generator().manual_seed(m * 10007 + k * 101 + n)
    x, w, g = rand(m, k, gen=gen), rand(n, k, gen=gen, scale=0.1), rand(m, n, gen=gen)
    xt, wt = tensor(x), tensor(w)
    y = ag.linear(xt, wt)
    assert y.shape == (m, n) and ag.tape_ops() == ["linear"]
    ag.backward_with(y, g.numpy())
    assert ag.tape_size() == 0

    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    y64 = x64 @ w64.T
    y64.backward(g.double())
    assert_dot_close(y.numpy(), y64.detach(), x.abs() @ w.abs().T, k)
    assert_dot_close(xt.grad, x64.grad, g.abs() @ w.abs(), n)
    assert_dot_close(wt.grad, w64.grad, g.abs().T @ x.abs(), m)


def test_linear_only_one_input_needs_grad() -> None:
    gen = torch.Generator().manual_seed(1)
    x, w, g = rand(4, 9, gen=gen), rand(6, 9, gen=gen), rand(4, 6, gen=gen)
    xt, wt = tensor(x, requires_grad=False), tensor(w)
    ag.backward_with(ag.linear(xt, wt), g.numpy())
    assert xt.grad is None
    assert_dot_close(wt.grad, g.double().T @ x.double(), g.abs().T @ x.abs(), 4)
    # Nothing requires a gradient, or gradients are off: no node is recorded.
    ag.linear(tensor(x, False), tensor(w, False))
    assert ag.tape_size() == 0
    ag.set_grad_enabled(False)
    try:
        ag.linear(tensor(x), tensor(w))
        ag.bitlinear(tensor(x), tensor(w))
        ag.embedding(tensor(w), [0, 1])
        assert ag.tape_size() == 0
    finally:
        ag.set_grad_enabled(True)


def test_linear_zero_sizes() -> None:
    """Zero sizes are allowed: M == 0 gives [0, N]; K == 0 gives zeros (an empty sum)."""
    gen = torch.Generator().manual_seed(2)
    w = tensor(rand(5, 3, gen=gen))
    y = ag.linear(tensor(torch.zeros(0, 3)), w)
    assert y.shape == (0, 5)
    ag.backward_with(y, np.zeros((0, 5), np.float32))
    assert w.grad is None  # no row contributed
    y = ag.linear(tensor(torch.zeros(4, 0)), tensor(torch.zeros(5, 0)))
    assert y.shape == (4, 5) and np.all(y.numpy() == 0)
    ag.backward_with(y, rand(4, 5, gen=gen).numpy())
    y = ag.linear(tensor(rand(4, 3, gen=gen)), tensor(torch.zeros(0, 3)))
    assert y.shape == (4, 0)
    ag.clear_tape()


def test_linear_accumulates_grads() -> None:
    """A weight used twice on one tape (a chain through a square w) and over two backward
    passes receives the sum of every contribution; x.grad also accumulates across passes."""
    gen = torch.Generator().manual_seed(3)
    k = 33
    x, w, g = rand(5, k, gen=gen), rand(k, k, gen=gen, scale=0.2), rand(5, k, gen=gen)
    xt, wt = tensor(x), tensor(w)
    ag.backward_with(ag.linear(ag.linear(xt, wt), wt), g.numpy())
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    ((x64 @ w64.T) @ w64.T).backward(g.double())
    # Two chained fp32 products: the inner error (k terms) propagates through the outer one.
    bound_w = g.abs().T @ (x.abs() @ w.abs().T) + (g.abs() @ w.abs()).T @ x.abs()
    assert_dot_close(wt.grad, w64.grad, bound_w, 2 * k + 5)
    assert_dot_close(xt.grad, x64.grad, g.abs() @ w.abs() @ w.abs(), 2 * k + 5)

    # A second pass adds on top of the first.
    before_x, before_w = xt.grad, wt.grad
    ag.backward_with(ag.linear(xt, wt), g.numpy())
    assert_accumulated(wt.grad, before_w, g.double().T @ x.double(), g.abs().T @ x.abs(), 5)
    assert_accumulated(xt.grad, before_x, g.double() @ w.double(), g.abs() @ w.abs(), k)


def test_linear_bad_inputs() -> None:
    gen = torch.Generator().manual_seed(4)
    x, w = tensor(rand(2, 3, gen=gen)), tensor(rand(4, 5, gen=gen))
    with pytest.raises(ValueError, match=r"linear: x \[2, 3\] and w \[4, 5\] disagree on K"):
        ag.linear(x, w)
    with pytest.raises(ValueError, match=r"linear: x must be 2-D \[M, K\], got shape \[3\]"):
        ag.linear(tensor(rand(3, gen=gen)), w)
    with pytest.raises(ValueError, match=r"linear: w must be 2-D \[N, K\], got shape \[1, 4, 3\]"):
        ag.linear(x, tensor(rand(1, 4, 3, gen=gen)))
    assert ag.tape_size() == 0


# ----------------------------------------------------------------------------- bitlinear
# (M, K, N): K below, at and across the 256-value block; M == 1 runs the GEMV kernel.
BIT_SHAPES = [(1, 3, 7), (5, 100, 1), (64, 256, 130), (5, 300, 33), (17, 700, 40)]


def bit_case(m: int, k: int, n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    # Activations with a heavy-tailed spread of row scales, like hidden states.
    x = rand(m, k, gen=gen) * torch.exp(rand(m, 1, gen=gen))
    w = rand(n, k, gen=gen, scale=0.02)
    g = rand(m, n, gen=gen)
    return x, w, g


def ste_reference(x: torch.Tensor, w: torch.Tensor, g: torch.Tensor, lam: float):
    """The PyTorch QAT formulation with the detach trick, quantizers in fp32 (bit-exact with
    the C++), the product and its gradients in float64:
        x_eff = x + lam * (aq(x) - x).detach(),  w_eff = w + lam * (wq(w) - w).detach().
    Returns (y64, dx64, dw64, x_eff32, w_eff32) where the fp32 effective operands are the
    formula evaluated in fp32 (as the op does; for lam == 1 the quantized operands themselves,
    which is what x + (aq(x) - x) is in exact arithmetic)."""
    if lam == 1.0:
        xe32, we32 = aq(x), wq(w)
    else:
        xe32, we32 = x + lam * (aq(x) - x), w + lam * (wq(w) - w)
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    # (xe32 - x) is exact in float64 (two fp32 values), so x_ste == xe32 exactly.
    x_ste = x64 + (xe32.double() - x64).detach()
    w_ste = w64 + (we32.double() - w64).detach()
    y64 = F.linear(x_ste, w_ste)
    y64.backward(g.double())
    return y64.detach(), x64.grad, w64.grad, xe32, we32


@pytest.mark.parametrize("m,k,n", BIT_SHAPES)
def test_bitlinear_quantized_forward_and_ste(isa: str, m: int, k: int, n: int) -> None:
    x, w, g = bit_case(m, k, n, seed=m * 1000 + k + n)
    xt, wt = tensor(x), tensor(w)
    y = ag.bitlinear(xt, wt)
    assert y.shape == (m, n) and ag.tape_ops() == ["bitlinear"]
    ys = y.numpy().copy()
    ag.backward_with(y, g.numpy())

    # Forward against the authors' fp32 formula F.linear(aq(x), wq(w)).
    xq, wqq = aq(x), wq(w)
    y32 = F.linear(xq, wqq)
    assert_dot_close(ys, y32, xq.abs() @ wqq.abs().T, k, slack=5)
    # Training forward == inference forward, bit for bit (same quantizers, same kernels).
    t, s_w = ops.quantize_weights(w.numpy())
    y_inf = ops.bitlinear(x.numpy(), ops.pack(t, "native", s_w))
    np.testing.assert_array_equal(ys, y_inf)

    # STE gradients: dx = g @ wq(w), dw = g^T @ aq(x).
    _, dx64, dw64, _, _ = ste_reference(x, w, g, 1.0)
    assert_dot_close(xt.grad, dx64, g.abs() @ wqq.abs(), n)
    assert_dot_close(wt.grad, dw64, g.abs().T @ xq.abs(), m)


@pytest.mark.parametrize("lam", [0.0, 0.3])
@pytest.mark.parametrize("m,k,n", BIT_SHAPES)
def test_bitlinear_mixed_lambda(m: int, k: int, n: int, lam: float) -> None:
    x, w, g = bit_case(m, k, n, seed=m * 7 + k * 3 + n + int(lam * 10))
    xt, wt = tensor(x), tensor(w)
    y = ag.bitlinear(xt, wt, lambda_=lam)
    ys = y.numpy().copy()
    ag.backward_with(y, g.numpy())
    y64, dx64, dw64, xe, we = ste_reference(x, w, g, lam)
    if lam == 0.0:
        assert torch.equal(xe, x) and torch.equal(we, w)  # the plain linear layer
    assert_dot_close(ys, y64, xe.abs() @ we.abs().T, k)
    assert_dot_close(xt.grad, dx64, g.abs() @ we.abs(), n)
    assert_dot_close(wt.grad, dw64, g.abs().T @ xe.abs(), m)


@pytest.mark.parametrize("lam", [1.0, 0.3, 0.0])
def test_bitlinear_effective_operands_exact(isa: str, lam: float) -> None:
    """With M == N == 1 and dy == 1 each gradient element is one product 1 * operand, exact in
    fp32: x.grad == w_eff and w.grad == x_eff bit for bit, i.e. the saved operands equal the
    PyTorch formulas (aq(x) = round(x*s).clamp / s divides; the mix is x + lam * (xq - x))."""
    x, w, _ = bit_case(1, 517, 1, seed=int(lam * 10) + 99)
    xt, wt = tensor(x), tensor(w)
    ag.backward_with(ag.bitlinear(xt, wt, lambda_=lam), np.ones((1, 1), np.float32))
    _, _, _, xe, we = ste_reference(x, w, torch.ones(1, 1), lam)
    np.testing.assert_array_equal(xt.grad, we.numpy())
    np.testing.assert_array_equal(wt.grad, xe.numpy())


def test_bitlinear_accumulates_and_partial_grads(two_threads: None) -> None:
    """w shared by two calls (one tape) gets both contributions; a second backward pass adds
    to them; an input without requires_grad gets no gradient. Large enough (M * K > 2 * 2^16)
    for the threaded dequantization paths."""
    m, k = 200, 700
    x, w, g = bit_case(m, k, k, seed=11)
    xt, wt = tensor(x), tensor(w)
    h = ag.bitlinear(xt, wt)
    y = ag.bitlinear(h, wt)
    ag.backward_with(y, g.numpy())
    # Reference on the fp32 hidden state our first call produced (bit-exact with inference).
    hq = aq(torch.from_numpy(h.numpy().copy()))
    wqq = wq(w)
    dh = g.double() @ wqq.double()
    dw_ref = g.double().T @ hq.double() + dh.T @ aq(x).double()
    bound = g.abs().T @ hq.abs() + (g.abs() @ wqq.abs()).T @ aq(x).abs()
    assert_dot_close(wt.grad, dw_ref, bound, k + m + 3)
    assert_dot_close(xt.grad, dh @ wqq.double(), g.abs() @ wqq.abs() @ wqq.abs(), 2 * k + 3)

    before = wt.grad
    x_frozen = tensor(x, requires_grad=False)
    ag.backward_with(ag.bitlinear(x_frozen, wt), g.numpy())
    assert x_frozen.grad is None
    assert_accumulated(wt.grad, before, g.double().T @ aq(x).double(), g.abs().T @ aq(x).abs(), m)

    xt2 = tensor(x)
    w_frozen = tensor(w, requires_grad=False)
    ag.backward_with(ag.bitlinear(xt2, w_frozen, lambda_=0.5), g.numpy())
    assert w_frozen.grad is None
    _, dx64, _, _, we = ste_reference(x, w, g, 0.5)
    assert_dot_close(xt2.grad, dx64, g.abs() @ we.abs(), k)


def test_bitlinear_empty_batch() -> None:
    """M == 0 is an empty batch ([0, N]); an empty w has no scale and is rejected."""
    w = tensor(torch.linspace(-1, 1, 12).reshape(3, 4))
    for lam in (1.0, 0.5):
        y = ag.bitlinear(tensor(torch.zeros(0, 4)), w, lambda_=lam)
        assert y.shape == (0, 3)
        ag.backward_with(y, np.zeros((0, 3), np.float32))
    with pytest.raises(ValueError, match=r"bitlinear: w \[0, 4\] is empty"):
        ag.bitlinear(tensor(torch.ones(2, 4)), tensor(torch.zeros(0, 4)))
    with pytest.raises(ValueError, match=r"bitlinear: w \[3, 0\] is empty"):
        ag.bitlinear(tensor(torch.ones(2, 0)), tensor(torch.zeros(3, 0)))


def test_bitlinear_bad_inputs() -> None:
    gen = torch.Generator().manual_seed(5)
    x, w = rand(3, 8, gen=gen), rand(4, 8, gen=gen)
    with pytest.raises(ValueError, match=r"bitlinear: x \[3, 8\] and w \[4, 7\] disagree on K"):
        ag.bitlinear(tensor(x), tensor(w[:, :7].contiguous()))
    with pytest.raises(ValueError, match=r"bitlinear: x must be 2-D \[M, K\], got shape \[8\]"):
        ag.bitlinear(tensor(x[0].contiguous()), tensor(w))
    for lam in (-0.1, 1.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"bitlinear: lambda must be in \[0, 1\], got"):
            ag.bitlinear(tensor(x), tensor(w), lambda_=lam)
    for bad in (float("nan"), float("inf")):
        xb = x.clone()
        xb[2, 5] = bad
        for lam in (1.0, 0.3):
            with pytest.raises(ValueError, match=r"bitlinear: x \[3, 8\]: .*row 2.*NaN or Inf"):
                ag.bitlinear(tensor(xb), tensor(w), lambda_=lam)
        wb = w.clone()
        wb[1, 2] = bad
        with pytest.raises(ValueError, match=r"bitlinear: w \[4, 8\]: .*flat index 10"):
            ag.bitlinear(tensor(x), tensor(wb))
    assert ag.tape_size() == 0


# ----------------------------------------------------------------------------- embedding
@pytest.mark.parametrize(
    "v,e,ids",
    [
        (5, 4, [0, 3, 3, 1, 3, 4]),
        (1, 7, [0, 0, 0]),
        (11, 33, list(range(10, -1, -1)) * 2),
        (50, 1000, "big"),  # n * E above the threaded scatter threshold
    ],
)
def test_embedding_forward_backward(two_threads: None, v: int, e: int, ids) -> None:
    gen = torch.Generator().manual_seed(v * 31 + e)
    if ids == "big":
        ids = torch.randint(0, v, (300,), generator=gen).tolist()
    table, g = rand(v, e, gen=gen), rand(len(ids), e, gen=gen)
    tt = tensor(table)
    out = ag.embedding(tt, np.array(ids, dtype=np.int64))
    assert ag.tape_ops() == ["embedding"]
    np.testing.assert_array_equal(out.numpy(), table.numpy()[ids])  # a copy: exact
    ag.backward_with(out, g.numpy())
    ref = torch.zeros(v, e, dtype=torch.float64).index_add_(0, torch.tensor(ids), g.double())
    count = max(ids.count(i) for i in set(ids))
    bound = torch.zeros(v, e, dtype=torch.float64).index_add_(
        0, torch.tensor(ids), g.abs().double()
    )
    assert_dot_close(tt.grad, ref, bound, count)

    # Deterministic: the same result with one thread, bit for bit.
    bitnet.set_num_threads(1)
    t1 = tensor(table)
    ag.backward_with(ag.embedding(t1, ids), g.numpy())
    np.testing.assert_array_equal(t1.grad, tt.grad)


def test_embedding_id_types_and_empty() -> None:
    table = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    for ids in ([2, 0], np.array([2, 0], np.int32), np.array([2, 0], np.uint8), (2, 0)):
        out = ag.embedding(tensor(table, False), ids)
        np.testing.assert_array_equal(out.numpy(), table.numpy()[[2, 0]])
    tt = tensor(table)
    out = ag.embedding(tt, np.array([], dtype=np.int64))
    assert out.shape == (0, 3)
    ag.clear_tape()


def test_embedding_bad_inputs() -> None:
    table = tensor(torch.ones(5, 3))
    with pytest.raises(ValueError, match=r"embedding: ids\[2\] = 5 is out of range \[0, 5\)"):
        ag.embedding(table, [0, 4, 5])
    with pytest.raises(ValueError, match=r"embedding: ids\[0\] = -1 is out of range"):
        ag.embedding(table, np.array([-1], np.int64))
    with pytest.raises(ValueError, match=r"ids\[1\] = 4294967296 does not fit in int32"):
        ag.embedding(table, np.array([0, 2**32], np.int64))
    with pytest.raises(ValueError, match=r"embedding: table must be 2-D \[V, E\], got shape \[5\]"):
        ag.embedding(tensor(torch.ones(5)), [0])
    with pytest.raises(
        ValueError, match=r"embedding: ids: expected a 1-D array, got shape \(1, 2\)"
    ):
        ag.embedding(table, np.zeros((1, 2), np.int64))
    with pytest.raises(TypeError, match="embedding: ids: expected a 1-D sequence of integers"):
        ag.embedding(table, np.array([0.0, 1.0]))
    assert ag.tape_size() == 0

"""Tape op bitlinear_frozen: a frozen packed ternary BitLinear (LoRA's base layer).

Forward: the inference path, so it must equal bitnet.ops.bitlinear bit for bit (same kernels,
same quantization), on every ISA and packed format.

Backward: dx = dy @ (s_w * T). The reference is float64 from the same fp32 operands (exact to
~1e-16). Ours is an fp32 sgemm (one per block of weight rows, accumulated into dx), a sum of
N rounded products per element; whatever the order and blocking, its error is at most about
(N + 2) * u * (|dy| @ |s_w T|) with u = 2**-24 (the dot-product bound gamma_N, plus one rounding
per block accumulation, at most 2 blocks here). A wrong row, scale or missing block gives errors
of the size of the terms, far above that bound.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bitnet import _ext, ops

ag = _ext.autograd
U = 2.0**-24


def _packed(n: int, k: int, fmt: str, seed: int) -> tuple[object, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    t, s = ops.quantize_weights(w)
    return ops.pack(t, fmt, s), t, s


def _stored_scale(p: object) -> float:
    return float(ops.unpack(p)[1])


@pytest.mark.parametrize(
    ("m", "n", "k", "fmt"),
    [(1, 37, 300, "native"), (5, 64, 256, "tq2_0"), (7, 48, 256, "tq1_0"), (3, 33, 384, "i2_s")],
)
def test_forward_bit_exact_with_inference(isa: str, m: int, n: int, k: int, fmt: str) -> None:
    p, _, _ = _packed(n, k, fmt, seed=m + n)
    x = np.random.default_rng(k).standard_normal((m, k)).astype(np.float32) * 3
    y = ag.bitlinear_frozen(ag.Tensor(x, requires_grad=True), p)
    assert y.shape == (m, n)
    np.testing.assert_array_equal(y.numpy(), ops.bitlinear(x, p))
    ag.clear_tape()


@pytest.mark.parametrize(
    ("m", "n", "k", "fmt"),
    [(1, 17, 300, "native"), (6, 40, 256, "tq2_0"), (9, 31, 384, "i2_s"), (4, 600, 4096, "native")],
)
def test_backward_dx_against_torch(m: int, n: int, k: int, fmt: str) -> None:
    # (4, 600, 4096): N * K * 4 bytes = 9.8 MB > the 8 MiB block, so the backward unpacks and
    # multiplies two blocks of rows.
    p, t, _ = _packed(n, k, fmt, seed=n)
    before = p.tobytes()
    s = _stored_scale(p)  # TQ formats keep the scale as fp16
    rng = np.random.default_rng(m * 7 + k)
    x = rng.standard_normal((m, k)).astype(np.float32)
    g = rng.standard_normal((m, n)).astype(np.float32)
    xt = ag.Tensor(x, requires_grad=True)
    y = ag.bitlinear_frozen(xt, p)
    ag.backward_with(y, g)
    w64 = torch.from_numpy(t.astype(np.float64) * np.float64(np.float32(s)))
    g64 = torch.from_numpy(g.astype(np.float64))
    ref = g64 @ w64
    bound = g64.abs() @ w64.abs()
    err = (torch.from_numpy(xt.grad).double() - ref).abs()
    assert (err <= (n + 2) * U * bound + 1e-30).all(), float((err - (n + 2) * U * bound).max())
    # The weights are untouched and nothing else was recorded.
    assert p.tobytes() == before
    assert ag.tape_size() == 0


def test_backward_equals_tape_bitlinear_for_single_block() -> None:
    # One block: the same sgemm on the same operands as bitlinear's STE backward (w_eff = t*s_w).
    rng = np.random.default_rng(3)
    w = rng.standard_normal((45, 200)).astype(np.float32)
    x = rng.standard_normal((11, 200)).astype(np.float32)
    g = rng.standard_normal((11, 45)).astype(np.float32)
    t, s = ops.quantize_weights(w)
    a = ag.Tensor(x, requires_grad=True)
    ya = ag.bitlinear_frozen(a, ops.pack(t, "native", s))
    ag.backward_with(ya, g)
    b = ag.Tensor(x, requires_grad=True)
    yb = ag.bitlinear(b, ag.Tensor(w), 1.0)
    ag.backward_with(yb, g)
    np.testing.assert_array_equal(ya.numpy(), yb.numpy())
    np.testing.assert_array_equal(a.grad, b.grad)


def test_gradient_accumulates_and_weights_get_none() -> None:
    p, t, s = _packed(20, 128, "native", seed=9)
    rng = np.random.default_rng(4)
    x = ag.Tensor(rng.standard_normal((3, 128)).astype(np.float32), requires_grad=True)
    g1 = rng.standard_normal((3, 20)).astype(np.float32)
    # Two uses of x: the gradients add up (accumulate, never overwrite).
    y = ag.add(ag.bitlinear_frozen(x, p), ag.scale(ag.bitlinear_frozen(x, p), 2.0))
    ag.backward_with(y, g1)
    w64 = t.astype(np.float64) * s
    ref = (g1.astype(np.float64) * 3.0) @ w64
    # Two fp32 products of N = 20 terms (one scaled by 2, exact) accumulated: (2N + 4) u bound.
    bound = (np.abs(g1).astype(np.float64) * 3.0) @ np.abs(w64)
    assert (np.abs(x.grad - ref) <= (2 * 20 + 4) * U * bound + 1e-30).all()


def test_no_record_without_grad_and_no_weight_copy_kept() -> None:
    p, _, _ = _packed(512, 1024, "native", seed=5)
    x = np.random.default_rng(6).standard_normal((4, 1024)).astype(np.float32)
    y = ag.bitlinear_frozen(ag.Tensor(x), p)
    assert ag.tape_size() == 0 and not y.requires_grad
    with_grad = ag.Tensor(x, requires_grad=True)
    ag.bitlinear_frozen(with_grad, p)  # warm the pool's free lists
    ag.clear_tape()
    before = ag.pool_stats()["in_use"]
    y = ag.bitlinear_frozen(with_grad, p)
    assert ag.tape_ops() == ["bitlinear_frozen"]
    # Only the output [4, 512] is held while the node waits for its backward: no fp32 copy of the
    # 512 x 1024 weights (2 MiB) and no saved activations.
    held = ag.pool_stats()["in_use"] - before
    assert held < 64 * 1024, held
    del y
    ag.clear_tape()


def test_empty_batch() -> None:
    p, _, _ = _packed(8, 64, "native", seed=1)
    y = ag.bitlinear_frozen(ag.Tensor(np.zeros((0, 64), np.float32)), p)
    assert y.shape == (0, 8)


def test_errors() -> None:
    p, _, _ = _packed(8, 64, "native", seed=2)
    with pytest.raises(ValueError, match=r"bitlinear_frozen: x must be 2-D \[M, K\], got shape"):
        ag.bitlinear_frozen(ag.Tensor(np.ones(64, np.float32)), p)
    with pytest.raises(ValueError, match=r"disagree on K \(expected x of shape \[M, 64\]\)"):
        ag.bitlinear_frozen(ag.Tensor(np.ones((2, 63), np.float32)), p)
    bad = np.ones((3, 64), np.float32)
    bad[1, 5] = np.nan
    with pytest.raises(ValueError, match=r"bitlinear_frozen: x \[3, 64\]: .*row 1"):
        ag.bitlinear_frozen(ag.Tensor(bad, requires_grad=True), p)
    assert ag.tape_size() == 0
    with pytest.raises(ValueError, match=r"bitlinear_frozen: w is None"):
        ag.bitlinear_frozen(ag.Tensor(np.ones((2, 64), np.float32)), None)

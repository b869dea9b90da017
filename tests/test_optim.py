"""AdamW, SGD and clip_grad_norm (cpp/include/bitnet/optim.h) against torch.optim, and the
learning-rate schedules of bitnet.optim against values computed here from their formulas.

Tolerances. The C++ optimizers evaluate torch's per-element fp32 formulas in torch's order, with
its fused multiply-adds (lerp_, addcmul_, add with alpha) computed through double (equal to an
fp32 fma except in rare double-rounding ties). What remains different: torch's CPU sqrt (MKL)
is sometimes off by one ulp where ours is correctly rounded, the scalar tail of each of torch's
vectorized loops does not fuse, and ties. Each such difference is one fp32 rounding (u = 2**-24)
of an intermediate of the update; the update is then rounded into p. So after t steps the
parameters agree to a few u times the magnitudes involved: |p| plus the total variation of the
trajectory (sum of |update| over the steps). `assert_trajectory_close` checks
    |ours - torch| <= K * u * (|p| + sum_t |p_t - p_(t-1)|)
elementwise, with K stated per test (the measured worst case is ~4 for AdamW); a wrong bias
correction, order of weight decay, lr or mask changes updates by far more than that.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bitnet import _ext, optim

ag = _ext.autograd
U = 2.0**-24
SHAPES = [(37,), (64, 129), (3, 5, 7), (70000,)]  # the last spans three 32k-element ranges


class Pair:
    """The same parameters as tape tensors and as torch leaves, with the torch trajectory's
    total variation (for the tolerance)."""

    def __init__(self, rng: np.random.Generator, shapes: list[tuple[int, ...]]) -> None:
        init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        self.ours = [ag.Tensor(a.copy(), requires_grad=True) for a in init]
        self.ref = [torch.tensor(a.copy(), requires_grad=True) for a in init]
        self.tv = [np.zeros(s) for s in shapes]
        self.last = [a.astype(np.float64) for a in init]

    def set_grads(self, rng: np.random.Generator, skip: tuple[int, ...] = ()) -> None:
        """Fresh random gradients of varying scale (None for the parameters in `skip`)."""
        for i, (p, t) in enumerate(zip(self.ours, self.ref, strict=True)):
            if i in skip:
                p.grad, t.grad = None, None
                continue
            g = (rng.standard_normal(p.shape) * 10 ** rng.uniform(-3, 1)).astype(np.float32)
            p.grad, t.grad = g, torch.from_numpy(g.copy())

    def note_step(self) -> None:
        for i, t in enumerate(self.ref):
            now = t.detach().numpy().astype(np.float64)
            self.tv[i] += np.abs(now - self.last[i])
            self.last[i] = now

    def assert_close(self, k: float) -> None:
        for i, (p, t) in enumerate(zip(self.ours, self.ref, strict=True)):
            ref = t.detach().numpy().astype(np.float64)
            err = np.abs(p.numpy() - ref)
            bound = k * U * (np.abs(ref) + self.tv[i])
            j = np.unravel_index(np.argmax(err - bound), err.shape)
            assert np.all(err <= bound), f"param {i} at {j}: {p.numpy()[j]} vs {ref[j]}"


# ------------------------------------------------------------------------------ AdamW
@pytest.mark.parametrize(
    ("betas", "eps"),
    [((0.9, 0.999), 1e-8), ((0.3, 0.9), 1e-6)],  # 1 - beta1 >= 0.5: lerp's other branch
)
def test_adamw_matches_torch(betas: tuple[float, float], eps: float) -> None:
    rng = np.random.default_rng(int(betas[0] * 10))
    pair = Pair(rng, SHAPES)
    mask = [True, False, True, True]
    opt = ag.AdamW(pair.ours, lr=1e-2, betas=betas, eps=eps, weight_decay=0.1, decay_mask=mask)
    groups = [
        {"params": [t for t, m in zip(pair.ref, mask, strict=True) if m]},
        {"params": [t for t, m in zip(pair.ref, mask, strict=True) if not m], "weight_decay": 0.0},
    ]
    ref = torch.optim.AdamW(groups, lr=1e-2, betas=betas, eps=eps, weight_decay=0.1, foreach=False)
    assert opt.betas == betas and opt.eps == eps and opt.decay_mask == mask
    for step in range(10):
        if step == 4:  # a schedule changes lr and weight decay mid-run
            opt.lr, opt.weight_decay = 3e-3, 0.05
            ref.param_groups[0]["lr"], ref.param_groups[0]["weight_decay"] = 3e-3, 0.05
            ref.param_groups[1]["lr"] = 3e-3
        pair.set_grads(rng, skip=(2,) if step in (3, 4) else ())  # param 2 skips two steps
        opt.step()
        ref.step()
        pair.note_step()
        pair.assert_close(8)
    state = opt.get_state()
    for (steps, m, v), t in zip(state, pair.ref, strict=True):
        s = ref.state[t]
        assert steps == int(s["step"].item())  # per-parameter step counts (param 2: 8)
        # The moments differ by the same few roundings per step (m can cancel to ~0, so the
        # bound is relative to the largest entry).
        for ours, theirs in ((m, s["exp_avg"].numpy()), (v, s["exp_avg_sq"].numpy())):
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=80 * U * np.abs(theirs).max())
    assert [s[0] for s in state] == [10, 10, 8, 10]


def test_adamw_decay_mask_and_defaults() -> None:
    # With zero gradients only the weight decay moves p: p * (1 - lr * wd) per step, masked.
    p = np.linspace(-2, 3, 11, dtype=np.float32)
    a, b = ag.Tensor(p.copy()), ag.Tensor(p.copy())
    opt = ag.AdamW([a, b], lr=0.1, weight_decay=0.5, decay_mask=[True, False])
    assert opt.lr == 1e-1 and opt.weight_decay == 0.5
    for _ in range(3):
        a.grad = np.zeros_like(p)
        b.grad = np.zeros_like(p)
        opt.step()
    f = np.float32(0.95)  # float(1 - lr * wd), applied once per step
    np.testing.assert_array_equal(a.numpy(), p * f * f * f)
    np.testing.assert_array_equal(b.numpy(), p)
    d = ag.AdamW([ag.Tensor(p.copy())])
    assert (d.lr, d.betas, d.eps, d.weight_decay, d.decay_mask) == (
        1e-3,
        (0.9, 0.999),
        1e-8,
        1e-2,
        [True],
    )


def test_zero_grad_and_params_without_grad() -> None:
    x = ag.Tensor(np.ones(5, np.float32), requires_grad=True)
    y = ag.Tensor(np.ones(5, np.float32), requires_grad=True)
    opt = ag.AdamW([x, y], lr=0.1)
    x.grad = np.ones(5, np.float32)
    opt.step()
    assert not np.all(x.numpy() == 1) and np.all(y.numpy() == 1)  # y had no gradient
    assert [s[0] for s in opt.get_state()] == [1, 0]
    opt.zero_grad()
    assert x.grad is None and y.grad is None
    assert len(opt.params) == 2 and np.shares_memory(opt.params[0].numpy(), x.numpy())


# ------------------------------------------------------------------------------ SGD
@pytest.mark.parametrize(
    ("momentum", "dampening", "weight_decay", "nesterov"),
    [(0.0, 0.0, 0.0, False), (0.9, 0.1, 0.01, False), (0.9, 0.0, 0.01, True)],
)
def test_sgd_matches_torch(
    momentum: float, dampening: float, weight_decay: float, nesterov: bool
) -> None:
    rng = np.random.default_rng(int(momentum * 10) + nesterov)
    pair = Pair(rng, SHAPES)
    kw = dict(momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
    opt = ag.SGD(pair.ours, lr=1e-2, **kw)
    ref = torch.optim.SGD(pair.ref, lr=1e-2, foreach=False, **kw)
    for step in range(10):
        if step == 5:
            opt.lr = 2e-3
            ref.param_groups[0]["lr"] = 2e-3
        pair.set_grads(rng, skip=(1,) if step < 2 else ())  # param 1's buffer starts later
        opt.step()
        ref.step()
        pair.note_step()
        pair.assert_close(8)
    if momentum:
        for buf, t in zip(opt.get_state(), pair.ref, strict=True):
            theirs = ref.state[t]["momentum_buffer"].numpy()
            np.testing.assert_allclose(buf, theirs, rtol=0, atol=80 * U * np.abs(theirs).max())
    else:
        assert opt.get_state() == [None] * len(SHAPES)


# ------------------------------------------------------------------------------ checkpoints
def test_state_roundtrip_continues_bit_identically() -> None:
    rng = np.random.default_rng(7)
    init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(8)]

    def make(kind: str, arrays: list[np.ndarray]) -> tuple[list, object]:
        ps = [ag.Tensor(a.copy(), requires_grad=True) for a in arrays]
        if kind == "adamw":
            return ps, ag.AdamW(ps, lr=1e-2, weight_decay=0.1, decay_mask=[True, True, False, True])
        return ps, ag.SGD(ps, lr=1e-2, momentum=0.9, weight_decay=0.01)

    def run(ps: list, opt: object, steps: range) -> None:
        for s in steps:
            for p, g in zip(ps, grads[s], strict=True):
                p.grad = g
            if s == 2:
                ps[2].grad = None  # a skipped parameter: its step count lags
            opt.step()

    for kind in ("adamw", "sgd"):
        ps, opt = make(kind, init)
        run(ps, opt, range(8))  # uninterrupted
        ps2, opt2 = make(kind, init)
        run(ps2, opt2, range(4))
        saved = opt2.get_state()
        # Resume in a fresh optimizer over fresh tensors, as from a checkpoint.
        ps3, opt3 = make(kind, [p.numpy() for p in ps2])
        opt3.set_state(saved)
        run(ps3, opt3, range(4, 8))
        for a, b in zip(ps, ps3, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        if kind == "adamw":
            assert [s[0] for s in opt3.get_state()] == [8, 8, 7, 8]


def test_get_state_returns_copies_and_zeros_before_first_step() -> None:
    p = ag.Tensor(np.ones((2, 3), np.float32))
    opt = ag.AdamW([p])
    ((step, m, v),) = opt.get_state()
    assert step == 0 and m.shape == (2, 3) and m.dtype == np.float32 and not m.any()
    p.grad = np.ones((2, 3), np.float32)
    opt.step()
    ((_, m, _),) = opt.get_state()
    m[:] = 100.0
    assert opt.get_state()[0][1].max() < 1  # the optimizer's state was not touched
    assert ag.SGD([p], momentum=0.5).get_state() == [None]


def test_set_state_validation() -> None:
    p = ag.Tensor(np.ones((2, 3), np.float32))
    q = ag.Tensor(np.ones(4, np.float32))
    opt = ag.AdamW([p, q])
    good = opt.get_state()
    z23, z4 = np.zeros((2, 3), np.float32), np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="AdamW.set_state: got 1 entries for 2 params"):
        opt.set_state(good[:1])
    with pytest.raises(ValueError, match=r"entry 1 m: expected shape \[4\] .*got \(2, 2\)"):
        opt.set_state([good[0], (3, np.zeros((2, 2), np.float32), z4)])
    with pytest.raises(TypeError, match="entry 0 v: expected dtype float32, got float64"):
        opt.set_state([(1, z23, np.zeros((2, 3))), good[1]])
    with pytest.raises(TypeError, match=r"entry 0: expected a \(step, m, v\) tuple"):
        opt.set_state([(1, z23), good[1]])
    with pytest.raises(ValueError, match="entry 1 has a negative step -2"):
        opt.set_state([good[0], (-2, z4, z4)])
    bad_v = z4.copy()
    bad_v[3] = -1
    with pytest.raises(ValueError, match=r"entry 1 has v\[3\] = -1"):
        opt.set_state([(5, z23 + 1, z23 + 2), (5, z4, bad_v)])
    assert [s[0] for s in opt.get_state()] == [0, 0]  # failed calls changed nothing
    sgd = ag.SGD([p, q], momentum=0.9)
    with pytest.raises(ValueError, match=r"SGD.set_state: entry 1: expected shape \[4\]"):
        sgd.set_state([None, z23])
    with pytest.raises(ValueError, match="SGD.set_state: got 3 entries for 2 params"):
        sgd.set_state([None, None, None])
    sgd.set_state([z23 + 1, None])
    assert sgd.get_state()[1] is None and sgd.get_state()[0].sum() == 6


def test_optimizer_argument_errors() -> None:
    p = ag.Tensor(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="AdamW: lr must be finite and >= 0, got -1"):
        ag.AdamW([p], lr=-1.0)
    with pytest.raises(ValueError, match=r"AdamW: beta2 \(betas\[1\]\) must be in \[0, 1\)"):
        ag.AdamW([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="AdamW: eps must be finite"):
        ag.AdamW([p], eps=float("nan"))
    with pytest.raises(ValueError, match=r"AdamW: params\[1\] is the same tensor as params\[0\]"):
        ag.AdamW([p, p])
    with pytest.raises(ValueError, match="decay_mask has 2 entries but there are 1 params"):
        ag.AdamW([p], decay_mask=[True, False])
    with pytest.raises(TypeError):
        ag.AdamW([np.ones(3, np.float32)])  # not a tape tensor
    opt = ag.AdamW([p])
    with pytest.raises(ValueError, match="AdamW: weight_decay must be finite and >= 0"):
        opt.weight_decay = -0.1
    with pytest.raises(ValueError, match="SGD: nesterov momentum requires momentum > 0"):
        ag.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="SGD: momentum must be finite and >= 0"):
        ag.SGD([p], lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="SGD: lr must be finite"):
        ag.SGD([p]).lr = float("inf")


# ------------------------------------------------------------------------------ clip_grad_norm
def test_clip_grad_norm_matches_torch() -> None:
    rng = np.random.default_rng(3)
    shapes = [(5,), (40, 1000), (3, 7), (2,)]
    grads = [(rng.standard_normal(s) * 3).astype(np.float32) for s in shapes]
    exact = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads[:3]))
    for max_norm in (1.0, exact * 2):
        ours = [ag.Tensor(np.zeros(s, np.float32)) for s in shapes]
        ref = [torch.zeros(s, requires_grad=True) for s in shapes]
        for i in range(3):  # the last parameter has no gradient
            ours[i].grad = grads[i]
            ref[i].grad = torch.from_numpy(grads[i].copy())
        total = ag.clip_grad_norm(ours, max_norm=max_norm)
        ref_total = torch.nn.utils.clip_grad_norm_(ref, max_norm, foreach=False).item()
        # Ours: double sums, one sqrt: ~1e-16 relative. Torch sums 40k fp32 squares: its error
        # is up to ~1e-6 relative, hence the looser comparison with it.
        assert abs(total - exact) <= 1e-13 * exact
        assert abs(total - ref_total) <= 2e-6 * exact
        if max_norm < exact:
            coef = np.float32(max_norm / (exact + 1e-6))
            for o, g, r in zip(ours[:3], grads[:3], ref[:3], strict=True):
                np.testing.assert_array_equal(o.grad, g * coef)  # exactly one fp32 product
                # torch's coefficient is rounded from its fp32 norm: ~2e-6 relative.
                np.testing.assert_allclose(o.grad, r.grad.numpy(), rtol=4e-6, atol=0)
            norm_after = math.sqrt(
                sum(float((o.grad.astype(np.float64) ** 2).sum()) for o in ours[:3])
            )
            assert abs(norm_after - max_norm) <= 1e-6
        else:
            for o, g in zip(ours[:3], grads[:3], strict=True):
                np.testing.assert_array_equal(o.grad, g)  # coef >= 1: untouched
        assert ours[3].grad is None


def test_clip_grad_norm_non_finite_and_errors() -> None:
    g = np.ones(10, np.float32)
    g[4] = np.inf
    t = ag.Tensor(np.zeros(10, np.float32))
    t.grad = g
    assert ag.clip_grad_norm([t], 1.0) == math.inf
    np.testing.assert_array_equal(t.grad, g)  # left for the caller to skip the step
    g[4] = np.nan
    t.grad = g
    assert math.isnan(ag.clip_grad_norm([t], 1.0))
    assert ag.clip_grad_norm([], 1.0) == 0.0
    with pytest.raises(ValueError, match="clip_grad_norm: max_norm must be finite and >= 0"):
        ag.clip_grad_norm([t], -1.0)


# ------------------------------------------------------------------------------ schedules
def test_reexports() -> None:
    assert optim.AdamW is ag.AdamW and optim.SGD is ag.SGD
    assert optim.clip_grad_norm is ag.clip_grad_norm


def test_warmup_schedules_at_key_steps() -> None:
    total, warmup, peak, low = 1000, 100, 3e-3, 1e-4
    for fn in (optim.warmup_cosine, optim.warmup_linear):
        assert fn(0, total, warmup, peak, low) == pytest.approx(peak / warmup, rel=1e-15)
        assert fn(49, total, warmup, peak, low) == pytest.approx(peak * 0.5, rel=1e-15)
        assert fn(warmup - 1, total, warmup, peak, low) == pytest.approx(peak, rel=1e-15)
        assert fn(warmup, total, warmup, peak, low) == pytest.approx(peak, rel=1e-15)
        mid = warmup + (total - warmup) // 2  # half-way through the decay, for both shapes
        assert fn(mid, total, warmup, peak, low) == pytest.approx((peak + low) / 2, rel=1e-12)
        assert fn(total, total, warmup, peak, low) == pytest.approx(low, rel=1e-12)
        assert fn(5 * total, total, warmup, peak, low) == pytest.approx(low, rel=1e-12)
        assert fn(0, total, 0, peak) == pytest.approx(peak, rel=1e-15)  # no warm-up
    quarter = warmup + (total - warmup) // 4
    cos_q = low + (peak - low) * 0.5 * (1 + math.cos(math.pi / 4))
    assert optim.warmup_cosine(quarter, total, warmup, peak, low) == pytest.approx(cos_q)
    lin_q = peak + (low - peak) * 0.25
    assert optim.warmup_linear(quarter, total, warmup, peak, low) == pytest.approx(lin_q)
    with pytest.raises(ValueError, match=r"warmup must be in \[0, total = 10\], got 11"):
        optim.warmup_cosine(0, 10, 11, 1e-3)
    with pytest.raises(ValueError, match="step must be >= 0"):
        optim.warmup_linear(-1, 10, 1, 1e-3)


def test_two_stage_schedule() -> None:
    s = optim.TwoStageSchedule(
        total=1000, warmup=100, peak_lr=1.5e-3, stage2_lr=1e-3, weight_decay=0.1
    )
    assert s.split_step == 500
    assert s(0) == pytest.approx((1.5e-5, 0.1))
    assert s(99) == pytest.approx((1.5e-3, 0.1))
    # Stage 1 follows the whole-run cosine: at step 499 it is just above half the peak.
    lr499, wd499 = s(499)
    assert lr499 == pytest.approx(1.5e-3 * 0.5 * (1 + math.cos(math.pi * 399 / 900)))
    assert wd499 == 0.1
    # The split: the lr drops to stage2_lr and weight decay is 0 from there on.
    assert s(500) == (pytest.approx(1e-3), 0.0)
    assert s(750) == pytest.approx((0.5e-3, 0.0))  # half-way through stage 2's cosine
    assert s(999)[0] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 499 / 500)))
    assert s(2000) == (0.0, 0.0)
    lin = optim.TwoStageSchedule(1000, 0, 2e-3, 1e-3, 0.1, split=0.4, decay="linear", min_lr=1e-4)
    assert lin.split_step == 400
    assert lin(200) == pytest.approx((2e-3 + (1e-4 - 2e-3) * 0.2, 0.1))
    assert lin(700) == pytest.approx((1e-3 + (1e-4 - 1e-3) * 0.5, 0.0))
    cw = optim.TwoStageSchedule(1000, 100, 1e-3, 5e-4, 0.1, wd_decay="cosine")
    assert cw(0)[1] == pytest.approx(0.1)
    assert cw(250)[1] == pytest.approx(0.05)  # half-way through stage 1
    assert cw(600)[1] == 0.0
    assert "split_step=500" in repr(cw)
    with pytest.raises(ValueError, match=r"the split \(step 50\) comes before the end of the warm"):
        optim.TwoStageSchedule(1000, 100, 1e-3, 5e-4, 0.1, split=0.05)
    with pytest.raises(ValueError, match="decay must be one of"):
        optim.TwoStageSchedule(1000, 100, 1e-3, 5e-4, 0.1, decay="step")
    with pytest.raises(ValueError, match="stage2_lr must be finite and >= 0"):
        optim.TwoStageSchedule(1000, 100, 1e-3, -5e-4, 0.1)
    with pytest.raises(ValueError, match=r"split must be in \(0, 1\]"):
        optim.TwoStageSchedule(1000, 100, 1e-3, 5e-4, 0.1, split=1.5)

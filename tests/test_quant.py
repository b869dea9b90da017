"""BitNet b1.58 quantizers, bit-exact against PyTorch references written here from formats.md
section 1 (and against the numpy reference bitnet.quant.reference), on every kernel ISA.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import pytest
import torch

import bitnet
from bitnet import _ext, ops
from bitnet.quant import reference as R

ISAS = _ext.available_isas()


@pytest.fixture(params=ISAS)
def forced_isa(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Caps the kernels at one ISA through BITNET_MAX_ISA, then restores the default choice."""
    monkeypatch.setenv("BITNET_MAX_ISA", request.param)
    try:
        assert _ext.reload_dispatch() == request.param
        assert ops.active_isa() == request.param
        yield request.param
    finally:
        monkeypatch.undo()
        _ext.reload_dispatch()


# ------------------------------------------------------------------------------ references
def weight_quant_ref(w: torch.Tensor) -> tuple[torch.Tensor, float]:
    """absmean ternarization: mean|w| in float64, rounded once to float32, clamped at 1e-5."""
    w = w.float()  # exact for float16 / bfloat16
    s = w.double().abs().mean().float().clamp(min=1e-5)
    t = (w / s).round().clamp(-1, 1).to(torch.int8)
    return t, float(s)


def activation_quant_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token absmax int8, the authors' formula verbatim (fp32): returns (q int8, s_x)."""
    scale = 127.0 / x.abs().max(dim=-1, keepdim=True).values.clamp_(min=1e-5)
    q = (x * scale).round().clamp_(-128, 127)
    return q.to(torch.int8), scale.squeeze(-1)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


# ------------------------------------------------------------------------------ weights
W_SHAPES = [(1,), (7,), (3, 5), (17, 256), (2, 3, 5), (4, 33, 65), (1000, 1000)]
W_DISTS = ("normal", "tiny_sigma", "huge_sigma", "heavy", "sparse", "outliers")
W_KINDS = ("np32", "np16", "torch32", "torch16", "torchbf16")


def make_weights(shape: tuple[int, ...], dist: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, W_DISTS.index(dist), *shape])
    if dist == "normal":
        w = rng.standard_normal(shape) * 0.02
    elif dist == "tiny_sigma":
        w = rng.standard_normal(shape) * 1e-3
    elif dist == "huge_sigma":
        w = rng.standard_normal(shape) * 100.0
    elif dist == "heavy":
        w = rng.standard_t(1.5, shape)
    elif dist == "sparse":
        w = rng.standard_normal(shape) * (rng.random(shape) < 0.2)
    else:
        w = rng.uniform(-1, 1, shape)
        w.reshape(-1)[rng.integers(0, w.size, max(1, w.size // 1000))] *= 1e3
    return w.astype(np.float32)


def as_kind(w: np.ndarray, kind: str):
    if kind == "np32":
        return w
    if kind == "np16":
        return w.astype(np.float16)
    t = torch.from_numpy(w)
    return {"torch32": t, "torch16": t.half(), "torchbf16": t.bfloat16()}[kind]


W_CASES = [
    (shape, dist, kind)
    for shape in W_SHAPES
    for dist in (W_DISTS if np.prod(shape) < 10**5 else ("normal", "heavy"))
    for kind in W_KINDS
]


@pytest.mark.parametrize(
    "shape,dist,kind", W_CASES, ids=["x".join(map(str, s)) + f"-{d}-{k}" for s, d, k in W_CASES]
)
def test_quantize_weights_bit_exact(shape, dist, kind):
    w = as_kind(make_weights(shape, dist), kind)
    t, s = ops.quantize_weights(w)
    w_torch = w if isinstance(w, torch.Tensor) else torch.from_numpy(w)
    t_ref, s_ref = weight_quant_ref(w_torch)
    assert isinstance(s, float)
    assert s == s_ref, f"scale {s!r} != {s_ref!r}"
    if kind.startswith("torch"):
        assert isinstance(t, torch.Tensor) and t.dtype == torch.int8
        assert tuple(t.shape) == shape
        assert torch.equal(t, t_ref)
    else:
        assert isinstance(t, np.ndarray) and t.dtype == np.int8 and t.shape == shape
        np.testing.assert_array_equal(t, t_ref.numpy())
    # The numpy reference agrees (it takes float32 / float16 only).
    w_np = w_torch.float().numpy() if kind == "torchbf16" else np.asarray(w)
    t_np, s_np = R.quantize_weights_ref(w_np)
    assert s_np == s
    np.testing.assert_array_equal(t_np, t_ref.numpy())


@pytest.mark.parametrize(
    "w,t_want,s_want",
    [
        # mean|w| = 2: w / s = -1.5, 2.5, 0.5, -0.5, 0 -> half to even: -2, 2, 0, -0, 0
        ([-3.0, 5.0, 1.0, -1.0, 0.0], [-1, 1, 0, 0, 0], 2.0),
        # mean|w| = 1: exact ties at +-0.5 and +-1.5
        ([0.5, -0.5, 1.5, -1.5, 1.0, -1.0], [0, 0, 1, -1, 1, -1], 1.0),
        ([0.0] * 9, [0] * 9, np.float32(1e-5)),  # all zero: s_w clamps at 1e-5
        ([-0.0, 0.0, -0.0], [0, 0, 0], np.float32(1e-5)),
        ([1e-7, -1e-7, 2e-7], [0, 0, 0], np.float32(1e-5)),  # below the clamp: t = round(0.01)
        ([6e-6, -1.6e-5, 1e-45], [1, -1, 0], np.float32(1e-5)),  # mean < 1e-5, w/1e-5 rounds
        ([3e38, -3e38, 1.0, 0.0], [1, -1, 0, 0], np.float32(1.5e38)),
    ],
)
def test_quantize_weights_edge_values(w, t_want, s_want):
    arr = np.array(w, np.float32)
    t, s = ops.quantize_weights(arr)
    np.testing.assert_array_equal(t, np.array(t_want, np.int8))
    assert s == np.float32(s_want)
    t_ref, s_ref = weight_quant_ref(torch.from_numpy(arr))
    np.testing.assert_array_equal(t, t_ref.numpy())
    assert s == s_ref


def test_quantize_weights_non_contiguous_inputs():
    w = make_weights((64, 96), "normal")
    for view in (w[:, ::2], w.T, w[::3]):
        t, s = ops.quantize_weights(view)
        t_ref, s_ref = weight_quant_ref(torch.from_numpy(np.ascontiguousarray(view)))
        np.testing.assert_array_equal(t, t_ref.numpy())
        assert s == s_ref
    tt = torch.from_numpy(w).t()
    t, s = ops.quantize_weights(tt)
    assert torch.equal(t, weight_quant_ref(tt)[0]) and s == weight_quant_ref(tt)[1]


@pytest.mark.parametrize(
    "w",
    [
        np.zeros(4, np.float64),
        np.zeros(4, np.int32),
        np.zeros(4, np.int8),
        torch.zeros(4, dtype=torch.float64),
        torch.zeros(4, dtype=torch.int32),
    ],
    ids=["np64", "npi32", "npi8", "torch64", "torchi32"],
)
def test_quantize_weights_wrong_dtype(w):
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        ops.quantize_weights(w)


def test_quantize_weights_bad_inputs():
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        ops.quantize_weights([1.0, 2.0])
    for shape in [(0,), (3, 0), (0, 0, 2)]:
        with pytest.raises(ValueError, match="empty"):
            ops.quantize_weights(np.zeros(shape, np.float32))
    for bad in (np.nan, np.inf, -np.inf):
        w = np.ones((3, 7), np.float32)
        w[2, 3] = bad
        with pytest.raises(ValueError, match=r"not finite") as e:
            ops.quantize_weights(w)
        assert "flat index 17" in str(e.value)
        with pytest.raises(ValueError, match="not finite"):
            ops.quantize_weights(torch.from_numpy(w).bfloat16())
    big = np.ones(300_000, np.float32)
    big[-1] = np.nan  # in the last of several summation chunks
    with pytest.raises(ValueError, match="flat index 299999"):
        ops.quantize_weights(big)


# ------------------------------------------------------------------------------ activations
A_MS = [1, 3, 17, 128]
A_KS = [1, 7, 31, 32, 33, 255, 256, 2560, 6912]
A_KINDS = ("normal", "heavy", "uniform", "zero", "ties_pow2", "ties", "outlier", "tiny", "mixed")
ROW_SCALES = (1e-3, 1e-2, 0.1, 1.0, 10.0, 1e2, 1e3)


def tie_row(rng: np.random.Generator, k: int, amax: float) -> np.ndarray:
    """A row of max |x| = amax whose other entries land exactly on k + 0.5 after x * s_x (fp32).

    s_x = fl(fl(1 / amax) * 127) as PyTorch computes it; for each target h = j + 0.5 the float32
    neighbours of h / s_x are searched for an x with fl(x * s_x) == h exactly.
    """
    amax32 = np.float32(amax)
    s = torch_s_x(amax32)
    h = (np.arange(-127, 127) + 0.5).astype(np.float32)
    x0 = (h / s).astype(np.float32)
    found = []
    for off in range(-3, 4):
        x = x0.copy()
        step = np.inf if off > 0 else -np.inf
        for _ in range(abs(off)):
            x = np.nextafter(x, np.float32(step))
        ok = ((x * s) == h) & (np.abs(x) <= amax32)
        found.append(x[ok])
    ties = np.unique(np.concatenate(found))
    row = rng.choice(ties, k) if ties.size else np.zeros(k, np.float32)
    row[rng.integers(k)] = amax32 * rng.choice([-1, 1])
    return row.astype(np.float32)


def torch_s_x(amax: np.ndarray | np.float32) -> np.ndarray:
    """s_x of rows with max |x| = amax, as PyTorch evaluates `127.0 / t`."""
    return (np.float32(1) / np.maximum(amax, np.float32(1e-5))) * np.float32(127)


def make_row(rng: np.random.Generator, k: int, kind: str) -> np.ndarray:
    scale = float(rng.choice(ROW_SCALES)) * float(rng.uniform(0.5, 2.0))
    if kind == "normal":
        return (rng.standard_normal(k) * scale).astype(np.float32)
    if kind == "heavy":
        return (rng.standard_t(1.5, k) * scale).astype(np.float32)
    if kind == "uniform":
        return rng.uniform(-scale, scale, k).astype(np.float32)
    if kind == "zero":
        return np.where(rng.random(k) < 0.5, np.float32(0.0), np.float32(-0.0))
    if kind == "ties_pow2":  # s_x = 2^-e exactly, every entry (j + 0.5) * 2^e
        e = int(rng.integers(-12, 12))
        row = (rng.integers(-127, 127, k) + 0.5) * 2.0**e
        row[rng.integers(k)] = 127 * 2.0**e * rng.choice([-1, 1])
        return row.astype(np.float32)
    if kind == "ties":
        return tie_row(rng, k, scale)
    if kind == "outlier":
        row = rng.standard_normal(k) * scale
        row[rng.integers(k)] = rng.choice([1e4 * scale, -3.4e38, 3.4e38])
        return row.astype(np.float32)
    if kind == "tiny":  # max |x| at or below the 1e-5 clamp, subnormals included
        row = rng.standard_normal(k) * rng.choice([1e-6, 3e-6, 1e-40])
        row[rng.integers(k)] = np.float32(1e-5) * rng.choice([-1, 1])
        return row.astype(np.float32)
    raise AssertionError(kind)


def make_activations(m: int, k: int, kind: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, m, k, A_KINDS.index(kind)])
    kinds = A_KINDS[:-1]
    rows = [make_row(rng, k, kinds[i % len(kinds)] if kind == "mixed" else kind) for i in range(m)]
    return np.ascontiguousarray(np.stack(rows), dtype=np.float32)


@functools.cache
def activation_case(m: int, k: int, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, q_ref, s_ref) from the PyTorch reference, computed once for all ISAs."""
    x = make_activations(m, k, kind)
    q_ref, s_ref = activation_quant_ref(torch.from_numpy(x))
    for a in (x, q_ref.numpy(), s_ref.numpy()):
        a.setflags(write=False)
    return x, q_ref.numpy(), s_ref.numpy()


def test_tie_rows_really_tie():
    """The tie generator is not vacuous: most entries land exactly on .5 after scaling."""
    rng = np.random.default_rng(0)
    for amax in (1e-3, 0.37, 1.0, 3.3, 77.7, 1e3):
        row = tie_row(rng, 512, amax)
        s = torch_s_x(np.max(np.abs(row)))
        assert s == activation_quant_ref(torch.from_numpy(row[None]))[1].item()
        frac = (row * s) % 1
        assert np.mean(frac == 0.5) > 0.9, amax
    for m in A_MS:  # the pow2 rows too, through the same path as the tests
        x = make_activations(m, 256, "ties_pow2", seed=1)
        frac = (x * torch_s_x(np.max(np.abs(x), axis=1))[:, None]) % 1
        assert np.mean(frac == 0.5) > 0.9


@pytest.mark.parametrize("k", A_KS)
@pytest.mark.parametrize("m", A_MS)
def test_quantize_activations_bit_exact(forced_isa, m, k):
    for kind in A_KINDS:
        x, q_ref, s_ref = activation_case(m, k, kind)
        q, s = ops.quantize_activations(x)
        assert q.dtype == np.int8 and q.shape == (m, k)
        assert s.dtype == np.float32 and s.shape == (m,)
        if not same_bits(s, s_ref):
            r = int(np.argmax(s.view(np.uint32) != s_ref.view(np.uint32)))
            raise AssertionError(
                f"{forced_isa} {kind}: s_x[{r}] = {s[r]!r}, expected {s_ref[r]!r} "
                f"(max|x| = {np.max(np.abs(x[r]))!r})"
            )
        if not np.array_equal(q, q_ref):
            r, c = np.argwhere(q != q_ref)[0]
            raise AssertionError(
                f"{forced_isa} {kind}: q[{r}, {c}] = {q[r, c]}, expected {q_ref[r, c]} "
                f"(x = {x[r, c]!r}, x * s_x = {x[r, c] * s_ref[r]!r})"
            )


@pytest.mark.parametrize("k", A_KS)
@pytest.mark.parametrize("m", A_MS)
def test_numpy_activation_reference_matches_torch(m, k):
    for kind in A_KINDS:
        x, q_ref, s_ref = activation_case(m, k, kind)
        q_np, s_np = R.quantize_activations_ref(x)
        np.testing.assert_array_equal(q_np, q_ref)
        assert same_bits(s_np, s_ref)


def test_division_is_not_reciprocal_times_127():
    """PyTorch's `127.0 / t` is `t.reciprocal() * 127`: inputs where that differs from one fp32
    division exist, and the quantizer follows PyTorch on them."""
    amax = np.random.default_rng(0).uniform(0.01, 100, 20000).astype(np.float32)
    div = np.float32(127) / amax
    recip = (np.float32(1) / amax) * np.float32(127)
    differ = amax[div != recip]
    assert differ.size > 100
    x = np.stack([differ[:64], -differ[:64] / 3], axis=1)  # rows [amax, -amax / 3]
    _, s = ops.quantize_activations(np.ascontiguousarray(x))
    _, s_ref = activation_quant_ref(torch.from_numpy(x))
    assert same_bits(s, s_ref.numpy())
    assert same_bits(s, (np.float32(1) / differ[:64]) * np.float32(127))


def test_quantize_activations_independent_of_threads(forced_isa):
    x, q_ref, s_ref = activation_case(128, 256, "mixed")  # several rows per task, many tasks
    saved = bitnet.get_num_threads()
    try:
        for n in (1, 2, 3):
            bitnet.set_num_threads(n)
            q, s = ops.quantize_activations(x)
            np.testing.assert_array_equal(q, q_ref)
            assert same_bits(s, s_ref)
    finally:
        bitnet.set_num_threads(saved)


def test_quantize_activations_torch_in_torch_out(forced_isa):
    x = torch.from_numpy(make_activations(5, 300, "mixed"))
    q, s = ops.quantize_activations(x)
    assert isinstance(q, torch.Tensor) and q.dtype == torch.int8 and q.shape == (5, 300)
    assert isinstance(s, torch.Tensor) and s.dtype == torch.float32 and s.shape == (5,)
    q_ref, s_ref = activation_quant_ref(x)
    assert torch.equal(q, q_ref) and torch.equal(s, s_ref)
    # bfloat16 is widened exactly to float32.
    xb = x.bfloat16()
    q, s = ops.quantize_activations(xb)
    q_ref, s_ref = activation_quant_ref(xb.float())
    assert torch.equal(q, q_ref) and torch.equal(s, s_ref)


def test_quantize_activations_extreme_rows(forced_isa):
    f32 = np.finfo(np.float32)
    rows = [
        [f32.max, -f32.max, 1.0, 0.0],
        [f32.max, f32.max / 2, f32.max / 254, -f32.max / 254 * 3],  # near ties, top of range
        [f32.smallest_subnormal, -f32.smallest_subnormal, 0.0, 1e-5],
        [1e-5, -1e-5, 5e-6, -5e-6],  # max at the clamp; x * s_x near +-63.5
        [127.0, -126.5, 0.5, -0.5],
        [-127.0, 126.5, 1.5, 2.5],
    ]
    x = np.array(rows, np.float32)
    q, s = ops.quantize_activations(x)
    q_ref, s_ref = activation_quant_ref(torch.from_numpy(x))
    np.testing.assert_array_equal(q, q_ref.numpy())
    assert same_bits(s, s_ref.numpy())
    np.testing.assert_array_equal(q[4], [127, -126, 0, 0])
    np.testing.assert_array_equal(q[5], [-127, 126, 2, 2])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize(
    "m,k,r", [(1, 1, 0), (5, 7, 3), (5, 33, 4), (4, 256, 1), (3, 2560, 2), (128, 6912, 101)]
)
def test_quantize_activations_non_finite(forced_isa, bad, m, k, r):
    x = make_activations(m, k, "normal")
    for c in sorted({0, k // 2, k - 1}):
        y = x.copy()
        y[r, c] = bad
        with pytest.raises(ValueError, match=rf"row {r} of the input holds NaN or Inf"):
            ops.quantize_activations(y)
    with pytest.raises(ValueError, match=rf"row {r} holds NaN or Inf"):
        R.quantize_activations_ref(y)


@pytest.mark.parametrize(
    "x",
    [
        np.zeros((2, 8), np.float64),
        np.zeros((2, 8), np.float16),
        np.zeros((2, 8), np.int8),
        torch.zeros(2, 8, dtype=torch.float64),
        torch.zeros(2, 8, dtype=torch.float16),
    ],
    ids=["np64", "np16", "npi8", "torch64", "torch16"],
)
def test_quantize_activations_wrong_dtype(x):
    with pytest.raises(TypeError, match="quantize_activations: x: expected dtype float32"):
        ops.quantize_activations(x)


def test_quantize_activations_bad_inputs():
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        ops.quantize_activations([[1.0, 2.0]])
    for shape in [(8,), (2, 2, 8), (1, 1, 1, 8)]:
        with pytest.raises(ValueError, match="expected a 2-D array"):
            ops.quantize_activations(np.ones(shape, np.float32))
    x = np.ones((4, 16), np.float32)
    for view in (x[:, ::2], x.T, x[::2, 1:]):
        with pytest.raises(ValueError, match="not C-contiguous"):
            ops.quantize_activations(view)
    with pytest.raises(ValueError, match="not C-contiguous"):
        ops.quantize_activations(torch.ones(4, 16).t())
    for shape in [(0, 8), (3, 0), (0, 0)]:
        with pytest.raises(ValueError, match="empty"):
            ops.quantize_activations(np.zeros(shape, np.float32))

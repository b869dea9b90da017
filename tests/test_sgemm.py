"""bitnet::sgemm (cpp/include/bitnet/sgemm.h) through ``bitnet._ext.autograd.sgemm``.

Reference: the float64 product of the same float32 inputs, ``alpha * op(a) @ op(b) + beta * c``
(float32 values are exact in float64 and a float64 sum of K <= 1000 terms is ~2^29 times more
accurate than the float32 one, so it stands for the exact result).

Tolerance (``bound``): sgemm sums each output over K in blocks of 256 values (one fp32 sum per
block, in increasing k, with FMA in the SIMD tables or rounded products then rounded adds in the
reference), then folds the blocks into C: ``c = beta*c + alpha*s_0``, ``c += alpha*s_b``. Every
term a_k*b_k passes through at most K + 3 fp32 roundings (its product, at most K adds, the scaling
by alpha and the fold into C), each a relative error of at most u = 2^-24, so to first order
(Higham, recursive summation)
    |c - c_exact| <= (K + 4) * u * (|alpha| * sum_k |a_ik b_kj| + |beta * c_ij|)
with one extra u for the rounding of beta * c. ``bound`` is this, doubled to cover the
second-order terms and the float64 reference's own error. A wrong index, transpose or block
misses it by orders of magnitude on random data (errors the size of the terms themselves).

The reference kernel table (``ref``, also used for the NEON ISAs) is additionally checked bit for
bit against a numpy float32 emulation of its evaluation order (sgemm_ref.cpp), which also shows
that the BITNET_MAX_ISA cap reaches sgemm.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import bitnet
from bitnet import _ext

sgemm = _ext.autograd.sgemm
U = 2.0**-24
KC = 256  # kSgemmKc, the K block of every table (sgemm_kernels.h)
# ISAs whose sgemm table is the scalar reference (sgemm.cpp: sgemm_table_for).
REF_TABLE_ISAS = {"ref", "neon", "neon_dotprod"}
COMBOS = [(False, False), (False, True), (True, False), (True, True)]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def make_operands(
    rng: np.random.Generator, m: int, n: int, k: int, trans_a: bool, trans_b: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Random float32 a, b stored as sgemm expects for the given transposes."""
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    return a, b


def op(x: np.ndarray, trans: bool) -> np.ndarray:
    return x.T if trans else x


def reference(
    a: np.ndarray,
    b: np.ndarray,
    trans_a: bool,
    trans_b: bool,
    alpha: float,
    beta: float,
    c: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The float64 product and the error bound of the module docstring, elementwise."""
    a64, b64 = op(a, trans_a).astype(np.float64), op(b, trans_b).astype(np.float64)
    k = a64.shape[1]
    want = np.float64(alpha) * (a64 @ b64)
    mag = abs(np.float64(alpha)) * (np.abs(a64) @ np.abs(b64))
    if c is not None and beta != 0.0:
        want = want + np.float64(beta) * c.astype(np.float64)
        mag = mag + abs(np.float64(beta) * c.astype(np.float64))
    return want, 2.0 * (k + 4) * U * mag


def check_close(got: np.ndarray, want: np.ndarray, bound: np.ndarray, what: str) -> None:
    assert got.dtype == np.float32 and got.shape == want.shape, what
    err = np.abs(got.astype(np.float64) - want)
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else None
    assert np.all(err <= bound), f"{what}: error {err[worst]} > bound {bound[worst]} at {worst}"


def ref_table_emulation(
    a: np.ndarray,
    b: np.ndarray,
    trans_a: bool,
    trans_b: bool,
    alpha: float,
    beta: float,
    c: np.ndarray | None,
) -> np.ndarray:
    """The reference table's exact evaluation order in numpy float32 (sgemm_ref.cpp): per K
    block, acc = fp32(acc + fp32(a_k * b_k)) in increasing k; then c = alpha*acc + beta*c for the
    first block (alpha*acc alone when beta == 0) and c = alpha*acc + 1*c for the others, each
    product and sum rounded to fp32 (the project builds with -ffp-contract=off)."""
    oa, ob = op(a, trans_a), op(b, trans_b)
    m, k = oa.shape
    n = ob.shape[1]
    f32 = np.float32
    out = np.zeros((m, n), f32) if c is None else c.astype(f32).copy()
    al = f32(alpha)
    for k0 in range(0, k, KC):
        acc = np.zeros((m, n), f32)
        for kk in range(k0, min(k, k0 + KC)):
            acc = acc + oa[:, kk : kk + 1] * ob[kk : kk + 1, :]
        bk = f32(beta) if k0 == 0 else f32(1.0)
        out = al * acc if bk == 0 else al * acc + bk * out
    return out


# ----------------------------------------------------------------------------- values

SHAPES = [
    (1, 1, 1),
    (3, 17, 5),
    (17, 63, 33),
    (2, 33, 1),
    (13, 45, 300),  # two K blocks, partial second block
    (1, 70, 257),
    (64, 100, 513),  # three K blocks
    (29, 1, 64),
    (1, 1, 600),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("trans", COMBOS, ids=["NN", "NT", "TN", "TT"])
def test_product_every_isa(isa: str, shape, trans, rng: np.random.Generator) -> None:
    m, n, k = shape
    ta, tb = trans
    a, b = make_operands(rng, m, n, k, ta, tb)
    got = sgemm(a, b, trans_a=ta, trans_b=tb)
    want, bound = reference(a, b, ta, tb, 1.0, 0.0, None)
    check_close(got, want, bound, f"{isa} {shape} {trans}")
    if isa in REF_TABLE_ISAS:
        np.testing.assert_array_equal(got, ref_table_emulation(a, b, ta, tb, 1.0, 0.0, None))


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (-0.5, 0.0), (2.5, -1.5), (0.75, 1.0)])
@pytest.mark.parametrize("trans", COMBOS, ids=["NN", "NT", "TN", "TT"])
def test_alpha_beta_every_isa(isa: str, alpha, beta, trans, rng: np.random.Generator) -> None:
    m, n, k = 19, 70, 290
    ta, tb = trans
    a, b = make_operands(rng, m, n, k, ta, tb)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    c = c0.copy()
    got = sgemm(a, b, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta, c=c)
    assert got is c  # written in place
    want, bound = reference(a, b, ta, tb, alpha, beta, c0)
    check_close(got, want, bound, f"{isa} alpha={alpha} beta={beta} {trans}")
    if isa in REF_TABLE_ISAS:
        emu = ref_table_emulation(a, b, ta, tb, alpha, beta, c0)
        np.testing.assert_array_equal(got, emu)


def test_beta_zero_ignores_nan_in_c(isa: str, rng: np.random.Generator) -> None:
    m, n, k = 14, 37, 270  # two K blocks: the second one reads C back
    a, b = make_operands(rng, m, n, k, False, True)
    c = np.full((m, n), np.nan, np.float32)
    c[::2] = np.inf
    got = sgemm(a, b, trans_b=True, alpha=1.5, beta=0.0, c=c)
    want, bound = reference(a, b, False, True, 1.5, 0.0, None)
    check_close(got, want, bound, f"{isa} NaN C")


def test_k_zero_and_alpha_zero_scale_c(rng: np.random.Generator) -> None:
    """K == 0 (and, as in BLAS, alpha == 0) give C = beta * C without reading A or B."""
    c0 = rng.standard_normal((5, 7)).astype(np.float32)
    a = np.zeros((5, 0), np.float32)
    b = np.zeros((0, 7), np.float32)
    np.testing.assert_array_equal(sgemm(a, b), np.zeros((5, 7), np.float32))
    c = c0.copy()
    np.testing.assert_array_equal(sgemm(a, b, beta=-2.0, c=c), c0 * np.float32(-2.0))
    c = np.full((5, 7), np.nan, np.float32)
    np.testing.assert_array_equal(sgemm(a, b, beta=0.0, c=c), np.zeros((5, 7), np.float32))
    a_nan = np.full((5, 3), np.nan, np.float32)
    b3 = rng.standard_normal((3, 7)).astype(np.float32)
    c = c0.copy()
    np.testing.assert_array_equal(sgemm(a_nan, b3, alpha=0.0, beta=0.5, c=c), c0 * np.float32(0.5))
    # A NaN in A does propagate when alpha != 0 (the product is really computed).
    assert np.isnan(sgemm(a_nan, b3)).all()


def test_empty_outputs(rng: np.random.Generator) -> None:
    assert sgemm(np.zeros((0, 4), np.float32), np.ones((4, 3), np.float32)).shape == (0, 3)
    assert sgemm(np.ones((2, 4), np.float32), np.ones((4, 0), np.float32)).shape == (2, 0)
    a = np.ones((3, 0), np.float32)  # trans_a: op(a) is [0, 3]
    assert sgemm(a, np.ones((3, 5), np.float32), trans_a=True).shape == (0, 5)


@pytest.mark.parametrize("trans", COMBOS, ids=["NN", "NT", "TN", "TT"])
def test_leading_dimensions(isa: str, trans, rng: np.random.Generator) -> None:
    """Row-strided views (lda > width etc.): only the view is read, only C's view is written."""
    m, n, k = 21, 35, 270
    ta, tb = trans
    big_a = rng.standard_normal((300, 300)).astype(np.float32)
    big_b = rng.standard_normal((300, 300)).astype(np.float32)
    a = big_a[3 : 3 + (k if ta else m), 5 : 5 + (m if ta else k)]
    b = big_b[1 : 1 + (n if tb else k), 7 : 7 + (k if tb else n)]
    big_c = rng.standard_normal((m + 4, n + 9)).astype(np.float32)
    before = big_c.copy()
    c = big_c[2 : 2 + m, 4 : 4 + n]
    c0 = c.copy()
    got = sgemm(a, b, trans_a=ta, trans_b=tb, alpha=0.5, beta=2.0, c=c)
    assert got is c
    want, bound = reference(a, b, ta, tb, 0.5, 2.0, c0)
    check_close(got, want, bound, f"{isa} strided {trans}")
    outside = np.ones(big_c.shape, bool)
    outside[2 : 2 + m, 4 : 4 + n] = False
    np.testing.assert_array_equal(big_c[outside], before[outside])
    # The same product from contiguous copies is bit-identical (strides change nothing).
    c2 = c0.copy()
    sgemm(a.copy(), b.copy(), trans_a=ta, trans_b=tb, alpha=0.5, beta=2.0, c=c2)
    np.testing.assert_array_equal(got, c2)


# ----------------------------------------------------------------------------- threads


@pytest.mark.parametrize(
    "shape,trans",
    [
        ((200, 300, 600), (False, True)),
        ((389, 97, 301), (True, False)),
        ((13, 1000, 700), (False, False)),
    ],
)
def test_threads_bit_identical(threads, shape, trans, rng: np.random.Generator) -> None:
    """Every thread count gives the same bits (the K-sum order does not depend on the split)."""
    m, n, k = shape
    ta, tb = trans
    a, b = make_operands(rng, m, n, k, ta, tb)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    outs = []
    for t in (1, 2, 3):
        bitnet.set_num_threads(t)
        outs.append(sgemm(a, b, trans_a=ta, trans_b=tb, alpha=0.5, beta=-1.0, c=c0.copy()))
    want, bound = reference(a, b, ta, tb, 0.5, -1.0, c0)
    check_close(outs[0], want, bound, f"threads {shape}")
    for t, o in zip((2, 3), outs[1:], strict=True):
        np.testing.assert_array_equal(o, outs[0], err_msg=f"{t} threads vs 1")


# ----------------------------------------------------------------------------- dispatch


def run_py(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ)
    e.pop("BITNET_MAX_ISA", None)
    e.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=120
    )


_SUBPROCESS_CODE = """
import numpy as np
import bitnet
from bitnet import _ext
a = np.load("{a}")
b = np.load("{b}")
np.save("{out}", _ext.autograd.sgemm(a, b, trans_b=True))
print(bitnet.ops.active_isa())
"""


@pytest.mark.parametrize("cap", _ext.available_isas())
def test_env_cap_selects_table(cap: str, tmp_path, rng: np.random.Generator) -> None:
    """BITNET_MAX_ISA set before import picks the sgemm table: the subprocess's result is bit for
    bit the one of the same ISA forced in-process, and the ref cap gives the reference order."""
    m, n, k = 9, 40, 300
    a, b = make_operands(rng, m, n, k, False, True)
    pa, pb, po = tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "out.npy"
    np.save(pa, a)
    np.save(pb, b)
    code = _SUBPROCESS_CODE.format(a=pa, b=pb, out=po)
    r = run_py(code, BITNET_MAX_ISA=cap)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == cap
    sub = np.load(po)
    old = os.environ.get("BITNET_MAX_ISA")
    os.environ["BITNET_MAX_ISA"] = cap
    try:
        assert _ext.reload_dispatch() == cap
        here = sgemm(a, b, trans_b=True)
    finally:
        if old is None:
            os.environ.pop("BITNET_MAX_ISA", None)
        else:
            os.environ["BITNET_MAX_ISA"] = old
        _ext.reload_dispatch()
    np.testing.assert_array_equal(sub, here)
    emu = ref_table_emulation(a, b, False, True, 1.0, 0.0, None)
    if cap in REF_TABLE_ISAS:
        np.testing.assert_array_equal(sub, emu)
    else:
        # The SIMD tables fuse multiply-adds: on this seeded input their bits differ from the
        # reference order, so the cap really switched kernels.
        assert not np.array_equal(sub, emu)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs() -> None:
    f = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"inner dimensions differ: op\(a\) is \[3, 4\]"):
        sgemm(f, np.ones((5, 2), np.float32))
    with pytest.raises(ValueError, match=r"op\(b\) is \[3, 4\] \(trans_a=False, trans_b=False\)"):
        sgemm(f, f)
    with pytest.raises(TypeError, match="a: expected dtype float32, got float64"):
        sgemm(np.ones((3, 4)), f.T.copy())
    with pytest.raises(TypeError, match="b: expected a numpy float32 array"):
        sgemm(f, [[1.0]])
    with pytest.raises(ValueError, match="a: expected a 2-D array, got 1 dimensions"):
        sgemm(np.ones(4, np.float32), f)
    with pytest.raises(ValueError, match="b: rows must be contiguous"):
        sgemm(f, np.ones((4, 6), np.float32)[:, ::2])
    with pytest.raises(ValueError, match=r"c has shape \[2, 2\], expected \[3, 3\]"):
        sgemm(f, f, trans_b=True, c=np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="beta=0.5 needs c"):
        sgemm(f, f, trans_b=True, beta=0.5)
    ro = np.zeros((3, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="c: array is read-only"):
        sgemm(f, f, trans_b=True, c=ro)

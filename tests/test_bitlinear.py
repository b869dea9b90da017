"""bitlinear against plain references written here from formats.md section 1.

Two references:
* exact: int64 dot of q and t (q from the PyTorch activation quantizer), then the scales as the
  format stores them (fp32 for I2_S / native, fp16 for TQ types), evaluated in float64. Our
  kernel adds no error in the integer part (exact int32) and rounds twice in fp32
  (w_scale / s_x, then acc * that), so |y - ref| <= ~2.5 ulp(y): rtol 1e-6 has 8x margin.
* F.linear(activation_quant(x), weight_quant(W)) in fp32 (the authors' formula): it sums K fp32
  products, so its own rounding error is a few eps times sum|terms|; we allow 1e-5 relative to
  the largest |y| of the row (elementwise relative error is meaningless where terms cancel).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bitnet
from bitnet import ops


def activation_quant_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BitNet b1.58 per-token absmax int8 (authors' formula): returns (q, s_x)."""
    scale = 127.0 / x.abs().max(dim=-1, keepdim=True).values.clamp_(min=1e-5)
    q = (x * scale).round().clamp_(-128, 127)
    return q, scale.squeeze(-1)


def weight_quant_ref(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """absmean ternarization with the mean in float64 (as bitnet.ops.quantize_weights)."""
    s = w.double().abs().mean().float().clamp(min=1e-5)
    return (w / s).round().clamp(-1, 1), s


def fp16(v: float) -> float:
    return float(np.float32(np.float16(v)))


# (format, N, K): K covers every format's block and, for native, non-multiples of 256.
SHAPES = [
    ("native", 5, 1),
    ("native", 17, 7),
    ("native", 33, 300),
    ("native", 64, 2560),
    ("native", 31, 1000),
    ("i2_s", 16, 128),
    ("i2_s", 19, 384),
    ("tq2_0", 23, 256),
    ("tq2_0", 40, 768),
    ("tq1_0", 21, 512),
    ("tq1_0", 8, 256),
]
MS = [1, 3, 17, 128]


def make_case(fmt: str, n: int, k: int, m: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.02
    # Activations with a heavy-tailed spread of row scales, like hidden states.
    x = torch.randn(m, k, generator=g) * torch.exp(torch.randn(m, 1, generator=g) * 2)
    t, s_w = weight_quant_ref(w)
    packed = ops.pack(t.to(torch.int8).numpy(), fmt, float(s_w))
    return w, x, t, s_w, packed


@pytest.mark.parametrize("fmt,n,k", SHAPES)
@pytest.mark.parametrize("nthreads", [1, 2])
def test_bitlinear_matches_references(isa, threads, fmt, n, k, nthreads):
    bitnet.set_num_threads(nthreads)
    for m in MS:
        w, x, t, s_w, packed = make_case(fmt, n, k, m, seed=hash((fmt, n, k, m)) % 2**31)
        y = ops.bitlinear(x.numpy(), packed)
        assert y.shape == (m, n) and y.dtype == np.float32

        q, s_x = activation_quant_ref(x)
        stored = fp16(float(s_w)) if fmt.startswith("tq") else float(s_w)
        assert packed.scale == pytest.approx(stored, rel=0, abs=0)
        dot = q.long() @ t.long().T  # exact int64
        exact = dot.double() / s_x.double()[:, None] * stored
        np.testing.assert_allclose(y, exact.numpy(), rtol=1e-6, atol=0)

        # The authors' float formula, with the scale the format stores.
        y_lin = F.linear(q / s_x[:, None], t * torch.tensor(stored, dtype=torch.float32))
        tol = 1e-5 * y_lin.abs().amax(dim=1, keepdim=True)
        assert torch.all((torch.from_numpy(y) - y_lin).abs() <= tol + 1e-30)


def test_bitlinear_torch_in_torch_out_and_out_param(isa):
    _, x, t, s_w, packed = make_case("native", 48, 520, 4, seed=1)
    y = ops.bitlinear(x, packed)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    out = np.full((4, 48), np.nan, dtype=np.float32)
    res = ops.bitlinear(x.numpy(), packed, out=out)
    assert res is out
    np.testing.assert_array_equal(out, y.numpy())
    tout = torch.full((4, 48), float("nan"))
    assert ops.bitlinear(x, packed, out=tout) is tout
    torch.testing.assert_close(tout, y, rtol=0, atol=0)


def test_bitlinear_extreme_rows_exact(isa):
    # Rows of equal magnitude quantize to +-127 everywhere: with all weights +1 or -1 the sums
    # reach 127 * K, the largest a real input can produce; also an all-zero row.
    k, n = 6912, 16
    t = np.ones((n, k), dtype=np.int8)
    t[1::2] = -1
    packed = ops.pack(t, "i2_s", 0.5)
    x = np.stack([np.full(k, -3.0), np.full(k, 2.5), np.zeros(k)]).astype(np.float32)
    y = ops.bitlinear(x, packed)
    q, s_x = activation_quant_ref(torch.from_numpy(x))
    exact = (q.long() @ torch.from_numpy(t).long().T).double() / s_x.double()[:, None] * 0.5
    np.testing.assert_allclose(y, exact.numpy(), rtol=1e-6, atol=0)
    assert np.all(y[2] == 0)


def test_bitlinear_all_formats_agree(isa):
    g = torch.Generator().manual_seed(7)
    t = torch.randint(-1, 2, (24, 512), generator=g, dtype=torch.int8).numpy()
    x = torch.randn(5, 512, generator=g).numpy()
    ys = {f: ops.bitlinear(x, ops.pack(t, f, 0.25)) for f in ops.FORMATS}
    # 0.25 is exact in fp16, so every format stores the same scale and must agree bit for bit.
    for f in ops.FORMATS:
        np.testing.assert_array_equal(ys[f], ys["native"])


def test_bitlinear_concurrent_callers(threads):
    """Two Python threads (GIL released) share the pool: both must get correct results."""
    bitnet.set_num_threads(2)
    _, x, _, _, packed = make_case("native", 256, 2560, 8, seed=3)
    expected = ops.bitlinear(x.numpy(), packed)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                np.testing.assert_array_equal(ops.bitlinear(x.numpy(), packed), expected)
        except BaseException as e:  # noqa: BLE001 - surfaced in the main thread
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(3)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    assert not errors, errors[0]


# ----------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def small_packed():
    t = np.zeros((8, 256), dtype=np.int8)
    t[0, :5] = 1
    return ops.pack(t, "tq2_0", 1.0)


def test_bitlinear_bad_inputs(small_packed):
    good = np.ones((2, 256), dtype=np.float32)
    with pytest.raises(TypeError, match="float32"):
        ops.bitlinear(good.astype(np.float64), small_packed)
    with pytest.raises(ValueError, match="2-D"):
        ops.bitlinear(np.ones(256, dtype=np.float32), small_packed)
    with pytest.raises(ValueError, match="2-D"):
        ops.bitlinear(np.ones((1, 2, 256), dtype=np.float32), small_packed)
    with pytest.raises(ValueError, match=r"\[M, 256\]"):
        ops.bitlinear(np.ones((2, 255), dtype=np.float32), small_packed)
    with pytest.raises(ValueError, match="contiguous"):
        ops.bitlinear(np.ones((256, 2), dtype=np.float32).T, small_packed)
    with pytest.raises(ValueError, match="empty"):
        ops.bitlinear(np.ones((0, 256), dtype=np.float32), small_packed)
    for bad in (np.nan, np.inf, -np.inf):
        x = good.copy()
        x[1, 17] = bad
        with pytest.raises(ValueError, match="row 1.*NaN or Inf"):
            ops.bitlinear(x, small_packed)
    with pytest.raises(TypeError):
        ops.bitlinear(good, "not packed")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        ops.bitlinear([[1.0] * 256], small_packed)


def test_bitlinear_bad_out(small_packed):
    x = np.ones((2, 256), dtype=np.float32)
    with pytest.raises(ValueError, match=r"out has shape \[2, 7\], expected \[2, 8\]"):
        ops.bitlinear(x, small_packed, out=np.empty((2, 7), dtype=np.float32))
    with pytest.raises(TypeError, match="float32"):
        ops.bitlinear(x, small_packed, out=np.empty((2, 8), dtype=np.float64))
    with pytest.raises(ValueError, match="contiguous"):
        ops.bitlinear(x, small_packed, out=np.empty((8, 2), dtype=np.float32).T)
    ro = np.empty((2, 8), dtype=np.float32)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        ops.bitlinear(x, small_packed, out=ro)
    buf = np.ones((2, 256), dtype=np.float32)
    alias = np.lib.stride_tricks.as_strided(buf, (2, 8), (32, 4))  # contiguous view into x
    with pytest.raises(ValueError, match="overlaps"):
        ops.bitlinear(buf, small_packed, out=alias)


def test_bitlinear_cuda_tensor_rejected():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    t = np.zeros((8, 256), dtype=np.int8)
    with pytest.raises(ValueError, match="CPU"):
        ops.bitlinear(torch.ones(2, 256, device="cuda"), ops.pack(t, "native", 1.0))

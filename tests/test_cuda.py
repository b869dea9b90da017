"""CUDA backend (docs/cuda.md): build/availability behaviour, the W2G / Q8G host layouts, and
every kernel against the CPU implementation and a float64 PyTorch/numpy reference.

Kernel tests skip without a usable GPU (the reason is bitnet.cuda.reason()); the status, error
and layout tests run everywhere (the layout ones need a CUDA build, not a GPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bitnet
import bitnet.cuda
from bitnet import _ext, ops

C = _ext.cuda
HAVE_GPU = bitnet.cuda.is_available()
gpu = pytest.mark.skipif(not HAVE_GPU, reason=bitnet.cuda.reason() or "CUDA is available")
built = pytest.mark.skipif(not bitnet.cuda.built_with_cuda(), reason="built without CUDA")
no_gpu = pytest.mark.skipif(HAVE_GPU, reason="a CUDA device is available")

# Host-side repackers: they run in a CUDA build even without a device.
HOST_ENTRY_POINTS = {"w2g_from_ternary", "w2g_from_k256", "q8g_from_q8_0"}


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def ternary(r: np.random.Generator, n: int, k: int) -> np.ndarray:
    return r.integers(-1, 2, size=(n, k)).astype(np.int8)


# ------------------------------------------------------------------ status (runs everywhere)
def test_status_is_consistent() -> None:
    assert set(C.ENTRY_POINTS) >= HOST_ENTRY_POINTS
    for name in C.ENTRY_POINTS:
        assert callable(getattr(C, name)), name
    if bitnet.cuda.is_available():
        assert bitnet.cuda.reason() == ""
        assert bitnet.cuda.built_with_cuda()
        assert bitnet.cuda.device_name()
    else:
        assert bitnet.cuda.reason(), "unavailable CUDA must say why"
        if bitnet.cuda.built_with_cuda():
            assert bitnet.cuda.reason().startswith(("no CUDA driver or device:", "no CUDA device"))
        else:
            assert bitnet.cuda.reason().startswith("built without CUDA")


def valid_arguments() -> dict[str, tuple]:
    """Well-formed arguments for every entry point (so a raise comes from the missing GPU)."""
    x = np.ones((2, 64), np.float32)
    x3 = np.ones((2, 2, 8), np.float32)
    t = np.zeros((3, 64), np.int8)
    w = np.full((3, 4), 0x55555555, np.uint32)
    q8 = np.zeros(3 * 2 * 34, np.uint8)
    return {
        "w2g_from_ternary": (t,),
        "w2g_from_k256": (np.full(3 * 64, 0x55, np.uint8), 3, 64),
        "q8g_from_q8_0": (q8, 3, 64),
        "act_quant": (x,),
        "gemv_w2a8": (x, w, 1.0),
        "gemm_w2a8": (x, w, 1.0),
        "rmsnorm": (x, np.ones(64, np.float32), 1e-5),
        "rope_neox": (x3, np.zeros(2, np.int64), 1e4),
        "attention": (x3, x3, x3, 0),
        "relu2_mul": (x, x),
        "head_f16": (x, np.ones((3, 64), np.float16)),
        "head_q8_0": (x, q8, 3, 64),
        "argmax": (x[0],),
        "topk": (x[0], 2),
        "sample_topk": (x[0], 2, 1.0, 0.5),
    }


@no_gpu
def test_entry_points_raise_without_gpu() -> None:
    reason = bitnet.cuda.reason()
    args = valid_arguments()
    assert set(args) == set(C.ENTRY_POINTS)
    for name, a in args.items():
        if bitnet.cuda.built_with_cuda() and name in HOST_ENTRY_POINTS:
            getattr(C, name)(*a)  # host code: works without a device
            continue
        with pytest.raises(RuntimeError, match="bitnet CUDA backend: ") as info:
            getattr(C, name)(*a)
        assert reason in str(info.value)
    with pytest.raises(RuntimeError, match="CUDA"):
        bitnet.cuda.device_name()
    with pytest.raises(RuntimeError, match="not available"):
        bitnet.cuda.require()


@no_gpu
def test_model_load_cuda_raises_clear_error() -> None:
    for dev in ("cuda", "cuda:0", "CUDA"):
        with pytest.raises(RuntimeError, match="CUDA backend is not available") as info:
            bitnet.Model.load(device=dev)
        assert bitnet.cuda.reason() in str(info.value)
        assert "device='cpu'" in str(info.value)


def test_model_load_bad_device() -> None:
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        bitnet.Model.load(device="tpu")


# ------------------------------------------------------------------ W2G layout (host)
def w2g_reference(t: np.ndarray) -> np.ndarray:
    """The W2G layout from its definition: value k of a row in word k // 16 at bit
    8 * b + 2 * i with j = k % 16, i = j // 4, b = j % 4, code t + 1; padding code 1."""
    n, k = t.shape
    kp = -(-k // 64) * 64
    codes = np.ones((n, kp), np.uint64)
    codes[:, :k] = (t.astype(np.int64) + 1).astype(np.uint64)
    j = np.arange(kp) % 16
    shift = (8 * (j % 4) + 2 * (j // 4)).astype(np.uint64)
    words = (codes << shift).reshape(n, kp // 16, 16).sum(axis=2)  # disjoint bits: sum == or
    return words.astype(np.uint32)


def w2g_dot_emulated(words: np.ndarray, q: np.ndarray) -> np.ndarray:
    """What the GEMV computes per (row, token), emulated in numpy from the words: for each word
    and extraction i, (w >> 2i) & 0x03030303 as 4 bytes times 4 consecutive int8 (dp4a)."""
    n, nw = words.shape
    acc = np.zeros((q.shape[0], n), np.int64)
    for i in range(4):
        ext = ((words >> np.uint32(2 * i)) & np.uint32(0x03030303)).view(np.uint8)
        ext = ext.reshape(n, nw, 4).astype(np.int64)  # bytes b = 0..3, little-endian
        # values 16 w + 4 i + b of the activations
        idx = (np.arange(nw)[:, None] * 16 + 4 * i + np.arange(4)[None, :]).reshape(-1)
        acc += q[:, idx].astype(np.int64) @ ext.reshape(n, -1).T
    return acc


@built
@pytest.mark.parametrize("n,k", [(1, 1), (3, 63), (5, 64), (7, 65), (4, 300), (2, 2560)])
def test_w2g_from_ternary_matches_definition(n: int, k: int) -> None:
    t = ternary(rng(n * 1000 + k), n, k)
    w = C.w2g_from_ternary(t)
    assert w.dtype == np.uint32 and w.shape == (n, -(-k // 64) * 4)
    np.testing.assert_array_equal(w, w2g_reference(t))
    # The K256 (CPU kernel layout) route gives the same words.
    k256 = np.frombuffer(ops.pack(t, "native", 1.0).tobytes(), np.uint8)
    np.testing.assert_array_equal(C.w2g_from_k256(k256, n, k), w)
    # The dp4a extraction the kernels rely on recovers sum_k code * q (exact integers).
    q = rng(k).integers(-128, 128, size=(3, w.shape[1] * 16)).astype(np.int8)
    q[:, k:] = 0
    codes = t.astype(np.int64) + 1
    np.testing.assert_array_equal(w2g_dot_emulated(w, q), q[:, :k].astype(np.int64) @ codes.T)


@built
def test_w2g_errors() -> None:
    t = np.zeros((2, 10), np.int8)
    t[1, 3] = 2
    with pytest.raises(ValueError, match="flat index 13 is not in"):
        C.w2g_from_ternary(t)
    with pytest.raises(TypeError, match="dtype int8"):
        C.w2g_from_ternary(t.astype(np.int32))
    with pytest.raises(ValueError, match="2-D"):
        C.w2g_from_ternary(t[0])
    with pytest.raises(ValueError, match="expected 128"):
        C.w2g_from_k256(np.zeros(64, np.uint8), 2, 10)
    bad = np.full(64, 0xFF, np.uint8)  # code 3 everywhere
    with pytest.raises(ValueError, match="code 3"):
        C.w2g_from_k256(bad, 1, 10)


@built
@pytest.mark.parametrize("rows,cols", [(1, 32), (3, 96), (17, 2560)])
def test_q8g_from_q8_0(rows: int, cols: int) -> None:
    x = rng(rows + cols).standard_normal((rows, cols)).astype(np.float32)
    data = np.frombuffer(ops.quantize_blocks(x, "q8_0").tobytes(), np.uint8)
    qs, d = C.q8g_from_q8_0(data, rows, cols)
    blocks = data.reshape(rows, cols // 32, 34)
    np.testing.assert_array_equal(d, blocks[:, :, :2].copy().view(np.float16)[..., 0])
    np.testing.assert_array_equal(qs, blocks[:, :, 2:].view(np.int8).reshape(rows, cols))
    # Together they dequantize to exactly what the CPU dequantizer gives.
    deq = ops.dequantize_blocks(data, "q8_0", (rows, cols))
    np.testing.assert_array_equal(np.repeat(d, 32, axis=1) * qs.astype(np.float32), deq)
    with pytest.raises(ValueError, match="multiple of 32"):
        C.q8g_from_q8_0(data, rows, cols + 1)


# ------------------------------------------------------------------ kernels (GPU)
def act_quant_torch(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """formats.md section 1 in PyTorch fp32 (127 / t is reciprocal(t) * 127 in PyTorch)."""
    xt = torch.from_numpy(x)
    s = 127.0 / xt.abs().amax(dim=1).clamp(min=1e-5)
    q = (xt * s[:, None]).round().clamp(-128, 127).to(torch.int8)
    return q.numpy(), s.numpy()


@gpu
@pytest.mark.parametrize("m,k", [(1, 1), (1, 2560), (3, 65), (8, 6912), (33, 1000)])
def test_act_quant_bit_exact(m: int, k: int) -> None:
    x = (rng(m * k).standard_normal((m, k)) * 3).astype(np.float32)
    x[0, 0] = 0.5 / 127 * abs(x[0]).max()  # exercise round-half cases near the scale
    q, s, qsum = C.act_quant(x)
    kp = -(-k // 64) * 64
    assert q.shape == (m, kp) and not q[:, k:].any()
    q_cpu, s_cpu = ops.quantize_activations(x)
    np.testing.assert_array_equal(q[:, :k], q_cpu)  # integer path: exact
    np.testing.assert_array_equal(s, s_cpu)
    q_t, s_t = act_quant_torch(x)
    np.testing.assert_array_equal(q[:, :k], q_t)
    np.testing.assert_array_equal(s, s_t)
    np.testing.assert_array_equal(qsum, q.astype(np.int64).sum(axis=1))
    # all-zero row: amax clamps to 1e-5
    q0, s0, _ = C.act_quant(np.zeros((1, 7), np.float32), k_pad=7)
    assert (
        q0.shape == (1, 7) and not q0.any() and s0[0] == np.float32(127.0) * (1 / np.float32(1e-5))
    )


@gpu
def test_act_quant_errors() -> None:
    x = np.ones((3, 10), np.float32)
    x[1, 4] = np.nan
    with pytest.raises(ValueError, match="row 1 of the input holds NaN or Inf"):
        C.act_quant(x)
    with pytest.raises(ValueError, match="k_pad 5 < K 10"):
        C.act_quant(np.ones((1, 10), np.float32), k_pad=5)
    with pytest.raises(TypeError, match="float32"):
        C.act_quant(np.ones((1, 10)))


W2A8_SHAPES = [
    (1, 1, 1),
    (1, 37, 100),
    (1, 2560, 2560),
    (2, 96, 6912),
    (5, 130, 64),
    (17, 70, 300),
    (64, 64, 64),
    (130, 257, 1000),
]


@gpu
@pytest.mark.parametrize("kernel", ["gemv_w2a8", "gemm_w2a8"])
@pytest.mark.parametrize("m,n,k", W2A8_SHAPES)
def test_w2a8_matches_cpu_bitlinear(kernel: str, m: int, n: int, k: int) -> None:
    r = rng(m * 7 + n * 11 + k)
    t = ternary(r, n, k)
    x = r.standard_normal((m, k)).astype(np.float32)
    scale = float(np.float32(0.0123))
    y = getattr(C, kernel)(x, C.w2g_from_ternary(t), scale)
    assert y.shape == (m, n) and y.dtype == np.float32
    # Same integer sums and the same fp32 epilogue as the CPU kernels: bit-exact.
    np.testing.assert_array_equal(y, ops.bitlinear(x, ops.pack(t, "native", scale)))
    # float64 reference from the formulas: only the fp32 epilogue rounds (2 roundings).
    q, s = act_quant_torch(x)
    ref = (q.astype(np.float64) @ t.astype(np.float64).T) / s.astype(np.float64)[:, None] * scale
    np.testing.assert_allclose(y, ref, rtol=3e-7, atol=0)


@gpu
def test_w2a8_errors() -> None:
    t = ternary(rng(1), 8, 100)
    w = C.w2g_from_ternary(t)
    with pytest.raises(ValueError, match="words per row"):
        C.gemv_w2a8(np.ones((1, 200), np.float32), w, 1.0)
    x = np.ones((2, 100), np.float32)
    x[1, 0] = np.inf
    with pytest.raises(ValueError, match="gemm_w2a8: row 1"):
        C.gemm_w2a8(x, w, 1.0)


@gpu
@pytest.mark.parametrize("m,n", [(1, 1), (1, 2560), (7, 100), (33, 6912)])
def test_rmsnorm(m: int, n: int) -> None:
    r = rng(m + n)
    x = (r.standard_normal((m, n)) * 4).astype(np.float32)
    w = r.standard_normal(n).astype(np.float32)
    y = C.rmsnorm(x, w, 1e-5)
    # Same fp32 operations as the CPU; only the double sum's order differs, which can move the
    # fp32 mean (hence r) by 1 ulp: relative 2^-23 on each output, two more roundings after.
    np.testing.assert_allclose(y, _ext.nn.rmsnorm(x, w, 1e-5), rtol=4e-7, atol=0)
    x64 = torch.from_numpy(x).double()
    ref = (
        x64
        * torch.rsqrt(x64.pow(2).mean(dim=1, keepdim=True) + 1e-5)
        * torch.from_numpy(w).double()
    )
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-6, atol=1e-30)


@gpu
@pytest.mark.parametrize("m,h,d", [(1, 20, 128), (5, 3, 2), (9, 4, 64), (2, 1, 130)])
def test_rope_neox(m: int, h: int, d: int) -> None:
    r = rng(m * h * d)
    x = r.standard_normal((m, h, d)).astype(np.float32)
    pos = r.integers(0, 4096, size=m)
    y = C.rope_neox(x, pos, 500000.0)
    # Same fp32 formula and table values as the CPU up to a rare 1-ulp cos/sin difference.
    np.testing.assert_allclose(y, _ext.nn.rope_neox(x, pos, 500000.0), rtol=0, atol=4e-7 * 4)
    half = d // 2
    # The formula of nn.h: inv_freq = 1 / fp32(theta^(fp32(2i) / fp32(d))) and the angle
    # p * inv_freq in fp32 (as transformers computes them); cos/sin and the rotation in float64.
    expo = np.arange(0, d, 2, dtype=np.float32) / np.float32(d)
    inv = np.float32(1.0) / (500000.0 ** expo.astype(np.float64)).astype(np.float32)
    ang = (pos[:, None].astype(np.float32) * inv[None, :]).astype(np.float64)
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    lo, hi = x[..., :half].astype(np.float64), x[..., half:].astype(np.float64)
    ref = np.concatenate([lo * c - hi * s, hi * c + lo * s], axis=-1)
    # fp32 cos/sin (2^-24 relative each) and three fp32 roundings: a few 2^-24 * max|x|.
    np.testing.assert_allclose(y, ref, rtol=0, atol=8 * 2.0**-24 * np.abs(x).max())
    with pytest.raises(ValueError, match="out of range"):
        C.rope_neox(x, np.full(m, 1 << 24), 500000.0)
    with pytest.raises(ValueError, match="odd"):
        C.rope_neox(np.ones((1, 1, 3), np.float32), np.zeros(1, np.int64), 1e4)


def attention_torch(q: np.ndarray, k: np.ndarray, v: np.ndarray, n_past: int) -> np.ndarray:
    qt, kt, vt = (torch.from_numpy(a).double() for a in (q, k, v))
    m, h, d = q.shape
    group = h // k.shape[1]
    out = torch.empty(m, h, d, dtype=torch.float64)
    for i in range(m):
        n = n_past + i + 1
        for hh in range(h):
            s = (kt[:n, hh // group] @ qt[i, hh]) / d**0.5
            out[i, hh] = torch.softmax(s, dim=0) @ vt[:n, hh // group]
    return out.numpy()


@gpu
@pytest.mark.parametrize(
    "m,n_past,h,hkv,d",
    [
        (1, 0, 1, 1, 1),
        (1, 99, 20, 5, 128),
        (7, 0, 4, 2, 64),
        (13, 50, 6, 3, 130),
        (1, 5000, 4, 1, 32),
        (2, 14000, 2, 1, 16),  # 56 KB of scores: the > 48 KiB shared-memory opt-in path
    ],
)
def test_attention(m: int, n_past: int, h: int, hkv: int, d: int) -> None:
    r = rng(m + n_past + h + d)
    L = n_past + m + 3  # extra cache rows beyond the last query must be ignored
    q = r.standard_normal((m, h, d)).astype(np.float32)
    k = r.standard_normal((L, hkv, d)).astype(np.float32)
    v = r.standard_normal((L, hkv, d)).astype(np.float32)
    out = C.attention(q, k, v, n_past)
    # fp32 with other summation orders and expf vs the CPU's polynomial exp (~2 ulp): scores
    # differ by ~d * 2^-24 * |q||k|, outputs by a few ulp of max|v|.
    np.testing.assert_allclose(
        out, _ext.nn.attention(q, k, v, n_past), rtol=1e-5, atol=2e-6 * d**0.5
    )
    np.testing.assert_allclose(out, attention_torch(q, k, v, n_past), rtol=1e-5, atol=2e-6 * d**0.5)


@gpu
def test_attention_errors() -> None:
    q = np.ones((2, 4, 8), np.float32)
    kv = np.ones((3, 3, 8), np.float32)
    with pytest.raises(ValueError, match="not a multiple of n_head_kv"):
        C.attention(q, kv, kv, 0)
    kv = np.ones((3, 2, 8), np.float32)
    with pytest.raises(ValueError, match="n_past 2 \\+ 2 queries > 3 keys"):
        C.attention(q, kv, kv, 2)


@gpu
@pytest.mark.parametrize("m,n", [(1, 1), (1, 6912), (5, 1001)])
def test_relu2_mul_bit_exact(m: int, n: int) -> None:
    r = rng(m * n)
    g = r.standard_normal((m, n)).astype(np.float32)
    u = r.standard_normal((m, n)).astype(np.float32)
    h = C.relu2_mul(g, u)
    np.testing.assert_array_equal(h, _ext.nn.gated_activation(g, u, "relu2"))
    gt = torch.from_numpy(g)
    np.testing.assert_array_equal(
        h, (torch.relu(gt) * torch.relu(gt) * torch.from_numpy(u)).numpy()
    )
    with pytest.raises(ValueError, match="same shape"):
        C.relu2_mul(g, u[:, :-1] if n > 1 else np.ones((m, 2), np.float32))


@gpu
@pytest.mark.parametrize("m,rows,cols", [(1, 1, 8), (1, 1000, 2560), (3, 77, 100), (2, 33, 7)])
def test_head_f16(m: int, rows: int, cols: int) -> None:
    r = rng(m + rows + cols)
    x = r.standard_normal((m, cols)).astype(np.float32)
    w = r.standard_normal((rows, cols)).astype(np.float16)
    y = C.head_f16(x, w)
    dense = _ext.DenseMatrix("f16", rows, cols, w.view(np.uint8).reshape(-1))
    exact = x.astype(np.float64) @ w.astype(np.float64).T
    # fp32 accumulation bound (dense_kernels.h): cols * 2^-24 * sum |x w|, for each of GPU, CPU.
    bound = cols * 2.0**-24 * (np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64).T)
    assert np.all(np.abs(y - exact) <= bound + 1e-30)
    assert np.all(np.abs(y - dense.matmul(x)) <= 2 * bound + 1e-30)


@gpu
@pytest.mark.parametrize("m,rows,cols", [(1, 1, 32), (1, 1000, 2560), (4, 77, 96)])
def test_head_q8_0(m: int, rows: int, cols: int) -> None:
    r = rng(m + rows + cols)
    x = (r.standard_normal((m, cols)) * 2).astype(np.float32)
    w = r.standard_normal((rows, cols)).astype(np.float32)
    data = np.frombuffer(ops.quantize_blocks(w, "q8_0").tobytes(), np.uint8)
    y = C.head_q8_0(x, data, rows, cols)
    cpu = _ext.DenseMatrix("q8_0", rows, cols, data).matmul(x)
    # Both quantize x identically (ggml's Q8_0) and sum exact block dots in fp32 in different
    # orders: each within (nb + 16) * 2^-24 * sum_b D_b |dot_b| <= that factor times
    # |x_q| @ |w_q|^T, and |x_q| <= |x| * (1 + 1/254) + d_x / 2 elementwise.
    nb = cols // 32
    wdeq = ops.dequantize_blocks(data, "q8_0", (rows, cols)).astype(np.float64)
    mag = (np.abs(x).astype(np.float64) * 1.01 + np.abs(x).max() / 254) @ np.abs(wdeq).T
    np.testing.assert_array_less(np.abs(y - cpu), 2 * (nb + 16) * 2.0**-24 * mag + 1e-30)
    x_bad = x.copy()
    x_bad[-1, 3] = np.nan
    with pytest.raises(ValueError, match=f"row {m - 1} of x holds NaN"):
        C.head_q8_0(x_bad, data, rows, cols)


def order(logits: np.ndarray) -> np.ndarray:
    """Finite ids in the sampler's order: value descending, then id ascending."""
    ids = np.nonzero(np.isfinite(logits))[0]
    return ids[np.lexsort((ids, -logits[ids].astype(np.float64)))]


def planted_logits(seed: int, v: int) -> np.ndarray:
    r = rng(seed)
    logits = (r.standard_normal(v) * 3).astype(np.float32)
    logits[r.integers(0, v, 5)] = logits.max()  # ties at the top
    logits[r.integers(0, v, 5)] = -np.inf  # masked tokens
    return logits


@gpu
@pytest.mark.parametrize("v", [1, 2, 1000, 128256])
def test_argmax(v: int) -> None:
    logits = planted_logits(v, v) if v > 1 else np.array([0.5], np.float32)
    logits = np.where(np.isfinite(logits), logits, np.float32(-1)) if v <= 2 else logits
    assert C.argmax(logits) == int(np.argmax(logits))  # np.argmax: first (lowest) id of ties
    bad = logits.copy()
    bad[v // 2] = np.nan
    with pytest.raises(ValueError, match=f"logit {v // 2} is NaN"):
        C.argmax(bad)


@gpu
@pytest.mark.parametrize("v,k", [(10, 3), (1000, 40), (128256, 50), (7, 20)])
def test_topk(v: int, k: int) -> None:
    logits = planted_logits(v + k, v)
    vals, ids = C.topk(logits, k)
    want = order(logits)[:k]
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_array_equal(vals, logits[want])
    with pytest.raises(ValueError, match="k = 0 not in"):
        C.topk(logits, 0)


@gpu
@pytest.mark.parametrize("v,k,temp", [(1000, 40, 0.8), (128256, 50, 1.0), (50, 5, 2.5)])
def test_sample_topk(v: int, k: int, temp: float) -> None:
    logits = planted_logits(v * 3 + k, v)
    cand = order(logits)[:k]
    x = logits[cand].astype(np.float64) / temp
    w = np.exp(x - x[0])
    cum = np.cumsum(w)
    params = _ext.SamplerParams()
    params.temperature, params.top_k = temp, k
    sampler = _ext.Sampler(params, v)
    dist = sampler.distribution(logits, np.zeros(0, np.int32))
    for i in range(len(cand)):
        # u at the middle of candidate i's interval: no rounding can move the draw.
        u = ((cum[i - 1] if i else 0.0) + w[i] / 2) / cum[-1]
        tok, prob = C.sample_topk(logits, k, temp, u)
        assert tok == cand[i]
        assert sampler.sample_at(logits, np.zeros(0, np.int32), u) == tok
        # float64 probability vs the CPU's float32 distribution: 2^-24 relative.
        np.testing.assert_allclose(prob, dist[tok], rtol=2e-7)
    with pytest.raises(ValueError, match="temperature > 0"):
        C.sample_topk(logits, k, 0.0, 0.5)

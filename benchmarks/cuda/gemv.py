"""W2A8 GEMV on the GPU versus a torch bf16 matmul (docs/cuda.md).

For each N x K of the BitNet b1.58 2B4T (2560 x 2560 ... 13824 x 2560 / 2560 x 6912) and a 3B-class
model (3200 x 3200, 20480 x 3200): the median microseconds of the dp4a GEMV (one token, CUDA
events per launch, kernel only: activations already quantized) and of ``torch.matmul`` on bf16
weights of the same shape, and the bandwidth each reaches (weight bytes / time) against the
device's measured copy bandwidth. Exits with a message when no GPU is usable.

    PYTHONPATH=build/<dir>/pkg python benchmarks/cuda/gemv.py [--iters 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys

SHAPES = [(2560, 2560), (3840, 2560), (13824, 2560), (2560, 6912), (3200, 3200), (20480, 3200)]


def torch_bf16_us(n: int, k: int, iters: int) -> float | None:
    """Median microseconds of x[1, K] @ W[N, K]^T in bf16 with torch on the GPU, or None."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        torch.matmul(x, w.t())
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        torch.matmul(x, w.t())
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3)
    return statistics.median(times)


def main() -> int:
    """Runs the benchmark and prints one table row per shape."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=200)
    args = parser.parse_args()

    import bitnet.cuda
    from bitnet import _ext

    if not bitnet.cuda.is_available():
        print(f"benchmarks/cuda/gemv.py: no usable GPU: {bitnet.cuda.reason()}", file=sys.stderr)
        return 1
    c = _ext.cuda
    copy_gbs = c.device_copy_bandwidth(1 << 28, 20)
    print(f"device: {c.device_name()}; measured copy bandwidth {copy_gbs:.0f} GB/s (read+write)")
    head = f"{'N x K':>13} {'w2a8 us':>9} {'GB/s':>7} {'%copy':>6}"
    print(f"{head} {'bf16 us':>9} {'GB/s':>7} {'speedup':>8}")
    for n, k in SHAPES:
        us = statistics.median(c.time_w2a8(1, n, k, False, args.iters))
        w_bytes = n * (-(-k // 64) * 16)  # W2G: 2 bits per weight, K padded to 64
        gbs = w_bytes / (us * 1e-6) / 1e9
        bf = torch_bf16_us(n, k, args.iters)
        bf_cols = (
            f"{bf:9.1f} {2 * n * k / (bf * 1e-6) / 1e9:7.0f} {bf / us:7.2f}x"
            if bf is not None
            else f"{'n/a':>9} {'':>7} {'':>8}"
        )
        print(f"{n:>6} x {k:<5} {us:9.1f} {gbs:7.0f} {100 * gbs / copy_gbs:5.0f}% {bf_cols}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

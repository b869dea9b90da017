"""Quantization helpers.

:mod:`bitnet.quant.reference` holds plain numpy reference implementations of BitNet b1.58's
quantizers and of every ternary storage format (I2_S, TQ1_0, TQ2_0 and the kernels' K256
"native" layout), written from ``docs/formats.md``. They are slow but simple, and the tests
check the C++ core against them bit for bit.
"""

from __future__ import annotations

from . import reference

__all__ = ["reference"]

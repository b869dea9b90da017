"""``bitnet bench``: benchmarks run from the command line.

:mod:`.kernels` is ``bitnet bench kernels`` (the benchmark and its entry point :func:`main`),
:mod:`.machine` the machine facts and timing it relies on, :mod:`.report` its text tables.
"""

from __future__ import annotations

from .kernels import main

__all__ = ["main"]

"""bitnet-ext: 1.58-bit BitNet models on CPU (and NVIDIA GPUs).

The tensor-level API lives in :mod:`bitnet.ops`; threads are shared by everything::

    import bitnet
    bitnet.set_num_threads(2)
"""

from __future__ import annotations

from . import ops
from .ops import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = ["ops", "set_num_threads", "get_num_threads", "__version__"]

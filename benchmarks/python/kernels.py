"""Full kernel benchmark: every 2B4T shape, every ISA, 1 and N threads, and the 30-layer decode
sweep, against the measured read bandwidth, int8 peak and torch fp32.

Same as ``bitnet bench kernels --full``; takes the same flags (``--threads``, ``--isa``,
``--repeats``, ``--json``). Reproduces the tables of docs/performance.md::

    python benchmarks/python/kernels.py
    python benchmarks/python/kernels.py --threads 2 --isa avx2 avx512_vnni --json > out.json
"""

from __future__ import annotations

import sys

from bitnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "kernels", "--full", *sys.argv[1:]]))

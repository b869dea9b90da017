"""bitnet-ext: 1.58-bit BitNet models on CPU (and NVIDIA GPUs).

Run a model::

    import bitnet
    model = bitnet.Model.load()          # the small Shakespeare model shipped in the package
    model = bitnet.Model.load("model.gguf", threads=2)   # or a GGUF / Hugging Face repo id
    print(model.generate("Hello", max_new_tokens=32))

The tensor-level API lives in :mod:`bitnet.ops`; threads are shared by everything::

    bitnet.set_num_threads(2)

``bitnet.Model`` (:mod:`bitnet.model`) is imported on first use, so ``import bitnet`` stays fast
and needs neither torch nor tokenizers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import ops
from .ops import get_num_threads, set_num_threads

if TYPE_CHECKING:
    from pathlib import Path

    from .model import Model, ModelConfig

    DEFAULT_MODEL: Path
    from .tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "Model",
    "ModelConfig",
    "Tokenizer",
    "ops",
    "set_num_threads",
    "get_num_threads",
    "__version__",
]

_LAZY = {
    "DEFAULT_MODEL": "model",
    "Model": "model",
    "ModelConfig": "model",
    "Tokenizer": "tokenizer",
}


def __getattr__(name: str) -> Any:
    """Imports ``Model``, ``ModelConfig``, ``Tokenizer`` and ``DEFAULT_MODEL`` on first access."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bitnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

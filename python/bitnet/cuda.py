"""Status of the CUDA backend (docs/cuda.md).

The package always imports: a build without CUDA, or a machine without a GPU or driver, runs
everything on CPU, and these functions say why CUDA is not usable. ``bitnet._ext.cuda`` holds the
per-kernel test entry points.
"""

from __future__ import annotations

from . import _ext

__all__ = ["built_with_cuda", "device_name", "is_available", "reason"]


def built_with_cuda() -> bool:
    """True when this installation was compiled with the CUDA backend (``BITNET_CUDA``)."""
    return bool(_ext.cuda.built_with_cuda())


def is_available() -> bool:
    """True when the CUDA backend is compiled in and a CUDA driver and device are usable."""
    return bool(_ext.cuda.available())


def reason() -> str:
    """Why :func:`is_available` is False (``""`` when it is True).

    Either ``"built without CUDA ..."`` or ``"no CUDA driver or device: <CUDA error>"`` /
    ``"no CUDA device found"``.
    """
    return str(_ext.cuda.reason())


def device_name() -> str:
    """Name of CUDA device 0; raises RuntimeError with :func:`reason` when unavailable."""
    return str(_ext.cuda.device_name())


def require() -> None:
    """Raises RuntimeError naming the reason when the CUDA backend cannot be used."""
    if not is_available():
        raise RuntimeError(f"the CUDA backend is not available: {reason()}")

"""The one exception type of :mod:`bitnet.convert`."""

from __future__ import annotations

__all__ = ["ConversionError"]


class ConversionError(ValueError):
    """A checkpoint cannot be converted: missing or malformed file, unknown architecture, missing
    tensor, wrong shape or dtype, a row length the chosen type cannot hold, corrupt packed data,
    or an unusable destination.

    The message names the file, key, tensor and shape at fault. It is a :class:`ValueError`, so
    the ``bitnet`` CLI reports it as one error line.
    """

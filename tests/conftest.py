"""Shared fixtures: run a test once per kernel ISA this machine can execute."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import bitnet
from bitnet import _ext

ISAS = _ext.available_isas()


@pytest.fixture(params=ISAS)
def isa(request: pytest.FixtureRequest) -> Iterator[str]:
    """Forces one ISA through BITNET_MAX_ISA (as a user would) and restores the default."""
    old = os.environ.get("BITNET_MAX_ISA")
    os.environ["BITNET_MAX_ISA"] = request.param
    try:
        assert _ext.reload_dispatch() == request.param
        yield request.param
    finally:
        if old is None:
            os.environ.pop("BITNET_MAX_ISA", None)
        else:
            os.environ["BITNET_MAX_ISA"] = old
        _ext.reload_dispatch()


@pytest.fixture
def threads() -> Iterator[None]:
    """Restores the thread count after a test that changes it."""
    saved = bitnet.get_num_threads()
    yield
    bitnet.set_num_threads(saved)

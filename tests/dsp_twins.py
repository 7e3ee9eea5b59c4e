"""Fixtures giving the DSP tests both implementations of ext.dsp: `impl` (py and c) and `cy` (c only)."""
from __future__ import annotations

from types import ModuleType

import pytest

from ext import dsp_py
from tests.twins import load_twin


@pytest.fixture(params=["py", "c"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return load_twin(request.param, dsp_py, "_dsp")


@pytest.fixture
def cy() -> ModuleType:
    """The built Cython module; under CI a missing build is a failure, not a skip."""
    return load_twin("c", dsp_py, "_dsp")

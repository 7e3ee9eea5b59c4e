"""Loading both implementations of an ext/ hot path for tests that compare them."""
from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def load_twin(name: str, python_twin: ModuleType, compiled: str) -> ModuleType:
    """The twin for "py", the Cython build `ext.<compiled>` for "c".

    Under CI a missing build fails the test instead of skipping it: a skipped "c" test in
    CI would hide a broken install.
    """
    if name == "py":
        return python_twin
    try:
        return importlib.import_module(f"ext.{compiled}")
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Cython build ext.{compiled} missing under CI: {exc}")
        pytest.skip(f"ext.{compiled} not built (make ext)")

"""Chooses between a Cython module and its pure-Python twin, in one place for every hot path.

The Cython build is used unless `TPMON_NO_EXTENSIONS=1` is set or it was not built (a plain
checkout without a compiler): the twin computes the same results, only slower, and
`IMPLEMENTATION` says which one runs so an operator can see it.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType


def choose(compiled: str, twin: str) -> tuple[ModuleType, str]:
    """(module, "cython" | "python") for `ext.<compiled>` or its twin `ext.<twin>`."""
    if os.environ.get("TPMON_NO_EXTENSIONS") != "1":
        try:
            return importlib.import_module(f"ext.{compiled}"), "cython"
        except ImportError:
            pass
    return importlib.import_module(f"ext.{twin}"), "python"

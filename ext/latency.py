"""Selects the latency statistics: the Cython module ext._latency unless TPMON_NO_EXTENSIONS=1 or it is not built."""
from __future__ import annotations

import os

if os.environ.get("TPMON_NO_EXTENSIONS") == "1":
    from ext import latency_py as _impl
else:
    try:
        from ext import _latency as _impl  # type: ignore[attr-defined]
    except ImportError:  # not built (no compiler, plain checkout): the twin behaves the same, slower
        from ext import latency_py as _impl

IMPLEMENTATION: str = "python" if _impl.__name__ == "ext.latency_py" else "cython"
MODULE = _impl

LatencyStats = _impl.LatencyStats

__all__ = ["IMPLEMENTATION", "MODULE", "LatencyStats"]

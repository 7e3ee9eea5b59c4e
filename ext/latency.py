"""Selects the latency statistics: the Cython module ext._latency unless TPMON_NO_EXTENSIONS=1 or it is not built."""
from __future__ import annotations

from ext.twins import choose

_impl, IMPLEMENTATION = choose("_latency", "latency_py")
MODULE = _impl

LatencyStats = _impl.LatencyStats

__all__ = ["IMPLEMENTATION", "MODULE", "LatencyStats"]

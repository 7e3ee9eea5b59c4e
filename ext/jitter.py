"""Selects the jitter buffer: the Cython module ext._jitter unless TPMON_NO_EXTENSIONS=1 or it is not built."""
from __future__ import annotations

import os

from ext.jitter_py import (ACCEPTED, BUFFERING, CORRUPTED, DUPLICATE, KNOB_NAMES, LATE, LOST, OVERFLOW, PLAYED,
                          PLAYING, POLICIES, REBUFFERING, RESYNC, UNDERFLOW, WAIT)

if os.environ.get("TPMON_NO_EXTENSIONS") == "1":
    from ext import jitter_py as _impl
else:
    try:
        from ext import _jitter as _impl  # type: ignore[attr-defined]
    except ImportError:  # not built (no compiler, plain checkout): the twin behaves the same, slower
        from ext import jitter_py as _impl

IMPLEMENTATION: str = "python" if _impl.__name__ == "ext.jitter_py" else "cython"
MODULE = _impl

JitterBuffer = _impl.JitterBuffer

__all__ = ["IMPLEMENTATION", "MODULE", "JitterBuffer", "ACCEPTED", "LATE", "DUPLICATE", "CORRUPTED", "OVERFLOW",
           "RESYNC", "PLAYED", "LOST", "UNDERFLOW", "WAIT", "BUFFERING", "PLAYING", "REBUFFERING", "KNOB_NAMES",
           "POLICIES"]

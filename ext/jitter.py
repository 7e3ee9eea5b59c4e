"""Selects the jitter buffer: the Cython module ext._jitter unless TPMON_NO_EXTENSIONS=1 or it is not built."""
from __future__ import annotations

from ext.jitter_py import (
                          ACCEPTED,
                          BUFFERING,
                          CORRUPTED,
                          DUPLICATE,
                          KNOB_NAMES,
                          LATE,
                          LOST,
                          OVERFLOW,
                          PLAYED,
                          PLAYING,
                          POLICIES,
                          REBUFFERING,
                          RESYNC,
                          UNDERFLOW,
                          WAIT,
)
from ext.twins import choose

_impl, IMPLEMENTATION = choose("_jitter", "jitter_py")
MODULE = _impl

JitterBuffer = _impl.JitterBuffer

__all__ = ["IMPLEMENTATION", "MODULE", "JitterBuffer", "ACCEPTED", "LATE", "DUPLICATE", "CORRUPTED", "OVERFLOW",
           "RESYNC", "PLAYED", "LOST", "UNDERFLOW", "WAIT", "BUFFERING", "PLAYING", "REBUFFERING", "KNOB_NAMES",
           "POLICIES"]

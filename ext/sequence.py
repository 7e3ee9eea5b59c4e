"""Selects the RTP sequence tracker: the Cython module ext._sequence unless TPMON_NO_EXTENSIONS=1 or it is not built."""
from __future__ import annotations

import os

from ext.sequence_py import (BAD, DUPLICATE, MAX_DROPOUT, MAX_MISORDER, MIN_SEQUENTIAL, OUT_OF_ORDER, PROBATION,
                             RESTART, VALID)

if os.environ.get("TPMON_NO_EXTENSIONS") == "1":
    from ext import sequence_py as _impl
else:
    try:
        from ext import _sequence as _impl  # type: ignore[attr-defined]
    except ImportError:  # not built (no compiler, plain checkout): the twin behaves the same, slower
        from ext import sequence_py as _impl

IMPLEMENTATION: str = "python" if _impl.__name__ == "ext.sequence_py" else "cython"
MODULE = _impl

SequenceTracker = _impl.SequenceTracker

__all__ = ["IMPLEMENTATION", "MODULE", "SequenceTracker", "VALID", "OUT_OF_ORDER", "DUPLICATE", "PROBATION", "BAD",
           "RESTART", "MAX_DROPOUT", "MAX_MISORDER", "MIN_SEQUENTIAL"]

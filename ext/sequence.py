"""Selects the RTP sequence tracker: the Cython module ext._sequence unless TPMON_NO_EXTENSIONS=1 or it is not built."""
from __future__ import annotations

from ext.sequence_py import (
                             BAD,
                             DUPLICATE,
                             MAX_DROPOUT,
                             MAX_MISORDER,
                             MIN_SEQUENTIAL,
                             OUT_OF_ORDER,
                             PROBATION,
                             RESTART,
                             VALID,
)
from ext.twins import choose

_impl, IMPLEMENTATION = choose("_sequence", "sequence_py")
MODULE = _impl

SequenceTracker = _impl.SequenceTracker

__all__ = ["IMPLEMENTATION", "MODULE", "SequenceTracker", "VALID", "OUT_OF_ORDER", "DUPLICATE", "PROBATION", "BAD",
           "RESTART", "MAX_DROPOUT", "MAX_MISORDER", "MIN_SEQUENTIAL"]

"""Selects the VAD recursion: the Cython module ext._vad unless TPMON_NO_EXTENSIONS=1 or it is not built."""
from __future__ import annotations

from ext.twins import choose

_impl, IMPLEMENTATION = choose("_vad", "vad_py")
MODULE = _impl

VadTracker = _impl.VadTracker

__all__ = ["IMPLEMENTATION", "MODULE", "VadTracker"]

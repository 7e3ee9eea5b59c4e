"""Real FFTs into preallocated arrays along the last axis, for the 20 ms frame path.

np.fft.rfft/irfft spend about as long in their Python wrapper (norm, axis and dtype
checks, a fresh output array) as in pocketfft for our 512-640 point transforms, and the
frame path makes a dozen calls per frame. numpy 2 implements them as gufuncs in
numpy.fft._pocketfft_umath; calling those with an `out` array is the same computation
(bit for bit: tests/test_dsp_primitives.py checks it) at half the cost. A numpy without
them falls back to the public functions.
"""
from __future__ import annotations

import numpy as np

try:  # numpy >= 2.0
    from numpy.fft import _pocketfft_umath as _pfu
    _RFFT_EVEN, _IRFFT = _pfu.rfft_n_even, _pfu.irfft
except (ImportError, AttributeError):  # pragma: no cover - older numpy
    _RFFT_EVEN = _IRFFT = None


def rfft(x: np.ndarray, n: int, out: np.ndarray) -> np.ndarray:
    """np.fft.rfft(x, n, axis=-1) written into `out` (complex128, last axis n // 2 + 1); n even."""
    if _RFFT_EVEN is None or n % 2:
        out[...] = np.fft.rfft(x, n, axis=-1)
        return out
    return _RFFT_EVEN(x, 1.0, axes=[(-1,), (), (-1,)], out=out)


def irfft(spec: np.ndarray, n: int, out: np.ndarray) -> np.ndarray:
    """np.fft.irfft(spec, n, axis=-1) written into `out` (float64, last axis n)."""
    if _IRFFT is None:
        out[...] = np.fft.irfft(spec, n, axis=-1)
        return out
    return _IRFFT(spec, 1.0 / n, axes=[(-1,), (), (-1,)], out=out)

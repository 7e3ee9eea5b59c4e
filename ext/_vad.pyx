# cython: language_level=3
"""The measurement VAD's per-frame recursion in Cython (see ext/vad_py.py VadTracker: the same arithmetic)."""
import numpy as np

cimport numpy as cnp
from libc.math cimport INFINITY, log1p

cnp.import_array()

import ext.vad_py as _py

cdef double _SMOOTH = _py.SMOOTH
cdef Py_ssize_t _SUB_FRAMES = _py.SUB_FRAMES
cdef Py_ssize_t _SUBWINDOWS = _py.SUBWINDOWS
cdef double _NOISE_ALPHA = _py.NOISE_ALPHA
cdef double _DD_ALPHA = _py.DD_ALPHA
cdef double _XI_MIN = _py.XI_MIN
cdef double _THRESHOLD = _py.THRESHOLD
cdef Py_ssize_t _HANG_AFTER = _py.HANG_AFTER
cdef Py_ssize_t _HANG_FRAMES = _py.HANG_FRAMES
cdef double _TINY = _py.TINY
cdef double _CLAMP = _py.CLAMP


cdef class VadTracker:
    """Decisions for consecutive audible frames of one stream, given their band powers (one row each)."""
    cdef public bint started
    cdef public Py_ssize_t sub_count, slot, filled, run, hang
    cdef Py_ssize_t n
    cdef object _arrays
    cdef double[::1] _weights, _bias, _noise, _smoothed, _prev_clean, _sub_min, _minima_min
    cdef double[:, ::1] _minima

    def __init__(self, weights, bias):
        w = np.array(weights, dtype=np.float64)
        n = len(w)
        self.n = n
        inf = np.inf
        self._arrays = {"weights": w, "bias": np.array(bias, dtype=np.float64), "noise": np.zeros(n),
                        "smoothed": np.zeros(n), "prev_clean": np.zeros(n), "sub_min": np.full(n, inf),
                        "minima_min": np.full(n, inf), "minima": np.full((_SUBWINDOWS, n), inf)}
        a = self._arrays
        self._weights, self._bias, self._noise, self._smoothed = a["weights"], a["bias"], a["noise"], a["smoothed"]
        self._prev_clean, self._sub_min, self._minima_min, self._minima = a["prev_clean"], a["sub_min"], a["minima_min"], a["minima"]
        self.started = False
        self.sub_count = self.slot = self.filled = self.run = self.hang = 0

    @property
    def noise(self):
        return np.array(self._arrays["noise"])

    def classify(self, powers):
        cdef const double[:, ::1] p = np.ascontiguousarray(powers, dtype=np.float64)
        cdef Py_ssize_t rows = p.shape[0], i, b
        if rows and p.shape[1] != self.n:
            raise ValueError(f"expected {self.n} band powers per frame, got {p.shape[1]}")
        out = np.zeros(rows, dtype=bool)
        cdef cnp.uint8_t[::1] ov = out.view(np.uint8)
        cdef bint speech
        for i in range(rows):
            if not self.started:
                for b in range(self.n):
                    self._noise[b] = p[i, b]
                    self._smoothed[b] = p[i, b]
                self.started = True
            speech = self._decide(p[i])
            self._track(p[i], speech)
            self.run = self.run + 1 if speech else 0
            if speech and self.run >= _HANG_AFTER:
                self.hang = _HANG_FRAMES
            elif not speech and self.hang > 0:
                self.hang -= 1
                speech = True
            ov[i] = speech
        return out

    cdef bint _decide(self, const double[::1] power):
        cdef Py_ssize_t b
        cdef double noise, gamma, xi, gain, acc = 0.0
        for b in range(self.n):
            noise = self._noise[b] if self._noise[b] > _TINY else _TINY
            gamma = power[b] / noise
            if gamma > 1e6:
                gamma = 1e6
            xi = _DD_ALPHA * self._prev_clean[b] + (1 - _DD_ALPHA) * (gamma - 1.0 if gamma > 1.0 else 0.0)
            if xi < _XI_MIN:
                xi = _XI_MIN
            acc += self._weights[b] * (gamma * xi / (1 + xi) - log1p(xi))
            gain = xi / (1 + xi)
            self._prev_clean[b] = gain * gain * gamma
        return acc > _THRESHOLD

    cdef void _track(self, const double[::1] power, bint speech):
        cdef Py_ssize_t b, w
        cdef double s, m, floor, lo, hi, x
        for b in range(self.n):
            s = _SMOOTH * self._smoothed[b] + (1 - _SMOOTH) * power[b]
            self._smoothed[b] = s
            if s < self._sub_min[b]:
                self._sub_min[b] = s
        self.sub_count += 1
        if self.sub_count == _SUB_FRAMES:
            for b in range(self.n):
                self._minima[self.slot, b] = self._sub_min[b]
            self.slot = (self.slot + 1) % _SUBWINDOWS
            self.filled = self.filled + 1 if self.filled < _SUBWINDOWS else _SUBWINDOWS
            for b in range(self.n):
                m = INFINITY
                for w in range(self.filled):
                    if self._minima[w, b] < m:
                        m = self._minima[w, b]
                self._minima_min[b] = m
                self._sub_min[b] = INFINITY
            self.sub_count = 0
        for b in range(self.n):
            floor = (self._minima_min[b] if self._minima_min[b] < self._sub_min[b] else self._sub_min[b]) * self._bias[b]
            x = self._noise[b]
            if not speech:
                x = _NOISE_ALPHA * x + (1 - _NOISE_ALPHA) * power[b]
            # The floor carries the estimate through long speech and level changes.
            lo, hi = floor / _CLAMP, floor * _CLAMP
            x = lo if x < lo else x
            self._noise[b] = hi if x > hi else x

    def get_state(self):
        a = self._arrays
        return {"noise": np.array(a["noise"]), "smoothed": np.array(a["smoothed"]), "prev_clean": np.array(a["prev_clean"]),
                "sub_min": np.array(a["sub_min"]), "minima_min": np.array(a["minima_min"]), "run": self.run,
                "hang": self.hang, "sub_count": self.sub_count}

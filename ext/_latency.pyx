# cython: language_level=3
"""Rolling latency statistics in bounded memory (Cython build of ext/latency_py.py, same results)."""
import numpy as np
cimport numpy as cnp
from libc.math cimport NAN, floor, sqrt
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

cnp.import_array()


cdef inline double _lerp(double lower, double upper, double gamma) noexcept nogil:
    """numpy's linear interpolation between neighbouring order statistics, same rounding."""
    cdef double diff = upper - lower
    if gamma >= 0.5:
        return upper - diff * (1.0 - gamma)
    return lower + diff * gamma


def lerp_percentile(double lower, double upper, double gamma):
    return _lerp(lower, upper, gamma)


cdef double _select(double* a, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t k) noexcept nogil:
    """k-th smallest of a[lo..hi] (inclusive), partitioning around it; 3-way so equal keys stay linear."""
    cdef Py_ssize_t lt, gt, i, mid
    cdef double pivot, x, y, z, t
    while hi > lo:
        mid = lo + (hi - lo) // 2
        x, y, z = a[lo], a[mid], a[hi]
        if x > y:
            x, y = y, x
        if y > z:
            y = z
            if x > y:
                y = x
        pivot = y                                   # median of three
        lt, i, gt = lo, lo, hi
        while i <= gt:
            if a[i] < pivot:
                t = a[lt]; a[lt] = a[i]; a[i] = t
                lt += 1
                i += 1
            elif a[i] > pivot:
                t = a[gt]; a[gt] = a[i]; a[i] = t
                gt -= 1
            else:
                i += 1
        if k < lt:
            hi = lt - 1
        elif k > gt:
            lo = gt + 1
        else:
            return pivot
    return a[k]


cdef double _percentile(double* a, Py_ssize_t n, Py_ssize_t start, double p) noexcept nogil:
    """Percentile p of a[0..n-1]; a[0..start-1] are already <= the rest (from an earlier select)."""
    cdef double virtual = (p / 100.0) * <double>(n - 1)
    cdef Py_ssize_t lo = <Py_ssize_t>floor(virtual), hi, j
    cdef double lower, upper
    if lo < start:
        start = 0
    lower = _select(a, start, n - 1, lo)
    hi = lo + 1 if lo + 1 < n else n - 1
    upper = lower
    if hi > lo:
        upper = a[hi]
        for j in range(hi + 1, n):                  # the next order statistic: smallest right of lo
            if a[j] < upper:
                upper = a[j]
    return _lerp(lower, upper, virtual - <double>lo)


cdef class LatencyStats:
    """The last `capacity` values (and, if window_ms > 0, only those of the last window_ms)."""
    cdef double* _values
    cdef double* _times
    cdef double* _scratch
    cdef Py_ssize_t _cap, _head, _count, _w_count
    cdef double _window_ms, _w_sum, _w_min, _w_max

    def __cinit__(self, Py_ssize_t capacity=4096, double window_ms=0.0):
        if capacity < 1:
            raise ValueError(f"capacity: {capacity} must be >= 1")
        if not window_ms >= 0:
            raise ValueError(f"window_ms: {window_ms} must be >= 0")
        self._values = <double*>malloc(capacity * sizeof(double))
        self._times = <double*>malloc(capacity * sizeof(double))
        self._scratch = <double*>malloc(capacity * sizeof(double))
        if self._values == NULL or self._times == NULL or self._scratch == NULL:
            raise MemoryError()
        self._cap = capacity
        self._window_ms = window_ms
        self._head = self._count = 0
        self.reset_window()

    def __dealloc__(self):
        free(self._values)
        free(self._times)
        free(self._scratch)

    @property
    def capacity(self):
        return self._cap

    @property
    def count(self):
        return self._count

    def clear(self):
        self._head = self._count = 0
        self.reset_window()

    def reset_window(self):
        """Start a new per-sample window (min/max/mean of the values added since)."""
        self._w_count = 0
        self._w_sum = 0.0
        self._w_min = NAN
        self._w_max = NAN

    cdef void _expire(self, double now) noexcept nogil:
        cdef double cutoff
        if self._window_ms > 0.0:
            cutoff = now - self._window_ms
            while self._count and self._times[self._head] < cutoff:
                self._head = (self._head + 1) % self._cap
                self._count -= 1

    cdef int _add(self, double value, double now_ms) except -1:
        cdef Py_ssize_t i
        if value != value:
            raise ValueError("LatencyStats.add: value is NaN")
        self._expire(now_ms)
        if self._count == self._cap:
            self._head = (self._head + 1) % self._cap
            self._count -= 1
        i = (self._head + self._count) % self._cap
        self._values[i] = value
        self._times[i] = now_ms
        self._count += 1
        if self._w_count == 0:
            self._w_min = value
            self._w_max = value
        elif value < self._w_min:
            self._w_min = value
        elif value > self._w_max:
            self._w_max = value
        self._w_count += 1
        self._w_sum += value
        return 0

    def add(self, double value, double now_ms=0.0):
        """Record one value (NaN is refused) observed at now_ms."""
        self._add(value, now_ms)

    def add_many(self, values, times_ms=None):
        cdef const double[:] v = np.ascontiguousarray(values, dtype=np.float64)
        cdef const double[:] t
        cdef Py_ssize_t k, n = v.shape[0]
        if times_ms is None:
            for k in range(n):
                self._add(v[k], 0.0)
            return
        t = np.ascontiguousarray(times_ms, dtype=np.float64)
        if t.shape[0] != n:
            raise ValueError("add_many: arrays differ in length")
        for k in range(n):
            self._add(v[k], t[k])

    cdef Py_ssize_t _fill_scratch(self, object now_ms) except -1:
        if now_ms is not None:
            self._expire(<double>now_ms)
        # the ring in two straight runs (oldest first): no modulo per element
        cdef Py_ssize_t first = min(self._count, self._cap - self._head)
        memcpy(self._scratch, self._values + self._head, first * sizeof(double))
        memcpy(self._scratch + first, self._values, (self._count - first) * sizeof(double))
        return self._count

    def percentile(self, double p, now_ms=None):
        """The p-th percentile (0..100) of the window, as numpy.percentile computes it."""
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"percentile: {p} is outside 0..100")
        cdef Py_ssize_t n = self._fill_scratch(now_ms)
        if n == 0:
            return NAN
        return _percentile(self._scratch, n, 0, p)

    def summary(self, now_ms=None):
        """count, min, max, mean, std (population), p50, p95, p99 of the rolling window."""
        cdef Py_ssize_t n = self._fill_scratch(now_ms), k, start
        cdef double total = 0.0, mean, acc = 0.0, lo, hi, v, p50, p95, p99
        if n == 0:
            return {"count": 0, "min": NAN, "max": NAN, "mean": NAN, "std": NAN,
                    "p50": NAN, "p95": NAN, "p99": NAN}
        lo = hi = self._scratch[0]
        for k in range(n):              # plain left-to-right sum, as the Python twin does
            v = self._scratch[k]
            total += v
            if v < lo:
                lo = v
            if v > hi:
                hi = v
        mean = total / <double>n
        for k in range(n):
            v = self._scratch[k]
            acc += (v - mean) * (v - mean)
        # ascending percentiles: each select works right of the previous one
        p50 = _percentile(self._scratch, n, 0, 50.0)
        start = <Py_ssize_t>floor(0.5 * <double>(n - 1))
        p95 = _percentile(self._scratch, n, start + 1, 95.0)
        start = <Py_ssize_t>floor(0.95 * <double>(n - 1))
        p99 = _percentile(self._scratch, n, start + 1, 99.0)
        return {"count": n, "min": lo, "max": hi, "mean": mean, "std": sqrt(acc / <double>n),
                "p50": p50, "p95": p95, "p99": p99}

    def window(self):
        """count, min, max, mean of the values added since reset_window()."""
        cdef Py_ssize_t n = self._w_count
        return {"count": n, "min": self._w_min, "max": self._w_max,
                "mean": self._w_sum / <double>n if n else NAN}

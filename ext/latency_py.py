"""Rolling latency statistics in bounded memory (pure-Python twin of ext/_latency.pyx)."""
from __future__ import annotations

import math

import numpy as np

_NAN = math.nan


def lerp_percentile(lower: float, upper: float, gamma: float) -> float:
    """numpy's linear interpolation between neighbouring order statistics, same rounding."""
    diff = upper - lower
    if gamma >= 0.5:
        return upper - diff * (1.0 - gamma)
    return lower + diff * gamma


class LatencyStats:
    """The last `capacity` values (and, if window_ms > 0, only those of the last window_ms)."""

    def __init__(self, capacity: int = 4096, window_ms: float = 0.0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity: {capacity} must be >= 1")
        if not window_ms >= 0:
            raise ValueError(f"window_ms: {window_ms} must be >= 0")
        self._cap = int(capacity)
        self._window_ms = float(window_ms)
        self._values = [0.0] * self._cap
        self._times = [0.0] * self._cap
        self._head = 0          # index of the oldest value
        self._count = 0
        self.reset_window()

    @property
    def capacity(self) -> int:
        return self._cap

    @property
    def count(self) -> int:
        return self._count

    def clear(self) -> None:
        self._head = self._count = 0
        self.reset_window()

    def reset_window(self) -> None:
        """Start a new per-sample window (min/max/mean of the values added since)."""
        self._w_count = 0
        self._w_sum = 0.0
        self._w_min = _NAN
        self._w_max = _NAN

    def _expire(self, now: float) -> None:
        if self._window_ms > 0.0:
            cutoff = now - self._window_ms
            while self._count and self._times[self._head] < cutoff:
                self._head = (self._head + 1) % self._cap
                self._count -= 1

    def add(self, value: float, now_ms: float = 0.0) -> None:
        """Record one value (NaN is refused) observed at now_ms."""
        value, now_ms = float(value), float(now_ms)
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
            self._w_min = self._w_max = value
        elif value < self._w_min:
            self._w_min = value
        elif value > self._w_max:
            self._w_max = value
        self._w_count += 1
        self._w_sum += value

    def add_many(self, values: np.ndarray, times_ms: np.ndarray | None = None) -> None:
        for k in range(len(values)):
            self.add(float(values[k]), 0.0 if times_ms is None else float(times_ms[k]))

    def _ordered(self, now_ms: float | None) -> list[float]:
        if now_ms is not None:
            self._expire(float(now_ms))
        return [self._values[(self._head + k) % self._cap] for k in range(self._count)]

    def percentile(self, p: float, now_ms: float | None = None) -> float:
        """The p-th percentile (0..100) of the window, as numpy.percentile computes it."""
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"percentile: {p} is outside 0..100")
        vals = sorted(self._ordered(now_ms))
        return _percentile_sorted(vals, p) if vals else _NAN

    def summary(self, now_ms: float | None = None) -> dict[str, float]:
        """count, min, max, mean, std (population), p50, p95, p99 of the rolling window."""
        vals = self._ordered(now_ms)
        n = len(vals)
        if n == 0:
            return {"count": 0, "min": _NAN, "max": _NAN, "mean": _NAN, "std": _NAN,
                    "p50": _NAN, "p95": _NAN, "p99": _NAN}
        total = 0.0
        for v in vals:          # plain left-to-right sum, as the Cython build does
            total += v
        mean = total / n
        acc = 0.0
        for v in vals:
            acc += (v - mean) * (v - mean)
        s = sorted(vals)
        return {"count": n, "min": s[0], "max": s[-1], "mean": mean, "std": math.sqrt(acc / n),
                "p50": _percentile_sorted(s, 50.0), "p95": _percentile_sorted(s, 95.0),
                "p99": _percentile_sorted(s, 99.0)}

    def window(self) -> dict[str, float]:
        """count, min, max, mean of the values added since reset_window()."""
        n = self._w_count
        return {"count": n, "min": self._w_min, "max": self._w_max,
                "mean": self._w_sum / n if n else _NAN}


def _percentile_sorted(s: list[float], p: float) -> float:
    virtual = (p / 100.0) * (len(s) - 1)
    lo = int(math.floor(virtual))
    hi = min(lo + 1, len(s) - 1)
    return lerp_percentile(s[lo], s[hi], virtual - lo)

"""Synthetic samples for history tests: all 68 metrics as agents send them, and aggregates computed plainly."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from controller.history.store import HistoryStore
from shared.metrics import METRICS, MetricKind, MetricType

T0 = 1_700_000_000.0 - 1_700_000_000.0 % 3600 + 7 * 60 + 13.5   # mid-hour, mid-minute: buckets open at the start


@dataclass
class Clocks:
    """Wall and monotonic clocks a test moves by hand."""
    wall: float = T0
    mono: float = 0.0

    def store(self, path: Path, **kw: Any) -> HistoryStore:
        days = {"raw": 7, "1m": 30, "5m": 90, "1h": 365, **kw.pop("days", {})}
        return HistoryStore(path, days, 1000, clock=lambda: self.wall, monotonic=lambda: self.mono, **kw)


@dataclass
class Samples:
    """`n` samples every `every` seconds from `start`: counters rising with a reset, some nulls, rounded values."""
    n: int
    every: float = 1.5
    start: float = T0
    seed: int = 1
    times: np.ndarray = field(init=False)
    values: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.times = self.start + np.arange(self.n) * self.every + rng.uniform(0, 0.01, self.n)
        cols = []
        for m in METRICS:
            if m.type is MetricType.BOOL:
                col = (rng.random(self.n) < 0.3).astype(float)
            elif m.kind is MetricKind.COUNTER:
                col = np.cumsum(rng.integers(0, 20, self.n)).astype(float)
                col[self.n // 2:] -= col[self.n // 2] - 1   # the agent restarted: the counter starts over
            elif m.type is MetricType.TIMESTAMP:
                col = np.round(self.times - rng.uniform(0, 30, self.n), 3)
            elif m.type is MetricType.INT:
                col = rng.integers(0, 500, self.n).astype(float)
            else:
                col = np.round(50 + np.cumsum(rng.normal(0, 1, self.n)), m.decimals) + 0.0
            if m.nullable:
                col[rng.random(self.n) < 0.2] = np.nan
            cols.append(col)
        self.values = np.column_stack(cols)

    def row(self, i: int) -> list[Any]:
        out: list[Any] = []
        for m, v in zip(METRICS, self.values[i].tolist()):
            if v != v:
                out.append(None)
            elif m.type is MetricType.BOOL:
                out.append(v == 1.0)
            elif m.type is MetricType.INT:
                out.append(int(v))
            else:
                out.append(v)
        return out


def expected_rollups(ts_ms: np.ndarray, values: np.ndarray, bucket_ms: int) -> dict[int, dict[str, Any]]:
    """Per bucket start, each metric's aggregate computed from raw rows one by one (no numpy tricks)."""
    out: dict[int, dict[str, Any]] = {}
    last_seen: list[float | None] = [None] * len(METRICS)
    for t, row in zip(ts_ms.tolist(), values.tolist()):
        bucket = out.setdefault(t - t % bucket_ms, {"samples": 0, **{m.key: [] for m in METRICS}})
        bucket["samples"] += 1
        for j, (m, v) in enumerate(zip(METRICS, row)):
            if v != v:
                continue
            if m.kind is MetricKind.COUNTER:
                prev = last_seen[j]
                bucket[m.key].append(0.0 if prev is None else (v - prev if v >= prev else v))
                last_seen[j] = v
            else:
                bucket[m.key].append(v)
    for bucket in out.values():
        for m in METRICS:
            vals = bucket[m.key]
            bucket[m.key] = _aggregate(m, vals)
    return out


def _aggregate(m, vals: list[float]) -> dict[str, Any]:
    if m.type is MetricType.BOOL:
        return {"fractionTrue": sum(vals) / len(vals) if vals else None}
    if m.type is MetricType.TIMESTAMP:
        return {"last": vals[-1] if vals else None}
    if m.kind is MetricKind.COUNTER:
        return {"delta": sum(vals) if vals else None}
    if m.kind is MetricKind.DELTA:
        return {"sum": sum(vals) if vals else None}
    if not vals:
        return {"avg": None, "min": None, "max": None}
    return {"avg": sum(vals) / len(vals), "min": min(vals), "max": max(vals)}

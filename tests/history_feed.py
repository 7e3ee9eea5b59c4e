"""Synthetic samples for history tests: all 68 metrics as agents send them, and aggregates computed plainly.

Each sample also has the knob version it ran under (stepping every `knob_every` samples, so
versions change inside minutes) and conditions like the agent's (a path delay and loss that
drift every sample, steady keys, a string, a flag that flips with the version, a key present
in some samples only), all derived from the index: the metric values are the same as ever.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from controller.history.store import HistoryStore
from controller.sample import Sample
from shared.metrics import METRICS, MetricKind, MetricType
from shared.topology import Point

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
    knob_every: int = 173
    first_version: int = 3
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

    def knob_version(self, i: int) -> int:
        return self.first_version + i // self.knob_every

    def knob_versions(self, n: int | None = None) -> np.ndarray:
        return self.first_version + np.arange(self.n if n is None else n) // self.knob_every

    def conditions(self, i: int) -> dict[str, Any]:
        version = self.knob_version(i)
        doc: dict[str, Any] = {
            "delay_ms": round(40 + 5 * math.sin(i / 50), 3), "jitter_ms": 8.0,
            "loss_rate": round(0.01 + 0.002 * math.sin(i / 80), 5), "burst_length": 2,
            "talk": "speaking" if (i // 37) % 2 else "silent", "fec_enabled": version % 2 == 1,
            "congestion_control": "bbr"}
        if i % 11 == 0:
            doc["reorder_rate"] = 0.001
        return doc

    def sample(self, point: Point, i: int) -> Sample:
        """Sample i as the controller receives it: values, knob version and conditions."""
        return Sample(point, i, float(self.times[i]), self.row(i), self.knob_version(i), self.conditions(i))

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


def expected_versions(ts_ms: np.ndarray, versions: np.ndarray, bucket_ms: int) -> dict[int, list[int]]:
    """Per bucket start, the distinct knob versions of its samples, ascending, found one sample at a time."""
    out: dict[int, set[int]] = {}
    for t, v in zip(ts_ms.tolist(), versions.tolist()):
        out.setdefault(t - t % bucket_ms, set()).add(int(v))
    return {start: sorted(found) for start, found in out.items()}


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

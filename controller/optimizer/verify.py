"""Before and after a change, from the station's own metrics: window figures and a noise-aware verdict.

A window's figure of a target is the mean of its per-sample values (targets.py), read from
raw history. Samples next to each other are not independent (latency is a rolling
percentile, counters move in bursts), so a window's uncertainty comes from its 5-second
block means: the standard error is their standard deviation over the square root of their
count. A difference counts only beyond the noise: more than `SIGMAS` standard errors of the
difference (before's and after's errors combined) and more than a small absolute floor per
target. So a difference within the before-window's own variability is never an improvement.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from controller.optimizer.targets import GUARD_TOLERANCE, MINIMIZE, Constraints, Target, columns_for, target_series
from shared.topology import Point

BLOCK_S = 5.0
SIGMAS = 2.0
MIN_SAMPLES = 10
FLOORS: dict[str, float] = {"latency.end_to_end": 1.0, "quality": 0.005, "residual_loss": 0.001,
                            "underflows_per_s": 0.05}


@dataclass(frozen=True)
class WindowStats:
    mean: float | None
    se: float | None          # standard error of the mean, from 5 s block means
    n: int                    # samples with a value

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


async def measure_window(history: Any, point: Point, start_s: float, end_s: float,
                         keys: list[str]) -> dict[str, WindowStats]:
    """Each target's mean and standard error over the raw samples measured in [start_s, end_s)."""
    columns = columns_for(keys)
    rows = await history.query(point, "raw", int(start_s * 1000), int(end_s * 1000), columns)
    ts = rows.ts / 1000.0
    series = target_series(ts, {c: rows.values[:, i] for i, c in enumerate(columns)}, keys)
    return {k: window_stats(ts, series[k], start_s) for k in keys}


def window_stats(ts: np.ndarray, values: np.ndarray, start_s: float) -> WindowStats:
    present = ~np.isnan(values)
    n = int(present.sum())
    if n == 0:
        return WindowStats(None, None, 0)
    blocks = np.floor((ts[present] - start_s) / BLOCK_S).astype(np.int64)
    v = values[present]
    means = np.array([v[blocks == b].mean() for b in np.unique(blocks)])
    se = float(means.std(ddof=1) / math.sqrt(len(means))) if len(means) > 1 else None
    return WindowStats(float(v.mean()), se, n)


@dataclass(frozen=True)
class Verdict:
    improved: bool
    worse: bool
    delta: float | None        # after - before
    threshold: float | None    # the noise a difference had to exceed
    reason: str


def judge(before: WindowStats, after: WindowStats, target: Target) -> Verdict:
    """Did `target` improve (or get worse) from before to after, beyond the noise?"""
    if before.mean is None or after.mean is None or min(before.n, after.n) < MIN_SAMPLES:
        return Verdict(False, False, None, None, f"too few samples to judge {target.key} "
                                                 f"({before.n} before, {after.n} after)")
    errors = [e for e in (before.se, after.se) if e is not None]
    noise = SIGMAS * math.sqrt(sum(e * e for e in errors)) if errors else 0.0
    threshold = max(noise, FLOORS.get(target.key, 0.0))
    delta = after.mean - before.mean
    gain = -delta if target.direction == MINIMIZE else delta
    text = f"{target.key} {before.mean:.4g} -> {after.mean:.4g} (noise {threshold:.2g})"
    return Verdict(gain > threshold, gain < -threshold, delta, threshold, text)


def broken_constraints(before: dict[str, WindowStats], after: dict[str, WindowStats],
                       constraints: Constraints) -> list[str]:
    """The limits the after-window breaks (one kept before and broken now, or one broken before that got
    worse) and the guarded targets that got worse beyond the noise."""
    broken = []
    for limit in constraints.limits:
        b, a = before.get(limit.target.key), after.get(limit.target.key)
        if a is None or a.mean is None:
            continue
        if b is not None and b.mean is not None and limit.broken_by(b.mean):
            if judge(b, a, limit.target).worse:
                broken.append(f"{limit.name} (already broken, got worse: {b.mean:.4g} -> {a.mean:.4g})")
        elif limit.broken_by(a.mean):
            broken.append(f"{limit.name} ({a.mean:.4g} against {limit.bound:g})")
    for target in constraints.guards:
        b, a = before.get(target.key), after.get(target.key)
        if b is None or a is None:
            continue
        verdict = judge(b, a, target)   # worse beyond the noise, and by more than the search allowed
        if verdict.worse and verdict.delta is not None and abs(verdict.delta) > GUARD_TOLERANCE[target.key]:
            broken.append(f"{target.key} may not get worse ({b.mean:.4g} -> {a.mean:.4g})")
    return broken

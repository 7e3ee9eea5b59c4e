"""What the 1m, 5m and 1h tiers keep of each metric, and how a bucket of rows becomes one rollup row.

Per metric, by kind and type (the catalog says which):

| metric | columns | shown as |
|---|---|---|
| numeric gauge | sum, min, max, n | {avg = sum / n, min, max} |
| counter | delta, n | {delta}: increase over the bucket, a drop read as a reset (the new value is the increase) |
| delta kind | sum, n | {sum} |
| bool | trues, n | {fractionTrue = trues / n} |
| timestamp | last, n | {last} |

A raw row also holds the knob version its sample ran under (column KNOB_VERSION, after the
metrics); a rollup row keeps the distinct knob versions of its bucket, ascending, beside its
values (controller.history.context): `versions_from_raw`, `versions_from_rollups`.

`n` counts the non-null values, so a rollup of rollups weighs each part by what it holds; a
stat of a bucket without values is null (NaN here). Sums are rounded to the metric's
resolution: values agents round to d decimals sum exactly to a number of d decimals, which
the segment codec then keeps as an integer (and float noise of the additions is dropped).
Every function works on many buckets at once: rows sorted by time, bucket starts as
indices (numpy `reduceat`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.metrics import METRICS, Metric, MetricKind, MetricType

SAMPLES = "samples"


def stats_of(metric: Metric) -> tuple[str, ...]:
    if metric.type is MetricType.BOOL:
        return ("trues", "n")
    if metric.type is MetricType.TIMESTAMP:
        return ("last", "n")
    if metric.kind is MetricKind.COUNTER:
        return ("delta", "n")
    if metric.kind is MetricKind.DELTA:
        return ("sum", "n")
    return ("sum", "min", "max", "n")


@dataclass(frozen=True)
class Layout:
    """The columns of a tier's segments: their names and, per stat, where its columns and metrics are."""
    names: tuple[str, ...]

    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}


KNOB_VERSION = "knob_version"
RAW = Layout(tuple(m.key for m in METRICS) + (KNOB_VERSION,))
KNOB_COLUMN = len(METRICS)   # where KNOB_VERSION is in a raw row
ROLLUP = Layout(tuple(f"{m.key}:{stat}" for m in METRICS for stat in stats_of(m)) + (SAMPLES,))


class _Plan:
    """Column indices of the raw and rollup layouts, grouped by stat, computed once."""

    def __init__(self) -> None:
        at = ROLLUP.index()
        groups: dict[str, tuple[list[int], list[int]]] = {}
        for i, m in enumerate(METRICS):
            for stat in stats_of(m):
                raw_cols, out_cols = groups.setdefault(stat, ([], []))
                raw_cols.append(i)
                out_cols.append(at[f"{m.key}:{stat}"])
        self.cols = {stat: (np.array(r), np.array(o)) for stat, (r, o) in groups.items()}
        self.samples = at[SAMPLES]
        self.width = len(ROLLUP.names)
        decimals = np.array([m.decimals for m in METRICS])
        self.sum_scale = {stat: 10.0 ** decimals[self.cols[stat][0]] for stat in ("sum", "delta")}


PLAN = _Plan()


def bucket_starts(ts: np.ndarray, bucket_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """(start ms of each bucket present, index of its first row) for rows sorted by time."""
    buckets = ts - ts % bucket_ms
    first = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    return buckets[first], first


def from_raw(ts: np.ndarray, values: np.ndarray, bucket_ms: int, previous: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Rollup rows (bucket start ms, ROLLUP columns) of raw rows sorted by time.

    `previous` is the raw row just before these (NaN where unknown): a counter's increase
    from it to the first row belongs to the first bucket, so buckets partition the increases.
    """
    starts, first = bucket_starts(ts, bucket_ms)
    out = np.full((len(starts), PLAN.width), np.nan)
    present = ~np.isnan(values)
    counts = np.add.reduceat(present, first, axis=0).astype(np.float64)
    zero = np.where(present, values, 0.0)
    for stat, (raw, col) in PLAN.cols.items():
        n = counts[:, raw]
        if stat == "n":
            out[:, col] = n
        elif stat in ("sum", "trues"):
            out[:, col] = np.add.reduceat(zero[:, raw], first, axis=0)
        elif stat == "min":
            out[:, col] = np.fmin.reduceat(values[:, raw], first, axis=0)
        elif stat == "max":
            out[:, col] = np.fmax.reduceat(values[:, raw], first, axis=0)
        elif stat == "last":
            out[:, col] = _last_present(values[:, raw], first)
        elif stat == "delta":
            out[:, col] = np.add.reduceat(_increases(values[:, raw], None if previous is None else previous[raw]),
                                          first, axis=0)
        if stat != "n":
            out[:, col] = np.where(n > 0, out[:, col], np.nan)
    out[:, PLAN.samples] = np.diff(np.r_[first, len(ts)])
    return starts, _round_sums(out)


def from_rollups(ts: np.ndarray, rows: np.ndarray, bucket_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """Rollup rows of a coarser tier from rollup rows sorted by time (5m from 1m, 1h from 5m)."""
    starts, first = bucket_starts(ts, bucket_ms)
    out = np.full((len(starts), PLAN.width), np.nan)
    for stat, (_, col) in PLAN.cols.items():
        part = rows[:, col]
        if stat in ("sum", "trues", "delta", "n"):
            out[:, col] = np.add.reduceat(np.nan_to_num(part), first, axis=0)
        elif stat == "min":
            out[:, col] = np.fmin.reduceat(part, first, axis=0)
        elif stat == "max":
            out[:, col] = np.fmax.reduceat(part, first, axis=0)
        elif stat == "last":
            out[:, col] = _last_present(part, first)
    n_of = {stat: out[:, PLAN.cols["n"][1][np.searchsorted(PLAN.cols["n"][0], raw)]]
            for stat, (raw, _) in PLAN.cols.items() if stat != "n"}
    for stat, counts in n_of.items():
        col = PLAN.cols[stat][1]
        out[:, col] = np.where(counts > 0, out[:, col], np.nan)
    out[:, PLAN.samples] = np.add.reduceat(rows[:, PLAN.samples], first)
    return starts, _round_sums(out)


def versions_from_raw(ts: np.ndarray, versions: np.ndarray, bucket_ms: int) -> list[tuple[int, ...] | None]:
    """Per bucket (as from_raw's, rows sorted by time) the distinct knob versions of its rows, ascending;
    None for a bucket none of whose rows has one (NaN)."""
    _, first = bucket_starts(ts, bucket_ms)
    out: list[tuple[int, ...] | None] = []
    for part in np.split(versions, first[1:]):
        part = part[~np.isnan(part)]
        if not len(part):
            out.append(None)
        elif part[0] == part[-1] and (part == part[0]).all():
            out.append((int(part[0]),))
        else:
            out.append(tuple(int(v) for v in np.unique(part)))
    return out


def versions_from_rollups(ts: np.ndarray, sets: Sequence[tuple[int, ...] | None],
                          bucket_ms: int) -> list[tuple[int, ...] | None]:
    """Per bucket of a coarser tier the union of its rows' knob versions (None where none is known)."""
    _, first = bucket_starts(ts, bucket_ms)
    sets = list(sets)
    bounds = [*first.tolist(), len(sets)]
    out: list[tuple[int, ...] | None] = []
    for lo, hi in zip(bounds, bounds[1:]):
        known = [s for s in sets[lo:hi] if s is not None]
        out.append(tuple(sorted(set().union(*known))) if known else None)
    return out


def _round_sums(out: np.ndarray) -> np.ndarray:
    for stat, scale in PLAN.sum_scale.items():
        col = PLAN.cols[stat][1]
        out[:, col] = np.round(out[:, col] * scale) / scale + 0.0
    return out


def _last_present(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Per bucket and column the last non-null value (NaN when the bucket has none)."""
    n = len(values)
    rows = np.where(np.isnan(values), -1, np.arange(n)[:, None])
    latest = np.maximum.reduceat(rows, first, axis=0)
    picked = values[np.maximum(latest, 0), np.arange(values.shape[1])]
    return np.where(latest >= 0, picked, np.nan)


def _increases(values: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """Per row the counter's increase since the previous non-null value; a drop is a reset (increase = value)."""
    start = np.full(values.shape[1], np.nan) if previous is None else previous
    series = np.vstack([start, values])
    filled = _fill_forward_nan(series)
    before, after = filled[:-1], values
    step = after - before
    inc = np.where(step < 0, after, step)   # NaN (no earlier value, or a null) stays NaN: no increase known
    return np.where(np.isnan(inc), 0.0, inc)


def _fill_forward_nan(values: np.ndarray) -> np.ndarray:
    rows = np.where(np.isnan(values), 0, np.arange(len(values))[:, None])
    np.maximum.accumulate(rows, axis=0, out=rows)
    return values[rows, np.arange(values.shape[1])]


def last_values(values: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """Each column's last non-null value over `previous` then `values` (NaN where there is none)."""
    start = np.full(values.shape[1], np.nan) if previous is None else previous
    return _fill_forward_nan(np.vstack([start, values]))[-1]

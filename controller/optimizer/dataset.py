"""Training rows: live history and what-if replays turned into (features, targets) per window, and the bank that keeps them.

A row is one window of `window_s` seconds of one point under one knob set: the targets
(controller/optimizer/targets.py) averaged over the window's samples, beside the features
(controller/optimizer/features.py). Live rows are read back from metric history whenever a
model is trained (every sample keeps its knob version, which the knob change log maps to the
full set, and its conditions); replay rows exist nowhere else, so the RowBank keeps them (and
saves them, so a restart does not forget what replays taught). Windows never span two knob
versions, a counter reset or a gap, and rows carry a group id (one per knob set and source)
so a time-ordered holdout never splits one configuration's windows across train and test.
"""
from __future__ import annotations

import io
import logging
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from controller.optimizer import features as F
from controller.optimizer.models import TrainingSet
from controller.optimizer.targets import TARGETS, columns_for, metric_index, target_series
from shared.atomic_file import atomic_write
from shared.topology import Point

log = logging.getLogger("tpmon.controller.optimizer")

TARGET_KEYS: tuple[str, ...] = tuple(TARGETS)
TARGET_INDEX: dict[str, int] = {k: i for i, k in enumerate(TARGET_KEYS)}
_COLUMNS: tuple[str, ...] = columns_for(TARGET_KEYS) + ("performance.cpu_usage",)
LIVE, REPLAY = 0, 1


@dataclass
class RowBlock:
    features: np.ndarray     # (n, len(FEATURE_NAMES)) float32
    targets: np.ndarray      # (n, len(TARGET_KEYS)) float64, NaN where unknown
    times: np.ndarray        # (n,) epoch seconds of the window's end (replays: when the trace was taken)
    groups: np.ndarray       # (n,) int64: one id per knob set and source
    points: np.ndarray       # (n,) str point ids ("Station-1/3333")
    sources: np.ndarray      # (n,) int8: LIVE or REPLAY

    @classmethod
    def empty(cls) -> RowBlock:
        return cls(np.zeros((0, len(F.FEATURE_NAMES)), np.float32), np.zeros((0, len(TARGET_KEYS))),
                   np.zeros(0), np.zeros(0, np.int64), np.zeros(0, dtype="<U32"), np.zeros(0, np.int8))

    def __len__(self) -> int:
        return len(self.times)

    @classmethod
    def join(cls, blocks: Sequence[RowBlock]) -> RowBlock:
        blocks = [b for b in blocks if len(b)]
        if not blocks:
            return cls.empty()
        return cls(*(np.concatenate([getattr(b, f) for b in blocks])
                     for f in ("features", "targets", "times", "groups", "points", "sources")))

    def take(self, index: np.ndarray) -> RowBlock:
        return RowBlock(self.features[index], self.targets[index], self.times[index], self.groups[index],
                        self.points[index], self.sources[index])

    def training_set(self, target: str) -> TrainingSet:
        return TrainingSet(self.features, self.targets[:, TARGET_INDEX[target]], self.times, F.FEATURE_NAMES,
                           self.groups)


def group_id(point: Point, source: int, key: str) -> int:
    """A stable 62-bit id of one knob set of one point from one source."""
    return zlib.crc32(f"{point.id}|{source}|{key}".encode()) | (source << 40)


def windowed(ts_s: np.ndarray, series: Mapping[str, np.ndarray], window_s: float,
             cut: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of each target over consecutive windows of `window_s` (never across a `cut` boundary).

    Returns (window end times, (w, len(TARGET_KEYS)) means, index of each window's last sample).
    """
    n = len(ts_s)
    if n == 0:
        return np.zeros(0), np.zeros((0, len(TARGET_KEYS))), np.zeros(0, np.int64)
    segment = np.cumsum(cut) if cut is not None else np.zeros(n, np.int64)   # a new knob version: a new segment
    seg_start = ts_s[np.searchsorted(segment, segment, side="left")]        # segments are contiguous runs
    within = np.floor((ts_s - seg_start) / window_s).astype(np.int64)
    bucket = segment * (int(within.max()) + 1) + within
    edges = np.flatnonzero(np.diff(bucket)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [n]])
    out = np.full((len(starts), len(TARGET_KEYS)), np.nan)
    for j, key in enumerate(TARGET_KEYS):
        col = series.get(key)
        if col is None:
            continue
        present = ~np.isnan(col)
        sums = np.add.reduceat(np.where(present, col, 0.0), starts)
        counts = np.add.reduceat(present.astype(np.int64), starts)
        out[:, j] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    last = ends - 1
    full = (ts_s[last] - ts_s[starts]) >= 0.5 * window_s  # a stub window is too noisy to learn from
    return ts_s[last][full], out[full], last[full]


# --- live rows from history -------------------------------------------------------------------

KnobSetAt = Callable[[Point, int], Awaitable[dict[str, Any] | None]]


async def history_rows(history: Any, knob_set_at: KnobSetAt, points: Sequence[Point], start_s: float, end_s: float,
                       window_s: float) -> RowBlock:
    """Windows of live samples of `points` in [start_s, end_s) from the raw tier, with their full knob sets."""
    blocks = []
    sibling_conditions: dict[Point, tuple[np.ndarray, np.ndarray]] = {}
    raw: dict[Point, Any] = {}
    for point in points:
        rows = await history.query(point, "raw", int(start_s * 1000), int(end_s * 1000), _COLUMNS, context=True)
        raw[point] = rows
        sibling_conditions[point] = (rows.ts / 1000.0, rows.context)
    for point, rows in raw.items():
        if len(rows.ts) < 2:
            continue
        blocks.append(await _point_rows(point, rows, knob_set_at, sibling_conditions.get(_sibling(point)), window_s))
    return RowBlock.join(blocks)


async def _point_rows(point: Point, rows: Any, knob_set_at: KnobSetAt,
                      sibling: tuple[np.ndarray, np.ndarray] | None, window_s: float) -> RowBlock:
    ts = rows.ts / 1000.0
    versions = np.nan_to_num(rows.knob_version, nan=-1).astype(np.int64)
    values = {key: rows.values[:, i] for i, key in enumerate(_COLUMNS)}
    series = target_series(ts, values, TARGET_KEYS)
    cut = np.zeros(len(ts), dtype=np.int64)
    cut[1:] = versions[1:] != versions[:-1]
    for key in ("underflows_per_s", "residual_loss"):  # a counter difference across a version change is not that version's
        series[key] = np.where(cut == 1, np.nan, series[key])
    ends, means, last = windowed(ts, series, window_s, cut)
    knob_cache: dict[int, np.ndarray | None] = {}
    out_features, keep = [], []
    cpu = values["performance.cpu_usage"]
    for w, i in enumerate(last):
        version = int(versions[i])
        if version not in knob_cache:
            knobs = await knob_set_at(point, version) if version >= 0 else None
            knob_cache[version] = F.knob_vector(knobs) if knobs is not None else None
        vector = knob_cache[version]
        conditions = rows.context[i] if rows.context is not None else None
        if vector is None or not conditions:
            continue
        context = F.context_vector(conditions, _nearest(sibling, ts[i]), _finite(cpu[i]), ends[w], replayed=False)
        out_features.append(np.concatenate([vector, context]))
        keep.append(w)
    if not keep:
        return RowBlock.empty()
    idx = np.array(keep)
    groups = np.array([group_id(point, LIVE, str(int(versions[last[w]]))) for w in keep], np.int64)
    return RowBlock(np.array(out_features, np.float32), means[idx], ends[idx], groups,
                    np.full(len(idx), point.id, dtype="<U32"), np.full(len(idx), LIVE, np.int8))


def _sibling(point: Point) -> Point:
    return Point(point.station, "4444" if point.extension == "3333" else "3333")


def _nearest(sibling: tuple[np.ndarray, np.ndarray] | None, at: float) -> Mapping[str, Any] | None:
    if sibling is None or sibling[1] is None or not len(sibling[0]):
        return None
    i = int(min(np.searchsorted(sibling[0], at), len(sibling[0]) - 1))
    return sibling[1][i]


def _finite(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


# --- replay rows --------------------------------------------------------------------------------

def replay_rows(point: Point, knob_sets: Sequence[Mapping[str, Any]], windows: Sequence[np.ndarray], window_s: float,
                conditions: Mapping[str, Any], sibling: Mapping[str, Any] | None, host_cpu: float | None,
                at: float, target_window_s: float) -> RowBlock:
    """Rows of one replay: each candidate's windows (w, 68 values) re-windowed to `target_window_s`."""
    context = F.context_vector(conditions, sibling, host_cpu, at, replayed=True)
    blocks = []
    for knobs, values in zip(knob_sets, windows):
        if len(values) < 2:
            continue
        ts = at - window_s * (len(values) - 1 - np.arange(len(values)))  # window ends, oldest first
        series = target_series(ts, {key: values[:, metric_index(key)] for key in _COLUMNS[:-1]}, TARGET_KEYS)
        ends, means, _ = windowed(ts, series, target_window_s)
        if not len(ends):
            continue
        vector = F.knob_vector(knobs)
        feats = np.tile(np.concatenate([vector, context]), (len(ends), 1)).astype(np.float32)
        key = repr(sorted(knobs.items()))
        blocks.append(RowBlock(feats, means, np.full(len(ends), at), np.full(len(ends), group_id(point, REPLAY, key + str(at))),
                               np.full(len(ends), point.id, dtype="<U32"), np.full(len(ends), REPLAY, np.int8)))
    return RowBlock.join(blocks)


class RowBank:
    """Replay rows kept in memory, newest `max_rows`, saved to one .npz file (atomically) when asked."""

    def __init__(self, path: Path | None, max_rows: int = 200_000) -> None:
        self.path = path
        self.max_rows = max_rows
        self.rows = RowBlock.empty()

    def add(self, block: RowBlock) -> None:
        joined = RowBlock.join([self.rows, block])
        if len(joined) > self.max_rows:
            joined = joined.take(np.arange(len(joined) - self.max_rows, len(joined)))
        self.rows = joined

    def of_point(self, point: Point) -> RowBlock:
        return self.rows.take(np.flatnonzero(self.rows.points == point.id))

    def load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            with np.load(self.path, allow_pickle=False) as doc:
                if tuple(doc["feature_names"]) != F.FEATURE_NAMES or tuple(doc["target_keys"]) != TARGET_KEYS:
                    log.warning("%s was written for another feature or target layout: starting afresh", self.path)
                    return
                self.rows = RowBlock(doc["features"], doc["targets"], doc["times"], doc["groups"], doc["points"],
                                     doc["sources"])
        except (OSError, ValueError, KeyError) as exc:
            log.warning("replay rows in %s not readable (%s): starting afresh", self.path, exc)

    def save(self) -> None:
        if self.path is None:
            return
        buf = io.BytesIO()
        r = self.rows
        np.savez_compressed(buf, features=r.features, targets=r.targets, times=r.times, groups=r.groups,
                            points=r.points, sources=r.sources, feature_names=np.array(F.FEATURE_NAMES),
                            target_keys=np.array(TARGET_KEYS))
        atomic_write(self.path, buf.getvalue())

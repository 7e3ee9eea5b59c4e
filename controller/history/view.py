"""Stored rows -> the API's history points: the columns a request needs and the JSON each row becomes.

Whatever `fields` selects, a raw point carries the sample's `knobVersion` and `conditions` and a
rollup point its bucket's `knobVersions` (null where not known: rows stored before history kept
them, or rows read without context).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from controller.clock import iso_ms
from controller.history.reader import Rows
from controller.history.rollup import SAMPLES
from shared.metrics import METRICS, Metric, MetricKind, MetricType

RAW = "raw"


def metric_keys(fields: tuple[str, ...]) -> tuple[Metric, ...]:
    """The metrics `fields` names (keys or whole categories), in catalog order; all when empty."""
    if not fields:
        return METRICS
    wanted = set(fields)
    return tuple(m for m in METRICS if m.key in wanted or m.category in wanted)


def columns(resolution: str, metrics: tuple[Metric, ...]) -> tuple[str, ...]:
    """The stored columns a page needs: the metric keys (raw), or their rollup stats and `samples`."""
    if resolution == RAW:
        return tuple(m.key for m in metrics)
    return tuple(f"{m.key}:{stat}" for m in metrics for stat in _STATS[_shape(m)]) + (SAMPLES,)


# What a rollup shows per metric shape, from which stored stats.
_STATS = {"gauge": ("sum", "min", "max", "n"), "counter": ("delta",), "delta": ("sum",), "bool": ("trues", "n"),
          "timestamp": ("last",)}


def _shape(m: Metric) -> str:
    if m.type is MetricType.BOOL:
        return "bool"
    if m.type is MetricType.TIMESTAMP:
        return "timestamp"
    if m.kind is MetricKind.COUNTER:
        return "counter"
    return "delta" if m.kind is MetricKind.DELTA else "gauge"


def points(resolution: str, metrics: tuple[Metric, ...], rows: Rows) -> list[dict[str, Any]]:
    """One JSON point per row, metrics nested by category like the snapshot."""
    stamps = [iso_ms(t / 1000) for t in rows.ts.tolist()]
    context = rows.context.tolist() if rows.context is not None else [None] * len(stamps)
    extra: list[dict[str, Any]]
    if resolution == RAW:
        per_metric = [_raw_values(m, rows.values[:, i]) for i, m in enumerate(metrics)]
        versions = _plain(rows.knob_version) if rows.knob_version is not None else [None] * len(stamps)
        extra = [{"knobVersion": None if v is None else int(v), "conditions": c} for v, c in zip(versions, context)]
    else:
        per_metric, at = [], 0
        for m in metrics:
            width = len(_STATS[_shape(m)])
            per_metric.append(_rollup_values(m, rows.values[:, at:at + width]))
            at += width
        extra = [{"samples": int(n), "knobVersions": None if s is None else list(s)}
                 for n, s in zip(rows.values[:, at].tolist(), context)]
    out = []
    for i, stamp in enumerate(stamps):
        nested: dict[str, dict[str, Any]] = {}
        for m, values in zip(metrics, per_metric):
            nested.setdefault(m.category, {})[m.name] = values[i]
        out.append({"timestamp": stamp, "metrics": nested, **extra[i]})
    return out


def _plain(column: np.ndarray) -> list[Any]:
    """Floats as Python floats, NaN as None."""
    return [None if v != v else v for v in column.tolist()]


def _raw_values(m: Metric, column: np.ndarray) -> list[Any]:
    values = _plain(column)
    if m.type is MetricType.BOOL:
        return [None if v is None else v != 0 for v in values]
    if m.type is MetricType.TIMESTAMP:
        return [iso_ms(v) for v in values]
    if m.type is MetricType.INT:
        return [int(v) if v is not None and v.is_integer() else v for v in values]
    return values


def _rollup_values(m: Metric, stats: np.ndarray) -> list[dict[str, Any]]:
    shape = _shape(m)
    if shape == "gauge":
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = stats[:, 0] / stats[:, 3]
        return [{"avg": a, "min": lo, "max": hi}
                for a, lo, hi in zip(_plain(avg), _integral(m, stats[:, 1]), _integral(m, stats[:, 2]))]
    if shape == "bool":
        with np.errstate(invalid="ignore", divide="ignore"):
            share = stats[:, 0] / stats[:, 1]
        return [{"fractionTrue": v} for v in _plain(share)]
    if shape == "timestamp":
        return [{"last": iso_ms(v)} for v in _plain(stats[:, 0])]
    name = "delta" if shape == "counter" else "sum"
    return [{name: v} for v in _integral(m, stats[:, 0])]


def _integral(m: Metric, column: np.ndarray) -> list[Any]:
    values = _plain(column)
    if m.type is MetricType.INT:
        return [int(v) if v is not None and v.is_integer() else v for v in values]
    return values

"""Samples as the agents sent them -> a Block: catalog order, NaN for null, the snapshot's idea of valid.

A row is the 68 metrics then the knob version the sample ran under (rollup.RAW: null when it is
not an integer a float64 holds exactly); the block's context is each sample's conditions as
(keys, values) tuples (controller.history.context.Intake), the keys shared by consecutive
samples that report the same ones.

The live state turns a value that is not of its metric's type (a bool where a number is
due, a string, NaN or infinity) into null (controller.live.state.json_value); history keeps the
same values the snapshot shows. The common case, every value of the right Python type, is
checked once per distinct row signature (the tuple of value types) and converted by numpy
in one call; only rows with a value of the wrong type go through the per-value path.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from controller.history.codec import Block
from controller.history.context import Intake
from controller.sample import Sample
from shared.metrics import METRIC_COUNT, METRICS, MetricType

_ALLOWED: tuple[frozenset[type], ...] = tuple(
    frozenset({bool, type(None)}) if m.type is MetricType.BOOL else frozenset({int, float, type(None)})
    for m in METRICS)
_MAX_SIGNATURES = 4096
_EXACT = 2 ** 53
_valid: set[tuple[type, ...]] = set()


def to_block(samples: Sequence[Sample]) -> Block:
    """Samples -> a Block (rollup.RAW columns, conditions as context), times floored to the millisecond."""
    ts = np.floor(np.array([s.measured_at for s in samples], dtype=np.float64) * 1000).astype(np.int64)
    rows = [s.values if _fits(s.values) else _cleaned(s.values) for s in samples]
    try:
        metrics = np.array(rows, dtype=np.float64)  # None -> NaN, bool -> 0/1
    except (OverflowError, ValueError, TypeError):
        metrics = np.array([_cleaned(values) for values in rows], dtype=np.float64)
    metrics[~np.isfinite(metrics)] = np.nan
    matrix = np.empty((len(samples), METRIC_COUNT + 1))
    matrix[:, :METRIC_COUNT] = metrics.reshape(len(samples), METRIC_COUNT)
    matrix[:, METRIC_COUNT] = [_version(s.knob_version) for s in samples]
    return Block(ts, matrix, np.isnan(matrix), _conditions(samples))


def _version(version: Any) -> float:
    if type(version) is int and -_EXACT < version < _EXACT:
        return float(version)
    return math.nan


def _conditions(samples: Sequence[Sample]) -> np.ndarray:
    out = np.empty(len(samples), dtype=object)
    take = Intake().take
    for i, s in enumerate(samples):
        out[i] = take(s.conditions)
    return out


def _fits(values: Sequence[Any]) -> bool:
    if len(values) != METRIC_COUNT:
        return False
    signature = tuple(map(type, values))
    if signature in _valid:
        return True
    if not all(t in allowed for t, allowed in zip(signature, _ALLOWED)):
        return False
    if len(_valid) >= _MAX_SIGNATURES:
        _valid.clear()
    _valid.add(signature)
    return True


def _cleaned(values: Sequence[Any]) -> list[float | None]:
    """The per-value path: what json_value would show, as a float (None where it shows null)."""
    out: list[float | None] = []
    for metric, value in zip(METRICS, list(values)[:METRIC_COUNT]):
        if metric.type is MetricType.BOOL:
            out.append(float(value) if isinstance(value, bool) else None)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            out.append(None)
        else:
            try:
                number = float(value)
            except OverflowError:
                number = math.nan
            out.append(number)
    out += [None] * (METRIC_COUNT - len(out))
    return out

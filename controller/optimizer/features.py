"""The optimizer's feature vector, derived from the catalogs: knobs, measured conditions, load, time of day, sibling.

One row describes one sample window of one point: the full knob vector it ran under (every
`receive`, `dsp` and `send` knob of the catalog; `external` knobs act outside the agent and
are not features), the path and room conditions the agent reported, the host's load, the
hour of day (as a point on a circle, so 23:59 is next to 00:00), the other extension's path
conditions (the two legs of a station share a host and often a network) and whether the row
came from a what-if replay rather than live audio (so a model can learn replay's own offset).
Booleans are 0/1, enums their index in the catalog's choices, missing values NaN (XGBoost
learns a default direction for them).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shared.knobs import KNOBS, Acts, Knob, KnobType

SEARCHABLE: tuple[Knob, ...] = tuple(k for k in KNOBS if k.acts in (Acts.RECEIVE, Acts.DSP, Acts.SEND))
CONDITIONS: tuple[str, ...] = ("delay_ms", "jitter_ms", "loss_rate", "burst_length", "duplicate_rate", "reorder_rate",
                               "corruption_rate", "bandwidth_kbps", "noise_dbfs", "echo_gain_db", "echo_delay_ms")
SIBLING: tuple[str, ...] = ("delay_ms", "jitter_ms", "loss_rate")
CONTEXT: tuple[str, ...] = ("host_cpu", "hour_sin", "hour_cos", "replayed")
HOUR_FEATURES: tuple[str, ...] = ("hour_sin", "hour_cos")

KNOB_FEATURES: tuple[str, ...] = tuple(f"knob.{k.name}" for k in SEARCHABLE)
FEATURE_NAMES: tuple[str, ...] = (KNOB_FEATURES + tuple(f"cond.{c}" for c in CONDITIONS)
                                  + tuple(f"sibling.{c}" for c in SIBLING) + CONTEXT)
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}
_KNOB_COUNT = len(SEARCHABLE)

# Physics the models may rely on (XGBoost monotone constraints, by target key): holding more
# audio back never lowers latency.
MONOTONE: dict[str, dict[str, int]] = {
    "latency.end_to_end": {"knob.playout_delay": 1, "knob.prefetch_ms": 1, "cond.delay_ms": 1},
}


def encode_knob(knob: Knob, value: Any) -> float:
    if value is None:
        return math.nan
    if knob.type is KnobType.BOOL:
        return 1.0 if value else 0.0
    if knob.type is KnobType.ENUM:
        return float(knob.choices.index(value)) if value in knob.choices else math.nan
    return float(value)


def decode_knob(knob: Knob, code: float) -> Any:
    """The knob value a feature code stands for (rounded to the knob's type)."""
    if knob.type is KnobType.BOOL:
        return bool(code >= 0.5)
    if knob.type is KnobType.ENUM:
        return knob.choices[int(min(max(round(code), 0), len(knob.choices) - 1))]
    if knob.type is KnobType.INT:
        return int(round(code))
    return round(float(code), 3)


def knob_vector(knobs: Mapping[str, Any]) -> np.ndarray:
    return np.array([encode_knob(k, knobs.get(k.name)) for k in SEARCHABLE], dtype=np.float32)


_SEARCHABLE_INDEX = {k.name: i for i, k in enumerate(SEARCHABLE)}


def knob_vectors(current: Mapping[str, Any], partials: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """knob_vector of `current` updated by each partial set, one row each (today's set encoded once)."""
    out = np.tile(knob_vector(current), (len(partials), 1))
    for row, partial in zip(out, partials):
        for name, value in partial.items():
            i = _SEARCHABLE_INDEX.get(name)
            if i is not None:
                row[i] = encode_knob(SEARCHABLE[i], value)
    return out


def context_vector(conditions: Mapping[str, Any], sibling: Mapping[str, Any] | None, host_cpu: float | None,
                   at: float, replayed: bool) -> np.ndarray:
    """Everything but the knobs: conditions, the sibling's path, load, hour of day, replay flag."""
    hour = (at % 86400.0) / 3600.0
    row = [_number(conditions.get(c)) for c in CONDITIONS]
    row += [_number((sibling or {}).get(c)) for c in SIBLING]
    row += [_number(host_cpu), math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24),
            1.0 if replayed else 0.0]
    return np.array(row, dtype=np.float32)


def rows(knob_sets: np.ndarray, context: np.ndarray) -> np.ndarray:
    """Feature rows: each knob vector of `knob_sets` (k, knobs) beside the same context (one row per candidate)."""
    out = np.empty((len(knob_sets), len(FEATURE_NAMES)), dtype=np.float32)
    out[:, :_KNOB_COUNT] = knob_sets
    out[:, _KNOB_COUNT:] = context
    return out


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return math.nan
    return float(value)

"""Alert rules: a metric, a direction, warning and critical levels, timing and a scope of points.

A threshold (POST /config/metrics) and an alert rule (POST /alerts/configure) are the same
object: a `Rule`. A threshold is keyed by its metric and scope (its id is derived from
them); a rule by its id or name. One engine evaluates both. For each point and metric the
most specific rule that covers the point applies (stations and extensions named > stations
named > extensions named > every point), the most recently changed among equals; a
disabled rule still applies, so a scoped `enabled: false` silences a metric for some
points while the general rule keeps watching the others.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Any

from shared.metrics import METRICS_BY_ID, Metric, MetricKind, MetricType
from shared.topology import EXTENSIONS, Point, Topology, station_number


class Direction(str, Enum):
    ABOVE = "above"  # a value greater than a level violates it
    BELOW = "below"  # a value smaller than a level violates it


class Severity(str, Enum):
    WARNING = "warning"
    CRITICAL = "critical"


SEVERITIES: tuple[Severity, ...] = (Severity.WARNING, Severity.CRITICAL)  # ascending
RANK = {None: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}

# Metrics for which a lower value is the problem: their default direction is "below".
LOWER_IS_WORSE = frozenset({
    "audioQuality_mos_score", "audioQuality_pesq_score", "audioQuality_snr", "audioQuality_sinad",
    "packet_efficiency", "packet_goodput_kbps", "packet_throughput_kbps", "buffer_stability_score",
    "latency_stability", "performance_cache_hits",
})
assert LOWER_IS_WORSE <= set(METRICS_BY_ID), LOWER_IS_WORSE - set(METRICS_BY_ID)

MAX_DURATION_MS = 86_400_000        # a day: longer holds are not alerting any more
MAX_WINDOW_MS = 3_600_000
DEFAULT_DURATION_MS = 30_000
DEFAULT_GAUGE_WINDOW_MS = 10_000    # gauges are judged on their mean over this window (samples are noisy)
DEFAULT_COUNTER_WINDOW_MS = 60_000  # counters on their increase over this window (events per minute)


def default_direction(metric_id: str) -> Direction:
    return Direction.BELOW if metric_id in LOWER_IS_WORSE else Direction.ABOVE


def default_window_ms(metric: Metric) -> int:
    return DEFAULT_COUNTER_WINDOW_MS if metric.kind is MetricKind.COUNTER else DEFAULT_GAUGE_WINDOW_MS


def threshold_id(metric_id: str, stations: tuple[str, ...] | None, extensions: tuple[str, ...] | None) -> str:
    """The id of the threshold for a metric and scope: the metricId itself for every point, else a scope hash."""
    if stations is None and extensions is None:
        return metric_id
    scope = f"{','.join(stations or ('*',))}/{','.join(extensions or ('*',))}"
    return f"{metric_id}-{hashlib.sha1(scope.encode()).hexdigest()[:8]}"


def sorted_stations(stations: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(set(stations), key=lambda s: (station_number(s) or 0, s)))


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    metric_id: str
    direction: Direction
    warning: float | None
    critical: float | None
    duration_ms: int                   # the condition holds this long before the alert fires (Prometheus `for`)
    clear_duration_ms: int             # ... and is clear this long before the alert de-escalates or resolves
    hysteresis: float                  # clear means beyond the level by this much, in the metric's unit
    window_ms: int                     # gauges: mean over the window (0: each sample); counters: increase over it
    enabled: bool
    stations: tuple[str, ...] | None   # None: every station, also ones configured later
    extensions: tuple[str, ...] | None  # None: every extension
    source: str                        # default | threshold | rule: where it was created
    revision: int = 0                  # bumped on every change: the most recent of equally specific rules wins
    created_by: str = "tpmon"
    created_at: str | None = None
    updated_by: str | None = None
    updated_at: str | None = None

    @property
    def metric(self) -> Metric:
        return METRICS_BY_ID[self.metric_id]

    @property
    def counter(self) -> bool:
        return self.metric.kind is MetricKind.COUNTER

    def levels(self) -> tuple[tuple[Severity, float], ...]:
        """The levels present, warning first."""
        return tuple((s, v) for s, v in ((Severity.WARNING, self.warning), (Severity.CRITICAL, self.critical))
                     if v is not None)

    def level(self, severity: Severity) -> float | None:
        return self.warning if severity is Severity.WARNING else self.critical

    def covers(self, point: Point) -> bool:
        return ((self.stations is None or point.station in self.stations)
                and (self.extensions is None or point.extension in self.extensions))

    @property
    def specificity(self) -> tuple[int, int]:
        return (2 * (self.stations is not None) + (self.extensions is not None), self.revision)

    def touches(self, stations: frozenset[str] | None) -> bool:
        """True when the rule covers at least one of `stations` (None: every station)."""
        return stations is None or self.stations is None or bool(stations & set(self.stations))

    def within(self, stations: frozenset[str] | None) -> bool:
        """True when every station the rule covers is among `stations` (None: every station)."""
        return stations is None or (self.stations is not None and set(self.stations) <= stations)

    def to_json(self) -> dict[str, Any]:
        metric = self.metric
        return {
            "id": self.id, "name": self.name, "source": self.source, "metricId": self.metric_id,
            "metric": metric.category, "unit": metric.unit, "direction": self.direction.value,
            "thresholds": {"warning": self.warning, "critical": self.critical},
            "duration": self.duration_ms, "clearDuration": self.clear_duration_ms, "hysteresis": self.hysteresis,
            "window": self.window_ms, "evaluates": evaluates(self), "enabled": self.enabled,
            "stations": list(self.stations) if self.stations is not None else None,
            "extensions": list(self.extensions) if self.extensions is not None else None,
            "createdBy": self.created_by, "createdAt": self.created_at,
            "updatedBy": self.updated_by, "updatedAt": self.updated_at,
        }

    def to_record(self) -> dict[str, Any]:
        """The stored form (every field, enum values as strings)."""
        doc = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["direction"] = self.direction.value
        doc["stations"] = list(self.stations) if self.stations is not None else None
        doc["extensions"] = list(self.extensions) if self.extensions is not None else None
        return doc

    @classmethod
    def from_record(cls, doc: dict[str, Any]) -> Rule:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in doc.items() if k in known}
        values["direction"] = Direction(values["direction"])
        for scope in ("stations", "extensions"):
            values[scope] = tuple(values[scope]) if values.get(scope) is not None else None
        return cls(**values)

    def changed(self, **changes: Any) -> Rule:
        return replace(self, **changes)


def evaluates(rule: Rule) -> str:
    """What the engine compares with the levels, in words (shown with every rule)."""
    seconds = f"{rule.window_ms / 1000:g} s"
    if rule.counter:
        return f"increase over the last {seconds}"
    if rule.window_ms == 0:
        return "each sample's value"
    return f"mean over the last {seconds}"


def problems(rule: Rule, topology: Topology) -> list[dict[str, str]]:
    """Everything wrong with a rule, one `{field, problem}` each (canonical field names; routes rename them)."""
    metric = METRICS_BY_ID.get(rule.metric_id)
    if metric is None:
        return [{"field": "metricId", "problem": f"unknown metric {rule.metric_id!r}; use a metricId from "
                                                 "GET /api/v1/catalog, such as latency_end_to_end"}]
    if metric.type is MetricType.TIMESTAMP:
        return [{"field": "metricId", "problem": f"{rule.metric_id} is a timestamp; it has no threshold"}]
    out = _level_problems(rule, metric)
    out += _timing_problems(rule)
    for i, station in enumerate(rule.stations or ()):
        if not topology.has_station(station):
            out.append({"field": f"stations.{i}", "problem": f"unknown station {station!r} "
                                                              f"(known: Station-1 … Station-{topology.station_count})"})
    for i, ext in enumerate(rule.extensions or ()):
        if ext not in EXTENSIONS:
            out.append({"field": f"extensions.{i}", "problem": f"unknown extension {ext!r} "
                                                                f"(known: {', '.join(EXTENSIONS)})"})
    return out


def _level_problems(rule: Rule, metric: Metric) -> list[dict[str, str]]:
    if not rule.levels():
        return [{"field": "levels", "problem": "give a warning level, a critical level or both"}]
    out = []
    lo, hi = _range(rule, metric)
    for severity, value in rule.levels():
        if not math.isfinite(value):
            out.append({"field": severity.value, "problem": "must be a finite number"})
        elif (lo is not None and value < lo) or (hi is not None and value > hi):
            span = f"[{_g(lo)}, {_g(hi)}]" if hi is not None else f"at least {_g(lo)}"
            out.append({"field": severity.value, "problem": f"{_g(value)} is outside the range of "
                                                             f"{rule.metric_id} ({span} {metric.unit})"})
        elif _never_violated(rule, value, lo, hi):
            edge = "maximum" if rule.direction is Direction.ABOVE else "minimum"
            out.append({"field": severity.value, "problem": f"{_g(value)} is the {edge} of {rule.metric_id}: "
                                                             f"a value can never be {rule.direction.value} it"})
    if out or rule.warning is None or rule.critical is None:
        return out
    worse = rule.critical > rule.warning if rule.direction is Direction.ABOVE else rule.critical < rule.warning
    if not worse:
        relation = "above" if rule.direction is Direction.ABOVE else "below"
        out.append({"field": "critical", "problem": f"with direction {rule.direction.value} the critical level "
                                                     f"must be {relation} the warning level ({_g(rule.warning)})"})
    return out


def _range(rule: Rule, metric: Metric) -> tuple[float | None, float | None]:
    """The values the evaluated quantity takes: a counter's increase is >= 0; a bool's mean is in [0, 1]."""
    if rule.counter:
        return 0.0, None
    if metric.type is MetricType.BOOL:
        return 0.0, 1.0
    return metric.minimum, metric.maximum


def _never_violated(rule: Rule, value: float, lo: float | None, hi: float | None) -> bool:
    if rule.direction is Direction.ABOVE:
        return hi is not None and value >= hi
    return lo is not None and value <= lo


def _timing_problems(rule: Rule) -> list[dict[str, str]]:
    out = []
    for name, value in (("duration", rule.duration_ms), ("clearDuration", rule.clear_duration_ms)):
        if not 0 <= value <= MAX_DURATION_MS:
            out.append({"field": name, "problem": f"must be between 0 and {MAX_DURATION_MS} ms"})
    low = 1000 if rule.counter else 0
    if not low <= rule.window_ms <= MAX_WINDOW_MS:
        what = "a counter's increase needs a window of" if rule.counter else "must be"
        out.append({"field": "window", "problem": f"{what} {low} to {MAX_WINDOW_MS} ms"})
    if not (math.isfinite(rule.hysteresis) and rule.hysteresis >= 0):
        out.append({"field": "hysteresis", "problem": "must be a finite number >= 0"})
    return out


def _g(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"

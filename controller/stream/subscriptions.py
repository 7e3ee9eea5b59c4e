"""Subscribe requests checked against the catalogs, the topology and the caller's scope.

A subscription names stations, metrics, an interval and a compression flag (the plan's
`{stations, metrics, interval, compression}`), plus an optional id and the events wanted.
Everything wrong is reported at once as `{"field", "problem"}` pairs; nothing is half-applied.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from controller.events import EVENTS, PLAN_EVENTS
from controller.security.principal import Principal
from shared.metrics import CATEGORIES, METRICS, METRICS_BY_ID, METRICS_BY_KEY
from shared.topology import Topology

MIN_INTERVAL_MS = 150       # the agents' sample period: faster would resend the same values
MAX_INTERVAL_MS = 3_600_000
DEFAULT_INTERVAL_MS = 1000
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
FIELDS = ("id", "stations", "metrics", "interval", "compression", "events")

# The plan's spellings. `packet_loss` names the whole `packet` category (loss rate and count
# with the sequence accounting they come from), as `audio_quality` names `audioQuality`:
# the plan lists them beside `latency`, as peers of a category.
ALIASES: dict[str, tuple[str, ...]] = {
    "packet_loss": tuple(m.key for m in METRICS if m.category == "packet"),
    "audio_quality": tuple(m.key for m in METRICS if m.category == "audioQuality"),
}
ALL_METRIC_KEYS = tuple(m.key for m in METRICS)


class StreamError(Exception):
    """A request the stream refuses; sent to the client as an `error` event, the connection stays open."""

    def __init__(self, code: str, message: str, details: Iterable[dict[str, str]] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = list(details)

    def to_json(self, request: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {"code": self.code, "message": self.message, "details": self.details}
        if request is not None:
            doc["request"] = request
        return doc


@dataclass(frozen=True)
class Subscription:
    id: str
    stations: tuple[str, ...] | None   # None: every station of the topology (an unscoped caller's default)
    metrics: tuple[str, ...] | None    # catalog keys; None: all of them
    interval_ms: int
    compression: bool                  # permessage-deflate for this subscription's updates, where negotiated
    events: frozenset[str]

    @property
    def shape(self) -> tuple[Any, ...]:
        """What the serialized update depends on: subscribers of one shape share its bytes."""
        return (self.stations, self.metrics, self.interval_ms, self.compression)

    def covers(self, station: str) -> bool:
        return self.stations is None or station in self.stations

    def describe(self, deflate: bool) -> dict[str, Any]:
        """The `subscribed` reply: what was resolved from the request."""
        return {"id": self.id, "stations": list(self.stations) if self.stations is not None else None,
                "metrics": list(self.metrics) if self.metrics is not None else list(ALL_METRIC_KEYS),
                "interval": self.interval_ms, "compression": "deflate" if self.compression and deflate else "none",
                "events": sorted(self.events)}


def resolve_metrics(names: list[str]) -> tuple[tuple[str, ...], list[dict[str, str]]]:
    """Catalog keys for categories, dotted keys, underscore metric ids and the plan's aliases; problems."""
    keys: list[str] = []
    problems = []
    for i, name in enumerate(names):
        if not isinstance(name, str):
            problems.append({"field": f"metrics.{i}", "problem": "should be a string"})
        elif name in METRICS_BY_KEY:
            keys.append(name)
        elif name in CATEGORIES:
            keys.extend(m.key for m in METRICS if m.category == name)
        elif name in ALIASES:
            keys.extend(ALIASES[name])
        elif name in METRICS_BY_ID:
            keys.append(METRICS_BY_ID[name].key)
        else:
            problems.append({"field": f"metrics.{i}", "problem": f"unknown metric {name!r}: use a category "
                             f"({', '.join(CATEGORIES)}), a key like latency.end_to_end, or packet_loss/audio_quality"})
    return tuple(dict.fromkeys(keys)), problems


def parse(data: Any, principal: Principal, topology: Topology, default_id: str, tick_ms: int) -> Subscription:
    """A checked Subscription from a subscribe message's data; StreamError listing every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise StreamError("validation_failed", "subscribe takes an object such as {\"stations\": [\"Station-1\"]}",
                          [{"field": "data", "problem": "should be an object"}])
    problems = [{"field": k, "problem": f"unknown field (known: {', '.join(FIELDS)})"} for k in data if k not in FIELDS]
    sub_id = _id(data.get("id", default_id), problems)
    stations = _stations(data.get("stations"), principal, topology, problems)
    metrics = _metrics(data.get("metrics"), problems)
    interval = _interval(data.get("interval", DEFAULT_INTERVAL_MS), max(MIN_INTERVAL_MS, tick_ms), problems)
    compression = data.get("compression", False)
    if not isinstance(compression, bool):
        problems.append({"field": "compression", "problem": "should be true or false"})
    events = _events(data.get("events"), problems)
    unseen = [p for p in problems if p.get("code") == "forbidden"]
    if unseen:
        raise StreamError("forbidden", f"this token is not scoped to {', '.join(p['station'] for p in unseen)}",
                          [{"field": p["field"], "problem": p["problem"]} for p in unseen])
    if problems:
        listed = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:3])
        raise StreamError("validation_failed", f"invalid subscription: {listed}", problems)
    return Subscription(sub_id, stations, metrics, interval, bool(compression), events)  # type: ignore[arg-type]


def _id(value: Any, problems: list[dict[str, str]]) -> str:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        problems.append({"field": "id", "problem": "should be 1-64 characters of A-Z a-z 0-9 _ . : -"})
        return ""
    return value


def _stations(value: Any, principal: Principal, topology: Topology, problems: list[dict[str, Any]]) -> tuple[str, ...] | None:
    """Sorted stations asked for; default (None, [] or ["*"]) all the token may see; None means all of them."""
    if value is None or value == [] or value == ["*"]:
        wanted = list(topology.stations) if principal.stations is None else \
            [s for s in topology.stations if s in principal.stations]
    elif not isinstance(value, list):
        problems.append({"field": "stations", "problem": "should be a list of station names like \"Station-1\""})
        return None
    else:
        wanted = []
        for i, station in enumerate(value):
            if not isinstance(station, str) or not topology.has_station(station):
                problems.append({"field": f"stations.{i}", "problem": f"unknown station {station!r} "
                                 f"(known: Station-1 … Station-{topology.station_count})"})
            elif not principal.sees(station):
                problems.append({"field": f"stations.{i}", "problem": f"{station} is outside the token's stations",
                                 "code": "forbidden", "station": station})
            else:
                wanted.append(station)
    ordered = tuple(s for s in topology.stations if s in set(wanted))
    return None if ordered == topology.stations else ordered


def _metrics(value: Any, problems: list[dict[str, str]]) -> tuple[str, ...] | None:
    if value is None or value == []:
        return None
    if not isinstance(value, list):
        problems.append({"field": "metrics", "problem": "should be a list such as [\"latency\", \"packet.loss_rate\"]"})
        return None
    keys, found = resolve_metrics(value)
    problems.extend(found)
    ordered = tuple(k for k in ALL_METRIC_KEYS if k in set(keys))  # catalog order: equal sets, equal shapes
    return None if ordered == ALL_METRIC_KEYS else ordered


def _interval(value: Any, minimum: int, problems: list[dict[str, str]]) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        problems.append({"field": "interval", "problem": "should be a whole number of milliseconds"})
        return 0
    if value < minimum:
        problems.append({"field": "interval", "problem": f"{int(value)} ms is below the minimum of {minimum} ms "
                         "(the controller's tick: faster updates would repeat the same samples)"})
    elif value > MAX_INTERVAL_MS:
        problems.append({"field": "interval", "problem": f"{int(value)} ms is above the maximum of {MAX_INTERVAL_MS} ms"})
    return int(value)


def _events(value: Any, problems: list[dict[str, str]]) -> frozenset[str]:
    if value is None:
        return frozenset(PLAN_EVENTS)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append({"field": "events", "problem": f"should be a list of event names ({', '.join(EVENTS)})"})
        return frozenset()
    unknown = [v for v in value if v not in EVENTS]
    if unknown:
        problems.append({"field": "events", "problem": f"unknown event {', '.join(unknown)} (known: {', '.join(EVENTS)})"})
    return frozenset(v for v in value if v in EVENTS)

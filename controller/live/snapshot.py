"""The snapshot cache: the plan's snapshot JSON built once per tick, gzip and ETag precomputed.

Every request for the same (stations, fields) within a tick gets the same bytes. Filtered
variants are rendered on first request and cached until the next build, so repeated
dashboard queries cost a dict lookup.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from controller.clock import Clock, iso_ms
from controller.live.state import LiveState, Status
from shared.metrics import CATEGORIES, METRICS, METRICS_BY_KEY
from shared.topology import Topology

FILTER_CACHE_SIZE = 256  # variants kept per tick; bounds memory whatever queries clients invent


@dataclass(frozen=True)
class Rendered:
    body: bytes
    gzipped: bytes
    etag: str        # strong validator of the identity body, quoted
    built_at: float  # wall clock of the build


class UnknownStations(LookupError):
    def __init__(self, names: list[str]) -> None:
        super().__init__(", ".join(names))
        self.names = names


class UnknownFields(ValueError):
    def __init__(self, names: list[str]) -> None:
        super().__init__(", ".join(names))
        self.names = names


def render(doc: dict[str, Any], built_at: float) -> Rendered:
    body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    digest = hashlib.blake2b(body, digest_size=12).hexdigest()
    return Rendered(body, gzip.compress(body, compresslevel=5, mtime=0), f'"{digest}"', built_at)


def resolve_fields(fields: Iterable[str]) -> tuple[str, ...]:
    """Catalog keys for `latency.end_to_end` entries or whole categories (`latency`)."""
    keys: list[str] = []
    unknown: list[str] = []
    for name in fields:
        if name in METRICS_BY_KEY:
            keys.append(name)
        elif name in CATEGORIES:
            keys.extend(m.key for m in METRICS if m.category == name)
        else:
            unknown.append(name)
    if unknown:
        raise UnknownFields(unknown)
    return tuple(dict.fromkeys(keys))


class SnapshotCache:
    def __init__(self, topology: Topology, live: LiveState, clock: Clock) -> None:
        self.topology = topology
        self.live = live
        self.clock = clock
        self.doc: dict[str, Any] | None = None
        self.full: Rendered | None = None
        self._variants: OrderedDict[tuple[tuple[str, ...], tuple[str, ...]], Rendered] = OrderedDict()
        self.builds = 0
        self.last_build_seconds = 0.0
        self.hits = 0
        self.misses = 0
        self.status_counts: dict[Status, int] = {s: 0 for s in Status}

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def build(self) -> Rendered:
        """Serialize the current live state; called once per tick by the controller's loop."""
        started = time.perf_counter()
        now = self.clock.wall()
        counts = {s: 0 for s in Status}
        stations: dict[str, dict[str, Any]] = {}
        for point in self.topology.points:
            state = self.live.points[point]
            status = self.live.status(point)
            counts[status] += 1
            stations.setdefault(point.station, {})[point.json_key] = {
                "metrics": state.metrics, "status": status.value, "measuredAt": iso_ms(state.measured_at)}
        self.doc = {"timestamp": iso_ms(now), "stations": stations}
        self.full = render(self.doc, now)
        self._variants.clear()
        self.status_counts = counts
        self.builds += 1
        self.last_build_seconds = time.perf_counter() - started
        return self.full

    def get(self, stations: tuple[str, ...] = (), fields: tuple[str, ...] = ()) -> Rendered:
        """The snapshot, optionally for some stations and some metric keys (or categories)."""
        if self.full is None or self.doc is None:
            self.build()
            self.misses += 1
            if not stations and not fields:
                return self.full  # type: ignore[return-value]
        if not stations and not fields:
            self.hits += 1
            return self.full  # type: ignore[return-value]
        unknown = [s for s in stations if not self.topology.has_station(s)]
        if unknown:
            raise UnknownStations(unknown)
        key = (tuple(sorted(set(stations))), tuple(sorted(resolve_fields(fields))))
        cached = self._variants.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        rendered = render(self._filtered(*key), self.full.built_at)  # type: ignore[union-attr]
        self._variants[key] = rendered
        if len(self._variants) > FILTER_CACHE_SIZE:
            self._variants.popitem(last=False)
        return rendered

    def _filtered(self, stations: tuple[str, ...], keys: tuple[str, ...]) -> dict[str, Any]:
        assert self.doc is not None
        wanted = set(stations) if stations else None
        by_category: dict[str, set[str]] = {}
        for key in keys:
            metric = METRICS_BY_KEY[key]
            by_category.setdefault(metric.category, set()).add(metric.name)
        out: dict[str, Any] = {}
        for station, extensions in self.doc["stations"].items():
            if wanted is not None and station not in wanted:
                continue
            out[station] = {ext: self._filter_point(entry, by_category) if keys else entry
                            for ext, entry in extensions.items()}
        return {"timestamp": self.doc["timestamp"], "stations": out}

    @staticmethod
    def _filter_point(entry: dict[str, Any], by_category: dict[str, set[str]]) -> dict[str, Any]:
        metrics = entry["metrics"]
        if metrics is not None:
            metrics = {cat: {n: v for n, v in values.items() if n in by_category[cat]}
                       for cat, values in metrics.items() if cat in by_category}
        return {**entry, "metrics": metrics}

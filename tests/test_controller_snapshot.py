"""Snapshot cache: the plan's shape, filters, per-tick reuse, gzip and ETag helpers."""
from __future__ import annotations

import gzip
import json

import pytest

from controller.clock import ManualClock
from controller.http.cached import accepts_gzip, etag_matches
from controller.live.snapshot import SnapshotCache, UnknownFields, UnknownStations
from controller.live.state import LiveState
from controller.sample import Sample
from shared import protocol
from shared.metrics import METRICS, MetricType
from shared.topology import Point, Topology

CATEGORY_SIZES = {"buffer": 15, "latency": 12, "packet": 14, "audioQuality": 15, "performance": 12}


def feed(live: LiveState, point: Point, seq: int = 1, value: float = 0.25) -> None:
    metrics = [{MetricType.BOOL: True, MetricType.TIMESTAMP: None, MetricType.INT: 7}.get(m.type, value)
               for m in METRICS]
    live.record(Sample.from_body(point, protocol.sample(point.station, point.extension, seq, 1_700_000_000.0,
                                              metrics, 1).body))


@pytest.fixture
def env():
    clock = ManualClock()
    topology = Topology(3)
    live = LiveState(topology, clock, 1.0, 3.0)
    return clock, live, SnapshotCache(topology, live, clock)


def test_shape_follows_the_plan(env):
    clock, live, cache = env
    feed(live, Point("Station-1", "3333"))
    doc = json.loads(cache.build().body)
    assert set(doc) == {"timestamp", "stations"}
    assert doc["timestamp"].endswith("Z") and len(doc["timestamp"]) == len("2024-01-15T10:30:00.123Z")
    assert list(doc["stations"]) == ["Station-1", "Station-2", "Station-3"]
    assert list(doc["stations"]["Station-1"]) == ["extension_3333", "extension_4444"]
    point = doc["stations"]["Station-1"]["extension_3333"]
    assert point["status"] == "active" and point["measuredAt"] == "2023-11-14T22:13:20.000Z"
    assert list(point["metrics"]) == list(CATEGORY_SIZES)
    assert {c: len(v) for c, v in point["metrics"].items()} == CATEGORY_SIZES
    assert point["metrics"]["latency"]["end_to_end"] == 0.25
    assert point["metrics"]["buffer"]["last_overflow_time"] is None


def test_points_that_never_reported_are_offline_with_null_metrics(env):
    _, _, cache = env
    doc = json.loads(cache.build().body)
    assert doc["stations"]["Station-2"]["extension_4444"] == {"metrics": None, "status": "offline", "measuredAt": None}


def test_the_same_bytes_serve_every_request_until_the_next_build(env):
    clock, live, cache = env
    first = cache.build()
    assert cache.get() is first and cache.get() is first
    feed(live, Point("Station-2", "3333"))
    clock.advance(0.15)
    second = cache.build()
    assert second.etag != first.etag and cache.get() is second


def test_gzip_bytes_decode_to_the_body(env):
    _, _, cache = env
    rendered = cache.build()
    assert gzip.decompress(rendered.gzipped) == rendered.body


def test_station_and_field_filters(env):
    _, live, cache = env
    feed(live, Point("Station-1", "3333"))
    cache.build()
    doc = json.loads(cache.get(("Station-3", "Station-1"), ("latency.end_to_end", "packet.loss_rate")).body)
    assert list(doc["stations"]) == ["Station-1", "Station-3"]
    assert doc["stations"]["Station-1"]["extension_3333"]["metrics"] == {
        "latency": {"end_to_end": 0.25}, "packet": {"loss_rate": 0.25}}
    assert doc["stations"]["Station-3"]["extension_3333"]["metrics"] is None


def test_a_category_name_selects_the_whole_category(env):
    _, live, cache = env
    feed(live, Point("Station-1", "3333"))
    cache.build()
    doc = json.loads(cache.get((), ("performance",)).body)
    assert list(doc["stations"]) == ["Station-1", "Station-2", "Station-3"]
    assert list(doc["stations"]["Station-1"]["extension_3333"]["metrics"]) == ["performance"]
    assert len(doc["stations"]["Station-1"]["extension_3333"]["metrics"]["performance"]) == 12


def test_filtered_variants_are_cached_per_tick_in_any_order(env):
    clock, live, cache = env
    cache.build()
    a = cache.get(("Station-1", "Station-2"), ("latency.jitter",))
    b = cache.get(("Station-2", "Station-1"), ("latency.jitter",))
    assert a is b
    assert cache.hits == 1 and cache.misses == 1
    cache.build()
    assert cache.get(("Station-1", "Station-2"), ("latency.jitter",)) is not a


def test_unknown_stations_and_fields_are_named(env):
    _, _, cache = env
    cache.build()
    with pytest.raises(UnknownStations) as stations:
        cache.get(("Station-1", "Station-9", "Nowhere"), ())
    assert stations.value.names == ["Station-9", "Nowhere"]
    with pytest.raises(UnknownFields) as fields:
        cache.get((), ("latency.end_to_end", "latency.warp", "colour"))
    assert fields.value.names == ["latency.warp", "colour"]


def test_status_counts_are_recorded_per_build(env):
    _, live, cache = env
    feed(live, Point("Station-1", "3333"))
    cache.build()
    assert {s.value: n for s, n in cache.status_counts.items()} == {"active": 1, "stale": 0, "offline": 5}


@pytest.mark.parametrize("header,expected", [
    ("gzip, deflate, br", True), ("br;q=1.0, gzip;q=0.8", True), ("*", True), ("identity", False),
    ("", False), ("gzip;q=0", False), ("deflate, gzip;q=0.0", False), ("GZIP", True),
])
def test_accepts_gzip(header, expected):
    assert accepts_gzip(header) is expected


@pytest.mark.parametrize("header,expected", [
    ('"abc"', True), ('W/"abc"', True), ('"abc-gzip"', True), ('"x", "abc"', True), ("*", True),
    ('"abd"', False), ("", False),
])
def test_etag_matches(header, expected):
    assert etag_matches(header, '"abc"') is expected

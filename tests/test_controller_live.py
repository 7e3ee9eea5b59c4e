"""Controller live state with an injected clock: status transitions, sequence gaps, ingest sanitising."""
from __future__ import annotations

import math

import pytest

from controller.clock import ManualClock
from controller.live.state import LiveState, Status
from controller.sample import Sample
from shared import protocol
from shared.metrics import METRICS, MetricType
from shared.topology import Point, Topology

P1 = Point("Station-1", "3333")


def sample_body(seq: int, measured_at: float = 1_700_000_000.0, knob_version: int = 1, values=None) -> dict:
    metrics = values if values is not None else [_plausible(m) for m in METRICS]
    return protocol.sample(P1.station, P1.extension, seq, measured_at, metrics, knob_version).body


def _plausible(metric):
    return {MetricType.BOOL: False, MetricType.TIMESTAMP: None, MetricType.INT: 3}.get(metric.type, 0.5)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def live(clock) -> LiveState:
    return LiveState(Topology(2), clock, stale_after=1.0, offline_after=3.0)


def test_never_seen_points_are_offline_without_metrics(live):
    assert all(live.status(p) is Status.OFFLINE for p in live.points)
    assert live.points[P1].metrics is None


def test_sample_makes_a_point_active_then_stale_then_offline(live, clock):
    live.record(Sample.from_body(P1, sample_body(1)))
    assert live.status(P1) is Status.ACTIVE
    clock.advance(1.01)
    assert live.status(P1) is Status.STALE
    clock.advance(2.0)
    assert live.status(P1) is Status.OFFLINE


def test_heartbeats_keep_the_agent_online_but_the_point_stale(live, clock):
    live.record(Sample.from_body(P1, sample_body(1)))
    for _ in range(5):
        clock.advance(1.0)
        live.agent_seen("Station-1")
    assert live.status(P1) is Status.STALE


def test_a_point_that_never_sampled_is_offline_even_with_its_agent_online(live):
    live.agent_hello("Station-1")
    assert live.agent_online("Station-1")
    assert live.status(Point("Station-1", "4444")) is Status.OFFLINE


def test_agent_gone_makes_its_points_offline_at_once(live):
    live.record(Sample.from_body(P1, sample_body(1)))
    live.agent_gone("Station-1")
    assert live.status(P1) is Status.OFFLINE


def test_sequence_gaps_count_the_samples_never_received(live):
    for seq in (1, 2, 5, 6, 10):
        live.record(Sample.from_body(P1, sample_body(seq)))
    assert live.points[P1].gaps == 2 + 3
    assert live.total_gaps() == 5


def test_a_hello_resets_the_sequence_baseline(live):
    live.record(Sample.from_body(P1, sample_body(50)))
    live.agent_hello("Station-1")
    live.record(Sample.from_body(P1, sample_body(1)))
    live.record(Sample.from_body(P1, sample_body(2)))
    assert live.points[P1].gaps == 0


def test_sequence_going_backwards_is_a_restart_not_a_gap(live):
    live.record(Sample.from_body(P1, sample_body(50)))
    live.record(Sample.from_body(P1, sample_body(3)))
    live.record(Sample.from_body(P1, sample_body(4)))
    assert live.points[P1].gaps == 0


def test_sample_is_nested_by_catalog_with_iso_timestamps(live, clock):
    values = [_plausible(m) for m in METRICS]
    ts_index = next(i for i, m in enumerate(METRICS) if m.type is MetricType.TIMESTAMP)
    values[ts_index] = 1_700_000_000.5
    state = live.record(Sample.from_body(P1, sample_body(1, measured_at=1_700_000_001.25, knob_version=4, values=values)))
    metric = METRICS[ts_index]
    assert state.metrics[metric.category][metric.name] == "2023-11-14T22:13:20.500Z"
    assert {c: len(v) for c, v in state.metrics.items()} == {
        "buffer": 15, "latency": 12, "packet": 14, "audioQuality": 15, "performance": 12}
    assert state.measured_at == 1_700_000_001.25 and state.applied_version == 4
    assert state.received_at == clock.wall() and live.last_sample_wall == clock.wall()


def test_values_of_the_wrong_type_become_null_and_are_counted(live):
    values = [_plausible(m) for m in METRICS]
    float_i = next(i for i, m in enumerate(METRICS) if m.type is MetricType.FLOAT)
    bool_i = next(i for i, m in enumerate(METRICS) if m.type is MetricType.BOOL)
    int_i = next(i for i, m in enumerate(METRICS) if m.type is MetricType.INT)
    values[float_i], values[bool_i], values[int_i] = math.nan, "yes", b"\x00"
    state = live.record(Sample.from_body(P1, sample_body(1, values=values)))
    for i in (float_i, bool_i, int_i):
        assert state.metrics[METRICS[i].category][METRICS[i].name] is None
    assert state.invalid_values == 3


def test_status_counts(live):
    live.record(Sample.from_body(P1, sample_body(1)))
    counts = live.status_counts()
    assert counts[Status.ACTIVE] == 1 and counts[Status.OFFLINE] == 3

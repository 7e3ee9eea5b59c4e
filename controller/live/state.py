"""Live state of every monitoring point: last sample, freshness, status, sequence gaps, applied knobs."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from controller.clock import Clock, iso_ms
from controller.sample import Sample
from shared.metrics import METRICS, Metric, MetricType, nest
from shared.topology import Point, Topology


class Status(str, Enum):
    ACTIVE = "active"    # a sample arrived within stale_after
    STALE = "stale"      # the agent is reachable but this point sent no sample within stale_after
    OFFLINE = "offline"  # the agent is silent for offline_after, was never seen, or the point never reported


@dataclass
class PointState:
    point: Point
    metrics: dict[str, dict[str, Any]] | None = None  # nested by category, JSON-ready
    measured_at: float | None = None                  # agent's wall clock, epoch seconds
    received_at: float | None = None                  # controller's wall clock, epoch seconds
    received_mono: float | None = None
    seq: int | None = None
    gaps: int = 0                                     # samples the controller never received
    samples: int = 0
    applied_version: int | None = None                # knob version the agent last reported
    conditions: Mapping[str, Any] = field(default_factory=dict)
    invalid_values: int = 0                           # metric values dropped to null at ingest


@dataclass
class AgentState:
    station: str
    last_seen_mono: float | None = None
    hello_count: int = 0


def json_value(metric: Metric, value: Any) -> Any:
    """A wire value as the snapshot shows it; None when it is not of the metric's type.

    Done once per sample at ingest, so a bad value from an agent (NaN, bytes, a nested map)
    can never break the snapshot's serialization and every request reuses the result.
    """
    if metric.type is MetricType.TIMESTAMP:
        return iso_ms(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if metric.type is MetricType.BOOL:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value) if metric.type is MetricType.INT and float(value).is_integer() else value


class LiveState:
    """What the controller knows right now about the configured points and their agents."""

    def __init__(self, topology: Topology, clock: Clock, stale_after: float, offline_after: float) -> None:
        self.topology = topology
        self.clock = clock
        self.stale_after = stale_after
        self.offline_after = offline_after
        self.points: dict[Point, PointState] = {p: PointState(p) for p in topology.points}
        self.agents: dict[str, AgentState] = {s: AgentState(s) for s in topology.stations}
        self.last_sample_wall: float | None = None

    def agent_seen(self, station: str) -> None:
        self.agents[station].last_seen_mono = self.clock.monotonic()

    def agent_hello(self, station: str) -> None:
        """A (re)started agent: its sequence numbers start over, so the gap baseline resets."""
        agent = self.agents[station]
        agent.hello_count += 1
        self.agent_seen(station)
        for point in self.topology.points:
            if point.station == station:
                self.points[point].seq = None

    def agent_gone(self, station: str) -> None:
        """The link knows the agent is disconnected (a send to it was refused)."""
        self.agents[station].last_seen_mono = None

    def agent_online(self, station: str) -> bool:
        seen = self.agents[station].last_seen_mono
        return seen is not None and self.clock.monotonic() - seen <= self.offline_after

    def record(self, sample: Sample) -> PointState:
        point = sample.point
        state = self.points[point]
        seq = sample.seq
        if state.seq is not None and seq > state.seq + 1:
            state.gaps += seq - state.seq - 1
        # seq <= previous means a restart without a HELLO we saw: a new baseline, not a gap.
        state.seq = seq
        flat: dict[str, Any] = {}
        for metric, raw in zip(METRICS, sample.values):
            value = flat[metric.key] = json_value(metric, raw)
            if value is None and raw is not None:
                state.invalid_values += 1
        state.metrics = nest(flat)
        state.measured_at = sample.measured_at
        state.received_at = self.clock.wall()
        state.received_mono = self.clock.monotonic()
        state.samples += 1
        state.applied_version = sample.knob_version
        state.conditions = sample.conditions  # the body's own dict, checked by Sample.from_body
        self.last_sample_wall = state.received_at
        self.agent_seen(point.station)
        return state

    def set_applied(self, point: Point, version: int) -> None:
        self.points[point].applied_version = version

    def status(self, point: Point) -> Status:
        state = self.points[point]
        if state.received_mono is None or not self.agent_online(point.station):
            return Status.OFFLINE
        if self.clock.monotonic() - state.received_mono > self.stale_after:
            return Status.STALE
        return Status.ACTIVE

    def status_counts(self) -> dict[Status, int]:
        counts = {s: 0 for s in Status}
        for point in self.points:
            counts[self.status(point)] += 1
        return counts

    def total_gaps(self) -> int:
        return sum(s.gaps for s in self.points.values())

    def measured_iso(self, point: Point) -> str | None:
        return iso_ms(self.points[point].measured_at)

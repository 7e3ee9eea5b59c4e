"""The simulated path between sender and receiver: delay, jitter, bursty loss, duplicates, reordering, corruption, drift.

Time is the agent's frame clock in milliseconds. Loss follows a two-state Gilbert-Elliott
chain (every packet lost in the bad state, none in the good one): with mean burst length
L and long-run loss rate p, P(bad -> good) = 1/L and P(good -> bad) = p / (L (1 - p)).
Queueing delay is exponential with standard deviation jitter_ms on a FIFO link (a packet
never overtakes its predecessor), except the packets chosen for reordering, which are held
back one to three packet intervals, and duplicates, which arrive shortly after the original.
An optional bottleneck (bandwidth_kbps) serialises packets and drops them when its queue
holds more than queue_ms of traffic, so sender pacing and FEC overhead matter there.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

import numpy as np

from agent.sim.conditions import Drift, SimConditions
from agent.sim.packet import Packet


@dataclass
class PathState:
    """The conditions in force at one instant (after drift): what `conditions` reports."""
    delay_ms: float
    jitter_ms: float
    loss_rate: float


class GilbertElliott:
    """Two-state loss chain; `lost(p, L)` advances it by one packet under the current rate."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.bad = False

    def lost(self, loss_rate: float, burst_length: float) -> bool:
        r = 1.0 / burst_length
        p = min(1.0, r * loss_rate / (1.0 - loss_rate)) if loss_rate > 0 else 0.0
        u = self.rng.random()
        self.bad = (u >= r) if self.bad else (u < p)
        return self.bad


class SimNetwork:
    """One direction of the path carrying media and parity, plus the reverse path for NACKs."""

    def __init__(self, cond: SimConditions, rng: np.random.Generator) -> None:
        self.cond = cond
        self.rng = rng
        self.drift = Drift(cond.drift, cond.drift_period_s, rng)
        self.forward_loss = GilbertElliott(rng)
        self.reverse_loss = GilbertElliott(rng)
        self._in_flight: list[tuple[float, int, Packet]] = []
        self._order = itertools.count()
        self._fifo_arrival = 0.0
        self._link_free_ms = 0.0
        self.sent = self.dropped = self.duplicated = self.reordered = self.corrupted = self.queue_drops = 0

    def state(self, t_ms: float) -> PathState:
        c, f = self.cond, self.drift.at(t_ms)
        return PathState(max(0.0, c.delay_ms + c.drift_delay_ms * f),
                         max(0.0, c.jitter_ms + c.drift_jitter_ms * f),
                         min(0.95, max(0.0, c.loss_rate + c.drift_loss_rate * f)))

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def send(self, packet: Packet, t_ms: float, interval_ms: float) -> None:
        """Put a packet on the wire at `t_ms`; `interval_ms` is the media packet spacing (reorder hold-back unit)."""
        self.sent += 1
        packet.send_ms = t_ms
        start = self._bottleneck(packet, t_ms)
        if start is None:
            return
        st = self.state(t_ms)
        if self.forward_loss.lost(st.loss_rate, self.cond.burst_length):
            self.dropped += 1
            return
        arrival = start + st.delay_ms + (self.rng.exponential(st.jitter_ms) if st.jitter_ms > 0 else 0.0)
        rng = self.rng
        if rng.random() < self.cond.reorder_rate:
            self.reordered += 1
            arrival = max(arrival, self._fifo_arrival) + interval_ms * rng.uniform(1.05, 3.0)
        else:
            arrival = max(arrival, self._fifo_arrival)
            self._fifo_arrival = arrival
        self._deliver_at(packet, arrival)
        if rng.random() < self.cond.duplicate_rate:
            self.duplicated += 1
            self._deliver_at(packet.copy(), arrival + rng.uniform(0.1, 10.0))

    def _bottleneck(self, packet: Packet, t_ms: float) -> float | None:
        """Serialisation on the bottleneck: when the packet leaves it, or None when its queue is full."""
        rate = self.cond.bandwidth_kbps
        if rate <= 0:
            return t_ms
        backlog = max(0.0, self._link_free_ms - t_ms)
        if backlog > self.cond.queue_ms:
            self.queue_drops += 1
            return None
        self._link_free_ms = max(self._link_free_ms, t_ms) + packet.wire_bytes * 8 / rate  # kbit/s = bit/ms
        return self._link_free_ms

    def _deliver_at(self, packet: Packet, arrival: float) -> None:
        if self.cond.corruption_rate and self.rng.random() < self.cond.corruption_rate:
            self.corrupted += 1
            data = bytearray(packet.payload)
            data[int(self.rng.integers(len(data)))] ^= 0x5A
            packet = packet.copy()
            packet.payload = bytes(data)
        packet.arrival_ms = arrival
        heapq.heappush(self._in_flight, (arrival, next(self._order), packet))

    def deliver(self, t_ms: float) -> list[Packet]:
        """Every packet whose arrival time is at or before `t_ms`, in arrival order."""
        out: list[Packet] = []
        heap = self._in_flight
        while heap and heap[0][0] <= t_ms:
            out.append(heapq.heappop(heap)[2])
        return out

    def feedback_delay(self, t_ms: float) -> float | None:
        """One-way time of a receiver-to-sender NACK sent at `t_ms`, or None when the NACK is lost."""
        st = self.state(t_ms)
        if self.reverse_loss.lost(st.loss_rate, self.cond.burst_length):
            return None
        return st.delay_ms + (self.rng.exponential(st.jitter_ms) if st.jitter_ms > 0 else 0.0)

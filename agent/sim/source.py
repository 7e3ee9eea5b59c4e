"""The built-in simulator as a PacketSource: capture -> sender -> simulated path -> arrivals, and the NACK path back.

`arrivals(until_ms)` runs the far side up to `until_ms`: every 20 ms frame captured by then
is synthesised (agent/sim/capture.py), mu-law encoded and handed to the sender, NACKs that
have crossed the reverse path reach the sender, and what the path delivered by then is
returned. Only this source knows the clean talker and the far-end signal (its `references`)
and the sender's and path's own counters (`send_figures()`).
"""
from __future__ import annotations

import heapq
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.codec import MU_LAW_16K
from agent.sim.capture import SimCapture
from agent.sim.conditions import SimConditions
from agent.sim.network import SimNetwork
from agent.sim.packet import arrival
from agent.sim.sender import Sender
from agent.source import Arrival, SendFigures

FRAME_MS = 20.0
_RING = 16000 * 10                 # media samples of clean / far-end history (10 s)
_EPS_MS = 1e-6                     # a frame ending at until_ms is captured by then
_MIN, _MAX = np.minimum.reduce, np.maximum.reduce  # ndarray.min/max without their Python-level wrappers


class SimReferences:
    """Rings of the clean talker and the far-end signal indexed by media sample (a ReferenceAudio)."""

    def __init__(self, ring: int = _RING) -> None:
        self._clean = np.zeros(ring)
        self._far = np.zeros(ring)
        self.captured = 0  # media samples recorded so far

    def record(self, clean: np.ndarray, far: np.ndarray) -> None:
        pos = self.captured % len(self._clean)
        self._clean[pos:pos + len(clean)] = clean
        self._far[pos:pos + len(far)] = far
        self.captured += len(clean)

    def clean(self, media: np.ndarray) -> np.ndarray:
        return self._lookup(self._clean, media)

    def far_end(self, media: np.ndarray) -> np.ndarray:
        return self._lookup(self._far, media)

    def _lookup(self, ring: np.ndarray, media: np.ndarray) -> np.ndarray:
        """Ring samples at media indices; zero where the index is not (or no longer) held."""
        lo, hi = self.captured - len(ring), self.captured
        if _MIN(media) >= max(lo, 0) and _MAX(media) < hi:  # the usual case: every index held
            return ring.take(media, mode="wrap")
        valid = (media >= 0) & (media < hi) & (media >= lo)
        return np.where(valid, ring.take(media, mode="wrap"), 0.0)


class SimPacketSource:
    """Seeded far side of one extension: the same seed and knobs give the same packets."""
    payload_format = MU_LAW_16K
    capture_origin_ms = 0.0  # media sample k is captured at k / 16 ms on the frame clock

    def __init__(self, cond: SimConditions, seed: int, knobs: Mapping[str, Any]) -> None:
        self.cond = cond
        seeds = np.random.SeedSequence(seed).spawn(2)
        self.capture = SimCapture(cond, int(seeds[0].generate_state(1)[0]))
        self.network = SimNetwork(cond, np.random.default_rng(seeds[1]))
        self.sender = Sender(self.network, knobs)
        self.references = SimReferences()
        self._nacks: list[tuple[float, int]] = []  # (reaches the sender at, seq16)
        self._captured_ms = 0.0                     # frame clock at the end of the last captured frame
        # Thread CPU time of the far side (speech and noise synthesis, mu-law encoding, packetisation,
        # FEC, pacing, the network's send-side draws): work a station fed by real RTP would not do. The
        # network's deliveries and NACK handling stay in the agent's share.
        self.far_side_cpu_s = 0.0

    def configure(self, knobs: Mapping[str, Any]) -> None:
        self.sender.configure(knobs)

    def arrivals(self, until_ms: float) -> list[Arrival]:
        while self._captured_ms + FRAME_MS <= until_ms + _EPS_MS:
            self._capture_frame()
        while self._nacks and self._nacks[0][0] <= until_ms:
            _, seq16 = heapq.heappop(self._nacks)
            self.sender.nack(seq16, until_ms)
        return [arrival(p) for p in self.network.deliver(until_ms)]

    def _capture_frame(self) -> None:
        started = time.thread_time()
        payload, clean, far = self.capture.next_payload()
        self._captured_ms += FRAME_MS
        self.sender.push(payload, self.references.captured, self._captured_ms)
        self.far_side_cpu_s += time.thread_time() - started
        self.references.record(clean, far)

    def request_retransmission(self, seq: int, now_ms: float) -> None:
        delay = self.network.feedback_delay(now_ms)  # None: the NACK was lost on the reverse path
        if delay is not None:
            heapq.heappush(self._nacks, (now_ms + delay, seq & 0xFFFF))

    def send_figures(self) -> SendFigures:
        s, now = self.sender, self._captured_ms
        return SendFigures(s.media_sent, s.parity_sent, s.retransmits_sent, s.pacer.drops,
                           s.pacer.queue_packets(now), s.pacer.queue_ms(now), self.network.in_flight,
                           self.far_side_cpu_s)

    def conditions(self, now_ms: float) -> dict[str, Any]:
        """The simulated path in force now (after drift) and the room."""
        st = self.network.state(now_ms)
        c = self.cond
        return {
            "delay_ms": round(st.delay_ms, 3), "jitter_ms": round(st.jitter_ms, 3), "loss_rate": round(st.loss_rate, 5),
            "burst_length": c.burst_length, "duplicate_rate": c.duplicate_rate, "reorder_rate": c.reorder_rate,
            "corruption_rate": c.corruption_rate, "bandwidth_kbps": c.bandwidth_kbps, "noise_dbfs": c.noise_dbfs,
            "echo_gain_db": c.echo_gain_db, "echo_delay_ms": c.echo_delay_ms,
        }


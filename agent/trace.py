"""The rolling trace of what one extension's pipeline received: the input of what-if replay (agent/replay.py).

`RecordingSource` sits between a PacketSource and the receiver and keeps, for the last
`span_ms`, every Arrival the receiver took (sequence number, media timestamp, payload,
arrival time, …) and, where the source knows them (the simulator), the clean talker and
far-end signals of the media captured in that span, so a replay scores SNR, SINAD and the
echo canceller exactly as live. Recording is a deque append per packet and two 20 ms slices
per frame; a snapshot copies references only (a few MB for 60 s), never on the frame path's
hot side except when a replay is asked for.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.codec import PayloadFormat
from agent.source import Arrival, PacketSource, SendFigures


@dataclass(frozen=True)
class TraceSnapshot:
    """What a replay needs, picklable (it crosses into the replay worker process)."""
    arrivals: tuple[Arrival, ...]
    start_ms: float                       # frame-clock time the trace starts (its first frame boundary)
    end_ms: float                         # frame-clock time of the newest frame the pipeline stepped
    payload_format: PayloadFormat
    capture_origin_ms: float
    knobs: dict[str, Any]                 # the full set the live pipeline ran at the end of the trace
    conditions: dict[str, Any]
    ref_start: int = 0                    # media index of the first reference sample held
    clean: np.ndarray | None = None       # float32 near-end talker from ref_start on (None: no references)
    far: np.ndarray | None = None
    sim: dict[str, Any] = field(default_factory=dict)   # the simulator's conditions and seed, for re-simulation

    @property
    def span_ms(self) -> float:
        return self.end_ms - self.start_ms


class RecordingSource:
    """A PacketSource that forwards to `inner` and remembers the last `span_ms` of what it delivered."""

    def __init__(self, inner: PacketSource, span_ms: float) -> None:
        self.inner = inner
        self.span_ms = span_ms
        self.payload_format = inner.payload_format
        self.capture_origin_ms = inner.capture_origin_ms
        self._arrivals: deque[Arrival] = deque()
        self._refs: deque[tuple[int, np.ndarray, np.ndarray]] = deque()   # (first media index, clean, far)
        self._ref_end = 0          # media index after the last reference sample kept
        self._frames: deque[float] = deque()   # frame-clock times of the frames delivered (the trace's span)

    @property
    def references(self) -> Any:
        return self.inner.references

    def configure(self, knobs: Mapping[str, Any]) -> None:
        self.inner.configure(knobs)

    def arrivals(self, until_ms: float) -> list[Arrival]:
        got = self.inner.arrivals(until_ms)
        self._arrivals.extend(got)
        self._frames.append(until_ms)
        self._keep_references()
        horizon = until_ms - self.span_ms
        while self._frames and self._frames[0] < horizon:
            self._frames.popleft()
        while self._arrivals and self._arrivals[0].arrival_ms < horizon:
            self._arrivals.popleft()
        return got

    def _keep_references(self) -> None:
        refs = self.inner.references
        captured = getattr(refs, "captured", None)
        if refs is None or captured is None or captured <= self._ref_end:
            return
        start = max(self._ref_end, captured - 16000)   # at most the last second, should frames be skipped
        media = np.arange(start, captured)
        self._refs.append((start, refs.clean(media).astype(np.float32), refs.far_end(media).astype(np.float32)))
        self._ref_end = captured
        keep = int(self.span_ms * 16) + 32000           # the span plus the playout's reach back (2 s)
        while self._refs and self._refs[0][0] + len(self._refs[0][1]) < captured - keep:
            self._refs.popleft()

    def request_retransmission(self, seq: int, now_ms: float) -> None:
        self.inner.request_retransmission(seq, now_ms)

    def send_figures(self) -> SendFigures | None:
        return self.inner.send_figures()

    def conditions(self, now_ms: float) -> dict[str, Any]:
        return self.inner.conditions(now_ms)

    @property
    def ready_ms(self) -> float:
        """How much trace is held, in ms of frame clock."""
        return (self._frames[-1] - self._frames[0]) if len(self._frames) > 1 else 0.0

    def snapshot(self, knobs: Mapping[str, Any], conditions: Mapping[str, Any],
                 sim: Mapping[str, Any] | None = None) -> TraceSnapshot:
        clean = far = None
        ref_start = 0
        if self._refs:
            ref_start = self._refs[0][0]
            clean = np.concatenate([c for _, c, _ in self._refs])
            far = np.concatenate([f for _, _, f in self._refs])
        start = self._frames[0] if self._frames else 0.0
        end = self._frames[-1] if self._frames else 0.0
        return TraceSnapshot(tuple(a for a in self._arrivals if a.arrival_ms > start), start, end,
                             self.payload_format, self.capture_origin_ms, dict(knobs), dict(conditions),
                             ref_start, clean, far, dict(sim or {}))

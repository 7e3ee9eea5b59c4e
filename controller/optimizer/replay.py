"""The controller's side of what-if replay: send EVALUATE to a point's agent, wait for its EVALUATION.

The agent replays its recent trace of the extension through fresh instances of its real
pipeline, one per candidate knob set (agent/replay.py), and answers with the 68 metrics per
window of each. One request per agent at a time is all an agent accepts (it answers "busy"
otherwise), so the client keeps one request per station in flight and says so plainly.
"""
from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from controller.clock import Clock
from shared import protocol
from shared.metrics import METRIC_COUNT
from shared.protocol import MAX_CANDIDATES, Message
from shared.topology import Point

Sender = Callable[[str, Message], Awaitable[None]]


class ReplayUnavailable(Exception):
    """The agent could not answer a replay: offline, busy, refused, or too slow. The message says which."""


@dataclass(frozen=True)
class ReplayResult:
    knobs: dict[str, Any]        # the full knob set replayed
    windows: np.ndarray          # (w, 68) float64 in catalog order; NaN where a value was None or not a number
    send_replayed: bool          # send knobs were re-simulated (simulator) rather than taken as traced


@dataclass(frozen=True)
class ReplayAnswer:
    point: Point
    results: list[ReplayResult]
    conditions: dict[str, Any]
    trace_s: float
    window_s: float


class ReplayClient:
    def __init__(self, send: Sender, clock: Clock) -> None:
        self.send, self.clock = send, clock
        self._ids = itertools.count(1)
        self._waiting: dict[str, tuple[Point, list[dict[str, Any]], asyncio.Future[dict[str, Any]]]] = {}
        self._busy: dict[str, asyncio.Lock] = {}
        self.answered = self.failed = 0

    async def evaluate(self, point: Point, candidates: list[dict[str, Any]], timeout_s: float) -> ReplayAnswer:
        """Replay `candidates` (full knob sets, at most MAX_CANDIDATES) on `point`'s recent trace."""
        if not candidates or len(candidates) > MAX_CANDIDATES:
            raise ValueError(f"1 to {MAX_CANDIDATES} candidates per replay, not {len(candidates)}")
        lock = self._busy.setdefault(point.station, asyncio.Lock())
        async with lock:
            request_id = f"ev{next(self._ids)}"
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._waiting[request_id] = (point, candidates, future)
            try:
                try:
                    await self.send(point.station, protocol.evaluate(point.station, point.extension, request_id,
                                                                     candidates))
                except Exception as exc:  # the sender's way of saying "not connected"
                    raise ReplayUnavailable(f"agent {point.station} is not connected ({exc})") from None
                try:
                    body = await asyncio.wait_for(future, timeout_s)
                except TimeoutError:
                    raise ReplayUnavailable(f"agent {point.station} did not answer the replay within "
                                            f"{timeout_s:.0f} s") from None
            except ReplayUnavailable:
                self.failed += 1
                raise
            finally:
                self._waiting.pop(request_id, None)
        if not body["ok"]:
            self.failed += 1
            raise ReplayUnavailable(f"agent {point.station} refused the replay: {body.get('error') or 'no reason'}")
        results = body["results"]
        if len(results) != len(candidates):
            self.failed += 1
            raise ReplayUnavailable(f"agent {point.station} answered {len(results)} results for "
                                    f"{len(candidates)} candidates")
        self.answered += 1
        return ReplayAnswer(point, [ReplayResult(dict(c), _matrix(r["windows"]), bool(r.get("send_replayed", False)))
                                    for c, r in zip(candidates, results)],
                            dict(body.get("conditions") or {}), _number(body.get("trace_s")),
                            _number(body.get("window_s")))

    def on_evaluation(self, point: Point, body: dict[str, Any]) -> None:
        """An EVALUATION from the agent (ingest checked the sender speaks for the station)."""
        waiting = self._waiting.get(body["request_id"])
        if waiting is None or waiting[0] != point or waiting[2].done():
            return  # late (timed out) or not ours
        waiting[2].set_result(body)


def _matrix(windows: list[list[Any]]) -> np.ndarray:
    out = np.full((len(windows), METRIC_COUNT), np.nan)
    for i, row in enumerate(windows):
        out[i] = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else
                  (1.0 if v is True else 0.0 if v is False else math.nan) for v in row]
    return out


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan

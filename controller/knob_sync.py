"""Desired vs applied knobs: accept changes, push KNOB_SETs, wait for ACKs, reconcile on contact."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from controller.clock import Clock
from controller.config_store import ConfigStore, DesiredKnobs
from controller.live import LiveState
from shared.knobs import KnobProblem, validate
from shared.protocol import Message, knob_set
from shared.topology import Point

log = logging.getLogger("tpmon.controller.knobs")

# Sends `msg` to a station's agent; raises (any Exception) when the agent is unreachable.
Sender = Callable[[str, Message], Awaitable[None]]


class InvalidKnobs(Exception):
    """A change that fails validation; nothing was stored or sent."""

    def __init__(self, problems: list[KnobProblem]) -> None:
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems


@dataclass
class ChangeResult:
    desired: DesiredKnobs
    applied: bool
    applied_version: int | None = None
    reason: str | None = None
    errors: list[dict[str, str]] = field(default_factory=list)


@dataclass
class _Ack:
    version: int
    ok: bool
    errors: list[dict[str, str]]


class KnobSync:
    """Owns the path from an accepted change to the agent's acknowledgement.

    Writes are serialized per point by a lock held while validating, persisting and sending,
    so versions are monotonic and agents receive them in order; the wait for the ACK happens
    outside the lock so a slow agent does not block the next change.
    """

    def __init__(self, store: ConfigStore, live: LiveState, sender: Sender, clock: Clock,
                 ack_timeout: float) -> None:
        self.store = store
        self.live = live
        self.sender = sender
        self.clock = clock
        self.ack_timeout = ack_timeout
        self._locks: dict[Point, asyncio.Lock] = {}
        self._inflight: dict[Point, tuple[int, float]] = {}      # version sent, monotonic send time
        self._waiters: dict[Point, list[tuple[int, asyncio.Future[_Ack]]]] = {}
        self.rejected: dict[Point, _Ack] = {}                     # last set the agent refused

    def outstanding(self) -> int:
        """KNOB_SETs sent and not yet acknowledged (within the ack timeout), plus waiting requests."""
        now = self.clock.monotonic()
        inflight = sum(1 for _, sent in self._inflight.values() if now - sent <= self.ack_timeout)
        return inflight + sum(len(w) for w in self._waiters.values())

    async def change(self, point: Point, partial: Any, updated_by: str) -> ChangeResult:
        """Validate, persist as the next version, push, and wait for the agent's answer."""
        lock = self._locks.setdefault(point, asyncio.Lock())
        async with lock:
            current = self.store.get(point)
            clean, problems = validate(partial, base=current.knobs)
            if not problems and not clean:
                problems = [KnobProblem("body", "no knobs given: send an object such as {\"agc_enabled\": true}")]
            if problems:
                raise InvalidKnobs(problems)
            desired = await self.store.put(point, {**current.knobs, **clean}, updated_by)
            waiter: asyncio.Future[_Ack] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(point, []).append((desired.version, waiter))
            sent = await self.push(point, desired)
        try:
            if not sent:
                return ChangeResult(desired, False, reason=self._offline_reason(point))
            try:
                ack = await asyncio.wait_for(waiter, self.ack_timeout)
            except asyncio.TimeoutError:
                return ChangeResult(desired, False, reason=self._timeout_reason(point))
        finally:
            self._forget_waiter(point, waiter)
        if not ack.ok:
            return ChangeResult(desired, False, ack.version,
                                f"agent {point.station} rejected version {ack.version}", ack.errors)
        return ChangeResult(desired, True, ack.version)

    def _offline_reason(self, point: Point) -> str:
        return (f"agent {point.station} is offline; the change is stored and will be applied "
                "when it reconnects")

    def _timeout_reason(self, point: Point) -> str:
        if not self.live.agent_online(point.station):
            return self._offline_reason(point)
        return (f"agent {point.station} did not acknowledge within {round(self.ack_timeout * 1000)} ms; "
                "the change is stored and will be re-sent until the agent reports it applied")

    def _forget_waiter(self, point: Point, waiter: asyncio.Future[_Ack]) -> None:
        waiting = self._waiters.get(point, [])
        self._waiters[point] = [(v, w) for v, w in waiting if w is not waiter]
        if not waiter.done():
            waiter.cancel()

    async def push(self, point: Point, desired: DesiredKnobs | None = None) -> bool:
        """Send the full desired set; False when the agent is not connected (it gets it on HELLO)."""
        desired = desired or self.store.get(point)
        msg = knob_set(point.station, point.extension, desired.version, desired.knobs)
        try:
            await self.sender(point.station, msg)
        except Exception as exc:  # the sender's way of saying "not connected"
            log.info("knob set %s v%d not sent: %s", point.id, desired.version, exc)
            self._inflight.pop(point, None)
            return False
        self._inflight[point] = (desired.version, self.clock.monotonic())
        return True

    async def on_hello(self, station: str, extensions: list[str], applied: dict[str, Any]) -> None:
        """A (re)connected agent: send every extension whose applied version is not the desired one."""
        for ext in extensions:
            point = Point(station, ext)
            version = applied.get(ext)
            if isinstance(version, int) and not isinstance(version, bool):
                self.live.set_applied(point, version)
            self._inflight.pop(point, None)   # whatever was in flight went to the old connection
            self.rejected.pop(point, None)    # a restarted agent may accept what it refused before
            if version != self.store.get(point).version:
                await self.push(point)

    async def on_sample(self, point: Point, knob_version: int) -> None:
        """Re-send when the applied version differs, unless a send is in flight or was refused."""
        desired = self.store.get(point)
        if knob_version == desired.version:
            self._inflight.pop(point, None)
            return
        refused = self.rejected.get(point)
        if refused is not None and refused.version == desired.version:
            return  # re-sending what the agent refused would loop; the GET shows the errors
        inflight = self._inflight.get(point)
        if inflight and inflight[0] == desired.version and self.clock.monotonic() - inflight[1] < self.ack_timeout:
            return
        await self.push(point, desired)

    def on_ack(self, point: Point, version: int, ok: bool, errors: list[Any]) -> None:
        ack = _Ack(version, ok, [e for e in errors if isinstance(e, dict)])
        inflight = self._inflight.get(point)
        if inflight and inflight[0] <= version:
            self._inflight.pop(point, None)
        if ok:
            self.live.set_applied(point, version)
            self.rejected.pop(point, None)
        else:
            self.rejected[point] = ack
        for waited, future in self._waiters.get(point, []):
            # A later version applied includes every earlier change (full sets, applied in order).
            if not future.done() and (waited == version or (ok and waited < version)):
                future.set_result(ack)

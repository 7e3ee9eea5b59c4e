"""Desired vs applied knobs: accept changes, push KNOB_SETs, wait for ACKs, reconcile on contact."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from controller.clock import Clock, iso_ms
from controller.events import EventBus
from controller.http import logs
from controller.knobs.changes import Attribution, Change, Draft, KnobChangeLog
from controller.knobs.desired import DesiredKnobs, DesiredKnobStore
from controller.live.state import LiveState
from controller.security.audit import AuditLog
from shared.knobs import KnobProblem, validate
from shared.protocol import Message, knob_set
from shared.topology import Point

log = logging.getLogger("tpmon.controller.knobs")

# Sends `msg` to a station's agent; raises (any Exception) when the agent is unreachable.
Sender = Callable[[str, Message], Awaitable[None]]


class RevertConflict(Exception):
    """A revert that would undo more than its caller knows: the desired version moved on (409)."""


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


@dataclass
class Staged:
    """A change recorded, stored and sent (unless the agent is offline), waiting for the agent's answer."""
    point: Point
    desired: DesiredKnobs
    previous: DesiredKnobs
    change: Change
    waiter: asyncio.Future[_Ack]
    sent: bool


class KnobSync:
    """Owns the path from an accepted change to the agent's acknowledgement.

    Writes are serialized per point by a lock held while validating, persisting and sending,
    so versions are monotonic and agents receive them in order; the wait for the ACK happens
    outside the lock so a slow agent does not block the next change. A batch holds the locks
    of all its points (taken in one fixed order, so two batches never deadlock) until its
    ACKs, and its rollback if any, are in: overlapping batches never interleave on a point.

    `commit` is the one path every change takes (API, batch, template, rollback, revert, the
    optimizer): the change is recorded in the knob change log before its desired set is stored,
    and written to the audit log once stored, so nothing in or out of the controller changes a
    point's knobs without both; it settles with a "knob-changed" event. When an agent reports a
    version applied (ACK, or a sample or HELLO running it), one "knob-applied" event says so.
    """

    def __init__(self, store: DesiredKnobStore, live: LiveState, sender: Sender, clock: Clock,
                 ack_timeout: float, history: KnobChangeLog, events: EventBus | None = None,
                 audit: AuditLog | None = None) -> None:
        self.store = store
        self.live = live
        self.sender = sender
        self.clock = clock
        self.ack_timeout = ack_timeout
        self.history = history
        self.events = events
        self.audit = audit
        self._unannounced: dict[Point, int] = {}                  # newest committed version not yet seen applied
        self._locks: dict[Point, asyncio.Lock] = {}
        self._inflight: dict[Point, tuple[int, float]] = {}      # version sent, monotonic send time
        self._waiters: dict[Point, list[tuple[int, asyncio.Future[_Ack]]]] = {}
        self.rejected: dict[Point, _Ack] = {}                     # last set the agent refused

    def outstanding(self) -> int:
        """KNOB_SETs sent and not yet acknowledged (within the ack timeout), plus waiting requests."""
        now = self.clock.monotonic()
        inflight = sum(1 for _, sent in self._inflight.values() if now - sent <= self.ack_timeout)
        return inflight + sum(len(w) for w in self._waiters.values())

    def _lock(self, point: Point) -> asyncio.Lock:
        return self._locks.setdefault(point, asyncio.Lock())

    @asynccontextmanager
    async def locked(self, points: Iterable[Point]) -> AsyncIterator[None]:
        """Hold the locks of `points`, taken in sorted order so two holders of overlapping sets never deadlock."""
        async with AsyncExitStack() as stack:
            for point in sorted(set(points)):
                await stack.enter_async_context(self._lock(point))
            yield

    async def change(self, point: Point, partial: Any, who: Attribution) -> ChangeResult:
        """Validate, record, persist as the next version, push, and wait for the agent's answer."""
        async with self.locked([point]):
            clean = self.check(point, partial)
            [staged] = await self.commit({point: clean}, who)
        return await self.settle(staged)

    async def revert(self, point: Point, to_version: int, who: Attribution,
                     expected: int | None = None) -> ChangeResult:
        """Bring back the full knob set of `to_version` as the next version (recorded like any change).

        Refused (RevertConflict) unless the point's desired version is still `expected` (default
        `to_version + 1`: the change being undone), so a revert never undoes a change somebody
        made in between.
        """
        async with self.locked([point]):
            staged = await self.commit_reverts({point: (to_version, expected)}, who)
        if not staged:  # already the set of to_version: nothing to record or send
            current, applied = self.store.get(point), self.live.points[point].applied_version
            return ChangeResult(current, applied == current.version, applied,
                                reason=f"the knobs are already those of version {to_version}")
        return await self.settle(staged[0])

    async def commit_reverts(self, targets: Mapping[Point, tuple[int, int | None]], who: Attribution,
                             known_sets: Mapping[Point, Mapping[str, Any]] | None = None) -> list[Staged]:
        """Commit reverts of several points (to_version, expected) at once; the caller holds their locks.

        The set of `to_version` comes from `known_sets` (a caller that holds it, as a batch does)
        or the knob change log. Every point is checked before anything changes: one conflict
        refuses them all.
        """
        changes: dict[Point, dict[str, Any]] = {}
        for point, (to_version, expected) in targets.items():
            current = self.store.get(point)
            expected = to_version + 1 if expected is None else expected
            if current.version != expected:
                raise RevertConflict(f"{point.id} is at version {current.version}, not {expected}: it changed "
                                     f"since, so going back to version {to_version} would undo that change too")
            target = (known_sets or {}).get(point) or await self.history.knob_set_at(point, to_version)
            if target is None:
                raise RevertConflict(f"{point.id}: the knob set of version {to_version} is not on record")
            restore = {k: v for k, v in target.items() if k in current.knobs and current.knobs[k] != v}
            if restore:
                changes[point] = self.check(point, restore)
        return await self.commit(changes, who) if changes else []

    def check(self, point: Point, partial: Any) -> dict[str, Any]:
        """The canonical values of `partial` against the point's stored set; InvalidKnobs listing every problem."""
        clean, problems = validate(partial, base=self.store.get(point).knobs)
        if not problems and not clean:
            problems = [KnobProblem("body", "no knobs given: send an object such as {\"agc_enabled\": true}")]
        if problems:
            raise InvalidKnobs(problems)
        return clean

    async def commit(self, changes: Mapping[Point, Mapping[str, Any]], who: Attribution) -> list[Staged]:
        """Record, store and push already checked partial sets; the caller holds every point's lock.

        The history records go first (one write): a crash before the desired sets are stored
        leaves records of versions never stored, which KnobChangeLog.open drops.
        """
        drafts = []
        for point, partial in changes.items():
            current = self.store.get(point)
            drafts.append(Draft(point, current.version + 1, {k: (current.knobs[k], v) for k, v in partial.items()},
                                {**current.knobs, **partial}))
        records = await self.history.record(drafts, who)
        staged: list[Staged] = []
        try:
            for record, (point, partial) in zip(records, changes.items()):
                previous = self.store.get(point)
                desired = await self.store.put(point, {**previous.knobs, **partial}, who.by)
                waiter: asyncio.Future[_Ack] = asyncio.get_running_loop().create_future()
                self._waiters.setdefault(point, []).append((desired.version, waiter))
                staged.append(Staged(point, desired, previous, record, waiter, sent=False))
                self._unannounced[point] = desired.version
                staged[-1].sent = await self.push(point, desired)
        except BaseException:
            await self.history.discard(records[len(staged):])  # never stored: no record may claim them
            for done in staged:
                self._forget_waiter(done.point, done.waiter)
            raise
        finally:
            for done in staged:  # stored: the audit line, whatever happens next
                self._audit(done, who)
        return staged

    def _audit(self, staged: Staged, who: Attribution) -> None:
        if self.audit is None:
            return
        point, desired = staged.point, staged.desired
        self.audit.record("config.change", who=who.by, what=f"knobs {point.station}/{point.extension}",
                          where=who.where, trace=logs.trace_id.get() or "",
                          outcome="sent" if staged.sent else "stored", version=desired.version,
                          previousVersion=staged.previous.version,
                          changes={k: new for k, (_, new) in staged.change.knobs.items()}, source=who.source,
                          reason=who.reason, batchId=who.batch_id, templateId=who.template_id)

    async def settle(self, staged: Staged) -> ChangeResult:
        """Wait (up to ack_timeout) for the agent's answer to a committed change; publish "knob-changed"."""
        result = await self._outcome(staged)
        if self.events is not None:
            status = "applied" if result.applied else "rejected" if result.applied_version is not None else "pending"
            who = staged.change.who
            self.events.publish("knob-changed", {
                "station": staged.point.station, "extension": staged.point.extension,
                "changes": {k: {"old": old, "new": new} for k, (old, new) in staged.change.knobs.items()},
                "version": staged.desired.version, "changedBy": who.by, "source": who.source, "status": status})
        return result

    async def _outcome(self, staged: Staged) -> ChangeResult:
        point, desired, waiter = staged.point, staged.desired, staged.waiter
        try:
            if not staged.sent:
                return ChangeResult(desired, False, reason=self._offline_reason(point))
            try:
                ack = await asyncio.wait_for(waiter, self.ack_timeout)
            except TimeoutError:
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
                self._applied(point, version, self.clock.wall())
            self._inflight.pop(point, None)   # whatever was in flight went to the old connection
            self.rejected.pop(point, None)    # a restarted agent may accept what it refused before
            if version != self.store.get(point).version:
                await self.push(point)

    async def on_sample(self, point: Point, knob_version: int) -> None:
        """Re-send when the applied version differs, unless a send is in flight or was refused."""
        desired = self.store.get(point)
        if knob_version == desired.version:
            self._inflight.pop(point, None)
            self._applied(point, knob_version, self.clock.wall())  # says so when the ACK was lost on the way
            return
        refused = self.rejected.get(point)
        if refused is not None and refused.version == desired.version:
            return  # re-sending what the agent refused would loop; the GET shows the errors
        inflight = self._inflight.get(point)
        if inflight and inflight[0] == desired.version and self.clock.monotonic() - inflight[1] < self.ack_timeout:
            return
        await self.push(point, desired)

    def on_ack(self, point: Point, version: int, ok: bool, errors: list[Any], applied_at: float | None = None) -> None:
        """The agent's answer; `applied_at` is when it applied the set (its clock), else now."""
        ack = _Ack(version, ok, [e for e in errors if isinstance(e, dict)])
        inflight = self._inflight.get(point)
        if inflight and inflight[0] <= version:
            self._inflight.pop(point, None)
        if ok:
            self._applied(point, version, self.clock.wall() if applied_at is None else applied_at)
            self.rejected.pop(point, None)
        else:
            self.rejected[point] = ack
        for waited, future in self._waiters.get(point, []):
            # A later version applied includes every earlier change (full sets, applied in order).
            if not future.done() and (waited == version or (ok and waited < version)):
                future.set_result(ack)

    def _applied(self, point: Point, version: int, applied_at: float) -> None:
        """The agent runs `version`: live state knows, and a change committed here is announced once.

        Versions that were never waited for here (what an agent already ran when it said hello
        to a restarted controller) are no news and raise no event.
        """
        self.live.set_applied(point, version)
        waiting = self._unannounced.get(point)
        if waiting is None or version < waiting:
            return
        del self._unannounced[point]
        if self.events is not None:
            self.events.publish("knob-applied", {"station": point.station, "extension": point.extension,
                                                 "version": version, "appliedAt": iso_ms(applied_at),
                                                 "desiredVersion": self.store.get(point).version})

"""One connected streaming client: who it is, what it subscribed to, and what it has not been sent yet.

Backpressure policy, per client and never blocking anyone else:
- a frame is written only while the connection holds at most `max_buffer_bytes` unsent;
- metrics: latest wins. A newer update of a subscription replaces one not yet written
  (counted as skipped); the client's next update carries a `seq` that shows the gap;
- events and replies are never dropped: they wait in order, and a client with more than
  `max_pending_events` waiting, or that took nothing at all for `stall_timeout_s` while
  something waited, is told (`error` event, code `too_slow`) and disconnected.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import count

from controller.security.principal import Principal
from controller.stream.connection import Connection
from controller.stream.frames import SegmentCache
from controller.stream.payloads import Update, update_tail
from controller.stream.subscriptions import Subscription

_ids = count(1)


@dataclass(frozen=True)
class StreamLimits:
    max_buffer_bytes: int = 512 * 1024
    max_pending_events: int = 256
    stall_timeout_s: float = 10.0
    max_subscriptions: int = 16
    close_timeout_s: float = 5.0


@dataclass
class Subscribed:
    """A subscription as one client holds it: the shared shape's key and this client's own closing bytes."""
    sub: Subscription
    tail: bytes


class TooSlow(Exception):
    """The client fell too far behind; the message says how (sent to it before the close)."""


class StreamClient:
    def __init__(self, conn: Connection, principal: Principal, limits: StreamLimits, now: float) -> None:
        self.number = next(_ids)
        self.conn = conn
        self.principal = principal
        self.limits = limits
        self.subs: dict[str, Subscribed] = {}
        self.waiting: deque[bytes] = deque()                   # events and replies, in order
        self.pending: dict[str, tuple[Subscribed, Update]] = {}  # newest unsent update per subscription
        self.last_progress = now                             # last time nothing waited or a write went out
        self.closing = False
        self.sent_updates = self.skipped_updates = self.sent_events = 0
        self._next_default = 1

    def __repr__(self) -> str:
        return f"<StreamClient {self.number} {self.conn.kind.value} {self.principal.subject} {self.conn.address}>"

    def default_id(self) -> str:
        while f"s{self._next_default}" in self.subs:
            self._next_default += 1
        return f"s{self._next_default}"

    def add(self, sub: Subscription) -> Subscribed:
        entry = Subscribed(sub, update_tail(self.conn.kind, sub.id))
        self.subs[sub.id] = entry
        return entry

    def remove(self, sub_id: str) -> Subscribed | None:
        self.pending.pop(sub_id, None)
        return self.subs.pop(sub_id, None)

    def offer_update(self, entry: Subscribed, update: Update, segments: SegmentCache, now: float) -> None:
        if self.closing:
            return
        if not self.waiting and not self.pending and self.conn.ready(self.limits.max_buffer_bytes):
            self.conn.send_update(update, entry.tail, segments)
            self.sent_updates += 1
            self.last_progress = now
            return
        if entry.sub.id in self.pending:
            self.skipped_updates += 1
        self.pending[entry.sub.id] = (entry, update)
        self.flush(segments, now)

    def offer(self, payload: bytes, segments: SegmentCache, now: float) -> None:
        """Queue an event or reply (never dropped); raises TooSlow when too many wait."""
        if self.closing:
            return
        self.waiting.append(payload)
        self.flush(segments, now)
        if len(self.waiting) > self.limits.max_pending_events:
            raise TooSlow(f"{len(self.waiting)} events waited for this client (limit "
                          f"{self.limits.max_pending_events}): it reads too slowly")

    def flush(self, segments: SegmentCache, now: float) -> None:
        """Write what waits while the connection takes it: events first, then each subscription's newest update."""
        limit = self.limits.max_buffer_bytes
        while self.waiting and self.conn.ready(limit):
            self.conn.send_text(self.waiting.popleft())
            self.sent_events += 1
            self.last_progress = now
        while self.pending and self.conn.ready(limit):
            sub_id = next(iter(self.pending))
            entry, update = self.pending.pop(sub_id)
            self.conn.send_update(update, entry.tail, segments)
            self.sent_updates += 1
            self.last_progress = now
        if not self.waiting and not self.pending:
            self.last_progress = now

    def check_stall(self, now: float) -> None:
        """Raise TooSlow when something has waited and nothing was taken for the stall timeout."""
        if (self.waiting or self.pending) and now - self.last_progress > self.limits.stall_timeout_s:
            raise TooSlow(f"nothing could be sent to this client for {now - self.last_progress:.1f} s "
                          f"(limit {self.limits.stall_timeout_s:g} s): it stopped reading")

    def wants(self, event: str, stations: tuple[str, ...] | None) -> bool:
        """An event for `stations` (None: not about a station) reaches this client?

        Only when its token sees every station the event is about (an event about no
        station only reaches unscoped tokens) and one of its subscriptions asks for
        this event and covers one of those stations.
        """
        if stations is None:
            if self.principal.stations is not None:
                return False
            return any(event in e.sub.events for e in self.subs.values())
        if self.principal.unseen(stations):
            return False
        return any(event in e.sub.events and any(e.sub.covers(s) for s in stations) for e in self.subs.values())

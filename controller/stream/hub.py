"""The stream hub: connected clients, subscription shapes, the per-tick fan-out and event forwarding.

Called on the controller's tick right after the snapshot is built. For every shape (stations,
metrics, interval, compression) with subscribers whose interval is due, the update is
serialized once (and deflated once per window size) and the same bytes are written to every
subscriber's transport; nothing awaits per client, so a slow client costs the others one
buffer-size check per tick. Events from the bus are serialized once per transport kind and
offered to every client whose scope and subscriptions cover them.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from controller.clock import Clock, iso_ms
from controller.events import EventBus
from controller.live.snapshot import SnapshotCache
from controller.security.principal import Principal
from controller.security.tokens import LEEWAY_S
from controller.stream.client import StreamClient, StreamLimits, Subscribed, TooSlow
from controller.stream.connection import Connection
from controller.stream.frames import SegmentCache
from controller.stream.payloads import Kind, Update, event_payload, update_body
from controller.stream.subscriptions import MIN_INTERVAL_MS, StreamError, Subscription, parse
from shared.metrics import METRICS_BY_KEY
from shared.topology import Topology

log = logging.getLogger("tpmon.controller.stream")

# Close codes: 1001 going away (controller stopping; clients may reconnect), 4401 the token
# expired, 4408 too slow (a client may reconnect and resubscribe), as the README lists.
GOING_AWAY, TOKEN_EXPIRED, TOO_SLOW = 1001, 4401, 4408


@dataclass
class Shape:
    """Subscribers that receive the same bytes, and when they are next due."""
    sub: Subscription
    stations: frozenset[str] | None
    metrics: dict[str, frozenset[str]] | None
    next_due: float
    seq: int = 0
    subscribers: dict[tuple[int, str], tuple[StreamClient, Subscribed]] = field(default_factory=dict)
    newcomers: list[tuple[int, str]] = field(default_factory=list)  # joined since the last update: owed one now

    @classmethod
    def of(cls, sub: Subscription, now: float) -> Shape:
        metrics = None
        if sub.metrics is not None:
            by_category: dict[str, set[str]] = {}
            for key in sub.metrics:
                by_category.setdefault(METRICS_BY_KEY[key].category, set()).add(METRICS_BY_KEY[key].name)
            metrics = {cat: frozenset(names) for cat, names in by_category.items()}
        stations = frozenset(sub.stations) if sub.stations is not None else None
        return cls(sub, stations, metrics, now)


@dataclass
class HubStats:
    ticks: int = 0
    updates_rendered: int = 0     # serializations: one per shape and due tick
    updates_sent: int = 0
    updates_skipped: int = 0      # replaced by a newer one before the client could take it
    events_sent: int = 0
    disconnects: dict[str, int] = field(default_factory=dict)
    last_fanout_s: float = 0.0
    fanout_seconds: float = 0.0


class StreamHub:
    def __init__(self, topology: Topology, cache: SnapshotCache, events: EventBus, clock: Clock, tick_ms: int,
                 limits: StreamLimits) -> None:
        self.topology = topology
        self.cache = cache
        self.clock = clock
        self.tick_ms = tick_ms
        self.limits = limits
        self.clients: dict[int, StreamClient] = {}
        self.shapes: dict[tuple[Any, ...], Shape] = {}
        self.segments = SegmentCache()
        self.stats = HubStats()
        self._closing: set[asyncio.Task[None]] = set()
        self._unsubscribe_bus = events.subscribe(self.on_event)

    # --- clients ---------------------------------------------------------------------------------

    def connect(self, conn: Connection, principal: Principal) -> StreamClient:
        client = StreamClient(conn, principal, self.limits, self.clock.monotonic())
        self.clients[client.number] = client
        return client

    def disconnect(self, client: StreamClient, reason: str = "client") -> None:
        """Forget a client (idempotent): its subscriptions leave their shapes."""
        if self.clients.pop(client.number, None) is None:
            return
        for sub_id in list(client.subs):
            self._leave(client, sub_id)
        self.stats.updates_sent += client.sent_updates
        self.stats.updates_skipped += client.skipped_updates
        self.stats.events_sent += client.sent_events
        client.sent_updates = client.skipped_updates = client.sent_events = 0
        self.stats.disconnects[reason] = self.stats.disconnects.get(reason, 0) + 1

    def ready_data(self, principal: Principal, wbits: int) -> dict[str, Any]:
        """The `ready` event: who the client is, what it may see, what the stream offers it."""
        return {"subject": principal.subject, "role": principal.role,
                "stations": [s for s in self.topology.stations if principal.sees(s)],
                "compression": "deflate" if wbits else "none", "tickMs": self.tick_ms,
                "minIntervalMs": max(MIN_INTERVAL_MS, self.tick_ms),
                "expiresAt": iso_ms(principal.expires_at) if math.isfinite(principal.expires_at) else None}

    def reply(self, client: StreamClient, event: str, data: Any) -> None:
        """An answer to one client (subscribed, unsubscribed, error, pong, ready), in order with its events."""
        self._offer(client, event_payload(client.conn.kind, event, data))

    def drop(self, client: StreamClient, code: int, reason: str, message: str) -> None:
        """Tell `client` why (an `error` event written whatever its backlog), then close it in the background."""
        if client.closing:
            return
        client.closing = True
        client.conn.send_final(event_payload(client.conn.kind, "error", {"code": reason, "message": message,
                                                                          "details": []}))
        log.info("stream client %s dropped: %s", client, message)
        self.disconnect(client, reason)
        task = asyncio.get_running_loop().create_task(client.conn.close(code, message, self.limits.close_timeout_s))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # --- requests --------------------------------------------------------------------------------

    def subscribe(self, client: StreamClient, data: Any) -> dict[str, Any]:
        """Add (or replace, same id) a subscription; the `subscribed` data. StreamError when refused."""
        sub = parse(data, client.principal, self.topology, client.default_id(), self.tick_ms)
        if sub.id not in client.subs and len(client.subs) >= self.limits.max_subscriptions:
            raise StreamError("too_many_subscriptions", f"a client may hold {self.limits.max_subscriptions} "
                              "subscriptions; unsubscribe one first", [{"field": "id", "problem": "one too many"}])
        if sub.id in client.subs:
            self._leave(client, sub.id)
        entry = client.add(sub)
        shape = self.shapes.get(sub.shape)
        if shape is None:  # due at the next tick
            shape = self.shapes[sub.shape] = Shape.of(sub, self.clock.monotonic())
        else:  # an existing shape may not be due for a while: the newcomer gets the current state at the next tick
            shape.newcomers.append((client.number, sub.id))
        shape.subscribers[(client.number, sub.id)] = (client, entry)
        return sub.describe(deflate=client.conn.wbits() > 0)

    def unsubscribe(self, client: StreamClient, data: Any) -> dict[str, Any]:
        """Drop one subscription (`{"id"}`) or all (no id); the `unsubscribed` data."""
        sub_id = data.get("id") if isinstance(data, dict) else None
        if sub_id is not None and not isinstance(sub_id, str):
            raise StreamError("validation_failed", "unsubscribe takes {\"id\": \"<subscription id>\"}, or no id for all",
                              [{"field": "id", "problem": "should be a string"}])
        if sub_id is None:
            ids = list(client.subs)
        elif sub_id in client.subs:
            ids = [sub_id]
        else:
            raise StreamError("not_found", f"no subscription {sub_id!r} (this client has: "
                              f"{', '.join(client.subs) or 'none'})", [{"field": "id", "problem": "unknown"}])
        for one in ids:
            self._leave(client, one)
        return {"ids": ids}

    def _leave(self, client: StreamClient, sub_id: str) -> None:
        entry = client.remove(sub_id)
        if entry is None:
            return
        shape = self.shapes.get(entry.sub.shape)
        if shape is not None:
            shape.subscribers.pop((client.number, sub_id), None)
            if not shape.subscribers:
                del self.shapes[entry.sub.shape]

    # --- the tick and the bus --------------------------------------------------------------------

    def on_tick(self) -> None:
        """Send every due shape's update; check every client for stalls and expired tokens."""
        started = time.perf_counter()
        now, wall = self.clock.monotonic(), self.clock.wall()
        self.stats.ticks += 1
        full = self.cache.full
        doc = self.cache.doc
        if full is not None and doc is not None:
            half_tick = self.tick_ms / 2000
            for shape in list(self.shapes.values()):
                if now >= shape.next_due - half_tick:
                    self._emit(shape, doc, full.body, now)
                elif shape.newcomers:
                    self._welcome(shape, doc, full.body, now)
        for client in list(self.clients.values()):
            self._check(client, now, wall)
        self.stats.last_fanout_s = time.perf_counter() - started
        self.stats.fanout_seconds += self.stats.last_fanout_s

    def _emit(self, shape: Shape, doc: dict[str, Any], full_body: bytes, now: float) -> None:
        interval = shape.sub.interval_ms / 1000
        shape.next_due += interval
        if shape.next_due < now:  # fell behind (a stall of the loop): restart the schedule, don't burst
            shape.next_due = now + interval
        shape.seq += 1
        shape.newcomers.clear()  # this update is their first
        update = Update(shape.seq, update_body(doc, full_body, shape.seq, shape.stations, shape.metrics),
                        shape.sub.compression)
        self.stats.updates_rendered += 1
        for client, entry in list(shape.subscribers.values()):
            client.offer_update(entry, update, self.segments, now)

    def _welcome(self, shape: Shape, doc: dict[str, Any], full_body: bytes, now: float) -> None:
        """The current state for subscribers who joined a shape between its updates, numbered as its last one
        (so the shape's next update follows without a gap); serialized once for all of them."""
        update = Update(shape.seq, update_body(doc, full_body, shape.seq, shape.stations, shape.metrics),
                        shape.sub.compression)
        self.stats.updates_rendered += 1
        for key in shape.newcomers:
            joined = shape.subscribers.get(key)
            if joined is not None:
                joined[0].offer_update(joined[1], update, self.segments, now)
        shape.newcomers.clear()

    def _check(self, client: StreamClient, now: float, wall: float) -> None:
        if client.waiting or client.pending:
            client.flush(self.segments, now)
        try:
            client.check_stall(now)
        except TooSlow as exc:
            self.drop(client, TOO_SLOW, "too_slow", str(exc))
            return
        if client.principal.expires_at + LEEWAY_S <= wall:
            self.drop(client, TOKEN_EXPIRED, "token_expired", "the token has expired; reconnect with a new one")

    def on_event(self, event: str, data: dict[str, Any]) -> None:
        """Forward a bus event to every client whose scope and subscriptions cover it."""
        stations = event_stations(data)
        payloads: dict[Kind, bytes] = {}
        for client in list(self.clients.values()):
            if client.closing or not client.wants(event, stations):
                continue
            kind = client.conn.kind
            payload = payloads.get(kind)
            if payload is None:
                payload = payloads[kind] = event_payload(kind, event, data)
            self._offer(client, payload)

    def _offer(self, client: StreamClient, payload: bytes) -> None:
        try:
            client.offer(payload, self.segments, self.clock.monotonic())
        except TooSlow as exc:
            self.drop(client, TOO_SLOW, "too_slow", str(exc))

    # --- stopping --------------------------------------------------------------------------------

    async def shutdown(self, timeout: float = 2.0) -> None:
        """Close every client (1001 going away) with a close handshake, in parallel, within `timeout`."""
        self._unsubscribe_bus()
        closing = [c for c in self.clients.values() if not c.closing]
        for client in closing:
            client.closing = True
            self.disconnect(client, "shutdown")
        await asyncio.gather(*(c.conn.close(GOING_AWAY, "controller stopping", timeout) for c in closing),
                             return_exceptions=True)
        await asyncio.gather(*self._closing, return_exceptions=True)

    def totals(self) -> HubStats:
        """Stats including the counts of clients still connected."""
        live = HubStats(**{**self.stats.__dict__, "disconnects": dict(self.stats.disconnects)})
        for client in self.clients.values():
            live.updates_sent += client.sent_updates
            live.updates_skipped += client.skipped_updates
            live.events_sent += client.sent_events
        return live


def event_stations(data: dict[str, Any]) -> tuple[str, ...] | None:
    """The stations an event is about: `station`, an alert's `station`, or a `stations` list; None for none."""
    station = data.get("station")
    if station is None and isinstance(data.get("alert"), dict):
        station = data["alert"].get("station")
    if isinstance(station, str):
        return (station,)
    stations = data.get("stations")
    if isinstance(stations, list) and stations and all(isinstance(s, str) for s in stations):
        return tuple(stations)
    return None

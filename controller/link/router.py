"""The agent link: a ZeroMQ ROUTER (CURVE by default) that decodes frames and dispatches them to a handler table.

Security. Unless `insecure`, the socket is a CURVE server and a ZAP handler
(controller/link_auth.py) admits only agent keys in the allow-list, each bound to one
station; every message carries that station as its ZMQ User-Id (read per message with
copy=False), handed to the handlers in `Peer.station` so they can refuse a message that
speaks for another station.

Routing identity. The ROUTER assigns every connection its own routing id (libzmq: a zero
byte and a counter that starts at a random value); agents do not choose one and
ROUTER_HANDOVER is off. Replies go only to routes learned from messages the handlers
accepted (`learn`); there is no "station name as routing id" fallback. Why: with
agent-chosen ids and handover, an agent holding Station-1's key could connect as
"Station-2" and silently take over Station-2's pipe, receiving its knob sets without ever
sending a message. Now a new connection never inherits a route: the real agent's
messages (HELLO on every connect, then samples) re-learn its route within one message
after a reconnect, an agent restart or a controller restart. Without handover a peer
that presents an id already in use is refused by libzmq, and a route whose connection is
gone is forgotten on the first send that finds it unroutable (heartbeats probe every
second), so a stale route cannot be inherited by guessing its id either.
Anything that is not a valid tpmon frame is counted and dropped: the receive loop never
dies of its input.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from controller.link.curve import ZAP_DOMAIN, AllowList, CurveServerKeys, StationAuthenticator, Throttle
from controller.security.audit import AuditLog
from shared.protocol import Message, MsgType, ProtocolError, decode, encode

log = logging.getLogger("tpmon.controller.link.router")


@dataclass(frozen=True)
class Peer:
    """Who sent a message: its connection's routing id, and under CURVE the station its key is bound to."""
    identity: bytes
    station: str | None   # the key's station (ZMQ User-Id); None on an insecure link
    address: str = ""     # the peer's IP address as libzmq saw it


Handler = Callable[[Peer, Message], Awaitable[None]]


class AgentUnreachable(Exception):
    """The agent has no connection to the link (or its queue is full): store the change, send later."""


class AgentLink:
    def __init__(self, endpoint: str, context: zmq.asyncio.Context | None = None) -> None:
        self.requested_endpoint = endpoint
        self.endpoint: str | None = None  # the bound endpoint (resolves `*` ports)
        self._given_context = context     # None: the link makes its own (one ZAP handler per context)
        self._context: zmq.asyncio.Context | None = None
        self._socket: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._auth: StationAuthenticator | None = None
        self.curve = False
        self.audit: AuditLog | None = None
        self.handlers: dict[MsgType, Handler] = {}
        self.received: Counter[str] = Counter()   # valid frames by message type name
        self.malformed = 0                        # frames dropped by decode or framing
        self.handler_errors = 0                   # frames whose handler raised (a bug, logged)
        self.send_failures = 0
        self.refused = 0                          # handshakes refused: key not in the allow-list
        self.on_malformed: Callable[[str], None] | None = None
        self.on_received: Callable[[str], None] | None = None
        self._routes: dict[str, bytes] = {}     # station -> routing id of its last accepted message
        self._stations: dict[bytes, str] = {}   # routing id -> station
        self._spoof_log = Throttle()

    def register(self, mtype: MsgType, handler: Handler) -> None:
        self.handlers[mtype] = handler

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, curve: CurveServerKeys | None = None, audit: AuditLog | None = None) -> None:
        """Bind; with `curve`, as a CURVE server whose ZAP handler runs before the first handshake can."""
        self.audit, self.curve = audit, curve is not None
        self._context = self._given_context or zmq.asyncio.Context()
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, 4 << 20)  # a peer announcing a huge frame is cut off, not buffered
        if curve is not None:
            self._auth = StationAuthenticator(self._context, AllowList(curve.allowlist_path, curve.stations),
                                              self._refused)
            self._auth.start()
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, curve.keypair.secret)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.keypair.public)
            sock.setsockopt_string(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        try:
            sock.bind(self.requested_endpoint)
        except zmq.ZMQError:
            sock.close(0)
            self._stop_context()
            raise
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._socket = sock
        if curve is None:
            log.warning("the agent link on %s is NOT authenticated or encrypted (insecure = true): anyone who "
                        "reaches it can send samples for any station and receive knob sets", self.endpoint)
        else:
            log.info("agent link on %s: CURVE, %d agent keys in %s", self.endpoint, len(curve.stations),
                     curve.allowlist_path)
        self._task = asyncio.get_running_loop().create_task(self._receive_loop(), name="tpmon-link-recv")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None
        self._stop_context()

    def _stop_context(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._context is not None and self._given_context is None:
            self._context.destroy(0)
        self._context = None

    async def _receive_loop(self) -> None:
        assert self._socket is not None
        while True:
            frames = await self._socket.recv_multipart(copy=False)
            await self._dispatch(frames)

    async def _dispatch(self, frames: list[zmq.Frame]) -> None:
        # [identity, payload], or [identity, b"", payload] from a REQ-style peer.
        if len(frames) == 3 and len(frames[1]) == 0:
            frames = [frames[0], frames[2]]
        if len(frames) != 2:
            self._drop(f"{len(frames) - 1} payload frames, expected 1")
            return
        peer = self._peer(frames[0].bytes, frames[1])
        if peer is None:
            return
        try:
            msg = decode(frames[1].bytes)
        except ProtocolError as exc:
            self._drop(str(exc))
            return
        handler = self.handlers.get(msg.type)
        if handler is None:
            self._drop(f"no handler for {msg.type.name}")
            return
        self.received[msg.type.name] += 1
        if self.on_received is not None:
            self.on_received(msg.type.name)
        try:
            await handler(peer, msg)
        except Exception:  # a handler bug must not take the link down; it is logged loudly
            self.handler_errors += 1
            log.exception("handler for %s from %r failed", msg.type.name, peer.identity[:64])

    def _peer(self, identity: bytes, frame: zmq.Frame) -> Peer | None:
        address = _property(frame, "Peer-Address") or ""
        if not self.curve:
            return Peer(identity, None, address)
        station = _property(frame, "User-Id")
        if not station:  # cannot happen with the ZAP handler running; never treat it as "any station"
            self._drop("message without an authenticated User-Id")
            return None
        return Peer(identity, station, address)

    def _drop(self, reason: str) -> None:
        self.malformed += 1
        if self.on_malformed is not None:
            self.on_malformed(reason)
        log.debug("dropped frame: %s", reason)

    def learn(self, station: str, identity: bytes) -> None:
        """Reply to `station` on the connection its last accepted message came from."""
        old_identity = self._routes.get(station)
        if old_identity is not None and old_identity != identity:
            self._stations.pop(old_identity, None)
        old_station = self._stations.get(identity)
        if old_station is not None and old_station != station and self._routes.get(old_station) == identity:
            del self._routes[old_station]
        self._routes[station] = identity
        self._stations[identity] = station

    def forget(self, identity: bytes) -> None:
        """Drop the route over this connection (it is gone, or it now belongs to another key)."""
        station = self._stations.pop(identity, None)
        if station is not None and self._routes.get(station) == identity:
            del self._routes[station]

    def station_of(self, identity: bytes) -> str | None:
        return self._stations.get(identity)

    def known_stations(self) -> list[str]:
        return list(self._routes)

    async def send_to_station(self, station: str, msg: Message) -> None:
        identity = self._routes.get(station)
        if identity is None:
            raise AgentUnreachable(f"no connection from {station}'s agent since it was last seen")
        await self.send(identity, msg)

    async def send(self, identity: bytes, msg: Message) -> None:
        """Queue `msg` for the agent; raise AgentUnreachable when it is not connected."""
        if self._socket is None:
            raise AgentUnreachable("the agent link is not running")
        try:
            await self._socket.send_multipart([identity, encode(msg)], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # EHOSTUNREACH (no such peer) or EAGAIN (its queue is full)
            self.send_failures += 1
            if exc.errno == zmq.EHOSTUNREACH:
                self.forget(identity)  # its connection is gone: a later one with this id inherits nothing
            raise AgentUnreachable(exc.strerror) from None

    def _refused(self, key: str, address: str, repeats: int) -> None:
        self.refused += 1 + repeats
        again = f" (and {repeats} times since the last report)" if repeats else ""
        log.warning("refused an agent from %s: its CURVE key %s is not in the allow-list%s", address, key, again)
        self._audit("agent.refused", who=f"curve key {key}", what="agent link connection", where=address,
                    key=key, repeats=repeats)

    def spoofing(self, peer: Peer, claimed: str, what: str) -> None:
        """A message over `peer.station`'s key that speaks for `claimed`: refuse it, log and audit (throttled)."""
        learned = self._stations.get(peer.identity)
        if learned is not None and learned != peer.station:
            self.forget(peer.identity)  # the connection that route used now carries another key
        repeats = self._spoof_log.due((peer.station, claimed, what))
        if repeats is None:
            return
        again = f" (and {repeats} more since the last report)" if repeats else ""
        log.warning("refused %s for %s from %s: the sender's key belongs to %s%s", what, claimed,
                    peer.address, peer.station, again)
        self._audit("agent.spoofing", who=f"agent key of {peer.station}", what=f"{what} for {claimed}",
                    where=peer.address, keyStation=peer.station, claimedStation=claimed, repeats=repeats)

    def _audit(self, event: str, *, who: str, what: str, where: str, **details: Any) -> None:
        if self.audit is not None:
            self.audit.record(event, who=who, what=what, where=where, trace="", outcome="refused", **details)


def _property(frame: zmq.Frame, name: str) -> str | None:
    """A message property (zmq_msg_gets), None when the connection has none."""
    try:
        return frame.get(name)
    except zmq.ZMQError:
        return None

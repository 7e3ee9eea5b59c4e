"""The agent link: a ZeroMQ ROUTER that decodes frames and dispatches them to a handler table.

Agents are DEALERs whose routing id is their station name. ROUTER_HANDOVER lets an agent
that restarts with the same id take over its route at once; ROUTER_MANDATORY makes a send
to an agent that is not connected raise, which the caller treats as "agent offline".
Anything that is not a valid tpmon frame is counted and dropped: the receive loop never
dies of its input.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Awaitable, Callable

import zmq
import zmq.asyncio

from shared.protocol import Message, MsgType, ProtocolError, decode, encode

log = logging.getLogger("tpmon.controller.link")

Handler = Callable[[bytes, Message], Awaitable[None]]


class AgentUnreachable(Exception):
    """The agent has no connection to the link (or its queue is full): store the change, send later."""


class AgentLink:
    def __init__(self, endpoint: str, context: zmq.asyncio.Context | None = None) -> None:
        self.requested_endpoint = endpoint
        self.endpoint: str | None = None  # the bound endpoint (resolves `*` ports)
        self._context = context or zmq.asyncio.Context.instance()
        self._socket: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self.handlers: dict[MsgType, Handler] = {}
        self.received: Counter[str] = Counter()   # valid frames by message type name
        self.malformed = 0                        # frames dropped by decode or framing
        self.handler_errors = 0                   # frames whose handler raised (a bug, logged)
        self.send_failures = 0
        self.on_malformed: Callable[[str], None] | None = None
        self.on_received: Callable[[str], None] | None = None
        self._routes: dict[str, bytes] = {}     # station -> routing id it last spoke from
        self._stations: dict[bytes, str] = {}   # routing id -> station

    def register(self, mtype: MsgType, handler: Handler) -> None:
        self.handlers[mtype] = handler

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, 4 << 20)  # a peer announcing a huge frame is cut off, not buffered
        try:
            sock.bind(self.requested_endpoint)
        except zmq.ZMQError:
            sock.close(0)
            raise
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._socket = sock
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

    async def _receive_loop(self) -> None:
        assert self._socket is not None
        while True:
            frames = await self._socket.recv_multipart(copy=True)
            await self._dispatch(frames)

    async def _dispatch(self, frames: list[bytes]) -> None:
        # [identity, payload], or [identity, b"", payload] from a REQ-style peer.
        if len(frames) == 3 and frames[1] == b"":
            frames = [frames[0], frames[2]]
        if len(frames) != 2:
            self._drop(f"{len(frames) - 1} payload frames, expected 1")
            return
        identity, payload = frames
        try:
            msg = decode(payload)
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
            await handler(identity, msg)
        except Exception:  # a handler bug must not take the link down; it is logged loudly
            self.handler_errors += 1
            log.exception("handler for %s from %r failed", msg.type.name, identity[:64])

    def _drop(self, reason: str) -> None:
        self.malformed += 1
        if self.on_malformed is not None:
            self.on_malformed(reason)
        log.debug("dropped frame: %s", reason)

    def learn(self, station: str, identity: bytes) -> None:
        """Reply to a station on the routing id it spoke from (normally its own name)."""
        self._routes[station] = identity
        self._stations[identity] = station

    def station_of(self, identity: bytes) -> str | None:
        return self._stations.get(identity)

    def known_stations(self) -> list[str]:
        return list(self._routes)

    async def send_to_station(self, station: str, msg: Message) -> None:
        await self.send(self._routes.get(station, station.encode()), msg)

    async def send(self, identity: bytes, msg: Message) -> None:
        """Queue `msg` for the agent; raise AgentUnreachable when it is not connected."""
        if self._socket is None:
            raise AgentUnreachable("the agent link is not running")
        try:
            await self._socket.send_multipart([identity, encode(msg)], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # EHOSTUNREACH (no such peer) or EAGAIN (its queue is full)
            self.send_failures += 1
            raise AgentUnreachable(exc.strerror) from None

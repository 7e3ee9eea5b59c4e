"""Socket.IO (protocol v5) at /socket.io/ with python-socketio on the aiohttp app, for the plan's clients.

The plan's client runs unchanged with the npm `socket.io-client` 4:
`io(url, {transports: ['websocket'], auth: {token}})`, `socket.emit('subscribe', {...})`,
`socket.on('metrics-update' | 'knob-changed' | 'alert' | 'status-change' | 'optimization-complete')`.
python-socketio speaks the protocol (handshake, namespaces, pings, acks); the hub writes our
events itself, as frames on the upgraded WebSocket (see connection.SioConnection), because
python-socketio would serialize and queue every message per client, without a bound.

Engine.IO's aiohttp WebSocket wrapper is replaced, for this server only, by `TrackedWebSocket`:
the same wrapper that also registers its transport under the Engine.IO session id, and writes
Engine.IO's own packets uncompressed through frames.py, so that the only compressed frames on
the connection are our self-contained ones (aiohttp's shared-window compressor and ours would
corrupt each other's window at the receiver).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import socketio
from aiohttp import web
from engineio.async_drivers import aiohttp as eio_aiohttp

from controller.app_keys import SERVICES
from controller.stream import frames
from controller.stream.admission import StreamRefused, admit, bearer_token
from controller.stream.client import StreamClient
from controller.stream.connection import SioConnection
from controller.stream.hub import StreamHub
from controller.stream.requests import HANDLERS, handle

log = logging.getLogger("tpmon.controller.stream")

PATH = "socket.io"
MAX_MESSAGE_BYTES = 64 * 1024


class TrackedWebSocket(eio_aiohttp.WebSocket):
    """Engine.IO's aiohttp WebSocket, known by session id and writing whole uncompressed frames."""

    registry: dict[str, TrackedWebSocket] = {}  # replaced per server by `tracked_driver`
    transport: asyncio.Transport | None = None

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request: web.Request = environ["aiohttp.request"]
        self.ws = self._sock = web.WebSocketResponse(max_msg_size=self.server.max_http_buffer_size, compress=True)
        self._writer = await self._sock.prepare(request)
        self.transport = request.transport
        sid = self.handler.__self__.sid  # the Engine.IO socket whose _websocket_handler we run
        self.registry[sid] = self
        self.environ = environ
        try:
            await self.handler(self)
        finally:
            if self.registry.get(sid) is self:
                del self.registry[sid]
        return self._sock

    async def send(self, message: str | bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the Socket.IO connection is closed")
        if isinstance(message, str):
            self.transport.write(frames.frame(message.encode()))
        else:
            self.transport.write(frames.frame(message, frames.BINARY))
        await self._writer.drain()  # Engine.IO's writer task waits here while the client is slow


def tracked_driver(registry: dict[str, TrackedWebSocket]) -> type[TrackedWebSocket]:
    return type("TrackedWebSocket", (TrackedWebSocket,), {"registry": registry})


class SocketIoServer:
    """The python-socketio server, its handlers, and which hub client each Socket.IO session is."""

    def __init__(self, app: web.Application, hub: StreamHub) -> None:
        settings = app[SERVICES].settings
        self.app, self.hub = app, hub
        ping_s = settings.stream_ping_ms / 1000
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp", cors_allowed_origins=list(settings.cors_origins) or None,
            cors_credentials=False, ping_interval=ping_s, ping_timeout=ping_s / 2, logger=False,
            engineio_logger=False, max_http_buffer_size=MAX_MESSAGE_BYTES, http_compression=True)
        self.drivers: dict[str, TrackedWebSocket] = {}
        self.sio.eio._async = {**self.sio.eio._async, "websocket": tracked_driver(self.drivers)}
        self.clients: dict[str, StreamClient] = {}
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)
        for name in HANDLERS:
            self.sio.on(name, self._request(name))
        self.sio.attach(app, socketio_path=PATH)

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        request: web.Request = environ["aiohttp.request"]
        address = request.remote or "unknown"
        token = _token(environ, auth)
        try:
            principal = admit(self.app[SERVICES].guard, self.app[SERVICES].audit, token, address, "socket.io connect")
        except StreamRefused as exc:
            raise socketio.exceptions.ConnectionRefusedError(exc.message, exc.to_json()) from None
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        conn = SioConnection(self.sio.eio.sockets[eio_sid], self.drivers, address)  # type: ignore[arg-type]
        client = self.clients[sid] = self.hub.connect(conn, principal)
        self.hub.reply(client, "ready", self.hub.ready_data(principal, conn.wbits()))

    async def _disconnect(self, sid: str, reason: Any = None) -> None:
        client = self.clients.pop(sid, None)
        if client is not None:
            self.hub.disconnect(client)

    def _request(self, name: str) -> Callable[[str, Any], Awaitable[Any]]:
        """The python-socketio handler of request `name`: answered as an event, and as the ack when asked."""
        async def handler(sid: str, data: Any = None) -> Any:
            client = self.clients.get(sid)
            if client is None:
                return None
            event, reply = handle(self.hub, self.app[SERVICES].guard, client, name, data)
            return {event: reply}  # the acknowledgement, for a client that asked for one
        handler.__name__ = f"on_{name}"
        return handler

    async def shutdown(self) -> None:
        """Stop Engine.IO's background tasks (the clients were closed by the hub)."""
        await self.sio.shutdown()
        await asyncio.sleep(0)


def _token(environ: dict[str, Any], auth: Any) -> str | None:
    """The token from the `auth` payload ({token}), else `?token=`, else an Authorization header."""
    if isinstance(auth, dict) and isinstance(auth.get("token"), str) and auth["token"]:
        return auth["token"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if query.get("token"):
        return query["token"][0]
    return bearer_token(environ.get("HTTP_AUTHORIZATION"))

"""One streaming client's connection, plain WebSocket or Socket.IO, behind the same small interface.

The hub writes whole frames straight to the asyncio transport (see frames.py): nothing awaits
per client, and a client whose transport holds more than `limit` unsent bytes is simply not
written to (`ready` is False) until it drains; the client record keeps what it missed.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from aiohttp import web
from engineio import packet as eio_packet

from controller.stream import frames
from controller.stream.frames import SegmentCache
from controller.stream.payloads import Kind, Update

log = logging.getLogger("tpmon.controller.stream")


class Connection(Protocol):
    kind: Kind
    address: str

    def ready(self, limit: int) -> bool:
        """True when a write now would not pile up behind `limit` unsent bytes."""

    def open(self) -> bool: ...

    def wbits(self) -> int:
        """The negotiated permessage-deflate window (0: none)."""

    def send_update(self, update: Update, tail: bytes, segments: SegmentCache) -> None: ...

    def send_text(self, payload: bytes) -> None: ...

    def send_final(self, payload: bytes) -> None:
        """Write `payload` whatever the backlog (the last words before a close)."""

    async def close(self, code: int, reason: str, timeout: float) -> None:
        """Close handshake within `timeout`, else drop the connection."""


class WsConnection:
    """A plain WebSocket at /api/v1/ws (aiohttp's WebSocketResponse handles handshake, reading, pings, close)."""

    kind = Kind.WS

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport, address: str) -> None:
        self.ws = ws
        self.transport = transport
        self.address = address
        self._wbits = int(ws.compress or 0)

    def wbits(self) -> int:
        return self._wbits

    def open(self) -> bool:
        return not self.transport.is_closing() and not self.ws.closed

    def ready(self, limit: int) -> bool:
        return self.open() and self.transport.get_write_buffer_size() <= limit

    def send_update(self, update: Update, tail: bytes, segments: SegmentCache) -> None:
        self.transport.write(update.frame(Kind.WS, tail, self._wbits, segments))

    def send_text(self, payload: bytes) -> None:
        self.transport.write(frames.frame(payload))

    def send_final(self, payload: bytes) -> None:
        if self.open():
            self.transport.write(frames.frame(payload))

    async def close(self, code: int, reason: str, timeout: float) -> None:
        await _close_ws(self.ws, self.transport, code, reason, timeout)


class EngineSocket(Protocol):
    """What we read of python-engineio's AsyncSocket (engineio/async_socket.py)."""
    sid: str
    upgraded: bool
    upgrading: bool
    queue: asyncio.Queue


class EngineDriver(Protocol):
    """The WebSocket of an upgraded Engine.IO connection (sio_server.TrackedWebSocket)."""
    ws: web.WebSocketResponse
    transport: asyncio.Transport


class SioConnection:
    """A Socket.IO client: raw frames once Engine.IO runs over a WebSocket, its packet queue while long-polling.

    Engine.IO's own packets (open, pings, the connect acknowledgement) go through its queue
    and writer task; ours are written only while that queue is empty, so neither overtakes
    the other and the queue never grows on our account.
    """

    kind = Kind.SIO

    def __init__(self, socket: EngineSocket, drivers: dict[str, EngineDriver], address: str) -> None:
        self.socket = socket
        self.drivers = drivers
        self.address = address

    def _driver(self) -> EngineDriver | None:
        if not self.socket.upgraded or self.socket.upgrading:
            return None
        return self.drivers.get(self.socket.sid)

    def wbits(self) -> int:
        driver = self._driver()
        return int(driver.ws.compress or 0) if driver is not None else 0

    def open(self) -> bool:
        driver = self._driver()
        if driver is not None:
            return not driver.transport.is_closing()
        return not getattr(self.socket, "closed", False) and not getattr(self.socket, "closing", False)

    def ready(self, limit: int) -> bool:
        if not self.open() or not self.socket.queue.empty():
            return False
        driver = self._driver()
        return driver is None or driver.transport.get_write_buffer_size() <= limit

    def send_update(self, update: Update, tail: bytes, segments: SegmentCache) -> None:
        driver = self._driver()
        if driver is not None:
            driver.transport.write(update.frame(Kind.SIO, tail, self.wbits(), segments))
        else:
            self._enqueue(update.message(Kind.SIO, tail))

    def send_text(self, payload: bytes) -> None:
        driver = self._driver()
        if driver is not None:
            driver.transport.write(frames.frame(payload))
        else:
            self._enqueue(payload)

    def send_final(self, payload: bytes) -> None:
        if self.open():
            self.send_text(payload)

    def _enqueue(self, payload: bytes) -> None:
        # Engine.IO prefixes the packet type itself: our "42[...]" is MESSAGE "2[...]".
        self.socket.queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, data=payload[1:].decode()))

    async def close(self, code: int, reason: str, timeout: float) -> None:
        """An Engine.IO CLOSE packet, then the WebSocket close: the client sees "transport close" and may reconnect."""
        driver = self._driver()
        if driver is None:
            self.socket.queue.put_nowait(eio_packet.Packet(eio_packet.CLOSE))
            self.socket.queue.put_nowait(None)  # ends the long-poll writer (Engine.IO's own convention)
            return
        if not driver.transport.is_closing():
            driver.transport.write(frames.frame(b"1"))
        await _close_ws(driver.ws, driver.transport, code, reason, timeout)


async def _close_ws(ws: web.WebSocketResponse, transport: asyncio.Transport, code: int, reason: str,
                    timeout: float) -> None:
    """aiohttp's close handshake; a client that does not answer within `timeout` (it stopped reading) is cut off."""
    try:
        await asyncio.wait_for(ws.close(code=code, message=reason.encode()[:frames.MAX_REASON_BYTES]), timeout)
    except (TimeoutError, ConnectionError, RuntimeError) as exc:
        log.debug("closing a stream connection: %r", exc)
    else:
        if ws.close_code is not None and not transport.get_write_buffer_size():
            return  # closed cleanly; aiohttp ends the connection
    transport.abort()

"""Helpers for stream tests: an in-process controller fed with samples, WebSocket clients real and raw."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientWebSocketResponse, WSMsgType, web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from controller.app import create_app
from controller.app_keys import SERVICES
from controller.clock import Clock
from controller.sample import Sample
from controller.settings import ControllerSettings


def stream_app(tmp_path: Path, clock: Clock | None = None, **overrides: Any) -> web.Application:
    settings = ControllerSettings(**{"http_host": "127.0.0.1", "link_endpoint": "tcp://127.0.0.1:*",
                                     "data_dir": str(tmp_path), "stations": 3, "tick_ms": 50, "insecure": True,
                                     **overrides})
    return create_app(settings, registry=CollectorRegistry(), clock=clock)


async def feed_samples(app: web.Application, period: float = 0.15) -> None:
    """Record a sample for every point every `period`, like agents would (cancel the task to stop)."""
    live, seq = app[SERVICES].live, 0
    while True:
        seq += 1
        for point in app[SERVICES].topology.points:
            live.record(Sample.from_body(point, {"seq": seq, "metrics": [float(i) + seq / 7 for i in range(68)],
                                       "measured_at": time.time(), "knob_version": 1}))
        await asyncio.sleep(period)


async def next_event(ws: ClientWebSocketResponse, name: str, timeout: float = 5.0,
                     skip: tuple[str, ...] = ("metrics-update", "status-change")) -> dict[str, Any]:
    """The data of the next `name` event, skipping the periodic ones (anything else first is a failure)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - asyncio.get_running_loop().time()))
        assert msg.type is WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
        doc = json.loads(msg.data)
        if doc["event"] == name:
            return doc["data"]
        assert doc["event"] in skip, doc


async def subscribe(ws: ClientWebSocketResponse, **data: Any) -> dict[str, Any]:
    await ws.send_json({"event": "subscribe", "data": data})
    return await next_event(ws, "subscribed")


async def connected(client: TestClient, token: str, **kwargs: Any) -> ClientWebSocketResponse:
    """A WebSocket with a bearer token, past its `ready` event."""
    ws = await client.ws_connect("/api/v1/ws", headers={"Authorization": f"Bearer {token}"}, **kwargs)
    await next_event(ws, "ready")
    return ws


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame (RFC 6455 5.3), for raw sockets."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    head = bytes((0x80 | opcode, 0x80 | n)) if n < 126 else bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    return head + mask + body


async def raw_ws(port: int, token: str, rcvbuf: int = 4096,
                 path: str = "/api/v1/ws") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-made WebSocket client with a tiny receive buffer: stop reading it and the server sees a stall."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=rcvbuf)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                 f"Authorization: Bearer {token}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def read_all(reader: asyncio.StreamReader, idle: float = 2.0) -> bytes:
    data = b""
    while True:
        try:
            chunk = await asyncio.wait_for(reader.read(1 << 20), idle)
        except TimeoutError:
            return data
        if not chunk:
            return data
        data += chunk


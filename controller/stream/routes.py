"""GET /api/v1/ws: the plain WebSocket stream (and, without an Upgrade header, its protocol description).

The route admits its caller itself (Endpoint.authenticates): browsers cannot put a header
on a WebSocket, so the token may also come as `?token=` or as the first message. The
same verifier, permission (read:metrics), rate budget and audit log as the HTTP guard apply.
"""
from __future__ import annotations

import json
import logging

from aiohttp import WSMsgType, web
from pydantic import Field

from controller.app_keys import SERVICES
from controller.events import EVENTS
from controller.http import logs
from controller.http.endpoint import Endpoint, Reply, add_endpoint
from controller.http.errors import ApiError, json_response
from controller.http.models import Body, QueryModel
from controller.http.params import query_of
from controller.security.guard import client_address
from controller.security.principal import Permission, Principal
from controller.stream.admission import StreamRefused, admit, bearer_token, origin_allowed
from controller.stream.client import StreamClient
from controller.stream.connection import WsConnection
from controller.stream.payloads import event_payload
from controller.stream.requests import HANDLERS, handle
from controller.stream.sio_server import SocketIoServer
from controller.stream.subscriptions import ALIASES, DEFAULT_INTERVAL_MS, MIN_INTERVAL_MS

log = logging.getLogger("tpmon.controller.stream")

AUTH_TIMEOUT_S = 5.0        # an upgraded socket without a token must authenticate within this
MAX_MESSAGE_BYTES = 64 * 1024
CLOSE_UNAUTHORIZED, CLOSE_UNSUPPORTED = 4401, 1003

DESCRIPTION = """\
Without `Upgrade: websocket` this answers the protocol description below as JSON (so a plain GET with a
token shows how to connect). With it, the connection becomes a WebSocket carrying JSON text messages
`{"event": "<name>", "data": <object>}` both ways (the same events as Socket.IO at /socket.io/).

Authentication: `Authorization: Bearer <token>`, or `?token=<token>` (logged nowhere by tpmon, but
proxies may log URLs), or, when neither is given, a first message `{"event": "auth", "data": {"token":
"..."}}` within 5 s. A bad token before the upgrade is a 401; after it, an `error` event then close 4401.

Client -> server: `subscribe` {id?, stations?, metrics?, interval?, compression?, events?},
`unsubscribe` {id?} (no id: all), `ping` (answered `pong`). Server -> client: `ready` {subject, role,
stations, compression, tickMs, minIntervalMs, expiresAt}, `subscribed`, `unsubscribed`, `error` {code,
message, details, request}, `metrics-update` {subscription, seq, timestamp, stations: the snapshot's
slice}, `knob-changed`, `alert`, `status-change`, `optimization-complete`, `pong`.

Subscriptions: stations (default all the token may see; one outside its scope refuses the subscription
with `forbidden`), metrics (categories such as `latency`, keys such as `packet.loss_rate`, aliases
`packet_loss` = the packet category and `audio_quality` = audioQuality; default all), interval in ms
(>= 150, default 1000), compression (true: updates sent as permessage-deflate frames when the connection
negotiated it; the data is the same). A client too slow to take what it is sent gets an `error`
(`too_slow`) and close 4408; the controller stopping closes with 1001."""


class StreamQuery(QueryModel):
    token: str | None = Field(None, description="A bearer token, for browsers (which cannot send an Authorization "
                                                "header on a WebSocket); the header wins when both are given")


class StreamInfo(Body):
    """How to use the stream (GET /api/v1/ws without an Upgrade header)."""
    protocol: str = Field(examples=["websocket"])
    url: str
    socketIo: str = Field(description="The Socket.IO (protocol v5) endpoint carrying the same events")
    messageFormat: dict[str, str]
    requests: list[str]
    events: list[str]
    stations: list[str] = Field(description="The stations this token may subscribe to")
    aliases: dict[str, list[str]] = Field(description="Metric aliases and the catalog keys they stand for")
    tickMs: int
    minIntervalMs: int
    defaultIntervalMs: int


def info(app: web.Application, principal: Principal) -> dict[str, object]:
    """The protocol description and what this caller may see."""
    topology = app[SERVICES].topology
    stations = [s for s in topology.stations if principal.sees(s)]
    return {"protocol": "websocket", "url": "/api/v1/ws", "socketIo": "/socket.io/", "messageFormat":
            {"event": "string", "data": "object"}, "requests": sorted([*HANDLERS, "auth"]),
            "events": ["ready", "subscribed", "unsubscribed", "error", "pong", "metrics-update", *EVENTS],
            "stations": stations, "aliases": {k: list(v) for k, v in ALIASES.items()},
            "tickMs": app[SERVICES].settings.tick_ms, "minIntervalMs": max(MIN_INTERVAL_MS, app[SERVICES].settings.tick_ms),
            "defaultIntervalMs": DEFAULT_INTERVAL_MS}


async def stream_ws(request: web.Request) -> web.StreamResponse:
    app = request.app
    address = client_address(request)
    token = bearer_token(request.headers.get("Authorization")) or query_of(request, StreamQuery).token
    upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
    principal = None
    if token is not None or not upgrade or app[SERVICES].guard.verifier is None:
        principal = _admit(app, token, address)
    if not upgrade:
        return json_response(info(app, principal))  # type: ignore[arg-type]
    if not origin_allowed(request.headers.get("Origin"), request.scheme, request.host, app[SERVICES].settings.cors_origins):
        raise ApiError(403, f"origin {request.headers.get('Origin')} may not open a WebSocket here: it is not "
                            "this controller's origin nor in cors_origins", [{"field": "Origin", "problem": "not allowed"}])
    settings = app[SERVICES].settings
    ws = web.WebSocketResponse(heartbeat=settings.stream_ping_ms / 1000, max_msg_size=MAX_MESSAGE_BYTES,
                               compress=True)
    await ws.prepare(request)
    if principal is None:
        principal = await _first_message_auth(app, ws, address)
        if principal is None:
            return ws
    conn = WsConnection(ws, request.transport, address)  # type: ignore[arg-type]
    hub = app[SERVICES].stream
    client = hub.connect(conn, principal)
    hub.reply(client, "ready", hub.ready_data(principal, conn.wbits()))
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                _dispatch(app, client, msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.close(code=CLOSE_UNSUPPORTED, message=b"binary messages are not part of this protocol")
    finally:
        hub.disconnect(client)
    return ws


def _admit(app: web.Application, token: str | None, address: str) -> Principal:
    try:
        return admit(app[SERVICES].guard, app[SERVICES].audit, token, address, "GET /api/v1/ws", logs.trace_id.get() or "")
    except StreamRefused as exc:
        raise ApiError(exc.status, exc.message, [{"field": "token", "problem": exc.message}],
                       headers=exc.headers) from None


async def _first_message_auth(app: web.Application, ws: web.WebSocketResponse, address: str) -> Principal | None:
    """The `auth` message an upgraded browser sends first; None (after an error and a close) when it fails."""
    try:
        msg = await ws.receive(timeout=AUTH_TIMEOUT_S)
        doc = json.loads(msg.data) if msg.type is WSMsgType.TEXT else None
    except (TimeoutError, ValueError, RecursionError):
        doc = None
    token = None
    if isinstance(doc, dict) and doc.get("event") == "auth" and isinstance(doc.get("data"), dict):
        token = doc["data"].get("token") if isinstance(doc["data"].get("token"), str) else None
    try:
        return admit(app[SERVICES].guard, app[SERVICES].audit, token, address, "GET /api/v1/ws (auth message)")
    except StreamRefused as exc:
        message = exc.message if token or doc is not None else \
            f"no auth message within {AUTH_TIMEOUT_S:g} s: {exc.message}"
        if not ws.closed:
            await ws.send_str(event_payload(WsConnection.kind, "error", exc.to_json()).decode())
            await ws.close(code=CLOSE_UNAUTHORIZED, message=exc.code.encode())
        log.info("stream connection from %s refused: %s", address, message)
        return None


def _dispatch(app: web.Application, client: StreamClient, text: str) -> None:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("event"), str):
        app[SERVICES].stream.reply(client, "error", {"code": "bad_message", "message": "send JSON objects such as "
                               "{\"event\": \"subscribe\", \"data\": {\"stations\": [\"Station-1\"]}}",
                               "details": [{"field": "event", "problem": "missing or not a string"}]})
        return
    handle(app[SERVICES].stream, app[SERVICES].guard, client, doc["event"], doc.get("data"))


def setup_routes(app: web.Application) -> None:
    """/api/v1/ws here and /socket.io/ (python-socketio), both fed by the hub; clients closed on shutdown."""
    add_endpoint(app, Endpoint("GET", "/ws", stream_ws, "Real-time stream over a plain WebSocket",
                               Permission.READ_METRICS, tags=("stream",), query=StreamQuery, authenticates=True,
                               responses={200: Reply("Without an Upgrade header: how to use this stream", StreamInfo)},
                               description=DESCRIPTION))
    hub = app[SERVICES].stream
    sio = SocketIoServer(app, hub)

    async def close_clients(app: web.Application) -> None:
        """Before aiohttp stops: every client gets a close frame (1001; Socket.IO clients reconnect later)."""
        await hub.shutdown()
        await sio.shutdown()

    app.on_shutdown.append(close_clients)

"""The stream on the app: the hub, /api/v1/ws and /socket.io/ routed, its figures, clients closed on shutdown."""
from __future__ import annotations

from aiohttp import web

from controller import keys
from controller.routes import stream as stream_routes
from controller.stream.client import StreamLimits
from controller.stream.hub import StreamHub
from controller.stream.sio_server import SocketIoServer
from controller.stream.telemetry import StreamCollector


def setup_stream(app: web.Application) -> StreamHub:
    settings = app[keys.SETTINGS]
    limits = StreamLimits(max_buffer_bytes=settings.stream_max_buffer_bytes,
                          max_pending_events=settings.stream_max_pending_events,
                          stall_timeout_s=settings.stream_stall_timeout_ms / 1000,
                          max_subscriptions=settings.stream_max_subscriptions)
    hub = app[keys.STREAM] = StreamHub(app[keys.TOPOLOGY], app[keys.SNAPSHOTS], app[keys.EVENTS], app[keys.CLOCK],
                                       settings.tick_ms, limits)
    stream_routes.setup_routes(app)
    sio = SocketIoServer(app, hub)
    app[keys.REGISTRY].register(StreamCollector(hub))

    async def close_clients(app: web.Application) -> None:
        """Before aiohttp stops: every client gets a close frame (1001; Socket.IO clients reconnect later)."""
        await hub.shutdown()
        await sio.shutdown()

    app.on_shutdown.append(close_clients)
    return hub

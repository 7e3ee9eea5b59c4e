"""Socket.IO with the npm socket.io-client 4 against an in-process controller: transports, events from the bus, stop."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.app_keys import SERVICES
from tests.auth import token_for
from tests.node import PlanClient, socketio_client
from tests.stream_helpers import feed_samples, stream_app

pytestmark = pytest.mark.slow  # node processes


@pytest.fixture
async def env(tmp_path):
    socketio_client()
    app = stream_app(tmp_path)
    feeder = asyncio.create_task(feed_samples(app))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield app, str(client.make_url("")).rstrip("/"), token_for(tmp_path)
    feeder.cancel()


async def wait_for(client: PlanClient, event: str, check=lambda data: True, timeout: float = 10) -> Any:
    line = await asyncio.to_thread(client.wait_for, lambda l: l["event"] == event and check(l["data"]), timeout)
    return line["data"]


@pytest.mark.parametrize("transports", [("websocket",), ("polling", "websocket"), ("polling",)],
                         ids=["websocket", "polling-then-upgrade", "polling-only"])
async def test_every_transport_gets_updates_and_bus_events(env, transports):
    app, url, token = env
    client = PlanClient(url, token, {"stations": ["Station-2"], "metrics": ["latency"], "interval": 150,
                                     "compression": True}, transports)
    try:
        assert (await wait_for(client, "subscribed"))["stations"] == ["Station-2"]
        first = await wait_for(client, "metrics-update")
        later = await wait_for(client, "metrics-update", lambda d: d["seq"] >= first["seq"] + 5)
        assert set(later["stations"]["Station-2"]["extension_4444"]["metrics"]) == {"latency"}
        bus = app[SERVICES].events
        bus.publish("alert", {"action": "created", "alert": {"id": "other", "station": "Station-1"}})
        bus.publish("alert", {"action": "escalated", "alert": {"id": "mine", "station": "Station-2"}})
        bus.publish("status-change", {"station": "Station-2", "extension": "3333", "status": "stale",
                                      "previous": "active"})
        bus.publish("optimization-complete", {"analysisId": "a-1", "summary": {"points": 1}})
        assert (await wait_for(client, "alert"))["alert"]["id"] == "mine"  # Station-1 is not subscribed
        assert (await wait_for(client, "status-change"))["status"] == "stale"
        assert (await wait_for(client, "optimization-complete"))["analysisId"] == "a-1"
        seqs = [line["data"]["seq"] for line in client.events("metrics-update")]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # none skipped
    finally:
        client.stop()


async def test_an_interval_below_the_tick_floor_is_an_error_event(env):
    app, url, token = env
    client = PlanClient(url, token, {"interval": 50})
    try:
        error = await wait_for(client, "error")
        assert error["code"] == "validation_failed" and error["details"][0]["field"] == "interval"
        assert "below the minimum of 150 ms" in error["message"]
        client.emit("subscribe", {"stations": ["Station-3"], "interval": 150})
        assert list((await wait_for(client, "metrics-update"))["stations"]) == ["Station-3"]
        client.emit("unsubscribe", {})
        assert (await wait_for(client, "unsubscribed")) == {"ids": ["s1"]}
    finally:
        client.stop()


async def test_stopping_the_controller_disconnects_clients_who_then_try_to_reconnect(tmp_path):
    socketio_client()
    app = stream_app(tmp_path)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    client = PlanClient(str(server.make_url("")).rstrip("/"), token_for(tmp_path), {"interval": 150})
    try:
        await wait_for(client, "metrics-update")
        await server.close()
        assert (await wait_for(client, "disconnect"))["reason"] == "transport close"  # not "io server disconnect"
        assert not app[SERVICES].stream.clients
    finally:
        client.stop()

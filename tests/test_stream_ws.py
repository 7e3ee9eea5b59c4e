"""The plain WebSocket at /api/v1/ws on an in-process controller: auth, subscriptions, events, fan-out, backpressure."""
from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from controller.app_keys import SERVICES
from controller.clock import ManualClock
from controller.stream import routes as stream_route
from tests.auth import token_for
from tests.stream_helpers import (
    client_frame,
    connected,
    feed_samples,
    next_event,
    raw_ws,
    read_all,
    stream_app,
    subscribe,
)


@pytest.fixture
async def env(tmp_path):
    app = stream_app(tmp_path)
    feeder = asyncio.create_task(feed_samples(app))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield app, client, token_for(tmp_path)
    feeder.cancel()


def audit_lines(tmp_path) -> list[dict]:
    path = tmp_path / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- authentication ------------------------------------------------------------------------------

async def test_a_subscription_gets_its_slice_at_its_interval(env):
    app, client, token = env
    ws = await connected(client, token)
    reply = await subscribe(ws, stations=["Station-2"], metrics=["latency", "packet_loss"], interval=150)
    assert reply["id"] == "s1" and reply["stations"] == ["Station-2"] and reply["interval"] == 150
    assert {m.split(".")[0] for m in reply["metrics"]} == {"latency", "packet"}
    updates = [await next_event(ws, "metrics-update") for _ in range(4)]
    for update in updates:
        assert update["subscription"] == "s1" and list(update["stations"]) == ["Station-2"]
        point = update["stations"]["Station-2"]["extension_3333"]
        assert set(point) == {"metrics", "status", "measuredAt"} and set(point["metrics"]) == {"latency", "packet"}
        assert len(point["metrics"]["packet"]) == 14 and point["status"] == "active"
    assert [u["seq"] for u in updates] == [updates[0]["seq"] + n for n in range(4)]
    await ws.close()


async def test_the_token_may_come_as_query_or_first_message(env, tmp_path, monkeypatch):
    app, client, token = env
    ws = await client.ws_connect(f"/api/v1/ws?token={token}")
    assert (await next_event(ws, "ready"))["subject"] == "test-admin"
    await ws.close()
    ws = await client.ws_connect("/api/v1/ws")
    await ws.send_json({"event": "auth", "data": {"token": token}})
    assert (await next_event(ws, "ready"))["role"] == "admin"
    await ws.close()
    ws = await client.ws_connect("/api/v1/ws")
    await ws.send_json({"event": "auth", "data": {"token": "not-a-jwt"}})
    assert (await next_event(ws, "error"))["code"] == "unauthorized"
    assert (await ws.receive()).type is WSMsgType.CLOSE and ws.close_code == 4401
    monkeypatch.setattr(stream_route, "AUTH_TIMEOUT_S", 0.2)
    ws = await client.ws_connect("/api/v1/ws")
    assert "missing token" in (await next_event(ws, "error"))["message"]
    assert (await ws.receive()).type is WSMsgType.CLOSE
    reasons = [r["reason"] for r in audit_lines(tmp_path) if r["event"] == "auth.failure"]
    assert reasons[0] == "the token is not a well-formed JWT" and reasons[1].startswith("missing token")


async def test_bad_or_insufficient_tokens_are_refused_before_the_upgrade(env, tmp_path):
    app, client, token = env
    for headers, status in (({"Authorization": "Bearer nope"}, 401),
                            ({"Authorization": f"Bearer {token_for(tmp_path, 'viewer', permissions=[])}"}, 403)):
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await client.ws_connect("/api/v1/ws", headers=headers)
        assert caught.value.status == status
    resp = await client.get("/api/v1/ws")  # no upgrade, no token: 401 in the envelope like any protected route
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"
    resp = await client.get("/api/v1/ws", headers={"Authorization": f"Bearer {token}"})
    doc = await resp.json()
    assert resp.status == 200 and doc["minIntervalMs"] == 150 and "subscribe" in doc["requests"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:  # a browser page from another origin
        await client.ws_connect("/api/v1/ws", headers={"Authorization": f"Bearer {token}",
                                                       "Origin": "https://evil.example"})
    assert caught.value.status == 403
    events = [r["event"] for r in audit_lines(tmp_path)]
    assert "auth.failure" in events and "authz.denied" in events


# --- subscriptions -------------------------------------------------------------------------------

async def test_bad_subscriptions_get_an_error_event_and_change_nothing(env):
    app, client, token = env
    ws = await connected(client, token)
    for data, field in (({"interval": 100}, "interval"), ({"metrics": ["latency", "nope"]}, "metrics.1"),
                        ({"stations": ["Station-9"]}, "stations.0"), ({"compression": 1}, "compression")):
        await ws.send_json({"event": "subscribe", "data": data})
        error = await next_event(ws, "error")
        assert error["code"] == "validation_failed" and error["request"] == "subscribe"
        assert [d["field"] for d in error["details"]] == [field]
    await ws.send_json({"event": "subscribe", "data": {"interval": 100}})
    assert "below the minimum of 150 ms" in (await next_event(ws, "error"))["message"]
    for text in ("not json", "[" * 60000, '{"event": 3}', "[]"):
        await ws.send_str(text)
        assert (await next_event(ws, "error"))["code"] == "bad_message"
    await ws.send_json({"event": "subscribee"})
    assert (await next_event(ws, "error"))["code"] == "unknown_request"
    await ws.send_json({"event": "unsubscribe"})
    assert (await next_event(ws, "unsubscribed")) == {"ids": []}
    await ws.send_json({"event": "ping", "data": {"n": 1}})
    assert (await next_event(ws, "pong")) == {"n": 1}
    await ws.close()


async def test_several_subscriptions_each_with_its_id_and_unsubscribe(env):
    app, client, token = env
    ws = await connected(client, token)
    await subscribe(ws, id="fast", stations=["Station-1"], metrics=["packet.loss_rate"], interval=150)
    await subscribe(ws, id="slow", stations=["Station-3"], metrics=["audio_quality"], interval=600)
    seen: dict[str, list[dict]] = {"fast": [], "slow": []}
    while len(seen["slow"]) < 2:
        update = await next_event(ws, "metrics-update")
        seen[update["subscription"]].append(update)
    assert len(seen["fast"]) >= 4  # four times as often
    assert seen["fast"][0]["stations"]["Station-1"]["extension_4444"]["metrics"] == {
        "packet": {"loss_rate": seen["fast"][0]["stations"]["Station-1"]["extension_4444"]["metrics"]["packet"]["loss_rate"]}}
    assert set(seen["slow"][0]["stations"]["Station-3"]["extension_3333"]["metrics"]) == {"audioQuality"}
    await ws.send_json({"event": "unsubscribe", "data": {"id": "fast"}})
    assert await next_event(ws, "unsubscribed") == {"ids": ["fast"]}
    for _ in range(2):
        assert (await next_event(ws, "metrics-update", timeout=2))["subscription"] == "slow"
    await ws.send_json({"event": "unsubscribe", "data": {"id": "fast"}})
    assert (await next_event(ws, "error"))["code"] == "not_found"
    await ws.close()


async def test_a_scoped_token_sees_only_its_stations(env, tmp_path):
    app, client, _ = env
    ws = await connected(client, token_for(tmp_path, "viewer", ["Station-2"]))
    await ws.send_json({"event": "subscribe", "data": {"stations": ["Station-1", "Station-2"]}})
    error = await next_event(ws, "error")
    assert error["code"] == "forbidden" and "Station-1" in error["message"]
    reply = await subscribe(ws, interval=150)
    assert reply["stations"] == ["Station-2"]
    assert list((await next_event(ws, "metrics-update"))["stations"]) == ["Station-2"]
    bus = app[SERVICES].events
    bus.publish("alert", {"action": "created", "alert": {"id": "a1", "station": "Station-1"}})
    bus.publish("optimization-complete", {"analysisId": "x", "summary": {}})  # about no station
    bus.publish("alert", {"action": "created", "alert": {"id": "a2", "station": "Station-2"}})
    assert (await next_event(ws, "alert"))["alert"]["id"] == "a2"  # a1 and the global event never came
    assert any(r["event"] == "authz.denied" and "Station-1" in r["reason"] for r in audit_lines(tmp_path))
    await ws.close()


async def test_events_follow_the_subscriptions_events_and_stations(env):
    app, client, token = env
    ws = await connected(client, token)
    bus = app[SERVICES].events
    bus.publish("alert", {"action": "created", "alert": {"id": "before", "station": "Station-1"}})
    await subscribe(ws, stations=["Station-1"], events=["knob-changed", "optimization-complete"], interval=60000)
    bus.publish("alert", {"action": "created", "alert": {"id": "a1", "station": "Station-1"}})
    bus.publish("knob-changed", {"station": "Station-3", "extension": "3333", "changes": {}})
    bus.publish("knob-changed", {"station": "Station-1", "extension": "3333", "changes": {"agc_enabled":
                                 {"old": False, "new": True}}, "version": 2, "changedBy": "x", "status": "applied"})
    bus.publish("optimization-complete", {"analysisId": "o1", "summary": {"gain": 0.1}})
    assert (await next_event(ws, "knob-changed"))["station"] == "Station-1"
    assert (await next_event(ws, "optimization-complete"))["analysisId"] == "o1"
    await ws.close()


async def test_one_serialization_per_shape_whatever_the_number_of_clients(env):
    app, client, token = env
    hub = app[SERVICES].stream
    sockets = [await connected(client, token) for _ in range(6)]
    for n, ws in enumerate(sockets):
        await subscribe(ws, id=f"dash-{n}", stations=["Station-1", "Station-2"], metrics=["latency"], interval=150)
    assert len(hub.shapes) == 1
    rendered = hub.stats.updates_rendered
    got = [await next_event(ws, "metrics-update") for ws in sockets]
    got += [await next_event(ws, "metrics-update") for ws in sockets]
    emitted = hub.stats.updates_rendered - rendered
    assert emitted <= 3  # two updates reached six clients from at most three serializations (one per tick)
    assert {g["subscription"] for g in got} == {f"dash-{n}" for n in range(6)}
    for ws in sockets:
        await ws.close()
    await asyncio.sleep(0.1)
    assert hub.shapes == {} and hub.clients == {}


async def test_joining_a_slow_shape_brings_its_current_state_at_the_next_tick(env):
    app, client, token = env
    first, second = await connected(client, token), await connected(client, token)
    await subscribe(first, stations=["Station-1"], interval=60000)
    opening = await next_event(first, "metrics-update")
    await subscribe(second, stations=["Station-1"], interval=60000)  # the same shape, next due in a minute
    joined = await next_event(second, "metrics-update", timeout=2)
    assert joined["seq"] == opening["seq"] and joined["timestamp"] > opening["timestamp"]
    assert len(app[SERVICES].stream.shapes) == 1
    with pytest.raises(asyncio.TimeoutError):  # the first subscriber is not sent it again
        await next_event(first, "metrics-update", timeout=0.5)
    await first.close()
    await second.close()


async def test_compression_true_sends_deflated_frames_the_client_inflates(env):
    app, client, token = env
    ws = await connected(client, token, compress=15)  # offers permessage-deflate
    reply = await subscribe(ws, stations=["Station-1"], interval=150, compression=True)
    assert reply["compression"] == "deflate"
    plain = await connected(client, token)  # offers nothing: the same subscription arrives uncompressed
    assert (await subscribe(plain, stations=["Station-1"], interval=150, compression=True))["compression"] == "none"
    a, b = await next_event(ws, "metrics-update"), await next_event(plain, "metrics-update")
    assert a["stations"].keys() == b["stations"].keys() and len(a["stations"]["Station-1"]["extension_3333"]["metrics"]) == 5
    update = next(iter(app[SERVICES].stream.shapes.values()))
    assert update.sub.compression
    await ws.close()
    await plain.close()


# --- backpressure, expiry, shutdown ---------------------------------------------------------------

def _subscribe_frames(transport: str, n: int, token: str) -> bytes:
    data = {"id": f"x{n}", "interval": 150}
    if transport == "ws":
        return client_frame(json.dumps({"event": "subscribe", "data": data}).encode())
    connect = client_frame(("40" + json.dumps({"token": token})).encode()) if n == 0 else b""
    return connect + client_frame(("42" + json.dumps(["subscribe", data])).encode())


@pytest.mark.slow  # seconds: the stalled client's buffers must fill
@pytest.mark.parametrize("transport", ["ws", "sio"])
async def test_a_stalled_client_delays_no_one_and_is_told_then_dropped(tmp_path, transport):
    app = stream_app(tmp_path, stations=12, stream_max_buffer_bytes=65536, stream_stall_timeout_ms=1000)
    feeder = asyncio.create_task(feed_samples(app))
    token = token_for(tmp_path)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        path = "/api/v1/ws" if transport == "ws" else "/socket.io/?EIO=4&transport=websocket"
        reader, writer = await raw_ws(client.port, token, path=path)
        for n in range(4):  # four full subscriptions: its buffers fill in about two seconds
            writer.write(_subscribe_frames(transport, n, token))
        healthy = await connected(client, token)
        await subscribe(healthy, interval=150)
        hub, started, seqs, gaps = app[SERVICES].stream, time.monotonic(), [], []
        while hub.stats.disconnects.get("too_slow", 0) == 0 and time.monotonic() - started < 15:
            before = time.monotonic()
            seqs.append((await next_event(healthy, "metrics-update"))["seq"])
            gaps.append(time.monotonic() - before)
        assert hub.stats.disconnects.get("too_slow") == 1, "the stalled client was never dropped"
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # the healthy client missed no update
        assert len(seqs) >= 10
        told = await read_all(reader)  # what the stalled client finds when it reads again
        assert b'"code":"too_slow"' in told and b"\x88" in told[-200:] and (4408).to_bytes(2, "big") in told[-200:]
        writer.close()
        await healthy.close()
    feeder.cancel()


async def test_an_expired_token_ends_the_stream(tmp_path):
    clock = ManualClock(wall=time.time())
    app = stream_app(tmp_path, clock=clock, stations=1)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        ws = await connected(client, token_for(tmp_path, ttl_s=60, now=clock.wall()))
        await subscribe(ws, interval=150)
        clock.advance(120)
        error = await next_event(ws, "error")
        assert error["code"] == "token_expired"
        assert (await ws.receive()).type is WSMsgType.CLOSE and ws.close_code == 4401


async def test_stopping_the_controller_closes_every_stream_with_going_away(tmp_path):
    app = stream_app(tmp_path)
    token = token_for(tmp_path)
    server = TestServer(app, host="127.0.0.1")
    client = TestClient(server)
    await client.start_server()
    sockets = [await connected(client, token) for _ in range(3)]
    await subscribe(sockets[0], interval=150)
    await server.close()
    for ws in sockets:
        msg = await ws.receive(timeout=5)
        while msg.type is WSMsgType.TEXT:
            msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE and (msg.data, msg.extra) == (1001, "controller stopping"), msg
    await client.close()

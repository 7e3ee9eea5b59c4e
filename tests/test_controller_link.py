"""The agent link (CURVE, as in production) with a real ZeroMQ DEALER playing the agent: reconcile, acks, timeouts, garbage."""
from __future__ import annotations

import asyncio
import os
import socket

import msgpack
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from controller.app import create_app
from controller.app_keys import SERVICES
from controller.settings import ControllerSettings
from shared import protocol
from shared.protocol import Message, MsgType
from tests.auth import bearer
from tests.fake_agent import FakeAgent, link_keys

pytestmark = pytest.mark.slow  # real sockets on loopback

KNOBS_URL = "/api/v1/config/knobs/Station-1/3333"


@pytest.fixture
async def ctl(tmp_path):
    settings = ControllerSettings(http_host="127.0.0.1", link_endpoint="tcp://127.0.0.1:*",
                                  data_dir=str(tmp_path), stations=2, tick_ms=50, ack_timeout_ms=500,
                                  heartbeat_ms=200, stale_after_ms=1000, offline_after_ms=3000,
                                  **link_keys(tmp_path, 2))
    app = create_app(settings, registry=CollectorRegistry())
    async with TestClient(TestServer(app), headers=bearer(tmp_path)) as client:
        client.endpoint = app[SERVICES].link.endpoint
        client.keys = tmp_path / "keys"
        client.agents = []
        yield client
        for agent in client.agents:
            agent.close()


def agent_for(ctl, station: str = "Station-1") -> FakeAgent:
    agent = FakeAgent(ctl.endpoint, station, ctl.keys)
    ctl.agents.append(agent)
    return agent


async def test_hello_from_a_fresh_agent_gets_the_desired_sets(ctl):
    agent = agent_for(ctl)
    await agent.hello({"3333": 0, "4444": 1})  # 4444 already runs version 1 (defaults)
    msg = await agent.recv(MsgType.KNOB_SET)
    assert msg.body["extension"] == "3333" and msg.body["version"] == 1 and len(msg.body["knobs"]) == 112
    assert await agent.nothing(MsgType.KNOB_SET, 0.3)


async def test_post_is_pushed_acknowledged_and_answered_applied(ctl):
    agent = agent_for(ctl)
    await agent.hello({"3333": 1, "4444": 1})
    await asyncio.sleep(0.1)

    async def play_agent() -> Message:
        msg = await agent.recv(MsgType.KNOB_SET)
        await agent.send(protocol.ack("Station-1", "3333", msg.body["version"], True))
        return msg

    acker = asyncio.create_task(play_agent())
    resp = await ctl.post(KNOBS_URL, json={"agc_enabled": False, "agc_max_gain": 20})
    doc = await resp.json()
    sent = await acker
    assert sent.body["knobs"]["agc_enabled"] is False and sent.body["knobs"]["agc_max_gain"] == 20.0
    assert resp.status == 200 and doc["applied"] is True and doc["version"] == sent.body["version"] == 2
    got = await (await ctl.get(KNOBS_URL)).json()
    assert got["applied"] is True and got["status"] == "applied" and got["appliedVersion"] == 2


async def test_a_silent_agent_gets_a_plain_timeout_reason(ctl):
    agent = agent_for(ctl)
    await agent.hello({"3333": 1, "4444": 1})
    await asyncio.sleep(0.1)
    resp = await ctl.post(KNOBS_URL, json={"agc_enabled": False})
    doc = await resp.json()
    assert resp.status == 200 and doc["applied"] is False
    assert doc["reason"].startswith("agent Station-1 did not acknowledge within 500 ms")
    got = await (await ctl.get(KNOBS_URL)).json()
    assert got["status"] == "pending" and got["version"] == 2 and got["config"]["agc_enabled"] is False


async def test_a_refused_set_is_reported_with_the_agents_errors(ctl):
    agent = agent_for(ctl)
    await agent.hello({"3333": 1, "4444": 1})
    await asyncio.sleep(0.1)
    errors = [{"field": "agc_mode", "problem": "not supported by this engine"}]

    async def refuse() -> None:
        msg = await agent.recv(MsgType.KNOB_SET)
        await agent.send(protocol.ack("Station-1", "3333", msg.body["version"], False, errors))

    task = asyncio.create_task(refuse())
    doc = await (await ctl.post(KNOBS_URL, json={"agc_mode": "fixed_digital"})).json()
    await task
    assert doc["applied"] is False and doc["errors"] == errors and "rejected version 2" in doc["reason"]
    got = await (await ctl.get(KNOBS_URL)).json()
    assert got["rejected"] == {"version": 2, "errors": errors}
    # Samples still on version 1 do not make the controller re-send what was refused.
    await agent.sample("3333", 1, knob_version=1)
    assert await agent.nothing(MsgType.KNOB_SET, 0.7)


async def test_a_sample_on_an_old_version_triggers_a_resend_once_per_ack_timeout(ctl):
    agent = agent_for(ctl)
    await agent.hello({"3333": 1, "4444": 1})
    await asyncio.sleep(0.1)
    await ctl.post(KNOBS_URL, json={"agc_enabled": False})  # agent ignores it: times out after 0.5 s
    first = await agent.recv(MsgType.KNOB_SET)
    # The POST waited the whole ack timeout, so a sample still on version 1 gets a re-send...
    await agent.sample("3333", 1, knob_version=1)
    again = await agent.recv(MsgType.KNOB_SET, 2)
    assert again.body["version"] == first.body["version"] == 2
    # ...but not again while that re-send is within its ack timeout.
    await agent.sample("3333", 2, knob_version=1)
    assert await agent.nothing(MsgType.KNOB_SET, 0.2)
    await agent.send(protocol.ack("Station-1", "3333", 2, True))
    await agent.sample("3333", 3, knob_version=2)
    assert await agent.nothing(MsgType.KNOB_SET, 0.7)


async def test_samples_show_up_in_the_snapshot_and_health(ctl):
    agent = agent_for(ctl)
    await agent.hello({"3333": 1, "4444": 1})
    for seq in (1, 2, 4):
        await agent.sample("3333", seq, knob_version=1)
    await asyncio.sleep(0.2)  # a few ticks
    snap = await (await ctl.get("/api/v1/snapshots")).json()
    point = snap["stations"]["Station-1"]["extension_3333"]
    assert point["status"] == "active" and point["metrics"]["latency"]["end_to_end"] == 0.5
    assert point["measuredAt"] == "2023-11-14T22:13:24.000Z"
    assert snap["stations"]["Station-1"]["extension_4444"]["status"] == "offline"
    health = await (await ctl.get("/api/v1/health")).json()
    assert health["activeStations"] == 1 and health["activeExtensions"] == 1
    assert health["link"]["sequenceGaps"] == 1 and health["lastDataUpdate"] is not None


async def test_the_controller_sends_heartbeats_to_known_agents(ctl):
    agent = agent_for(ctl)
    await agent.hello({"3333": 1, "4444": 1})
    msg = await agent.recv(MsgType.HEARTBEAT, 1.0)
    assert msg.body["sent_at"] > 0


async def test_a_restarted_agent_takes_over_its_stations_route(ctl):
    old = agent_for(ctl)
    await old.hello({"3333": 1, "4444": 1})
    await asyncio.sleep(0.1)
    new = agent_for(ctl)  # same key, a new connection (old socket still open): its HELLO moves the route
    await new.hello({"3333": 0, "4444": 1})
    msg = await new.recv(MsgType.KNOB_SET)
    assert msg.body["extension"] == "3333"
    assert await old.nothing(MsgType.HEARTBEAT, 0.5), "heartbeats follow the route to the new connection"
    assert (await new.recv(MsgType.HEARTBEAT, 1.0)).body["sent_at"] > 0


async def test_a_route_whose_connection_is_gone_is_forgotten(ctl):
    agent = agent_for(ctl)
    await agent.hello({"3333": 1, "4444": 1})
    await agent.recv(MsgType.HEARTBEAT, 1.0)
    agent.close()
    await asyncio.sleep(0.5)  # a heartbeat finds the connection gone and drops the route
    link = ctl.server.app[SERVICES].link
    assert "Station-1" not in link.known_stations()
    doc = await (await ctl.post(KNOBS_URL, json={"agc_enabled": False})).json()
    assert doc["applied"] is False and "offline" in doc["reason"]


async def test_garbage_is_counted_and_dropped_and_service_continues(ctl):
    # Garbage from an agent with a listed key (Station-2's), so it gets past the handshake.
    junk = FakeAgent(ctl.endpoint, "Station-2", ctl.keys).sock
    frames = [b"", b"\xc1\xc1", os.urandom(300), b'{"type": "sample"}', msgpack.packb([1, 99, {}]),
              msgpack.packb([1, 2, {"station": "Station-1"}])]
    for frame in frames:
        await junk.send(frame)
    await junk.send_multipart([b"a", b"b", b"c"])
    # A valid frame naming a point outside the topology is rejected, not malformed.
    await junk.send(protocol.encode(protocol.hello("Station-77", ["3333"], {})))
    await asyncio.sleep(0.3)
    junk.close(0)
    health = await (await ctl.get("/api/v1/health")).json()
    assert health["link"]["framesMalformed"] == len(frames) + 1
    assert health["link"]["messagesRejected"] == 1
    text = await (await ctl.get("/metrics")).text()
    assert f"link_frames_malformed_total {float(len(frames) + 1)}" in text

    # Raw TCP bytes: libzmq either refuses the handshake or (no 0xFF signature) reads them as
    # ZMTP 1.0 frames, which then reach us as junk messages; either way they are dropped.
    host, port = ctl.endpoint.removeprefix("tcp://").rsplit(":", 1)
    for _ in range(3):
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(os.urandom(4096) + bytes(range(256)) * 20)
    await asyncio.sleep(0.3)
    health = await (await ctl.get("/api/v1/health")).json()
    assert health["link"]["framesMalformed"] >= len(frames) + 1
    assert health["status"] != "unhealthy"

    # Still serving, and a real agent still works.
    agent = agent_for(ctl)
    await agent.hello({"3333": 0, "4444": 1})
    assert (await agent.recv(MsgType.KNOB_SET)).body["extension"] == "3333"
    assert (await ctl.get("/api/v1/snapshots")).status == 200

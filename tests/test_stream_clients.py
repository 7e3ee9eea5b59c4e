"""Real clients against a real controller with a real agent: the npm socket.io-client 4 running the plan's
snippet (tests/js/plan_client.js), and a plain WebSocket client (aiohttp) doing the same over /api/v1/ws."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from tests.auth import token_for
from tests.node import PlanClient, socketio_client
from tests.procs import ADMIN_TOKENS, get_json, post_json, start_agent, start_controller, wait_until

pytestmark = pytest.mark.slow

PLAN_SUBSCRIPTION = {"stations": ["Station-1"], "metrics": ["latency", "packet_loss", "audio_quality"],
                     "interval": 300, "compression": True}


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    socketio_client()  # install (or find) the npm client before the clock starts
    tmp = tmp_path_factory.mktemp("stream")
    proc, base, link_port = start_controller(tmp, stations=2)
    agent = start_agent(tmp, "Station-1", link_port)
    try:
        wait_until(lambda: _active(base), 30, agent)
        yield base, tmp
    finally:
        agent.stop()
        proc.stop()


def _active(base: str) -> bool:
    status, doc = get_json(f"{base}/api/v1/snapshots?stations=Station-1")
    return status == 200 and doc["stations"]["Station-1"]["extension_3333"]["status"] == "active"


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_the_plans_socketio_client_gets_updates_knob_changes_and_alerts(controller):
    base, tmp = controller
    client = PlanClient(base, ADMIN_TOKENS[base], PLAN_SUBSCRIPTION)
    try:
        subscribed = client.wait_for(lambda line: line["event"] == "subscribed")["data"]
        assert subscribed["interval"] == 300 and subscribed["compression"] == "deflate"  # node's ws offers it
        client.wait_for(lambda line: line["event"] == "metrics-update" and line["data"]["seq"] >= 7)
        updates = [line["data"] for line in client.events("metrics-update")]
        stamps = [_epoch(u["timestamp"]) for u in updates]
        mean = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
        assert 0.25 <= mean <= 0.35, stamps  # the requested 300 ms, on 150 ms ticks
        for update in updates:
            point = update["stations"]["Station-1"]["extension_3333"]
            assert list(update["stations"]) == ["Station-1"] and update["subscription"] == "s1"
            assert set(point["metrics"]) == {"latency", "packet", "audioQuality"} and point["status"] == "active"
            assert point["metrics"]["packet"]["loss_rate"] is not None and point["measuredAt"]

        status, result = post_json(f"{base}/api/v1/config/knobs/Station-1/3333", {"agc_target_level": -20})
        assert status == 200, result
        changed = client.wait_for(lambda line: line["event"] == "knob-changed")["data"]
        assert changed["station"] == "Station-1" and changed["extension"] == "3333"
        assert changed["changes"]["agc_target_level"]["new"] == -20 and changed["version"] == result["version"]

        # An alert from the real engine: a threshold every sample of Station-1 violates, at once.
        status, rule = post_json(f"{base}/api/v1/config/metrics", {
            "metricId": "latency_end_to_end", "thresholds": {"warning": 0.001}, "direction": "above",
            "duration": 0, "window": 0, "stations": ["Station-1"]})
        assert status in (200, 201), rule
        alert = client.wait_for(lambda line: line["event"] == "alert", timeout=20)["data"]
        assert alert["action"] == "created" and alert["alert"]["station"] == "Station-1"
    finally:
        client.stop()


def test_socketio_refuses_no_token_a_bad_one_and_out_of_scope_subscriptions(controller):
    base, tmp = controller
    for token, words in ((None, "missing token"), ("not.a.token", "not a well-formed JWT")):
        client = PlanClient(base, token, PLAN_SUBSCRIPTION)
        try:
            refused = client.wait_for(lambda line: line["event"] == "connect_error")["data"]
            assert words in refused["message"] and refused["data"]["code"] == "unauthorized"
            assert not client.events("metrics-update")
        finally:
            client.stop()
    scoped = PlanClient(base, token_for(tmp / "controller", "viewer", ["Station-2"]), PLAN_SUBSCRIPTION)
    try:
        error = scoped.wait_for(lambda line: line["event"] == "error")["data"]
        assert error["code"] == "forbidden" and "Station-1" in error["message"]
        scoped.emit("subscribe", {"interval": 150})  # its default: only the stations it may see
        update = scoped.wait_for(lambda line: line["event"] == "metrics-update")["data"]
        assert list(update["stations"]) == ["Station-2"]
    finally:
        scoped.stop()


def test_the_same_over_a_plain_websocket(controller):
    base, tmp = controller
    asyncio.run(_plain_websocket(base, tmp))


async def _plain_websocket(base: str, tmp: Path) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{base}/api/v1/ws?token=nope")
        assert refused.value.status == 401
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{base}/api/v1/ws", compress=15,
                                      headers={"Authorization": f"Bearer {ADMIN_TOKENS[base]}"})
        await ws.send_json({"event": "subscribe", "data": PLAN_SUBSCRIPTION})
        seen: dict[str, list] = {}
        posted = None
        while "knob-changed" not in seen:
            doc = json.loads((await ws.receive(timeout=10)).data)
            seen.setdefault(doc["event"], []).append(doc["data"])
            if len(seen.get("metrics-update", ())) == 3 and posted is None:
                posted = await asyncio.to_thread(post_json, f"{base}/api/v1/config/knobs/Station-1/4444",
                                                 {"agc_target_level": -22})
        assert seen["subscribed"][0]["compression"] == "deflate"
        assert seen["knob-changed"][0]["extension"] == "4444" and posted[0] == 200
        assert all(set(u["stations"]) == {"Station-1"} for u in seen["metrics-update"])
        await ws.close()

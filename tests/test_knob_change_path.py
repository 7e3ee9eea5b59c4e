"""The one knob change path (KnobSync): audited for every caller, an applied signal, revert that never undoes a later change.

A controller app in process with scripted agents on a real ZeroMQ link; the in-process
caller stands for the optimizer (it calls the service, not the HTTP API).
"""
from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.app_keys import SERVICES
from controller.knobs.changes import Attribution
from controller.knobs.sync import RevertConflict
from shared import protocol
from shared.knobs import defaults
from shared.topology import Point
from tests.acking_agent import make_app, start_agents
from tests.auth import bearer

pytestmark = pytest.mark.slow  # real ZeroMQ sockets on loopback (each test well under a second)

P = Point("Station-1", "3333")
OPTIMIZER = Attribution("optimizer", "optimizer", "lower latency")


@pytest.fixture
async def client(tmp_path):
    app = make_app(tmp_path)
    async with TestClient(TestServer(app), headers=bearer(tmp_path)) as c:
        c.agents = {}
        c.events = []
        app[SERVICES].events.subscribe(lambda name, data: c.events.append((name, data)))
        yield c
        for agent in c.agents.values():
            agent.close()


def audit_lines(tmp_path, event: str = "config.change") -> list[dict]:
    lines = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    return [line for line in lines if line["event"] == event]


def applied_events(client) -> list[dict]:
    return [data for name, data in client.events if name == "knob-applied"]


async def test_an_in_process_change_is_audited_like_an_api_change(client, tmp_path):
    client.agents = await start_agents(client, {"Station-1": "ack"})
    sync = client.app[SERVICES].knob_sync
    result = await sync.change(P, {"jitter_buffer_depth": 80}, OPTIMIZER)
    assert result.applied
    resp = await client.post("/api/v1/config/knobs/Station-1/3333?reason=by%20hand", json={"agc_enabled": False})
    assert resp.status == 200
    client.app[SERVICES].audit.close()  # flushes the file
    first, second = audit_lines(tmp_path)
    assert first["who"] == "optimizer" and first["source"] == "optimizer" and first["where"] == ""
    assert first["changes"] == {"jitter_buffer_depth": 80} and first["version"] == 2 and first["outcome"] == "sent"
    assert second["who"] == "test-admin" and second["source"] == "api" and second["reason"] == "by hand"
    assert second["where"] == "127.0.0.1" and second["version"] == 3 and second["previousVersion"] == 2


async def test_a_stored_change_for_an_offline_agent_is_audited_as_stored(client, tmp_path):
    result = await client.app[SERVICES].knob_sync.change(P, {"agc_enabled": False}, OPTIMIZER)
    assert not result.applied
    client.app[SERVICES].audit.close()
    [line] = audit_lines(tmp_path)
    assert line["outcome"] == "stored" and line["version"] == 2


async def test_one_applied_event_per_version_with_the_agents_time(client):
    client.agents = await start_agents(client, {"Station-1": "ack"})
    await client.app[SERVICES].knob_sync.change(P, {"jitter_buffer_depth": 80}, OPTIMIZER)
    # The agent reports the same version again in its samples: no second event.
    agent = client.agents["Station-1"]
    for seq in (1, 2, 3):
        await agent.send(protocol.sample("Station-1", "3333", seq, 1_700_000_000.0 + seq, [None] * 68, 2))
    await asyncio.sleep(0.2)
    events = [e for e in applied_events(client) if e["extension"] == "3333"]
    assert [e["version"] for e in events] == [2]
    assert events[0]["appliedAt"].endswith("Z") and events[0]["desiredVersion"] == 2


async def test_a_pending_change_applied_later_is_signalled_when_the_agent_runs_it(client):
    # Stored while the agent is away; on its return its HELLO says version 1, it gets version 2, and acks.
    await client.app[SERVICES].knob_sync.change(P, {"agc_enabled": False}, OPTIMIZER)
    assert not [e for e in applied_events(client) if e["version"] == 2]
    client.agents = await start_agents(client, {"Station-1": "ack"})
    for _ in range(50):
        if any(e["version"] == 2 and e["extension"] == "3333" for e in applied_events(client)):
            break
        await asyncio.sleep(0.05)
    assert [e["version"] for e in applied_events(client) if e["extension"] == "3333"][-1] == 2


async def test_a_lost_ack_is_made_up_for_by_the_sample_running_the_version(client):
    client.agents = await start_agents(client, {"Station-1": "silent"})
    result = await client.app[SERVICES].knob_sync.change(P, {"agc_enabled": False}, OPTIMIZER)
    assert not result.applied  # no ACK within the timeout
    await client.agents["Station-1"].send(protocol.sample("Station-1", "3333", 1, 1_700_000_000.0, [None] * 68, 2))
    await asyncio.sleep(0.2)
    assert [e["version"] for e in applied_events(client) if e["extension"] == "3333"] == [2]


async def test_an_ack_carries_when_the_agent_applied_the_set(client):
    client.agents = await start_agents(client, {"Station-1": "silent"})
    await client.app[SERVICES].knob_sync.change(P, {"agc_enabled": False}, OPTIMIZER)
    await client.agents["Station-1"].send(protocol.ack("Station-1", "3333", 2, True, applied_at=1_700_000_123.25))
    await asyncio.sleep(0.2)
    [event] = [e for e in applied_events(client) if e["extension"] == "3333"]
    assert event["appliedAt"] == "2023-11-14T22:15:23.250Z"


async def test_revert_brings_back_the_full_set_of_the_version(client):
    client.agents = await start_agents(client, {"Station-1": "ack"})
    sync = client.app[SERVICES].knob_sync
    await sync.change(P, {"jitter_buffer_depth": 80, "agc_enabled": False}, OPTIMIZER)
    result = await sync.revert(P, 1, Attribution("optimizer", "optimizer", "measured worse"))
    assert result.applied and result.desired.version == 3
    assert result.desired.knobs == defaults()
    assert client.agents["Station-1"].applied["3333"] == (3, defaults())
    [undo] = [c for c in client.app[SERVICES].knob_changes.changes_of(P) if c.version == 3]
    assert undo.knobs == {"jitter_buffer_depth": (80, defaults()["jitter_buffer_depth"]),
                          "agc_enabled": (False, True)}


async def test_revert_refuses_when_somebody_changed_the_point_since(client):
    client.agents = await start_agents(client, {"Station-1": "ack"})
    sync = client.app[SERVICES].knob_sync
    await sync.change(P, {"jitter_buffer_depth": 80}, OPTIMIZER)                     # version 2
    await sync.change(P, {"agc_enabled": False}, Attribution("alice"))               # version 3, a person's
    with pytest.raises(RevertConflict, match="version 3, not 2"):
        await sync.revert(P, 1, OPTIMIZER)                                            # would undo alice's too
    assert client.app[SERVICES].desired.get(P).version == 3
    assert client.app[SERVICES].desired.get(P).knobs["agc_enabled"] is False
    assert max(c.version for c in client.app[SERVICES].knob_changes.changes_of(P)) == 3


async def test_revert_of_a_version_nobody_recorded_is_refused(client):
    sync = client.app[SERVICES].knob_sync
    await sync.change(P, {"jitter_buffer_depth": 80}, OPTIMIZER)
    with pytest.raises(RevertConflict, match="not on record"):
        await sync.revert(P, 7, OPTIMIZER, expected=2)

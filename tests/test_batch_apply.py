"""Batch apply in process, with scripted agents: strict/lenient validation, rollback, scope, signatures, no interleaving."""
from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.app_keys import SERVICES
from controller.knobs.batch import lenient_subset
from shared.knobs import defaults
from shared.topology import Point
from tests.acking_agent import make_app, signed, start_agents
from tests.auth import bearer

pytestmark = pytest.mark.slow  # real ZeroMQ sockets on loopback (each test well under a second)

BATCH = "/api/v1/batch/apply-settings"
ALL = {"stations": ["Station-1", "Station-2"], "extensions": ["3333", "4444"]}
POINTS = [(s, e) for s in ALL["stations"] for e in ALL["extensions"]]


@pytest.fixture
async def client(tmp_path):
    app = make_app(tmp_path)
    async with TestClient(TestServer(app), headers=bearer(tmp_path)) as c:
        c.agents = {}
        yield c
        for agent in c.agents.values():
            agent.close()


async def knobs(client, station, ext) -> dict:
    resp = await client.get(f"/api/v1/config/knobs/{station}/{ext}")
    assert resp.status == 200
    return await resp.json()


async def state(client) -> dict:
    return {p: await knobs(client, *p) for p in POINTS}


def history_sources(client, station, ext) -> list[tuple[str, str | None]]:
    return [(c.who.source, c.who.batch_id) for c in client.app[SERVICES].knob_changes.changes_of(Point(station, ext))]


# --- validation -------------------------------------------------------------------------------

async def test_strict_with_one_bad_knob_changes_nothing(client):
    client.agents = await start_agents(client, {"Station-1": "ack", "Station-2": "ack"})
    before = await state(client)
    resp = await signed(client, "POST", BATCH, {"targets": ALL, "validation": "strict",
                                               "settings": {"agc_target_level": -20, "nr_level": "deafening",
                                                            "no_such_knob": 1}})
    doc = await resp.json()
    assert resp.status == 400 and doc["error"]["code"] == "validation_failed", doc
    assert {d["field"] for d in doc["error"]["details"]} == {"settings.nr_level", "settings.no_such_knob"}
    assert await state(client) == before
    assert len(client.app[SERVICES].knob_changes) == 0
    assert all(not a.received for a in client.agents.values())


async def test_strict_checks_each_target_against_its_own_set(client):
    client.agents = await start_agents(client, {"Station-1": "ack", "Station-2": "ack"})
    resp = await client.post("/api/v1/config/knobs/Station-2/4444", json={"jitter_buffer_depth": 100})
    assert resp.status == 200
    before = await state(client)
    resp = await signed(client, "POST", BATCH, {"targets": ALL, "settings": {"playout_delay": 150}})
    doc = await resp.json()
    assert resp.status == 400, doc
    assert doc["error"]["details"] == [{"field": "settings.playout_delay",
                                        "problem": "Station-2/4444: 150 is above jitter_buffer_depth 100"}]
    assert await state(client) == before


async def test_lenient_applies_what_is_valid_per_target_and_reports_the_rest(client):
    client.agents = await start_agents(client, {"Station-1": "ack", "Station-2": "ack"})
    await client.post("/api/v1/config/knobs/Station-2/4444", json={"jitter_buffer_depth": 100})
    resp = await signed(client, "POST", BATCH, {"targets": ALL, "validation": "lenient",
                                               "settings": {"playout_delay": 150, "agc_max_gain": 99,
                                                            "nr_level": "low"}})
    doc = await resp.json()
    assert resp.status == 200 and doc["status"] == "applied", doc
    by_point = {(r["station"], r["extension"]): r for r in doc["results"]}
    for point in POINTS:
        result, now = by_point[point], await knobs(client, *point)
        assert result["status"] == "applied" and now["applied"] and now["config"]["nr_level"] == "low"
        fields = {e["field"] for e in result["errors"]}
        assert "agc_max_gain" in fields                                   # out of range everywhere
        assert now["config"]["agc_max_gain"] == defaults()["agc_max_gain"]
        if point == ("Station-2", "4444"):
            assert "playout_delay" in fields and now["config"]["playout_delay"] == defaults()["playout_delay"]
        else:
            assert "playout_delay" not in fields and now["config"]["playout_delay"] == 150
    assert doc["summary"] == {"applied": 4, "rolled_back": 0, "failed": 0, "skipped": 0}


async def test_lenient_with_nothing_valid_skips_and_changes_nothing(client):
    client.agents = await start_agents(client, {"Station-1": "ack", "Station-2": "ack"})
    before = await state(client)
    resp = await signed(client, "POST", BATCH, {"targets": ALL, "validation": "lenient",
                                               "settings": {"agc_max_gain": 99}})
    doc = await resp.json()
    assert resp.status == 200 and doc["status"] == "failed"
    assert {r["status"] for r in doc["results"]} == {"skipped"} and await state(client) == before


def test_lenient_subset_drops_only_the_conflicting_setting():
    base = defaults()  # playout_delay 50 <= jitter_buffer_depth 200; min 128 <= size 512 <= max 2048
    accepted, left_out = lenient_subset({"playout_delay": 300, "jitter_buffer_depth": 100, "agc_enabled": False},
                                        base)
    assert accepted == {"jitter_buffer_depth": 100, "agc_enabled": False}
    assert [p.field for p in left_out] == ["playout_delay"]
    accepted, left_out = lenient_subset({"min_buffer_size": 4096}, base)
    assert accepted == {} and [p.field for p in left_out] == ["min_buffer_size"]


# --- acknowledgement, rollback ----------------------------------------------------------------

async def test_rollback_restores_every_changed_target_when_one_agent_is_silent(client):
    client.agents = await start_agents(client, {"Station-1": "ack", "Station-2": "silent"})
    before = await state(client)
    resp = await signed(client, "POST", BATCH, {"targets": ALL, "settings": {"agc_target_level": -24},
                                               "rollbackOnError": True, "reason": "evening shift"})
    doc = await resp.json()
    assert resp.status == 200 and doc["status"] == "rolled_back", doc
    by_point = {(r["station"], r["extension"]): r for r in doc["results"]}
    for ext in ("3333", "4444"):
        ok, silent = by_point[("Station-1", ext)], by_point[("Station-2", ext)]
        assert ok["status"] == "rolled_back" and ok["version"] == 3 and ok["previousVersion"] == 1
        assert "acknowledged by the agent" in ok["reason"]
        assert silent["status"] == "failed" and "did not acknowledge" in silent["reason"]
        assert "rolled back" in silent["reason"]
        # Station-1's agent runs the previous value again (it applied v2, then the restore v3).
        version, applied = client.agents["Station-1"].applied[ext]
        assert version == 3 and applied["agc_target_level"] == before[("Station-1", ext)]["config"]["agc_target_level"]
    after = await state(client)
    for point in POINTS:
        assert after[point]["config"] == before[point]["config"]
    assert [s for s, _ in history_sources(client, "Station-1", "3333")] == ["batch", "rollback"]
    rollback = client.app[SERVICES].knob_changes.changes_of(Point("Station-1", "3333"))[-1]
    assert rollback.knobs == {"agc_target_level": (-24.0, -18)} and doc["batchId"] in rollback.who.reason


async def test_without_rollback_failures_are_reported_and_the_others_kept(client):
    client.agents = await start_agents(client, {"Station-1": "ack", "Station-2": "refuse"})
    resp = await signed(client, "POST", BATCH, {"targets": ALL, "settings": {"agc_target_level": -24}})
    doc = await resp.json()
    assert resp.status == 200 and doc["status"] == "partial"
    by_point = {(r["station"], r["extension"]): r for r in doc["results"]}
    assert by_point[("Station-1", "3333")]["status"] == "applied"
    refused = by_point[("Station-2", "3333")]
    assert refused["status"] == "failed" and "rejected" in refused["reason"]
    assert refused["errors"] == [{"field": "agc_enabled", "problem": "the audio engine refused it"}]
    assert (await knobs(client, "Station-1", "3333"))["config"]["agc_target_level"] == -24


async def test_a_refusing_agent_rolls_the_batch_back(client):
    client.agents = await start_agents(client, {"Station-1": "ack", "Station-2": "refuse"})
    resp = await signed(client, "POST", BATCH, {"targets": ALL, "settings": {"nr_level": "low"},
                                               "rollbackOnError": True})
    doc = await resp.json()
    assert doc["status"] == "rolled_back" and doc["summary"] == {"applied": 0, "rolled_back": 2, "failed": 2,
                                                                 "skipped": 0}
    for point in POINTS:
        assert (await knobs(client, *point))["config"]["nr_level"] == "high"


# --- who may ------------------------------------------------------------------------------------

async def test_a_station_outside_the_tokens_scope_refuses_the_whole_batch(client, tmp_path):
    client.agents = await start_agents(client, {"Station-1": "ack", "Station-2": "ack"})
    before = await state(client)
    resp = await signed(client, "POST", BATCH, {"targets": ALL, "settings": {"nr_level": "low"}},
                        headers=bearer(tmp_path, "operator", stations=["Station-1"]))
    doc = await resp.json()
    assert resp.status == 403 and "Station-2" in doc["error"]["message"]
    assert await state(client) == before
    resp = await signed(client, "POST", BATCH, {"targets": {"stations": ["Station-9"]}, "settings": {"nr_level": "low"}})
    assert resp.status == 404 and "Station-9" in (await resp.json())["error"]["message"]


async def test_the_batch_must_be_signed(client, tmp_path):
    body = {"targets": ALL, "settings": {"nr_level": "low"}}
    resp = await client.post(BATCH, json=body)
    assert resp.status == 401 and "must be signed" in (await resp.json())["error"]["message"]
    resp = await signed(client, "POST", BATCH, body, headers={"X-Tpmon-Signature": "0" * 64})
    assert resp.status == 401 and "does not match" in (await resp.json())["error"]["message"]
    resp = await signed(client, "POST", BATCH, body, headers=bearer(tmp_path, "viewer"))
    assert resp.status == 403
    assert len(client.app[SERVICES].knob_changes) == 0


async def test_every_batch_is_audited(client, tmp_path):
    client.agents = await start_agents(client, {"Station-1": "ack", "Station-2": "ack"})
    resp = await signed(client, "POST", BATCH, {"targets": ALL, "settings": {"nr_level": "low"}, "reason": "r1"})
    batch_id = (await resp.json())["batchId"]
    await signed(client, "POST", BATCH, {"targets": ALL, "settings": {"nr_level": "loud"}})
    lines = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    batches = [line for line in lines if line["event"] == "config.batch"]
    assert [b["outcome"] for b in batches] == ["applied", "refused"]
    assert batches[0]["batchId"] == batch_id and batches[0]["reason"] == "r1" and batches[0]["who"] == "test-admin"
    assert batches[0]["targets"] == {f"{s}/{e}": "applied" for s, e in POINTS}


# --- overlapping batches ----------------------------------------------------------------------

async def test_overlapping_batches_never_interleave_on_a_point(client):
    # Slow agents widen the window in which two batches would interleave without the locks.
    client.agents = await start_agents(client, {"Station-1": "ack", "Station-2": "ack"}, delay=0.03)
    reversed_targets = {"stations": ["Station-2", "Station-1"], "extensions": ["4444", "3333"]}
    bodies = [{"targets": ALL if n % 2 else reversed_targets, "settings": {"agc_target_level": -10 - n}}
              for n in range(6)]
    answers = await asyncio.gather(*(signed(client, "POST", BATCH, body) for body in bodies))
    docs = [await a.json() for a in answers]
    assert all(d["status"] == "applied" for d in docs), docs
    orders = {p: [batch for _, batch in history_sources(client, *p)] for p in POINTS}
    first = orders[POINTS[0]]
    assert len(first) == 6 and all(order == first for order in orders.values()), orders
    finals = {(await knobs(client, *p))["config"]["agc_target_level"] for p in POINTS}
    assert len(finals) == 1  # every point ends with the last batch's value

"""Templates in process: CRUD, names, validation, built-ins read-only, signatures, apply through the batch path, persistence."""
from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.app_keys import SERVICES
from controller.knobs.builtin_templates import BUILTINS
from tests.acking_agent import make_app, signed, start_agents
from tests.auth import bearer

pytestmark = pytest.mark.slow  # real sockets on loopback (each test well under a second)

TEMPLATES = "/api/v1/config/templates"
QUIET = {"name": "Quiet studio", "description": "gentle", "category": "noise",
         "config": {"nr_level": "low", "agc_target_level": -20}}
TARGETS = {"stations": ["Station-1"], "extensions": ["3333", "4444"]}


@pytest.fixture
async def client(tmp_path):
    app = make_app(tmp_path)
    async with TestClient(TestServer(app), headers=bearer(tmp_path)) as c:
        c.agents = {}
        yield c
        for agent in c.agents.values():
            agent.close()


async def listed(client) -> dict[str, dict]:
    resp = await client.get(TEMPLATES)
    doc = await resp.json()
    assert resp.status == 200 and doc["count"] == len(doc["templates"])
    return {t["id"]: t for t in doc["templates"]}


async def test_built_ins_are_listed_first_with_valid_configs(client):
    templates = await listed(client)
    assert list(templates)[:len(BUILTINS)] == [b.id for b in BUILTINS]
    low = templates["low-latency"]
    assert low["builtin"] is True and low["createdBy"] == "tpmon" and low["usageCount"] == 0
    assert low["config"]["playout_delay"] == 20 and low["conflictsWithDefaults"] == []
    resp = await client.get(f"{TEMPLATES}/noisy-room")
    assert resp.status == 200 and (await resp.json())["config"]["nr_voice_activity_detection"] is False
    assert (await client.get(f"{TEMPLATES}/nope")).status == 404


async def test_create_read_update_delete(client, tmp_path):
    resp = await client.post(TEMPLATES, json=QUIET, headers=bearer(tmp_path, "admin", subject="carol"))
    created = await resp.json()
    assert resp.status == 201, created
    assert created["id"].startswith("tpl_") and created["createdBy"] == "carol" and created["usageCount"] == 0
    assert created["config"] == {"nr_level": "low", "agc_target_level": -20.0} and created["builtin"] is False
    url = f"{TEMPLATES}/{created['id']}"
    resp = await client.put(url, json={**QUIET, "name": "Quieter studio", "config": {"nr_level": "moderate"}})
    updated = await resp.json()
    assert resp.status == 200 and updated["name"] == "Quieter studio" and updated["config"] == {"nr_level": "moderate"}
    assert updated["createdAt"] == created["createdAt"] and updated["updatedBy"] == "test-admin"
    assert (await client.delete(url)).status == 401                     # must be signed
    resp = await signed(client, "DELETE", url)
    assert resp.status == 200 and await resp.json() == {"id": created["id"], "deleted": True}
    assert (await client.get(url)).status == 404
    assert (await signed(client, "DELETE", url)).status == 404


async def test_names_are_unique_ignoring_case(client):
    assert (await client.post(TEMPLATES, json=QUIET)).status == 201
    resp = await client.post(TEMPLATES, json={**QUIET, "name": "quiet STUDIO"})
    assert resp.status == 409 and "already exists" in (await resp.json())["error"]["message"]
    resp = await client.post(TEMPLATES, json={**QUIET, "name": "low latency"})  # a built-in's name
    assert resp.status == 409
    other = await (await client.post(TEMPLATES, json={**QUIET, "name": "Other"})).json()
    resp = await client.put(f"{TEMPLATES}/{other['id']}", json=QUIET)
    assert resp.status == 409


@pytest.mark.parametrize("body,field", [
    ({**QUIET, "config": {"nr_level": "deafening"}}, "config.nr_level"),
    ({**QUIET, "config": {"loudness": 3}}, "config.loudness"),
    ({**QUIET, "config": {}}, "config"),
    ({**QUIET, "name": " padded "}, "name"),
    ({**QUIET, "category": "Not A Slug"}, "category"),
    ({**QUIET, "usage_count": 7}, "usage_count"),
])
async def test_bad_templates_are_400_and_nothing_is_stored(client, body, field):
    before = await listed(client)
    resp = await client.post(TEMPLATES, json=body)
    doc = await resp.json()
    assert resp.status == 400 and field in {d["field"] for d in doc["error"]["details"]}, doc
    assert await listed(client) == before


async def test_conflicts_with_the_defaults_are_shown_not_refused(client):
    resp = await client.post(TEMPLATES, json={**QUIET, "config": {"playout_delay": 400}})
    doc = await resp.json()
    assert resp.status == 201 and doc["conflictsWithDefaults"][0]["field"] == "playout_delay"


async def test_built_ins_are_read_only(client):
    resp = await client.put(f"{TEMPLATES}/low-latency", json=QUIET)
    assert resp.status == 409 and "built-in" in (await resp.json())["error"]["message"]
    assert (await signed(client, "DELETE", f"{TEMPLATES}/low-latency")).status == 409
    assert (await listed(client))["low-latency"]["config"]["playout_delay"] == 20


async def test_permissions(client, tmp_path):
    operator = bearer(tmp_path, "operator")
    assert (await client.get(TEMPLATES, headers=bearer(tmp_path, "viewer"))).status == 200
    assert (await client.post(TEMPLATES, json=QUIET, headers=operator)).status == 403
    resp = await signed(client, "POST", "/api/v1/config/apply-template/low-latency", {"targets": TARGETS},
                        headers=bearer(tmp_path, "viewer"))
    assert resp.status == 403


async def test_apply_goes_through_the_batch_path_and_counts_its_use(client, tmp_path):
    client.agents = await start_agents(client, {"Station-1": "ack"})
    url = "/api/v1/config/apply-template/low-latency"
    assert (await client.post(url, json={"targets": TARGETS})).status == 401  # must be signed
    resp = await signed(client, "POST", url, {"targets": TARGETS, "reason": "latency complaints"},
                        headers=bearer(tmp_path, "operator"))
    doc = await resp.json()
    assert resp.status == 200 and doc["status"] == "applied" and doc["templateId"] == "low-latency", doc
    assert doc["usageCount"] == 1 and [r["status"] for r in doc["results"]] == ["applied", "applied"]
    for ext in ("3333", "4444"):
        version, applied = client.agents["Station-1"].applied[ext]
        assert version == 2 and applied["playout_delay"] == 20 and applied["limiter_lookahead"] == 0
    assert (await listed(client))["low-latency"]["usageCount"] == 1
    # A strict refusal (this point's depth is below the template's playout floor) changes and counts nothing.
    await client.post("/api/v1/config/knobs/Station-1/3333", json={"jitter_buffer_depth": 100})
    resp = await signed(client, "POST", "/api/v1/config/apply-template/lossy-network", {"targets": TARGETS})
    assert resp.status == 400 and (await listed(client))["lossy-network"]["usageCount"] == 0
    assert (await signed(client, "POST", "/api/v1/config/apply-template/nope", {"targets": TARGETS})).status == 404


async def test_an_apply_that_is_rolled_back_is_not_counted(client):
    client.agents = await start_agents(client, {"Station-1": "silent"})
    resp = await signed(client, "POST", "/api/v1/config/apply-template/noisy-room",
                        {"targets": TARGETS, "rollbackOnError": True})
    doc = await resp.json()
    assert doc["status"] == "rolled_back" and doc["usageCount"] == 0


async def test_templates_and_usage_survive_a_restart(tmp_path):
    app = make_app(tmp_path)
    async with TestClient(TestServer(app), headers=bearer(tmp_path)) as client:
        created = await (await client.post(TEMPLATES, json=QUIET)).json()
        await app[SERVICES].templates.count_use("noisy-room")
        await app[SERVICES].templates.count_use(created["id"])
    async with TestClient(TestServer(make_app(tmp_path)), headers=bearer(tmp_path)) as client:
        templates = await listed(client)
        assert templates[created["id"]]["usageCount"] == 1 and templates[created["id"]]["name"] == QUIET["name"]
        assert templates["noisy-room"]["usageCount"] == 1

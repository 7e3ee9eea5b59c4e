"""The optimizer's API: the plan's bodies as written, 400 per field, scopes, stored analyses, apply, auto-tune, /metrics."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.app_keys import SERVICES
from tests.acking_agent import make_app, signed, start_agents
from tests.auth import bearer

PLAN_OPTIMIZE = {"targetMetrics": ["latency", "audioQuality"],
                 "constraints": {"maxLatency": 150, "minQuality": 0.85, "preserveStability": True},
                 "scope": {"stations": ["Station-1", "Station-3"], "extensions": ["3333"]}}
PLAN_AUTOTUNE = {"enabled": True, "mode": "balanced",
                 "targets": {"primaryGoal": "minimize_latency", "secondaryGoal": "maximize_quality",
                             "constraints": {"maxLatencyMs": 150, "minQualityScore": 0.8, "maxPacketLoss": 0.02}},
                 "schedule": {"evaluationInterval": 300000, "adjustmentCooldown": 600000, "maxAdjustmentsPerHour": 6}}


@pytest.fixture
async def client(tmp_path: Path):
    app = make_app(tmp_path, optimizer_learning=False)
    async with TestClient(TestServer(app), headers=bearer(tmp_path)) as c:
        yield c


def fields_of(doc: dict) -> set[str]:
    return {d["field"] for d in doc["error"]["details"]}


async def test_the_plans_optimize_body_is_answered_in_the_plans_shape(client) -> None:
    r = await client.post("/api/v1/optimize", json=PLAN_OPTIMIZE)
    assert r.status == 200, await r.text()
    doc = await r.json()
    assert {"recommendations", "overallConfidence", "estimatedTime", "analysisId"} <= set(doc)
    assert doc["analysisId"].startswith("opt_") and isinstance(doc["estimatedTime"], int)
    # No model has been trained: nothing is recommended, and every point says why.
    assert doc["recommendations"] == [] and doc["overallConfidence"] is None
    assert {(p["station"], p["extension"]) for p in doc["points"]} == {("Station-1", "3333"), ("Station-3", "3333")}
    assert all("too little data" in p["reason"] for p in doc["points"])
    again = await client.get(f"/api/optimize/{doc['analysisId']}")          # also under /api/
    assert again.status == 200 and (await again.json())["analysisId"] == doc["analysisId"]


@pytest.mark.parametrize("change, field", [
    (lambda b: b.update(targetMetrics=["latency", "speed"]), "targetMetrics.1"),
    (lambda b: b.update(targetMetrics=[]), "targetMetrics"),
    (lambda b: b["constraints"].update(minQuality=1.5), "constraints.minQuality"),
    (lambda b: b["constraints"].update(maxLatency=-3), "constraints.maxLatency"),
    (lambda b: b["constraints"].update(maxPacketLoss=2), "constraints.maxPacketLoss"),
    (lambda b: b["scope"].update(stations=[]), "scope.stations"),
    (lambda b: b.update(mode="reckless"), "mode"),
    (lambda b: b.update(surprise=1), "surprise"),
])
async def test_bad_optimize_bodies_are_400_naming_the_field(client, change, field) -> None:
    body = copy.deepcopy(PLAN_OPTIMIZE)
    change(body)
    r = await client.post("/api/v1/optimize", json=body)
    assert r.status == 400, await r.text()
    assert field in fields_of(await r.json())
    assert client.app[SERVICES].optimizer.analyses._docs == {}        # nothing stored


async def test_an_unknown_station_in_the_scope_is_404(client) -> None:
    r = await client.post("/api/v1/optimize", json={**PLAN_OPTIMIZE, "scope": {"stations": ["Station-99"]}})
    assert r.status == 404 and fields_of(await r.json()) == {"scope.stations"}


async def test_station_scopes_apply(client, tmp_path) -> None:
    scoped = bearer(tmp_path, role="operator", stations=["Station-1"])
    r = await client.post("/api/v1/optimize", json=PLAN_OPTIMIZE, headers=scoped)
    assert r.status == 403 and "Station-3" in (await r.json())["error"]["message"]
    own = await client.post("/api/v1/optimize", json={"targetMetrics": ["buffer"]}, headers=scoped)
    assert own.status == 200
    assert {p["station"] for p in (await own.json())["points"]} == {"Station-1"}
    other = await client.post("/api/v1/optimize", json={"targetMetrics": ["buffer"],
                                                        "scope": {"stations": ["Station-2"]}})
    hidden = await client.get(f"/api/v1/optimize/{(await other.json())['analysisId']}", headers=scoped)
    assert hidden.status == 404


async def test_predict_checks_knobs_and_says_when_there_is_no_model(client) -> None:
    bad = await client.post("/api/v1/optimize/predict", json={"station": "Station-1", "extension": "3333",
                                                             "knobs": {"playout_delay": 5000, "nope": 1}})
    assert bad.status == 400 and fields_of(await bad.json()) == {"knobs.playout_delay", "knobs.nope"}
    ok = await client.post("/api/v1/optimize/predict", json={"station": "Station-1", "extension": "3333",
                                                            "knobs": {"playout_delay": 120}})
    assert ok.status == 200
    doc = await ok.json()
    assert set(doc["predictions"]) == {"latency.end_to_end", "quality", "residual_loss", "underflows_per_s"}
    assert all(p["predicted"] is None and p["reason"] for p in doc["predictions"].values())
    models = await (await client.get("/api/v1/optimize/models")).json()
    assert models["models"] == [] and models["replayRows"] == 0


async def test_autotune_takes_the_plans_body_and_refuses_bad_ones(client, tmp_path) -> None:
    r = await client.post("/api/v1/optimize/auto-tune", json=PLAN_AUTOTUNE)
    assert r.status == 200, await r.text()
    doc = await r.json()
    assert doc["settings"]["enabled"] and doc["settings"]["targets"]["primaryGoal"] == "minimize_latency"
    assert len(doc["points"]) == 6 and {p["state"] for p in doc["points"]} == {"idle"}
    for change, field in [
            (lambda b: b["targets"].update(primaryGoal="maximize_fun"), "targets.primaryGoal"),
            (lambda b: b["targets"]["constraints"].update(minQualityScore=3), "targets.constraints.minQualityScore"),
            (lambda b: b["schedule"].update(evaluationInterval=1000), "schedule.evaluationInterval"),
            (lambda b: b["schedule"].update(maxAdjustmentsPerHour=0), "schedule.maxAdjustmentsPerHour"),
            (lambda b: b.update(scope={"stations": []}), "scope.stations")]:
        body = copy.deepcopy(PLAN_AUTOTUNE)
        body["enabled"] = False
        change(body)
        bad = await client.post("/api/optimize/auto-tune", json=body)
        assert bad.status == 400 and field in fields_of(await bad.json()), field
    state = await (await client.get("/api/v1/optimize/auto-tune")).json()
    assert state["settings"]["enabled"] is True                  # no 400 changed anything
    scoped = bearer(tmp_path, role="operator", stations=["Station-1"])
    foreign = await client.post("/api/v1/optimize/auto-tune", headers=scoped,
                                json={**PLAN_AUTOTUNE, "scope": {"stations": ["Station-2"]}})
    assert foreign.status == 403
    off = await client.post("/api/v1/optimize/auto-tune", json={**PLAN_AUTOTUNE, "enabled": False})
    assert (await off.json())["settings"]["enabled"] is False


async def test_apply_is_signed_and_goes_through_the_change_path(client) -> None:
    services = client.app[SERVICES]
    agents = await start_agents(client, {"Station-1": "ack"})
    try:
        doc = await (await client.post("/api/v1/optimize", json={"targetMetrics": ["buffer"],
                                                                 "scope": {"stations": ["Station-1"]}})).json()
        path = f"/api/v1/optimize/{doc['analysisId']}/apply"
        assert (await client.post(path, json={})).status == 401                    # unsigned
        nothing = await signed(client, "POST", path, {})
        assert nothing.status == 400 and "recommends nothing" in (await nothing.json())["error"]["message"]
        # An analysis with a recommendation, as the engine stores one (the engine's own tests make them).
        stored = services.optimizer.analyses.get(doc["analysisId"])
        rec = {"station": "Station-1", "extension": "3333", "knob": "playout_delay", "currentValue": 50,
               "recommendedValue": 90, "expectedImpact": {}, "confidence": 0.9, "risk": "low", "riskProbability": 0.01,
               "evidence": ["model"], "changeSetId": "cs_Station-1_3333_2", "goal": "underflows_per_s",
               "baseVersion": 1, "predictedInterval": {"p10": 0.1, "median": 0.2, "p90": 0.4},
               "replayCheck": {"status": "confirmed"}}
        stored["recommendations"] = [rec]
        await services.optimizer.analyses.put(stored)
        unknown = await signed(client, "POST", path, {"changeSetIds": ["cs_nope"]})
        assert unknown.status == 400 and fields_of(await unknown.json()) == {"changeSetIds"}
        r = await signed(client, "POST", path, {})
        assert r.status == 200, await r.text()
        result = await r.json()
        assert result["status"] == "applied" and result["results"][0]["version"] == 2
        assert result["verifying"] == ["cs_Station-1_3333_2"]
        last = services.knob_changes.changes_of(services.topology.point("Station-1", "3333"))[-1]
        assert last.who.source == "optimizer" and doc["analysisId"] in last.who.reason
        again = await signed(client, "POST", path, {})                      # the point moved on: a conflict
        assert (await again.json())["results"][0]["status"] == "conflict"
        after = await (await client.get(f"/api/v1/optimize/{doc['analysisId']}")).json()
        assert after["applied"][0]["verification"][0]["status"] == "verifying"
    finally:
        for agent in agents.values():
            agent.close()


async def test_metrics_show_the_optimizer(client) -> None:
    await client.post("/api/v1/optimize", json={"targetMetrics": ["latency"]})
    text = await (await client.get("/metrics")).text()
    assert "optimization_execution_time_seconds_count 1.0" in text


async def test_analyses_survive_a_restart(tmp_path) -> None:
    app = make_app(tmp_path, optimizer_learning=False)
    async with TestClient(TestServer(app), headers=bearer(tmp_path)) as c:
        analysis_id = (await (await c.post("/api/v1/optimize", json={"targetMetrics": ["packet"]})).json())["analysisId"]
    app = make_app(tmp_path, optimizer_learning=False)
    async with TestClient(TestServer(app), headers=bearer(tmp_path)) as c:
        r = await c.get(f"/api/v1/optimize/{analysis_id}")
        assert r.status == 200 and (await r.json())["request"]["targetMetrics"] == ["packet"]

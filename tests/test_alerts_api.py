"""Thresholds, rules and alerts over HTTP in-process: validation, 404/409/403, scope, pagination, persistence."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from controller.alerts.engine import INDEX
from controller.app import create_app
from controller.app_keys import SERVICES
from controller.clock import ManualClock
from controller.sample import Sample
from controller.settings import ControllerSettings
from shared.metrics import METRIC_COUNT
from shared.topology import Point
from tests.auth import bearer

THRESHOLDS = "/api/v1/config/metrics"
ALERTS = "/api/v1/alerts"
CONFIGURE = "/api/v1/alerts/configure"
S1, S2 = Point("Station-1", "3333"), Point("Station-2", "3333")
FAST = {"duration": 0, "clearDuration": 0, "window": 0}  # fire and resolve on the first sample: API tests


def make_app(tmp_path: Path, clock: ManualClock, **overrides: Any) -> web.Application:
    settings = ControllerSettings(**{"http_host": "127.0.0.1", "link_endpoint": "tcp://127.0.0.1:*",
                                     "data_dir": str(tmp_path), "stations": 3, "insecure": True, **overrides})
    return create_app(settings, registry=CollectorRegistry(), clock=clock)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(wall=time.time())  # tokens are minted with the real time


@pytest.fixture
async def client(tmp_path, clock):
    async with TestClient(TestServer(make_app(tmp_path, clock)), headers=bearer(tmp_path)) as c:
        yield c


def feed(app: web.Application, clock: ManualClock, point: Point, metric_id: str, value: float,
         count: int = 1) -> None:
    """Samples through ingest's observers, as the link delivers them, one second apart."""
    for _ in range(count):
        clock.advance(1.0)
        values: list[Any] = [None] * METRIC_COUNT
        values[INDEX[metric_id]] = value
        for observe in app[SERVICES].ingest.sample_observers:
            observe(Sample(point, 0, clock.wall(), values, 1))


async def ok(resp, status: int = 200) -> Any:
    body = await resp.json()
    assert resp.status == status, body
    return body


async def active(client: TestClient, query: str = "") -> list[dict[str, Any]]:
    return (await ok(await client.get(f"{ALERTS}{query}")))["alerts"]


async def latency_alert(client: TestClient, clock: ManualClock, point: Point = S1, value: float = 350) -> dict:
    await ok(await client.post(THRESHOLDS, json={"metricId": "latency_end_to_end", "stations": [point.station],
                                                 "thresholds": {"warning": 200, "critical": 300}, **FAST}), 201)
    feed(client.app, clock, point, "latency_end_to_end", value)
    return next(a for a in await active(client) if a["station"] == point.station)


# --- thresholds ------------------------------------------------------------------------------------

async def test_the_plans_threshold_body_creates_then_updates_one_threshold(client):
    body = {"metricId": "buffer_overflow_count", "thresholds": {"warning": 5, "critical": 10},
            "stations": ["Station-2", "Station-1"], "extensions": ["3333"]}
    created = await ok(await client.post(THRESHOLDS, json=body), 201)
    assert created["stations"] == ["Station-1", "Station-2"] and created["extensions"] == ["3333"]
    assert created["direction"] == "above" and created["window"] == 60_000 and created["source"] == "threshold"
    assert created["evaluates"] == "increase over the last 60 s" and created["createdBy"] == "test-admin"
    updated = await ok(await client.post(THRESHOLDS, json={**body, "thresholds": {"critical": 20}}), 200)
    assert updated["id"] == created["id"] and updated["thresholds"] == {"warning": None, "critical": 20}
    listed = await ok(await client.get(THRESHOLDS))
    ids = [t["id"] for t in listed["thresholds"]]
    assert ids.count(created["id"]) == 1 and "latency_end_to_end" in ids and listed["count"] == len(ids)
    only = await ok(await client.get(f"{THRESHOLDS}?metricId=buffer_overflow_count"))
    assert [t["id"] for t in only["thresholds"]] == ["buffer_overflow_count", created["id"]]


async def test_a_threshold_without_scope_replaces_the_shipped_default(client):
    got = await ok(await client.post(THRESHOLDS, json={"metricId": "audioQuality_mos_score",
                                                       "thresholds": {"warning": 3.8, "critical": 3.3}}))
    assert got["id"] == "audioQuality_mos_score" and got["source"] == "default" and got["direction"] == "below"
    assert got["duration"] == 30_000 and got["updatedBy"] == "test-admin"  # options kept from the default


async def test_bad_thresholds_are_400s_naming_each_field_and_change_nothing(client):
    before = await ok(await client.get(THRESHOLDS))
    cases = [
        ({"metricId": "latency_end_to_end", "thresholds": {"warning": 300, "critical": 200}},
         {"thresholds.critical"}),
        ({"metricId": "audioQuality_mos_score", "thresholds": {"warning": 3.1, "critical": 3.6}},
         {"thresholds.critical"}),
        ({"metricId": "nope", "thresholds": {"warning": 1}}, {"metricId"}),
        ({"metricId": "packet_loss_rate", "thresholds": {"warning": 2}}, {"thresholds.warning"}),
        ({"metricId": "latency_end_to_end", "thresholds": {}}, {"thresholds"}),
        ({"metricId": "latency_end_to_end", "thresholds": {"warning": 1}, "stations": ["Station-9", "x"],
          "extensions": ["5555"], "duration": -1}, {"stations.1", "extensions.0", "duration"}),
        ({"metricId": "latency_end_to_end", "thresholds": {"warning": 1}, "stations": ["Station-9"]},
         {"stations.0"}),
        ({"metricId": "buffer_underflow_count", "thresholds": {"warning": 1}, "window": 0}, {"window"}),
        ({"metricId": "latency_end_to_end", "thresholds": {"warning": 1}, "direction": "sideways",
          "colour": "red"}, {"direction", "colour"}),
        ({"metricId": "latency_end_to_end", "thresholds": {"warning": 1}, "stations": []}, {"stations"}),
    ]
    for body, fields in cases:
        resp = await client.post(THRESHOLDS, json=body)
        doc = await resp.json()
        assert resp.status == 400 and doc["error"]["code"] == "validation_failed", (body, doc)
        assert {d["field"] for d in doc["error"]["details"]} == fields, (body, doc)
    resp = await client.post(THRESHOLDS, data=b'{"metricId": "latency_end_to_end", "thresholds": {"warning": NaN}}',
                             headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert await ok(await client.get(THRESHOLDS)) == before


# --- alerts ----------------------------------------------------------------------------------------

async def test_an_alert_in_the_plans_shape_acknowledged_once_then_dismissed(client, clock):
    events: list[dict] = []
    client.app[SERVICES].events.subscribe(lambda e, d: events.append(d) if e == "alert" else None)
    alert = await latency_alert(client, clock)
    assert set(alert) >= {"id", "severity", "type", "metric", "station", "extension", "value", "threshold",
                          "duration", "message", "timestamp", "acknowledged", "acknowledgedBy", "acknowledgedAt",
                          "resolved", "resolvedAt"}
    assert alert["id"].startswith("alert_") and len(alert["id"]) == len("alert_20240115_103045_001")
    assert (alert["severity"], alert["type"], alert["metric"], alert["metricId"]) == (
        "critical", "threshold_violation", "latency", "latency_end_to_end")
    assert alert["message"] == "Critical end-to-end latency detected: 350ms (threshold: 300ms)"
    acked = await ok(await client.post(f"{ALERTS}/acknowledge/{alert['id']}", json={"comment": "on it"}))
    assert acked["acknowledged"] and acked["acknowledgedBy"] == "test-admin" and acked["comment"] == "on it"
    again = await client.post(f"{ALERTS}/acknowledge/{alert['id']}")  # no body at all: the comment is optional
    assert again.status == 409 and "already acknowledged by test-admin" in (await again.json())["error"]["message"]
    assert (await client.post(f"{ALERTS}/acknowledge/alert_20000101_000000_001")).status == 404
    dismissed = await ok(await client.delete(f"{ALERTS}/{alert['id']}"))
    assert dismissed["resolved"] and dismissed["dismissed"] and dismissed["resolvedBy"] == "test-admin"
    assert await active(client) == []
    assert [a["id"] for a in await active(client, "?state=resolved")] == [alert["id"]]
    assert (await client.delete(f"{ALERTS}/{alert['id']}")).status == 409
    assert (await client.delete(f"{ALERTS}/alert_20000101_000000_001")).status == 404
    assert [e["action"] for e in events] == ["created", "acknowledged", "dismissed"]
    feed(client.app, clock, S1, "latency_end_to_end", 350)  # still violating after the dismissal: a new alert
    assert [a["id"] != alert["id"] for a in await active(client)] == [True]


async def test_one_alert_per_point_and_metric_escalating_in_place_and_resolving(client, clock):
    alert = await latency_alert(client, clock, value=250)
    assert alert["severity"] == "warning"
    await ok(await client.post(f"{ALERTS}/acknowledge/{alert['id']}"))
    feed(client.app, clock, S1, "latency_end_to_end", 250, count=5)
    feed(client.app, clock, S1, "latency_end_to_end", 400)
    [escalated] = await active(client)
    assert escalated["id"] == alert["id"] and escalated["severity"] == "critical" and escalated["threshold"] == 300
    assert escalated["acknowledged"] is False  # an escalation asks for a new acknowledgement
    feed(client.app, clock, S1, "latency_end_to_end", 100)
    assert await active(client) == []
    [resolved] = await active(client, "?state=all")
    assert resolved["resolved"] and resolved["resolvedBy"] == "system" and not resolved["dismissed"]


async def test_filters_and_cursor_pagination(client, clock):
    await ok(await client.post(THRESHOLDS, json={"metricId": "latency_end_to_end",
                                                 "thresholds": {"warning": 200, "critical": 300}, **FAST}))
    for point, value in [(S1, 250), (S2, 350), (Point("Station-3", "4444"), 250), (Point("Station-1", "4444"), 350)]:
        feed(client.app, clock, point, "latency_end_to_end", value)
    everything = await active(client)
    assert len(everything) == 4 and everything == sorted(everything, key=lambda a: a["id"], reverse=True)
    assert {a["station"] for a in await active(client, "?severity=critical")} == {"Station-1", "Station-2"}
    assert len(await active(client, "?station=Station-1&extension=4444")) == 1
    await ok(await client.post(f"{ALERTS}/acknowledge/{everything[0]['id']}"))
    assert len(await active(client, "?acknowledged=false")) == 3
    seen, cursor = [], None
    while True:
        page = await ok(await client.get(f"{ALERTS}?limit=3" + (f"&cursor={cursor}" if cursor else "")))
        assert page["total"] == 4 and page["count"] == len(page["alerts"])
        seen += page["alerts"]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert [a["id"] for a in seen] == [a["id"] for a in everything]
    for query, status in [("?limit=0", 400), ("?limit=1001", 400), ("?state=open", 400), ("?severity=info", 400),
                          ("?cursor=abc", 400), ("?station=Station-9", 404), ("?extension=5555", 400)]:
        assert (await client.get(ALERTS + query)).status == status, query


async def test_a_scoped_token_sees_and_changes_only_its_stations(tmp_path, clock):
    app = make_app(tmp_path, clock)
    async with TestClient(TestServer(app), headers=bearer(tmp_path)) as admin:
        await ok(await admin.post(THRESHOLDS, json={"metricId": "latency_end_to_end",
                                                    "thresholds": {"warning": 200}, **FAST}))
        feed(app, clock, S1, "latency_end_to_end", 250)
        feed(app, clock, S2, "latency_end_to_end", 250)
        other = next(a for a in await active(admin) if a["station"] == "Station-2")
        scoped = bearer(tmp_path, "operator", stations=["Station-1"], subject="op-1")
        viewer = bearer(tmp_path, "viewer")
        mine = await ok(await admin.get(ALERTS, headers=scoped))
        assert [a["station"] for a in mine["alerts"]] == ["Station-1"] and mine["total"] == 1
        assert (await admin.get(f"{ALERTS}?station=Station-2", headers=scoped)).status == 403
        assert (await admin.post(f"{ALERTS}/acknowledge/{other['id']}", headers=scoped)).status == 403
        assert (await admin.delete(f"{ALERTS}/{other['id']}", headers=scoped)).status == 403
        assert (await admin.post(f"{ALERTS}/acknowledge/{other['id']}", headers=viewer)).status == 403
        refused = await admin.post(THRESHOLDS, headers=scoped, json={"metricId": "packet_loss_rate",
                                                                     "thresholds": {"warning": 0.1},
                                                                     "stations": ["Station-1", "Station-2"]})
        assert refused.status == 403 and (await refused.json())["error"]["details"][0]["field"] == "stations"
        own = await ok(await admin.post(THRESHOLDS, headers=scoped, json={"metricId": "packet_loss_rate",
                                                                          "thresholds": {"warning": 0.1}}), 201)
        assert own["stations"] == ["Station-1"] and own["createdBy"] == "op-1"
        general = await admin.post(CONFIGURE, headers=scoped, json={"id": "latency_end_to_end", "enabled": False})
        assert general.status == 403  # the default covers every station
        visible = await ok(await admin.get(THRESHOLDS, headers=bearer(tmp_path, "viewer", stations=["Station-3"])))
        assert own["id"] not in [t["id"] for t in visible["thresholds"]]


# --- rules -----------------------------------------------------------------------------------------

async def test_rules_are_created_and_updated_by_id_or_name(client, clock):
    created = await ok(await client.post(CONFIGURE, json={"name": "Station-2 loss", "metricId": "packet_loss_rate",
                                                          "comparison": "above", "threshold": 0.1,
                                                          "severity": "critical", "stations": ["Station-2"]}), 201)
    assert created["id"] == "rule_1" and created["thresholds"] == {"warning": None, "critical": 0.1}
    renamed = await ok(await client.post(CONFIGURE, json={"name": "Station-2 loss", "levels": {"warning": 0.05,
                                                                                                "critical": 0.1},
                                                          "duration": 5000}))
    assert renamed["id"] == "rule_1" and renamed["thresholds"]["warning"] == 0.05 and renamed["duration"] == 5000
    assert renamed["stations"] == ["Station-2"] and renamed["createdAt"] == created["createdAt"]
    named = await ok(await client.post(CONFIGURE, json={"id": "s3-mos", "metricId": "audioQuality_mos_score",
                                                        "levels": {"warning": 3.5}, "extensions": ["4444"]}), 201)
    assert named["direction"] == "below" and named["name"] == "s3-mos" and named["stations"] is None
    for body, status, field in [
        ({"name": "new one"}, 400, "metricId"),
        ({"id": "rule_1", "metricId": "latency_jitter"}, 400, "metricId"),
        ({"id": "s3-mos", "name": "Station-2 loss"}, 409, "name"),
        ({"id": "rule_1", "levels": {"warning": 0.1}, "threshold": 0.2}, 400, "threshold"),
        ({"id": "rule_1", "severity": "warning"}, 400, "threshold"),
        ({"id": "rule_1", "comparison": "below"}, 400, "levels.critical"),
        ({"id": "bad id!", "metricId": "latency_jitter", "threshold": 1}, 400, "id"),
    ]:
        resp = await client.post(CONFIGURE, json=body)
        doc = await resp.json()
        assert resp.status == status and doc["error"]["details"][0]["field"] == field, (body, doc)
    rules = await ok(await client.get(f"{ALERTS}/rules"))
    assert {"rule_1", "s3-mos", "latency_end_to_end"} <= {r["id"] for r in rules["rules"]}


async def test_disabling_or_deleting_a_rule_resolves_its_alerts(client, clock):
    alert = await latency_alert(client, clock)
    rule_id = alert["ruleId"]
    await ok(await client.post(CONFIGURE, json={"id": rule_id, "enabled": False}))
    [resolved] = await active(client, "?state=resolved")
    assert resolved["id"] == alert["id"] and resolved["resolvedBy"] == "test-admin"
    await ok(await client.post(CONFIGURE, json={"id": rule_id, "enabled": True}))
    feed(client.app, clock, S1, "latency_end_to_end", 350)
    [again] = await active(client)
    deleted = await ok(await client.delete(f"{ALERTS}/rules/{rule_id}"))
    assert deleted["id"] == rule_id
    # The shipped default covers the point again: the same alert goes on under it, and resolves by its
    # clearDuration (30 s), not the deleted rule's (0).
    assert [a["id"] for a in await active(client)] == [again["id"]]
    feed(client.app, clock, S1, "latency_end_to_end", 100, count=25)
    assert len(await active(client)) == 1
    feed(client.app, clock, S1, "latency_end_to_end", 100, count=10)
    assert await active(client) == [] and (await client.delete(f"{ALERTS}/rules/{rule_id}")).status == 404
    refused = await client.delete(f"{ALERTS}/rules/latency_end_to_end")
    assert refused.status == 409 and "disable it" in (await refused.json())["error"]["message"]


async def test_configuration_changes_are_audited(client, clock, tmp_path):
    alert = await latency_alert(client, clock)
    await ok(await client.post(f"{ALERTS}/acknowledge/{alert['id']}"))
    lines = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    events = [(line["event"], line["what"]) for line in lines]
    assert ("config.change", f"threshold {alert['ruleId']}") in events
    assert ("alert.acknowledge", f"alert {alert['id']}") in events


# --- persistence -----------------------------------------------------------------------------------

async def test_rules_alerts_and_acknowledgements_survive_a_restart(tmp_path, clock):
    app = make_app(tmp_path, clock)
    async with TestClient(TestServer(app), headers=bearer(tmp_path)) as c:
        alert = await latency_alert(c, clock)
        await ok(await c.post(f"{ALERTS}/acknowledge/{alert['id']}", json={"comment": "known"}))
        feed(app, clock, S2, "latency_end_to_end", 100)
        rules = await ok(await c.get(f"{ALERTS}/rules"))
    assert json.loads((tmp_path / "alerts.json").read_text())  # TinyDB's file, written by the batch
    app = make_app(tmp_path, clock)
    async with TestClient(TestServer(app), headers=bearer(tmp_path)) as c:
        assert await ok(await c.get(f"{ALERTS}/rules")) == rules
        [restored] = await active(c)
        assert restored["id"] == alert["id"] and restored["acknowledgedBy"] == "test-admin"
        assert restored["comment"] == "known"
        feed(app, clock, S1, "latency_end_to_end", 400)
        assert [a["id"] for a in await active(c)] == [alert["id"]]  # firing again, not a second alert
        feed(app, clock, S1, "latency_end_to_end", 100)
        assert await active(c) == []
        newer = await latency_alert(c, clock, point=S2)
        assert newer["id"] != alert["id"]


async def test_resolved_alerts_are_kept_up_to_the_configured_count(tmp_path, clock):
    app = make_app(tmp_path, clock, alerts_keep_resolved=2)
    async with TestClient(TestServer(app), headers=bearer(tmp_path)) as c:
        await latency_alert(c, clock)
        for _ in range(4):
            feed(app, clock, S1, "latency_end_to_end", 100)
            feed(app, clock, S1, "latency_end_to_end", 350)
        await app[SERVICES].alerts.book.flush()
        kept = await ok(await c.get(f"{ALERTS}?state=all"))
        assert kept["total"] == 3 and [a["resolved"] for a in kept["alerts"]] == [False, True, True]


async def test_every_answer_matches_its_documented_schema(client, clock):
    from tests.test_api_openapi import assert_conforms, document
    doc = await document(client)
    base = "/api/v1"
    alert = await latency_alert(client, clock)
    await assert_conforms(client, doc, f"{base}/alerts", ALERTS, 200)
    await assert_conforms(client, doc, f"{base}/alerts", f"{ALERTS}?state=all&limit=1", 200)
    await assert_conforms(client, doc, f"{base}/alerts", f"{ALERTS}?station=Station-9", 404)
    await assert_conforms(client, doc, f"{base}/config/metrics", THRESHOLDS, 200)
    body = {"metricId": "packet_loss_rate", "thresholds": {"warning": 0.03}, "extensions": ["4444"]}
    await assert_conforms(client, doc, f"{base}/config/metrics", THRESHOLDS, 201, "post", json=body)
    await assert_conforms(client, doc, f"{base}/config/metrics", THRESHOLDS, 200, "post", json=body)
    await assert_conforms(client, doc, f"{base}/config/metrics", THRESHOLDS, 400, "post", json={"metricId": 1})
    ack = f"{base}/alerts/acknowledge/{{alertId}}"
    await assert_conforms(client, doc, ack, f"{ALERTS}/acknowledge/{alert['id']}", 200, "post")
    await assert_conforms(client, doc, ack, f"{ALERTS}/acknowledge/{alert['id']}", 409, "post")
    await assert_conforms(client, doc, ack, f"{ALERTS}/acknowledge/alert_x", 404, "post")
    await assert_conforms(client, doc, f"{base}/alerts/{{alertId}}", f"{ALERTS}/{alert['id']}", 200, "delete")
    rule = {"name": "r", "metricId": "latency_jitter", "threshold": 40}
    await assert_conforms(client, doc, f"{base}/alerts/configure", CONFIGURE, 201, "post", json=rule)
    await assert_conforms(client, doc, f"{base}/alerts/configure", CONFIGURE, 200, "post", json=rule)
    await assert_conforms(client, doc, f"{base}/alerts/rules", f"{ALERTS}/rules", 200)
    rules = f"{base}/alerts/rules/{{ruleId}}"
    await assert_conforms(client, doc, rules, f"{ALERTS}/rules/latency_jitter", 409, "delete")
    await assert_conforms(client, doc, rules, f"{ALERTS}/rules/rule_1", 200, "delete")
    op = doc["paths"][ack]["post"]
    assert op["requestBody"]["required"] is False and op["x-permission"] == "manage:alerts"
    assert doc["paths"][f"{base}/alerts"]["get"]["x-permission"] == "read:metrics"


async def test_alert_ids_do_not_swallow_the_other_alert_paths(client):
    for method, path in [("DELETE", "/alerts/configure"), ("DELETE", "/alerts/rules"), ("GET", "/alerts/configure")]:
        resp = await client.request(method, "/api/v1" + path)
        assert resp.status == 405, (method, path, await resp.text())
    resp = await client.delete(f"{ALERTS}/not-an-alert")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"

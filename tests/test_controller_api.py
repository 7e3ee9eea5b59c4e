"""REST API through aiohttp's test client: the plan's unit test, bad input, 404/405, caching, health, metrics."""
from __future__ import annotations

import json
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from controller.app import create_app
from controller.http.logs import JsonFormatter
from controller.settings import ControllerSettings
from shared.knobs import KNOB_COUNT
from shared.metrics import METRIC_COUNT
from tests.auth import bearer

KNOBS_URL = "/api/v1/config/knobs/Station-1/3333"


def make_app(tmp_path, **overrides) -> web.Application:
    settings = ControllerSettings(**{"http_host": "127.0.0.1", "link_endpoint": "tcp://127.0.0.1:*",
                                     "data_dir": str(tmp_path), "stations": 3, "tick_ms": 50,
                                     "ack_timeout_ms": 300, "insecure": True, **overrides})  # link: test_link_curve
    return create_app(settings, registry=CollectorRegistry())


@pytest.fixture
async def client(tmp_path):
    app = make_app(tmp_path)
    async with TestClient(TestServer(app), headers=bearer(tmp_path)) as c:
        yield c


async def knobs_of(client, url=KNOBS_URL) -> dict:
    resp = await client.get(url)
    assert resp.status == 200
    return await resp.json()


# --- the plan's unit test, as written -------------------------------------------------------

async def test_plan_post_agc_enabled(client):
    resp = await client.post("/api/config/knobs/Station-1/3333", json={"agc_enabled": True})
    assert resp.status == 200
    data = await resp.json()
    assert data["config"]["agc_enabled"] is True


async def test_post_without_an_agent_is_stored_and_says_so(client):
    resp = await client.post(KNOBS_URL, json={"agc_target_level": -20})
    doc = await resp.json()
    assert resp.status == 200 and doc["applied"] is False and doc["version"] == 2
    assert doc["reason"] == ("agent Station-1 is offline; the change is stored and will be applied "
                             "when it reconnects")
    assert len(doc["config"]) == KNOB_COUNT and doc["config"]["agc_target_level"] == -20.0
    got = await knobs_of(client)
    assert got["version"] == 2 and got["config"]["agc_target_level"] == -20.0
    assert got["applied"] is False and got["status"] == "agent offline" and got["appliedVersion"] is None


async def test_get_knobs_of_an_unconfigured_point(client):
    got = await knobs_of(client, "/api/config/knobs/Station-3/4444")
    assert got["station"] == "Station-3" and got["extension"] == "4444"
    assert got["version"] == 1 and len(got["config"]) == KNOB_COUNT
    assert set(got) >= {"station", "extension", "config", "version", "appliedVersion", "applied", "status"}


async def test_versions_increase_per_change(client):
    versions = []
    for gain in (10, 11, 12):
        resp = await client.post(KNOBS_URL, json={"agc_max_gain": gain})
        versions.append((await resp.json())["version"])
    assert versions == [2, 3, 4]


# --- bad input changes nothing ---------------------------------------------------------------

async def test_every_problem_is_listed_and_nothing_changes(client):
    before = await knobs_of(client)
    resp = await client.post(KNOBS_URL, json={"agc_target_level": -80, "agc_mode": "loud",
                                              "no_such_knob": 1, "agc_enabled": "yes", "nr_enabled": True})
    doc = await resp.json()
    assert resp.status == 400 and doc["error"]["code"] == "validation_failed"
    assert {d["field"]: d["problem"] for d in doc["error"]["details"]} == {
        "agc_target_level": "-80 is below the minimum -31",
        "agc_mode": "'loud' is not one of adaptive, adaptive_digital, fixed_digital",
        "no_such_knob": "unknown knob",
        "agc_enabled": "expected a boolean, got a string",
    }
    assert "4 invalid knob values" in doc["error"]["message"]
    assert await knobs_of(client) == before


async def test_cross_knob_rules_are_checked_against_the_stored_set(client):
    resp = await client.post(KNOBS_URL, json={"playout_delay": 900})  # above jitter_buffer_depth 200
    doc = await resp.json()
    assert resp.status == 400 and doc["error"]["details"][0]["field"] == "playout_delay"


@pytest.mark.parametrize("body,problem", [
    (b"{not json", "Expecting property name"),
    (b"[1, 2]", "expected an object, got an array"),
    (b'"agc_enabled"', "expected an object, got a string"),
    (b"null", "expected an object, got null"),
    (b"", "empty"),
    (b"\xff\xfe\xfa", "not UTF-8"),
    (b"{}", "no knobs given"),
])
async def test_malformed_bodies_are_400_with_details(client, body, problem):
    before = await knobs_of(client)
    resp = await client.post(KNOBS_URL, data=body, headers={"Content-Type": "application/json"})
    doc = await resp.json()
    assert resp.status == 400, doc
    assert doc["error"]["details"][0]["field"] == "body" and problem in doc["error"]["details"][0]["problem"]
    assert await knobs_of(client) == before


async def test_an_oversized_body_is_413_json(client):
    resp = await client.post(KNOBS_URL, data=b"{" + b" " * (2 << 20) + b"}")
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("method,path,field", [
    ("GET", "/api/v1/config/knobs/Station-9/3333", "stationId"),
    ("POST", "/api/v1/config/knobs/Station-9/3333", "stationId"),
    ("GET", "/api/config/knobs/Station-1/5555", "extension"),
    ("GET", "/api/v1/config/knobs/station-1/3333", "stationId"),
])
async def test_unknown_points_are_404_with_a_clear_message(client, method, path, field):
    resp = await client.request(method, path, json={"agc_enabled": True})
    doc = await resp.json()
    assert resp.status == 404 and doc["error"]["code"] == "not_found"
    assert doc["error"]["details"][0]["field"] == field and "unknown" in doc["error"]["message"]


async def test_unknown_route_and_wrong_method_answer_json(client):
    resp = await client.get("/api/v1/nothing-here")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    resp = await client.delete("/api/v1/snapshots")
    doc = await resp.json()
    assert resp.status == 405 and doc["error"]["code"] == "method_not_allowed"
    assert "GET" in resp.headers["Allow"]


async def test_an_unexpected_exception_is_a_json_500_without_traceback(tmp_path, caplog):
    app = make_app(tmp_path)

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app.router.add_get("/api/v1/broken", broken)
    async with TestClient(TestServer(app)) as c:
        with caplog.at_level(logging.ERROR):
            resp = await c.get("/api/v1/broken", headers={"X-Request-Id": "req-42"})
        text = await resp.text()
    doc = json.loads(text)
    assert resp.status == 500 and doc["error"]["code"] == "internal_error" and doc["error"]["traceId"] == "req-42"
    assert "secret internals" not in text and "Traceback" not in text
    assert any("secret internals" in (r.exc_text or "") or r.exc_info for r in caplog.records)


# --- snapshots over HTTP ----------------------------------------------------------------------

async def test_snapshot_etag_304_and_gzip(client):
    resp = await client.get("/api/v1/snapshots", headers={"Accept-Encoding": "gzip"})
    assert resp.status == 200 and resp.headers["Content-Encoding"] == "gzip"
    doc = await resp.json()
    assert set(doc["stations"]) == {"Station-1", "Station-2", "Station-3"}
    etag = resp.headers["ETag"]
    again = await client.get("/api/v1/snapshots", headers={"If-None-Match": etag, "Accept-Encoding": "gzip"})
    assert again.status == 304 and await again.read() == b""
    plain = await client.get("/api/snapshots", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and plain.headers["Vary"] == "Accept-Encoding"
    assert json.loads(await plain.read())["stations"].keys() == doc["stations"].keys()


async def test_snapshot_filters_over_http(client):
    resp = await client.get("/api/v1/snapshots?stations=Station-2&fields=latency.end_to_end,packet.loss_rate")
    doc = await resp.json()
    assert resp.status == 200 and list(doc["stations"]) == ["Station-2"]
    resp = await client.get("/api/v1/snapshots?stations=Station-1,Station-42")
    doc = await resp.json()
    assert resp.status == 404 and "Station-42" in doc["error"]["message"]
    resp = await client.get("/api/v1/snapshots?fields=latency.end_to_end,latency.warp_speed")
    doc = await resp.json()
    assert resp.status == 400 and doc["error"]["details"] == [
        {"field": "fields", "problem": "unknown metric latency.warp_speed"}]


# --- catalog, health, metrics, logs -----------------------------------------------------------

async def test_catalog(client):
    resp = await client.get("/api/v1/catalog")
    doc = await resp.json()
    assert doc["counts"]["metrics"] == METRIC_COUNT == len(doc["metrics"]) == 68
    assert doc["counts"]["knobs"] == KNOB_COUNT == len(doc["knobs"]) == 112
    assert doc["counts"]["metricsByCategory"] == {"buffer": 15, "latency": 12, "packet": 14,
                                                  "audioQuality": 15, "performance": 12}
    assert doc["topology"]["stations"] == ["Station-1", "Station-2", "Station-3"]
    assert {k["name"] for k in doc["knobs"]} >= {"agc_enabled", "packet_size"}
    assert resp.headers["ETag"]


async def test_health_has_the_plans_shape(client):
    await client.get("/api/v1/snapshots")
    resp = await client.get("/api/health")
    doc = await resp.json()
    assert resp.status == 200
    assert set(doc) >= {"status", "uptime", "activeStations", "activeExtensions", "lastDataUpdate",
                        "systemMetrics", "version"}
    assert set(doc["systemMetrics"]) == {"apiLatency", "dbConnections", "cacheHitRate", "queueDepth"}
    assert doc["status"] == "degraded" and "6 of 6 points not active" in doc["reasons"]
    assert doc["activeStations"] == 0 and doc["lastDataUpdate"] is None
    assert doc["systemMetrics"]["dbConnections"] == 2 and doc["systemMetrics"]["cacheHitRate"] == 1.0  # config store + history writer
    assert doc["systemMetrics"]["apiLatency"] > 0 and isinstance(doc["uptime"], int)


async def test_prometheus_exposition(client):
    await client.get("/api/v1/snapshots")
    await client.get("/api/v1/nope")
    text = await (await client.get("/metrics")).text()
    for name in ("api_request_duration_seconds_bucket", "api_request_total", "api_error_total",
                 "cache_hit_ratio", "link_frames_malformed_total", "points_by_status",
                 "snapshot_build_seconds_count"):
        assert name in text, name
    assert 'api_request_total{method="GET",route="/api/v1/snapshots",status="200"} 1.0' in text
    assert 'api_error_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'points_by_status{status="offline"} 6.0' in text


async def test_trace_ids_are_accepted_and_echoed(client):
    resp = await client.get("/api/v1/health", headers={"X-Request-Id": "abc-123"})
    assert resp.headers["X-Trace-Id"] == "abc-123"
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    resp = await client.get("/api/v1/health", headers={"traceparent": parent})
    assert resp.headers["X-Trace-Id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    resp = await client.get("/api/v1/health", headers={"X-Request-Id": "bad id with spaces"})
    assert len(resp.headers["X-Trace-Id"]) == 32


async def test_access_logs_are_structured(client, caplog):
    with caplog.at_level(logging.DEBUG, logger="tpmon.controller.access"):
        await client.get("/api/v1/health", headers={"X-Request-Id": "log-me"})
    record = next(r for r in caplog.records if r.name == "tpmon.controller.access")
    line = json.loads(JsonFormatter().format(record))
    assert line["service"] == "tpmon-controller" and line["level"] == "DEBUG"
    assert set(line) == {"timestamp", "level", "service", "traceId", "spanId", "message", "metadata"}
    assert line["metadata"]["method"] == "GET" and line["metadata"]["path"] == "/api/v1/health"
    assert line["metadata"]["statusCode"] == 200 and line["metadata"]["duration"] >= 0


async def test_changes_and_errors_are_logged_at_info_fast_reads_at_debug(client, caplog):
    with caplog.at_level(logging.DEBUG, logger="tpmon.controller.access"):
        await client.get("/api/v1/snapshots")
        await client.post(KNOBS_URL, json={"agc_enabled": False})
        await client.get("/api/v1/config/knobs/Station-9/3333")
    levels = [(r.levelname, r.metadata["statusCode"]) for r in caplog.records if r.name == "tpmon.controller.access"]
    assert levels == [("DEBUG", 200), ("INFO", 200), ("INFO", 404)]


def test_log_lines_carry_the_current_trace_and_span():
    from controller.http import logs
    record = logging.LogRecord("tpmon.controller", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    token_t, token_s = logs.trace_id.set("t" * 32), logs.span_id.set("s" * 16)
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        logs.trace_id.reset(token_t)
        logs.span_id.reset(token_s)
    assert (line["traceId"], line["spanId"], line["message"]) == ("t" * 32, "s" * 16, "hello world")

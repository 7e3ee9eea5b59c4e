"""OpenAPI document and request validation in-process: routes documented, catalog schemas, 400s, real answers."""
from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field, ValidationError

from controller.app import create_app
from controller.http.endpoint import Endpoint, Reply, add_endpoint, endpoints
from controller.http.errors import json_response
from controller.http.models import BodyModel, QueryModel
from controller.http.openapi import build_document
from controller.http.params import body_of, problems, query_of
from controller.live.state import Status
from controller.security.principal import Permission
from controller.settings import ControllerSettings
from shared.knobs import KNOBS, KnobType
from shared.metrics import CATEGORIES, METRICS, MetricType
from tests.auth import bearer

KNOBS_URL = "/api/v1/config/knobs/Station-1/3333"
OPENAPI_ROUTES = {"/api/v1/openapi.json", "/api/openapi.json"}
# Socket.IO's Engine.IO endpoint (GET/POST/OPTIONS /socket.io/, routed by python-socketio) is a
# transport with its own protocol, not a REST operation OpenAPI can describe: it is documented in
# the README ("Real-time streaming") and in the description of GET /api/v1/ws, which carries the
# same events. Deliberately the only routes served without a declaration.
SOCKET_IO_ROUTES = {"/socket.io/"}


def make_app(tmp_path, **overrides) -> web.Application:
    settings = ControllerSettings(**{"http_host": "127.0.0.1", "link_endpoint": "tcp://127.0.0.1:*",
                                     "data_dir": str(tmp_path), "stations": 2, "tick_ms": 50,
                                     "ack_timeout_ms": 200, "insecure": True, **overrides})
    return create_app(settings, registry=CollectorRegistry())


@pytest.fixture
async def client(tmp_path):
    async with TestClient(TestServer(make_app(tmp_path)), headers=bearer(tmp_path)) as c:
        yield c


async def document(client: TestClient) -> dict[str, Any]:
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status == 200
    return await resp.json()


def undocumented(app: web.Application, doc: dict[str, Any]) -> list[str]:
    """Routes the app serves that the document lacks (HEAD twins and the document's own route aside)."""
    missing = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or path in OPENAPI_ROUTES or path in SOCKET_IO_ROUTES:
            continue
        if route.method.lower() not in doc["paths"].get(path, {}):
            missing.append(f"{route.method} {path}")
    return missing


def response_schema(doc: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    answer = doc["paths"][path][method]["responses"][str(status)]
    if "$ref" in answer:
        answer = doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    return answer["content"]["application/json"]["schema"]


def schema_errors(doc: dict[str, Any], schema: dict[str, Any], instance: Any) -> list[str]:
    validator = jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]},
                                                   validate_formats=True)
    return [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator.iter_errors(instance)]


async def assert_conforms(client: TestClient, doc: dict[str, Any], path: str, url: str, status: int,
                          method: str = "get", **kwargs: Any) -> dict[str, Any]:
    resp = await client.request(method, url, **kwargs)
    body = await resp.json()
    assert resp.status == status, body
    assert schema_errors(doc, response_schema(doc, path, method, status), body) == []
    return body


# --- the document --------------------------------------------------------------------------------

async def test_the_document_is_open_cached_and_a_valid_openapi_31(tmp_path):
    async with TestClient(TestServer(make_app(tmp_path))) as anonymous:  # no token: the document is open
        resp = await anonymous.get("/api/v1/openapi.json", headers={"Accept-Encoding": "identity"})
        body = await resp.read()
        assert resp.status == 200 and resp.content_type == "application/json"
        again = await anonymous.get("/api/v1/openapi.json", headers={"If-None-Match": resp.headers["ETag"]})
        assert again.status == 304
        alias = await anonymous.get("/api/openapi.json", headers={"Accept-Encoding": "identity"})
        assert await alias.read() == body
    doc = schemathesis.openapi.from_dict(json.loads(body))
    doc.validate()  # against the OpenAPI 3.1 meta-schema
    assert doc.raw_schema["openapi"] == "3.1.0"
    for name, schema in doc.raw_schema["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name


async def test_every_route_is_in_the_document(client):
    doc = await document(client)
    assert undocumented(client.app, doc) == []
    served = {(r.method.lower(), r.resource.canonical) for r in client.app.router.routes()}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert documented <= served  # and nothing documented that is not served


async def test_a_route_added_without_a_declaration_is_reported_missing(tmp_path):
    app = make_app(tmp_path)

    async def hidden(request: web.Request) -> web.Response:
        return json_response({})

    app.router.add_get("/api/v1/hidden", hidden)
    doc = build_document(endpoints(app), 1 << 20)
    assert undocumented(app, doc) == ["GET /api/v1/hidden"]


async def test_every_endpoint_has_a_summary_and_a_success_schema(client):
    for endpoint in endpoints(client.app):
        assert endpoint.summary.strip(), endpoint.path
        successes = [r for status, r in endpoint.responses.items() if 200 <= status < 300]
        assert successes and all(r.model is not None or r.schema for r in successes), endpoint.path
    doc = await document(client)
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            assert op["summary"] and op["operationId"], (method, path)
            ok = [a for status, a in op["responses"].items() if status.startswith("2")]
            assert ok and all(a["content"] for a in ok), (method, path)


async def test_aliases_document_the_same_operation(client):
    doc = await document(client)
    canonical = doc["paths"]["/api/v1/config/knobs/{stationId}/{extension}"]["post"]
    alias = doc["paths"]["/api/config/knobs/{stationId}/{extension}"]["post"]
    assert alias["operationId"] == canonical["operationId"] + "_plan"
    assert {k: v for k, v in alias.items() if k not in ("operationId", "description")} == \
           {k: v for k, v in canonical.items() if k not in ("operationId", "description")}


# --- schemas from the catalogs ---------------------------------------------------------------------

async def test_the_knob_body_schema_is_generated_from_the_catalog(client):
    schemas = (await document(client))["components"]["schemas"]
    change, full = schemas["KnobChange"], schemas["KnobSet"]
    assert change["additionalProperties"] is False and change["minProperties"] == 1
    assert list(change["properties"]) == [k.name for k in KNOBS] and full["required"] == [k.name for k in KNOBS]
    types = {KnobType.BOOL: "boolean", KnobType.INT: "integer", KnobType.FLOAT: "number", KnobType.ENUM: "string"}
    for knob in KNOBS:
        prop = change["properties"][knob.name]
        assert prop["type"] == types[knob.type] and knob.description in prop["description"]
        assert prop.get("x-unit", "") == knob.unit and prop["default"] == knob.default
        if knob.type is KnobType.ENUM:
            assert prop["enum"] == list(knob.choices)
        elif knob.type is not KnobType.BOOL:
            assert (prop["minimum"], prop["maximum"]) == (knob.minimum, knob.maximum)


async def test_the_snapshot_schema_is_generated_from_the_metric_catalog(client):
    schemas = (await document(client))["components"]["schemas"]
    categories = schemas["PointMetrics"]["properties"]
    assert list(categories) == list(CATEGORIES)
    types = {MetricType.BOOL: "boolean", MetricType.INT: "integer", MetricType.FLOAT: "number",
             MetricType.TIMESTAMP: "string"}
    for metric in METRICS:
        prop = categories[metric.category]["properties"][metric.name]
        expected = [types[metric.type], "null"] if metric.nullable else types[metric.type]
        assert prop["type"] == expected and prop["x-unit"] == metric.unit, metric.key
    assert sum(len(c["properties"]) for c in categories.values()) == len(METRICS)
    assert set(schemas["StationSnapshot"]["required"]) == {"extension_3333", "extension_4444"}
    assert schemas["Status"]["enum"] == [s.value for s in Status]


async def test_security_and_permissions_are_declared_per_operation(client):
    doc = await document(client)
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        **doc["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    seen = {}
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            seen[(method, path)] = op.get("x-permission")
            if "x-permission" in op:
                assert op["security"] == [{"bearerAuth": []}] and op["x-permission"] in op["description"]
                assert {"401", "403", "429"} <= set(op["responses"])
                success = next(r for status, r in op["responses"].items() if status.startswith("2"))  # 200, 201 …
                assert "RateLimit-Remaining" in success["headers"]
            else:
                assert op["security"] == [] and "401" not in op["responses"]
    assert seen[("get", "/api/v1/snapshots")] == "read:metrics"
    assert seen[("post", "/api/v1/config/knobs/{stationId}/{extension}")] == "write:knobs"
    assert seen[("get", "/api/v1/health")] is None and seen[("get", "/metrics")] is None
    post = doc["paths"]["/api/v1/config/knobs/{stationId}/{extension}"]["post"]
    assert post["x-write"] is True and {"400", "404", "413"} <= set(post["responses"])
    assert doc["paths"]["/api/v1/snapshots"]["get"]["responses"]["304"]


# --- declaring a new route ----------------------------------------------------------------------

class Target(BodyModel):
    station: str = Field(pattern=r"^Station-\d+$")
    extensions: list[str] = Field(min_length=1)


class BatchBody(BodyModel):
    targets: list[Target] = Field(min_length=1)
    note: str = ""


class PageQuery(QueryModel):
    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = None


class Page(BaseModel):
    items: list[str]


async def _batch(request: web.Request) -> web.Response:
    body, query = body_of(request, BatchBody), query_of(request, PageQuery)
    return json_response({"items": [t.station for t in body.targets][: query.limit]})


def _declare_batch(app: web.Application, signed: bool = False) -> None:
    add_endpoint(app, Endpoint("POST", "/demo/batch", _batch, "A batch-like route", Permission.WRITE_KNOBS,
                               write=True, signed=signed, tags=("demo",), query=PageQuery, body=BatchBody,
                               responses={200: Reply("What was done", Page)}, errors=(409,)))


async def test_a_new_route_is_declared_in_a_few_lines_and_validated(tmp_path):
    app = make_app(tmp_path)
    _declare_batch(app)
    async with TestClient(TestServer(app), headers=bearer(tmp_path)) as c:
        doc = await document(c)
        op = doc["paths"]["/api/v1/demo/batch"]["post"]
        assert [p["name"] for p in op["parameters"]] == ["limit", "cursor"]
        assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/BatchBody"}
        assert {"200", "400", "401", "403", "409", "413", "429"} == set(op["responses"])
        resp = await c.post("/api/v1/demo/batch?limit=1", json={"targets": [{"station": "Station-1",
                                                                             "extensions": ["3333"]}] * 2})
        assert resp.status == 200 and await resp.json() == {"items": ["Station-1"]}
        resp = await c.post("/api/v1/demo/batch?limit=0&color=red",
                            json={"targets": [{"station": "x", "extensions": []}, {}], "extra": 1})
        doc_400 = await resp.json()
    assert resp.status == 400
    # The guard admitted the caller first; the query is refused before the body is read.
    assert {d["field"] for d in doc_400["error"]["details"]} == {"limit", "color"}
    assert "color: unknown query parameter (this endpoint takes limit, cursor)" in doc_400["error"]["message"]


def test_body_problems_are_dotted_paths_in_plain_words():
    with pytest.raises(ValidationError) as exc:
        BatchBody.model_validate({"targets": [{"station": "x", "extensions": []}, {"station": 3}], "extra": 1})
    got = {d["field"]: d["problem"] for d in problems(exc.value, "body")}
    assert got == {
        "targets.0.station": "String should match pattern '^Station-\\d+$'",
        "targets.0.extensions": "List should have at least 1 item after validation, not 0",
        "targets.1.station": "should be a valid string, got 3",
        "targets.1.extensions": "required",
        "extra": "unknown field",
    }


def test_signed_endpoints_document_their_signature_headers(tmp_path):
    app = make_app(tmp_path)
    _declare_batch(app, signed=True)
    op = build_document(endpoints(app), 1 << 20)["paths"]["/api/v1/demo/batch"]["post"]
    headers = {p["name"]: p for p in op["parameters"] if p["in"] == "header"}
    assert op["x-signed"] is True and "signed" in op["description"]
    assert set(headers) == {"X-Tpmon-Timestamp", "X-Tpmon-Nonce", "X-Tpmon-Signature"}
    assert all(h["required"] for h in headers.values())


# --- validation over HTTP -------------------------------------------------------------------------

async def test_unknown_and_repeated_query_parameters_are_400s_naming_them(client):
    resp = await client.get("/api/v1/snapshots?stations=Station-1&bogus=1")
    doc = await resp.json()
    assert resp.status == 400 and doc["error"]["code"] == "validation_failed"
    assert doc["error"]["details"] == [
        {"field": "bogus", "problem": "unknown query parameter (this endpoint takes stations, fields)"}]
    resp = await client.get(KNOBS_URL + "?verbose=true")
    assert (await resp.json())["error"]["details"] == [
        {"field": "verbose", "problem": "unknown query parameter (this endpoint takes no query parameters)"}]
    resp = await client.get("/api/v1/snapshots?stations=Station-1&stations=Station-2")
    assert (await resp.json())["error"]["details"][0]["field"] == "stations"
    resp = await client.get("/api/v1/snapshots?fields=latency,nope.a,nope.b")
    assert [d["problem"] for d in (await resp.json())["error"]["details"]] == ["unknown metric nope.a",
                                                                               "unknown metric nope.b"]


async def test_comma_lists_are_parsed_once_for_the_handler(client):
    resp = await client.get("/api/v1/snapshots?stations= Station-2 &fields=latency.end_to_end")
    doc = await resp.json()
    assert resp.status == 200 and list(doc["stations"]) == ["Station-2"]


@pytest.mark.parametrize("query", ["stations=", "stations=Station-1,", "fields=latency,,packet"])
async def test_an_empty_item_in_a_comma_list_is_refused(client, query):
    """The document says every item is a station or a metric; "" is neither (schemathesis ST201)."""
    resp = await client.get(f"/api/v1/snapshots?{query}")
    doc = await resp.json()
    assert resp.status == 400 and "empty item" in doc["error"]["details"][0]["problem"]


async def test_authentication_comes_before_validation(tmp_path):
    async with TestClient(TestServer(make_app(tmp_path))) as anonymous:
        resp = await anonymous.get("/api/v1/snapshots?bogus=1")
        assert resp.status == 401  # an anonymous caller learns nothing about the parameters
        resp = await anonymous.get("/api/v1/health?bogus=1")  # open routes validate too
        assert resp.status == 400


async def test_knob_values_are_checked_by_the_catalog_one_problem_each(client):
    resp = await client.post(KNOBS_URL, json={"agc_target_level": -80, "nr_level": "max", "agc_enabled": True})
    doc = await resp.json()
    assert resp.status == 400 and doc["error"]["message"] == "2 invalid knob values; nothing was changed"
    assert doc["error"]["details"] == [{"field": "agc_target_level", "problem": "-80 is below the minimum -31"},
                                       {"field": "nr_level", "problem": "'max' is not one of low, moderate, high, "
                                                                        "very_high"}]
    resp = await client.post(KNOBS_URL, json={})
    assert (await resp.json())["error"]["details"][0] == {
        "field": "body", "problem": 'no knobs given: send an object such as {"agc_enabled": true}'}
    resp = await client.post(KNOBS_URL, data=b'{"agc_max_gain": ' + b"9" * 5000 + b"}")  # was a 500
    assert resp.status == 400 and (await resp.json())["error"]["details"][0]["field"] == "body"


# --- real answers against their schemas ------------------------------------------------------------

async def test_answers_conform_to_their_documented_schemas(client):
    doc = await document(client)
    knobs = "/api/v1/config/knobs/{stationId}/{extension}"
    await assert_conforms(client, doc, "/api/v1/snapshots", "/api/v1/snapshots", 200)
    await assert_conforms(client, doc, "/api/v1/snapshots", "/api/v1/snapshots?stations=Station-2&fields=latency", 200)
    await assert_conforms(client, doc, "/api/v1/snapshots", "/api/v1/snapshots?stations=Station-9", 404)
    await assert_conforms(client, doc, "/api/v1/snapshots", "/api/v1/snapshots?fields=x", 400)
    await assert_conforms(client, doc, knobs, KNOBS_URL, 200)
    result = await assert_conforms(client, doc, knobs, KNOBS_URL, 200, "post", json={"agc_max_gain": 12})
    assert result["applied"] is False and result["reason"]
    await assert_conforms(client, doc, knobs, KNOBS_URL, 200)  # now with updatedAt/updatedBy set
    await assert_conforms(client, doc, knobs, KNOBS_URL, 400, "post", json={"agc_max_gain": "loud"})
    await assert_conforms(client, doc, knobs, KNOBS_URL, 400, "post", data=b"[1]")
    await assert_conforms(client, doc, knobs, "/api/v1/config/knobs/Station-7/3333", 404)
    await assert_conforms(client, doc, "/api/v1/catalog", "/api/v1/catalog", 200)
    await assert_conforms(client, doc, "/api/v1/health", "/api/v1/health", 200)
    await assert_conforms(client, doc, "/api/v1/openapi.json", "/api/v1/openapi.json", 200)
    await assert_conforms(client, doc, "/api/v1/snapshots", "/api/v1/snapshots", 401,
                          headers={"Authorization": "Bearer not-a-token"})
    metrics = await client.get("/metrics")
    assert metrics.status == 200 and metrics.content_type == "text/plain"
    assert "text/plain" in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


async def test_an_oversized_body_is_413_in_the_envelope(tmp_path):
    async with TestClient(TestServer(make_app(tmp_path, max_body_bytes=1024)), headers=bearer(tmp_path)) as c:
        doc = await document(c)
        assert "1024 bytes" in doc["info"]["description"]
        knobs = "/api/v1/config/knobs/{stationId}/{extension}"
        body = await assert_conforms(c, doc, knobs, KNOBS_URL, 413, "post",
                                     data=b'{"agc_enabled": true, "pad": "' + b"x" * 2048 + b'"}',
                                     headers={"Content-Type": "application/json"})
        assert body["error"]["code"] == "payload_too_large"
        resp = await c.post(KNOBS_URL, json={"agc_enabled": False})  # under the limit: served
        assert resp.status == 200

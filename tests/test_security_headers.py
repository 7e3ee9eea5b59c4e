"""Security headers on every response, HSTS only over TLS, and CORS limited to the configured origins."""
from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from controller.app import create_app
from controller.security.headers import SecurityHeaders
from controller.settings import ControllerSettings
from shared.config import ConfigError
from tests.auth import bearer

OPS = "https://ops.example.org"
SNAPSHOTS = "/api/v1/snapshots"
KNOBS_URL = "/api/v1/config/knobs/Station-1/3333"
SECURITY = {"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
EXPOSED = {"ETag", "Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "X-Trace-Id"}


def make_app(tmp_path, **overrides) -> web.Application:
    settings = ControllerSettings(**{"http_host": "127.0.0.1", "link_endpoint": "tcp://127.0.0.1:*",
                                     "data_dir": str(tmp_path), "stations": 2, "tick_ms": 50, "insecure": True, **overrides})
    return create_app(settings, registry=CollectorRegistry())


async def open_client(tmp_path, **overrides) -> TestClient:
    """A started client without credentials; pass `bearer(tmp_path)` per request where one is needed."""
    client = TestClient(TestServer(make_app(tmp_path, **overrides)))
    await client.start_server()
    return client


@pytest.fixture
async def plain(tmp_path):
    client = await open_client(tmp_path)
    yield client
    await client.close()


@pytest.fixture
async def whitelisted(tmp_path):
    client = await open_client(tmp_path, cors_origins=[OPS, "http://localhost:5173"])
    yield client
    await client.close()


def cors_headers(resp) -> dict[str, str]:
    return {k: v for k, v in resp.headers.items() if k.lower().startswith("access-control-")}


def vary(resp) -> list[str]:
    return [v.strip() for v in resp.headers.get("Vary", "").split(",") if v.strip()]


# --- the fixed headers, on every kind of answer ------------------------------------------------

@pytest.mark.parametrize("method,path,token,body,status", [
    ("GET", SNAPSHOTS, True, None, 200),
    ("GET", SNAPSHOTS, False, None, 401),
    ("GET", "/api/v1/nothing-here", True, None, 404),
    ("DELETE", SNAPSHOTS, True, None, 405),
    ("POST", KNOBS_URL, True, b"x" * (2 << 20), 413),
    ("GET", "/metrics", False, None, 200),
    ("OPTIONS", SNAPSHOTS, False, None, 403),  # a preflight from no origin at all
])
async def test_every_response_carries_the_security_headers(plain, tmp_path, method, path, token, body, status):
    headers = bearer(tmp_path) if token else {}
    resp = await plain.request(method, path, data=body, headers=headers)
    assert resp.status == status
    for name, value in SECURITY.items():
        assert resp.headers.get(name) == value, name
    assert "Strict-Transport-Security" not in resp.headers  # plain HTTP: HSTS would promise HTTPS we lack
    assert cors_headers(resp) == {} and "Origin" not in vary(resp)


async def test_handler_headers_stay_as_the_handler_set_them(plain, tmp_path):
    resp = await plain.get(SNAPSHOTS, headers=bearer(tmp_path))
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-cache" and resp.headers["ETag"]
    assert vary(resp) == ["Accept-Encoding"]
    assert resp.headers["X-Trace-Id"]


async def test_hsts_is_sent_only_when_tls_is_on(tmp_path):
    # create_app does not read the certificate (main.serve does), so any paths turn settings.tls on.
    client = await open_client(tmp_path, tls_cert=str(tmp_path / "c.pem"), tls_key=str(tmp_path / "k.pem"))
    try:
        for resp in (await client.get("/api/v1/health"), await client.get("/api/v1/nothing-here")):
            assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"
            assert resp.headers["X-Frame-Options"] == "DENY"
    finally:
        await client.close()


# --- CORS ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path,token,status", [(SNAPSHOTS, True, 200), (SNAPSHOTS, False, 401),
                                               ("/api/v1/nothing-here", True, 404)])
async def test_a_whitelisted_origin_gets_cors_headers(whitelisted, tmp_path, path, token, status):
    headers = {"Origin": OPS, **(bearer(tmp_path) if token else {})}
    resp = await whitelisted.get(path, headers=headers)
    assert resp.status == status  # errors too: a browser app can only read an error it is allowed to see
    assert resp.headers["Access-Control-Allow-Origin"] == OPS
    exposed = {h.strip() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed == EXPOSED
    assert "Origin" in vary(resp)
    assert "Access-Control-Allow-Credentials" not in resp.headers  # bearer tokens, not cookies
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_vary_keeps_the_handlers_value_and_adds_origin(whitelisted, tmp_path):
    resp = await whitelisted.get(SNAPSHOTS, headers={"Origin": OPS, **bearer(tmp_path)})
    assert vary(resp) == ["Accept-Encoding", "Origin"]
    resp = await whitelisted.get(SNAPSHOTS, headers=bearer(tmp_path))  # no Origin: still varies on it
    assert vary(resp) == ["Accept-Encoding", "Origin"] and cors_headers(resp) == {}


async def test_a_whitelisted_preflight_is_204_with_methods_headers_and_max_age(whitelisted):
    resp = await whitelisted.options(KNOBS_URL, headers={
        "Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-tpmon-signature"})
    assert resp.status == 204 and await resp.read() == b""
    assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    methods = {m.strip() for m in resp.headers["Access-Control-Allow-Methods"].split(",")}
    assert methods == {"GET", "POST", "PUT", "DELETE"}
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {"authorization", "content-type", "if-none-match", "x-tpmon-timestamp",
                       "x-tpmon-nonce", "x-tpmon-signature", "x-trace-id"}
    assert int(resp.headers["Access-Control-Max-Age"]) > 0
    assert resp.headers["Content-Security-Policy"] == SECURITY["Content-Security-Policy"]


@pytest.mark.parametrize("origin", ["https://evil.example", "https://ops.example.org.evil.example",
                                    "http://ops.example.org", "https://ops.example.org:8443", "null"])
async def test_an_unlisted_origin_gets_no_cors_headers_and_a_403_preflight(whitelisted, tmp_path, origin):
    await whitelisted.get(SNAPSHOTS, headers={"Origin": OPS, **bearer(tmp_path)})  # an allowed one first
    resp = await whitelisted.get(SNAPSHOTS, headers={"Origin": origin, **bearer(tmp_path)})
    assert resp.status == 200 and cors_headers(resp) == {}
    resp = await whitelisted.options(SNAPSHOTS, headers={"Origin": origin, "Access-Control-Request-Method": "GET"})
    doc = await resp.json()
    assert resp.status == 403 and cors_headers(resp) == {}
    assert doc["error"]["code"] == "forbidden"
    assert origin in doc["error"]["message"] and "cors_origins" in doc["error"]["message"]
    assert "localhost:5173" not in doc["error"]["message"]  # the whitelist is not disclosed
    assert doc["error"]["details"] == [{"field": "Origin", "problem": "not in cors_origins"}]


async def test_by_default_no_origin_is_allowed(plain, tmp_path):
    resp = await plain.get(SNAPSHOTS, headers={"Origin": OPS, **bearer(tmp_path)})
    assert resp.status == 200 and cors_headers(resp) == {} and "Origin" not in vary(resp)
    resp = await plain.options(SNAPSHOTS, headers={"Origin": OPS, "Access-Control-Request-Method": "GET"})
    doc = await resp.json()
    assert resp.status == 403 and cors_headers(resp) == {}
    assert OPS in doc["error"]["message"] and "cors_origins" in doc["error"]["message"]


async def test_options_without_origin_says_it_is_only_a_preflight(whitelisted):
    resp = await whitelisted.options(SNAPSHOTS)
    doc = await resp.json()
    assert resp.status == 403 and "no Origin header" in doc["error"]["message"]
    assert doc["error"]["details"] == [{"field": "Origin", "problem": "missing"}]


@pytest.mark.parametrize("entry,meant", [("https://Ops.example.org/", "https://ops.example.org"),
                                         ("https://ops.example.org/app", "https://ops.example.org"),
                                         ("https://ops.example.org:443", "https://ops.example.org")])
def test_a_whitelist_entry_a_browser_never_sends_is_refused_with_a_suggestion(entry, meant):
    with pytest.raises(ConfigError, match="cors_origins") as err:
        SecurityHeaders([entry])
    assert repr(meant) in str(err.value)


def test_origins_as_browsers_send_them_are_accepted():
    entries = [OPS, "http://localhost:5173", "https://[::1]:8443", "http://10.0.0.7:8080"]
    assert SecurityHeaders(entries).cors_origins == frozenset(entries)

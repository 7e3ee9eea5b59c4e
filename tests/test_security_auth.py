"""JWT authentication, roles and station scopes on every endpoint family (in-process controller)."""
from __future__ import annotations

import base64
import json
import re
import time

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import CollectorRegistry

from controller.app import create_app
from controller.http.endpoint import endpoints
from controller.security.principal import Permission
from controller.settings import ControllerSettings
from tests.auth import bearer, token_for

STATION_1_KNOBS = "/api/v1/config/knobs/Station-1/3333"


def make_app(tmp_path, **overrides) -> web.Application:
    settings = ControllerSettings(**{"http_host": "127.0.0.1", "link_endpoint": "tcp://127.0.0.1:*",
                                     "data_dir": str(tmp_path), "stations": 3, "tick_ms": 50,
                                     "ack_timeout_ms": 200, "insecure": True, **overrides})
    return create_app(settings, registry=CollectorRegistry())


@pytest.fixture
async def client(tmp_path):
    async with TestClient(TestServer(make_app(tmp_path))) as c:
        c.data_dir = tmp_path
        yield c


def secret_of(tmp_path) -> bytes:
    return (tmp_path / "secrets" / "jwt.secret").read_bytes().strip()


def claims(**over) -> dict:
    now = int(time.time())
    return {"sub": "alice", "role": "operator", "permissions": ["read:metrics", "write:knobs"],
            "stations": ["*"], "iat": now, "exp": now + 600, **over}


async def call(client, method: str, path: str, token: str | None = None, **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = await client.request(method, path, headers=headers, **kwargs)
    return resp.status, await resp.json(content_type=None)


def filled(endpoint) -> str:
    """The endpoint's path with every parameter filled with a value its route pattern accepts."""
    path = endpoint.path.replace("{stationId}", "Station-1").replace("{extension}", "3333")
    path = path.replace("{analysisId}", "opt_20240115_103045")   # its pattern is more than a prefix
    for name in re.findall(r"{(\w+)}", path):
        prefix = endpoint.route_patterns.get(name, "").split("[")[0]  # e.g. alert_[^/]* -> alert_
        path = path.replace("{" + name + "}", prefix + "x1")
    return "/api/v1" + path


# --- refused tokens: 401 with a reason, never the secret ------------------------------------------

async def test_missing_token_is_401_with_a_reason_and_challenge(client):
    resp = await client.get("/api/v1/snapshots")
    doc = await resp.json()
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert doc["error"]["code"] == "unauthorized" and "Authorization" in doc["error"]["message"]


@pytest.mark.parametrize("header", ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer    ", "token abc"])
async def test_malformed_authorization_header(client, header):
    resp = await client.get("/api/v1/snapshots", headers={"Authorization": header})
    assert resp.status == 401


async def test_expired_token(client):
    token = jwt.encode(claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600), secret_of(client.data_dir))
    status, doc = await call(client, "GET", "/api/v1/snapshots", token)
    assert status == 401 and "expired" in doc["error"]["message"]


async def test_token_signed_with_another_secret(client):
    token = jwt.encode(claims(), b"x" * 64, algorithm="HS256")
    status, doc = await call(client, "GET", "/api/v1/snapshots", token)
    assert status == 401 and "signature" in doc["error"]["message"]


def unsigned(payload: dict) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_is_refused(client, alg):
    token = unsigned(claims(role="admin"))
    if alg != "none":
        head, body, _ = token.split(".")
        head = base64.urlsafe_b64encode(json.dumps({"alg": alg}).encode()).rstrip(b"=").decode()
        token = f"{head}.{body}."
    status, doc = await call(client, "POST", STATION_1_KNOBS, token, json={"agc_enabled": True})
    assert status == 401 and "alg none" in doc["error"]["message"]


async def test_other_algorithm_is_refused_before_any_key_is_used(client):
    token = jwt.encode(claims(), secret_of(client.data_dir), algorithm="HS512")
    status, doc = await call(client, "GET", "/api/v1/snapshots", token)
    assert status == 401 and "HS512 is not accepted" in doc["error"]["message"]


@pytest.mark.parametrize("bad, reason", [
    ({"role": None}, "lacks the 'role' claim"), ({"exp": None}, "lacks the 'exp' claim"),
    ({"role": "root"}, "unknown role"), ({"stations": "Station-1"}, "list of strings"),
    ({"iat": int(time.time()) + 3600}, "issued in the future"), ({"sub": ""}, "sub"),
])
async def test_bad_claims(client, bad, reason):
    payload = {k: v for k, v in {**claims(), **bad}.items() if v is not None}
    token = jwt.encode(payload, secret_of(client.data_dir))
    status, doc = await call(client, "GET", "/api/v1/snapshots", token)
    assert status == 401 and reason in doc["error"]["message"]


async def test_not_a_jwt(client):
    status, doc = await call(client, "GET", "/api/v1/snapshots", "not.a.jwt")
    assert status == 401 and "well-formed" in doc["error"]["message"]


async def test_no_error_reveals_the_secret(client):
    secret = secret_of(client.data_dir).decode()
    for token in ("x", unsigned(claims()), jwt.encode(claims(), b"y" * 40), jwt.encode(claims(exp=1), secret)):
        resp = await client.get("/api/v1/snapshots", headers={"Authorization": f"Bearer {token}"})
        assert secret not in await resp.text() and "Traceback" not in await resp.text()


# --- open endpoints ----------------------------------------------------------------------------

async def test_health_and_metrics_need_no_token(client):
    for path in ("/api/v1/health", "/api/health", "/metrics"):
        resp = await client.get(path)
        assert resp.status in (200, 503), path
    body = await (await client.get("/api/v1/health")).text()
    assert "agc_" not in body and "secret" not in body.lower()


async def test_every_protected_endpoint_refuses_a_missing_token(client):
    protected = [e for e in endpoints(client.app) if e.permission is not None]
    assert {e.path for e in protected} >= {"/snapshots", "/catalog", "/config/knobs/{stationId}/{extension}"}
    for endpoint in protected:
        resp = await client.request(endpoint.method, filled(endpoint), json={})
        assert resp.status == 401, f"{endpoint.method} {endpoint.path}"


# --- roles -----------------------------------------------------------------------------------------

async def test_viewer_reads_but_cannot_write(client):
    token = token_for(client.data_dir, "viewer")
    assert (await call(client, "GET", "/api/v1/snapshots", token))[0] == 200
    assert (await call(client, "GET", STATION_1_KNOBS, token))[0] == 200
    assert (await call(client, "GET", "/api/v1/catalog", token))[0] == 200
    status, doc = await call(client, "POST", STATION_1_KNOBS, token, json={"agc_enabled": True})
    assert status == 403 and "write:knobs" in doc["error"]["message"]
    assert (await call(client, "GET", STATION_1_KNOBS, token))[1]["version"] == 1  # nothing changed


async def test_every_endpoint_beyond_reading_refuses_a_viewer(client):
    token = token_for(client.data_dir, "viewer")
    for endpoint in endpoints(client.app):
        if endpoint.permission not in (None, Permission.READ_METRICS):
            status, _ = await call(client, endpoint.method, filled(endpoint), token, json={})
            assert status == 403, f"{endpoint.method} {endpoint.path}"


@pytest.mark.parametrize("role", ["operator", "admin"])
async def test_operator_and_admin_change_knobs(client, role):
    status, doc = await call(client, "POST", STATION_1_KNOBS, token_for(client.data_dir, role),
                             json={"agc_enabled": True})
    assert status == 200 and doc["config"]["agc_enabled"] is True


async def test_changed_by_is_the_token_subject(client):
    token = token_for(client.data_dir, "operator", subject="alice@ops")
    await call(client, "POST", STATION_1_KNOBS, token, json={"agc_max_gain": 11})
    _, doc = await call(client, "GET", STATION_1_KNOBS, token)
    assert doc["updatedBy"] == "alice@ops"


async def test_a_token_can_narrow_its_roles_permissions_but_not_widen_them(client):
    narrowed = token_for(client.data_dir, "operator", permissions=["read:metrics"])
    assert (await call(client, "POST", STATION_1_KNOBS, narrowed, json={"agc_enabled": True}))[0] == 403
    widened = jwt.encode(claims(role="viewer", permissions=["read:metrics", "write:knobs", "admin"]),
                         secret_of(client.data_dir))
    assert (await call(client, "POST", STATION_1_KNOBS, widened, json={"agc_enabled": True}))[0] == 403


# --- station scopes ---------------------------------------------------------------------------------

async def test_scoped_token_sees_only_its_stations_in_snapshots(client):
    token = token_for(client.data_dir, "operator", ["Station-1", "Station-2"])
    status, doc = await call(client, "GET", "/api/v1/snapshots", token)
    assert status == 200 and sorted(doc["stations"]) == ["Station-1", "Station-2"]
    status, doc = await call(client, "GET", "/api/v1/snapshots?stations=Station-2", token)
    assert status == 200 and list(doc["stations"]) == ["Station-2"]
    status, doc = await call(client, "GET", "/api/v1/snapshots?stations=Station-1,Station-3", token)
    assert status == 403 and doc["error"]["details"] == [
        {"field": "stations", "problem": "Station-3 is outside the token's stations"}]
    unscoped = token_for(client.data_dir, "viewer")
    assert len((await call(client, "GET", "/api/v1/snapshots", unscoped))[1]["stations"]) == 3


async def test_scoped_token_gets_403_on_another_stations_knobs(client):
    token = token_for(client.data_dir, "operator", ["Station-1", "Station-2"])
    assert (await call(client, "GET", "/api/v1/config/knobs/Station-3/3333", token))[0] == 403
    status, doc = await call(client, "POST", "/api/v1/config/knobs/Station-3/4444", token, json={"agc_enabled": True})
    assert status == 403 and "Station-3" in doc["error"]["message"]
    admin = token_for(client.data_dir, "admin")
    assert (await call(client, "GET", "/api/v1/config/knobs/Station-3/4444", admin))[1]["version"] == 1
    assert (await call(client, "POST", "/api/v1/config/knobs/Station-2/4444", token, json={"agc_enabled": True}))[0] == 200


async def test_unknown_station_is_still_404_for_a_scoped_token(client):
    token = token_for(client.data_dir, "operator", ["Station-1"])
    assert (await call(client, "GET", "/api/v1/config/knobs/Station-99/3333", token))[0] == 404


async def test_a_scope_matching_no_station_sees_nothing(client):
    token = token_for(client.data_dir, "viewer", ["Station-42"])
    assert (await call(client, "GET", "/api/v1/snapshots", token))[0] == 403


# --- configuration ---------------------------------------------------------------------------------

async def test_auth_off_lets_every_caller_in(tmp_path, caplog):
    async with TestClient(TestServer(make_app(tmp_path, auth=False))) as c:
        resp = await c.post(STATION_1_KNOBS, json={"agc_enabled": True})
        assert resp.status == 200 and (await resp.json())["config"]["agc_enabled"] is True
    assert "authentication is OFF" in caplog.text


async def test_es256_with_a_public_key(tmp_path):
    private = ec.generate_private_key(ec.SECP256R1())
    pem_private = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    pem_public = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "jwt.pub").write_bytes(pem_public)
    app = make_app(tmp_path, jwt_algorithm="ES256", jwt_public_key_file=str(tmp_path / "jwt.pub"))
    async with TestClient(TestServer(app)) as c:
        good = jwt.encode(claims(), pem_private, algorithm="ES256")
        assert (await call(c, "GET", "/api/v1/snapshots", good))[0] == 200
        # The classic confusion attack: an HS256 token whose "secret" is the public key.
        status, doc = await call(c, "GET", "/api/v1/snapshots", hs256_by_hand(claims(role="admin"), pem_public))
        assert status == 401 and "HS256 is not accepted" in doc["error"]["message"]
        assert not (tmp_path / "secrets" / "jwt.secret").exists()  # no HS secret is created for ES256


def hs256_by_hand(payload: dict, key: bytes) -> str:
    """PyJWT refuses a PEM key as an HMAC secret, so an attacker's token is built without it."""
    import hashlib
    import hmac

    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    signing_input = f"{part(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{part(json.dumps(payload).encode())}"
    return f"{signing_input}.{part(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


async def test_client_header_cannot_choose_the_author(client):
    token = token_for(client.data_dir, "operator", subject="bob")
    await call(client, "POST", STATION_1_KNOBS, token, json={"agc_enabled": True})
    resp = await client.post(STATION_1_KNOBS, json={"agc_max_gain": 9},
                             headers={"Authorization": f"Bearer {token}", "X-Operator": "mallory"})
    assert resp.status == 200
    _, doc = await call(client, "GET", STATION_1_KNOBS, token)
    assert doc["updatedBy"] == "bob"


def test_bearer_helper_mints_with_the_controllers_secret(tmp_path):
    make_app(tmp_path)
    header = bearer(tmp_path, "viewer", ["Station-1"])["Authorization"].split()[1]
    decoded = jwt.decode(header, secret_of(tmp_path), algorithms=["HS256"])
    assert decoded["role"] == "viewer" and decoded["stations"] == ["Station-1"]
    assert decoded["permissions"] == ["read:metrics"] and decoded["exp"] - decoded["iat"] == 3600

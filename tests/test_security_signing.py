"""Signed critical requests: canonical form, verification, freshness, replay, `tpmon sign`; a real app."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shlex
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from controller.app import create_app
from controller.http.endpoint import API_PREFIXES, ENDPOINTS, Endpoint
from controller.http.errors import json_response
from controller.security import secret_files
from controller.security.principal import Permission
from controller.security.signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    RequestVerifier,
    SignatureRejected,
    canonical_string,
    sign,
    signed_headers,
)
from controller.settings import ControllerSettings
from tests.auth import bearer, token_for
from tpmon.cli import main as tpmon

SECRET = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
NOW = 1_700_000_000.0
PATH = "/api/v1/batch/apply-settings"
BODY = b'{"stations": ["Station-1"], "settings": {"agc_enabled": true}}'
NONCE = "nonce-0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(clock) -> RequestVerifier:
    return RequestVerifier(SECRET, 300, clock)


def rejection(verifier: RequestVerifier, method: str, path: str, headers: dict[str, str], body: bytes) -> str:
    with pytest.raises(SignatureRejected) as caught:
        verifier.verify(method, path, headers, body)
    return str(caught.value)


# --- the canonical form ----------------------------------------------------------------------

def test_canonical_string_is_the_documented_five_lines():
    assert canonical_string("post", PATH + "?dry=1", "1700000000", NONCE, b"") == (
        "POST\n/api/v1/batch/apply-settings?dry=1\n1700000000\nnonce-0123456789abcdef\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def test_the_signature_is_hex_hmac_sha256_of_the_canonical_string():
    headers = sign(SECRET, "POST", PATH, BODY, now=NOW, nonce=NONCE)
    body_hash = hashlib.sha256(BODY).hexdigest()
    message = f"POST\n{PATH}\n1700000000\n{NONCE}\n{body_hash}".encode()
    assert headers == {TIMESTAMP_HEADER: "1700000000", NONCE_HEADER: NONCE,
                       SIGNATURE_HEADER: hmac.new(SECRET, message, hashlib.sha256).hexdigest()}


# --- verification ----------------------------------------------------------------------------

def test_a_signed_request_verifies(verifier):
    verifier.verify("POST", PATH, sign(SECRET, "POST", PATH, BODY, now=NOW), BODY)


def test_the_client_helper_signs_now_with_a_fresh_nonce():
    verifier = RequestVerifier(SECRET, 300)  # the real clock, as a script would meet it
    first, second = (signed_headers(SECRET, "POST", PATH, BODY.decode()) for _ in range(2))
    assert first[NONCE_HEADER] != second[NONCE_HEADER]
    verifier.verify("POST", PATH, first, BODY)
    verifier.verify("POST", PATH, second, BODY)


@pytest.mark.parametrize("method, path, body", [
    ("POST", PATH, BODY + b" "),
    ("POST", PATH, b""),
    ("POST", "/api/v1/templates/x/apply", BODY),
    ("POST", PATH + "?dry=1", BODY),
    ("PUT", PATH, BODY),
], ids=["body", "empty-body", "path", "query", "method"])
def test_a_changed_request_fails(verifier, method, path, body):
    headers = sign(SECRET, "POST", PATH, BODY, now=NOW)
    assert rejection(verifier, method, path, headers, body).startswith("signature does not match")


def test_a_changed_timestamp_or_nonce_fails(verifier):
    headers = sign(SECRET, "POST", PATH, BODY, now=NOW)
    moved = {**headers, TIMESTAMP_HEADER: str(int(NOW) - 1)}
    assert rejection(verifier, "POST", PATH, moved, BODY).startswith("signature does not match")
    renonced = {**headers, NONCE_HEADER: "another-nonce-0123456"}
    assert rejection(verifier, "POST", PATH, renonced, BODY).startswith("signature does not match")


def test_another_secret_fails(verifier):
    headers = sign(b"x" * 64, "POST", PATH, BODY, now=NOW)
    assert rejection(verifier, "POST", PATH, headers, BODY).startswith("signature does not match")


def test_the_signature_may_be_upper_case_hex(verifier):
    headers = sign(SECRET, "POST", PATH, BODY, now=NOW)
    verifier.verify("POST", PATH, {**headers, SIGNATURE_HEADER: headers[SIGNATURE_HEADER].upper()}, BODY)


@pytest.mark.parametrize("skew", [-301, 301, -10_000_000])
def test_a_stale_or_future_timestamp_is_refused(verifier, skew):
    headers = sign(SECRET, "POST", PATH, BODY, now=NOW + skew)
    assert rejection(verifier, "POST", PATH, headers, BODY).startswith("stale or future timestamp")


@pytest.mark.parametrize("skew", [-300, 300])
def test_the_window_edge_is_still_fresh(verifier, skew):
    verifier.verify("POST", PATH, sign(SECRET, "POST", PATH, BODY, now=NOW + skew), BODY)


def test_a_replayed_nonce_is_refused(verifier, clock):
    headers = sign(SECRET, "POST", PATH, BODY, now=NOW)
    verifier.verify("POST", PATH, headers, BODY)
    clock.now += 200
    assert rejection(verifier, "POST", PATH, headers, BODY).startswith("replayed nonce")
    resigned = sign(SECRET, "POST", PATH, BODY, now=clock.now, nonce=headers[NONCE_HEADER])
    assert rejection(verifier, "POST", PATH, resigned, BODY).startswith("replayed nonce")


def test_a_forged_request_does_not_burn_the_nonce(verifier):
    genuine = sign(SECRET, "POST", PATH, BODY, now=NOW)
    forged = {**genuine, SIGNATURE_HEADER: "0" * 64}
    rejection(verifier, "POST", PATH, forged, BODY)
    verifier.verify("POST", PATH, genuine, BODY)
    assert len(verifier) == 1


def test_nonces_are_forgotten_once_their_timestamp_can_no_longer_pass(verifier, clock):
    for n in range(3):
        verifier.verify("POST", PATH, sign(SECRET, "POST", PATH, BODY, now=NOW + n), BODY)
    assert len(verifier) == 3
    clock.now = NOW + 301.5  # the first two timestamps are out of the window now, the third not yet
    verifier.verify("POST", PATH, sign(SECRET, "POST", PATH, BODY, now=clock.now), BODY)
    assert len(verifier) == 2


def test_a_full_nonce_cache_refuses_rather_than_forgets(clock):
    verifier = RequestVerifier(SECRET, 300, clock, max_nonces=2)
    for _ in range(2):
        verifier.verify("POST", PATH, sign(SECRET, "POST", PATH, BODY, now=NOW), BODY)
    third = sign(SECRET, "POST", PATH, BODY, now=NOW)
    assert rejection(verifier, "POST", PATH, third, BODY).startswith("too many signed requests")
    clock.now += 301
    verifier.verify("POST", PATH, sign(SECRET, "POST", PATH, BODY, now=clock.now), BODY)


@pytest.mark.parametrize("missing", [[TIMESTAMP_HEADER], [NONCE_HEADER], [SIGNATURE_HEADER],
                                     [TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER]])
def test_missing_headers_are_named(verifier, missing):
    headers = {k: v for k, v in sign(SECRET, "POST", PATH, BODY, now=NOW).items() if k not in missing}
    reason = rejection(verifier, "POST", PATH, headers, BODY)
    assert reason.startswith("missing header" + ("s " if len(missing) > 1 else " ") + ", ".join(missing))


@pytest.mark.parametrize("header, value, reason", [
    (NONCE_HEADER, "short", "X-Tpmon-Nonce must be 16-64 characters"),
    (NONCE_HEADER, "x" * 65, "X-Tpmon-Nonce must be 16-64 characters"),
    (NONCE_HEADER, "has spaces in it, sadly", "X-Tpmon-Nonce must be 16-64 characters"),
    (TIMESTAMP_HEADER, "1700000000.5", "X-Tpmon-Timestamp must be whole Unix seconds"),
    (TIMESTAMP_HEADER, "yesterday", "X-Tpmon-Timestamp must be whole Unix seconds"),
    (SIGNATURE_HEADER, "abc", "X-Tpmon-Signature must be 64 hex digits"),
])
def test_malformed_headers_are_refused_with_the_rule(verifier, header, value, reason):
    headers = {**sign(SECRET, "POST", PATH, BODY, now=NOW), header: value}
    assert rejection(verifier, "POST", PATH, headers, BODY).startswith(reason)


# --- tpmon sign ------------------------------------------------------------------------------

@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "data" / "secrets" / "signing.secret"
    secret_files.load_or_create(path)
    return path


def signed_by_cli(capsys, *argv: str) -> str:
    assert tpmon(["sign", *argv]) == 0
    return capsys.readouterr().out


def test_tpmon_sign_json_verifies(capsys, secret_file, tmp_path):
    (tmp_path / "body.json").write_bytes(BODY + b"\n")
    out = signed_by_cli(capsys, "--path", PATH, "--data", f"@{tmp_path / 'body.json'}", "--secret-file",
                        str(secret_file), "--format", "json")
    RequestVerifier(secret_files.load(secret_file), 300).verify("POST", PATH, json.loads(out), BODY + b"\n")


def test_tpmon_sign_prints_curl_arguments_by_default(capsys, secret_file, tmp_path):
    out = signed_by_cli(capsys, "--method", "delete", "--path", "/api/v1/templates/t1",
                        "--data-dir", str(tmp_path / "data"))
    words = shlex.split(out)
    assert words[0::2] == ["-H"] * 3
    headers = dict(word.split(": ", 1) for word in words[1::2])
    RequestVerifier(secret_files.load(secret_file), 300).verify("DELETE", "/api/v1/templates/t1", headers, b"")


def test_tpmon_sign_finds_the_demo_secret_in_the_current_folder(capsys, tmp_path, monkeypatch):
    demo = tmp_path / ".tpmon-demo" / "controller" / "secrets" / "signing.secret"
    secret_files.load_or_create(demo)
    monkeypatch.chdir(tmp_path)
    out = signed_by_cli(capsys, "--path", PATH, "--data", "{}", "--format", "headers")
    headers = dict(line.split(": ", 1) for line in out.splitlines())
    RequestVerifier(secret_files.load(demo), 300).verify("POST", PATH, headers, b"{}")


def test_tpmon_sign_without_a_secret_says_where_it_looked(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tpmon(["sign", "--path", PATH]) == 2
    err = capsys.readouterr().err
    assert "no signing secret found" in err and ".tpmon-demo/controller/secrets/signing.secret" in err
    assert "--secret-file" in err


def test_tpmon_sign_refuses_a_full_url_as_path(capsys, secret_file):
    assert tpmon(["sign", "--path", "http://localhost:3090" + PATH, "--secret-file", str(secret_file)]) == 2
    assert "must start with /" in capsys.readouterr().err


# --- a real app with a signed endpoint -------------------------------------------------------

async def echo(request: web.Request) -> web.Response:
    return json_response({"received": len(await request.read())})


def signed_app(tmp_path) -> web.Application:
    settings = ControllerSettings(http_host="127.0.0.1", link_endpoint="tcp://127.0.0.1:*", data_dir=str(tmp_path),
                                  stations=2, tick_ms=50, insecure=True)  # no CURVE keys needed here
    app = create_app(settings, registry=CollectorRegistry())
    # Declared like any endpoint, but routed directly rather than through add_endpoint, so the test
    # route takes any query string (the tests sign queries) whatever input validation add_endpoint adds.
    endpoint = Endpoint("POST", "/test/critical", echo, "test only: a signed write", Permission.WRITE_KNOBS,
                        write=True, signed=True)
    for prefix in API_PREFIXES:
        app[ENDPOINTS][app.router.add_route("POST", prefix + endpoint.path, echo)] = endpoint
    return app


def audit_lines(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]


async def test_app_refuses_unsigned_accepts_signed_and_refuses_a_replay(tmp_path):
    app = signed_app(tmp_path)
    secret = secret_files.load(tmp_path / "secrets" / "signing.secret")
    url = "/api/v1/test/critical?dry=1"
    async with TestClient(TestServer(app), headers=bearer(tmp_path, "operator", subject="ops-7")) as client:
        unsigned = await client.post(url, data=BODY)
        assert unsigned.status == 401
        error = (await unsigned.json())["error"]
        assert error["message"].startswith("missing headers X-Tpmon-Timestamp, X-Tpmon-Nonce, X-Tpmon-Signature")
        headers = signed_headers(secret, "POST", url, BODY)
        signed = await client.post(url, data=BODY, headers=headers)
        assert signed.status == 200 and await signed.json() == {"received": len(BODY)}
        replay = await client.post(url, data=BODY, headers=headers)
        assert replay.status == 401 and (await replay.json())["error"]["message"].startswith("replayed nonce")
        tampered = await client.post(url, data=BODY + b" ", headers=signed_headers(secret, "POST", url, BODY))
        assert tampered.status == 401
        other_path = await client.post("/api/test/critical?dry=1", data=BODY,
                                       headers=signed_headers(secret, "POST", url, BODY))
        assert other_path.status == 401  # /api/ and /api/v1/ are different paths to sign
    failures = [line for line in audit_lines(tmp_path) if line["event"] == "signature.failure"]
    assert len(failures) == 4 and {line["who"] for line in failures} == {"ops-7"}
    reasons = [line["reason"] for line in failures]
    assert reasons[0].startswith("missing headers") and reasons[1].startswith("replayed nonce")
    assert all(reason.startswith("signature does not match") for reason in reasons[2:])
    assert [line["what"] for line in failures] == ["POST /api/v1/test/critical"] * 3 + ["POST /api/test/critical"]
    assert secret.decode() not in (tmp_path / "audit.log").read_text()


async def test_app_checks_permission_before_the_signature(tmp_path):
    app = signed_app(tmp_path)
    async with TestClient(TestServer(app), headers=bearer(tmp_path, "viewer")) as client:
        resp = await client.post("/api/v1/test/critical", data=BODY)
        assert resp.status == 403


async def test_app_refuses_a_stale_signed_request(tmp_path):
    app = signed_app(tmp_path)
    secret = secret_files.load(tmp_path / "secrets" / "signing.secret")
    url = "/api/v1/test/critical"
    async with TestClient(TestServer(app), headers=bearer(tmp_path, "admin")) as client:
        stale = sign(secret, "POST", url, BODY, now=time.time() - 400)
        resp = await client.post(url, data=BODY, headers=stale)
        assert resp.status == 401
        error = (await resp.json())["error"]
        assert error["message"].startswith("stale or future timestamp")
        assert error["details"] == [{"field": "signature", "problem": error["message"]}]


async def test_app_verifies_the_target_as_sent_with_its_percent_encoding(tmp_path):
    app = signed_app(tmp_path)
    secret = secret_files.load(tmp_path / "secrets" / "signing.secret")
    url = "/api/v1/test/critical?note=a%20b%26c"
    async with TestClient(TestServer(app), headers=bearer(tmp_path, "admin")) as client:
        resp = await client.post(url, data=BODY, headers=signed_headers(secret, "POST", url, BODY))
        assert resp.status == 200


async def test_tpmon_sign_sends_the_signed_request(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TPMON_TOKEN", raising=False)
    app = signed_app(tmp_path)
    (tmp_path / "body.json").write_bytes(BODY)
    async with TestClient(TestServer(app)) as client:
        base = str(client.make_url("/"))
        argv = ["sign", "--path", "/api/v1/test/critical", "--data", f"@{tmp_path / 'body.json'}",
                "--data-dir", str(tmp_path), "--send", base, "--token", token_for(tmp_path, "operator")]
        assert await asyncio.get_running_loop().run_in_executor(None, tpmon, argv) == 0
        assert json.loads(capsys.readouterr().out) == {"received": len(BODY)}
        unauthenticated = argv[:-2]
        assert await asyncio.get_running_loop().run_in_executor(None, tpmon, unauthenticated) == 1
        assert "missing Authorization header" in capsys.readouterr().out

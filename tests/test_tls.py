"""HTTPS on the controller: TLS 1.3 only, a throwaway CA from trustme, clear refusals for bad files."""
from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import trustme

from controller.http.tls import server_context
from shared.config import ConfigError
from tests.procs import Proc, wait_until
from tpmon import toml_writer
from tpmon.processes import free_port, tpmon_argv

HOST = "127.0.0.1"


class Pki:
    """A throwaway CA, a server certificate for 127.0.0.1 and a key of another certificate."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        server, other = self.ca.issue_cert(HOST), self.ca.issue_cert(HOST)
        self.ca_pem, self.cert, self.key, self.other_key = (folder / n for n in
                                                           ("ca.pem", "cert.pem", "key.pem", "other-key.pem"))
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        self.cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
        server.private_key_pem.write_to_path(str(self.key))
        other.private_key_pem.write_to_path(str(self.other_key))

    def client(self, version: ssl.TLSVersion) -> ssl.SSLContext:
        """A verifying client context pinned to exactly one TLS version."""
        context = ssl.create_default_context(cafile=str(self.ca_pem))
        context.minimum_version = context.maximum_version = version
        return context


def controller_config(tmp: Path) -> tuple[Path, int]:
    port = free_port()
    cfg = tmp / "controller.toml"
    cfg.write_text(toml_writer.dumps({"controller": {
        "http_host": HOST, "http_port": port, "link_endpoint": f"tcp://{HOST}:{free_port()}",
        "data_dir": str(tmp / "controller"), "stations": 1, "insecure": True}}))  # HTTP TLS only: no agent link keys
    return cfg, port


def https_get(port: int, path: str, context: ssl.SSLContext) -> tuple[int, dict, dict[str, str], str]:
    """(status, JSON body, headers, negotiated TLS version) of one HTTPS GET."""
    conn = http.client.HTTPSConnection(HOST, port, context=context, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read()), dict(resp.headers), conn.sock.version()
    finally:
        conn.close()


# --- the server context alone ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def test_the_context_accepts_tls_1_3_only(pki):
    context = server_context(pki.cert, pki.key)
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize("cert,key,expected", [
    ("cert", "other_key", "TLS key {other_key} does not match the certificate {cert}"),
    ("missing", "key", "cannot read TLS certificate {missing}: No such file or directory"),
    ("cert", "missing", "cannot read TLS private key {missing}: No such file or directory"),
    ("key", "key", "TLS certificate {key} is not a PEM certificate"),
    ("cert", "cert", "TLS private key {cert} is not a PEM private key"),
])
def test_bad_files_are_refused_naming_the_file(pki, tmp_path, cert, key, expected):
    paths = {"cert": pki.cert, "key": pki.key, "other_key": pki.other_key, "missing": tmp_path / "nope.pem"}
    with pytest.raises(ConfigError) as err:
        server_context(paths[cert], paths[key])
    assert expected.format(**paths) in str(err.value)


def test_an_encrypted_key_is_refused_without_prompting(pki, tmp_path):
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki.key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"passphrase")))
    with pytest.raises(ConfigError, match="is encrypted"):
        server_context(pki.cert, encrypted)


# --- a real controller process -----------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_controller(pki, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls-controller")
    cfg, port = controller_config(tmp)
    proc = Proc("controller", tpmon_argv("controller", "--config", str(cfg), "--tls-cert", str(pki.cert),
                                         "--tls-key", str(pki.key)), tmp / "controller.log")
    proc.start()
    context = pki.client(ssl.TLSVersion.TLSv1_3)
    try:
        wait_until(lambda: https_get(port, "/api/v1/health", context)[0] == 200, 20, proc)
        yield proc, port
    finally:
        proc.stop()


@pytest.mark.slow
def test_a_tls_1_2_client_is_refused_at_the_handshake(pki, tls_controller):
    proc, port = tls_controller
    context = pki.client(ssl.TLSVersion.TLSv1_2)
    with socket.create_connection((HOST, port), timeout=10) as sock:
        with pytest.raises(ssl.SSLError) as err:
            context.wrap_socket(sock, server_hostname=HOST)
    # OpenSSL answers with a protocol_version alert, but asyncio closes the transport on a failed
    # handshake without flushing it, so the client usually sees EOF in the middle of the handshake.
    # Either way the refusal is the version: the same client pinned to TLS 1.3 is served below.
    reasons = ("PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "UNEXPECTED_EOF_WHILE_READING")
    assert any(reason in str(err.value) for reason in reasons), err.value
    assert proc.exited() is None
    status, *_ = https_get(port, "/api/v1/health", pki.client(ssl.TLSVersion.TLSv1_3))
    assert status == 200


@pytest.mark.slow
def test_a_tls_1_3_client_is_served_over_https(pki, tls_controller):
    proc, port = tls_controller
    status, doc, headers, version = https_get(port, "/api/v1/health", pki.client(ssl.TLSVersion.TLSv1_3))
    assert status == 200 and doc["status"] in ("healthy", "degraded") and version == "TLSv1.3"
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    assert f"controller ready: https://{HOST}:{port}/api/v1/snapshots" in proc.tail(40)


@pytest.mark.slow
def test_plain_http_to_the_tls_port_gets_no_answer(tls_controller):
    _, port = tls_controller
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            conn.request("GET", "/api/v1/health")
            conn.getresponse()
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("cert,key,expected", [
    ("cert", "other_key", "TLS key {other_key} does not match the certificate {cert}"),
    ("missing", "key", "cannot read TLS certificate {missing}: No such file or directory"),
])
def test_the_controller_refuses_to_start_with_bad_tls_files(pki, tmp_path, cert, key, expected):
    paths = {"cert": pki.cert, "key": pki.key, "other_key": pki.other_key, "missing": tmp_path / "nope.pem"}
    cfg, port = controller_config(tmp_path)
    done = subprocess.run(tpmon_argv("controller", "--config", str(cfg), "--tls-cert", str(paths[cert]),
                                     "--tls-key", str(paths[key])), capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "controller cannot start: " + expected.format(**paths) in output
    assert "Traceback" not in output


@pytest.mark.slow
def test_a_certificate_without_its_key_is_a_configuration_error(pki, tmp_path):
    cfg, _ = controller_config(tmp_path)
    done = subprocess.run(tpmon_argv("controller", "--config", str(cfg), "--tls-cert", str(pki.cert)),
                          capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "tls_cert and tls_key go together" in output and "Traceback" not in output

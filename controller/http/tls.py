"""The HTTPS server context: TLS 1.3 only, with errors that name the file at fault."""
from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

from shared.config import ConfigError


def server_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A server context for `cert` (PEM chain, leaf first) and its private `key` (PEM, unencrypted).

    TLS 1.3 only: every client the API serves (browsers, curl, Python, Go) has spoken it for
    years, and it leaves no cipher-suite or renegotiation choices to get wrong.
    Raises ConfigError with the file and the reason when a file is unreadable, is not PEM,
    or the key does not belong to the certificate.
    """
    cert, key = Path(cert), Path(key)
    _require_pem(cert, "certificate", "-----BEGIN CERTIFICATE-----")
    _require_pem(key, "private key", "PRIVATE KEY-----")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        # A password callback, so an encrypted key fails here instead of prompting on a terminal.
        context.load_cert_chain(cert, key, password=_no_password(key))
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ConfigError(f"TLS key {key} does not match the certificate {cert} (tls_key / --tls-key "
                              "must be the private key of tls_cert / --tls-cert)") from None
        if "PEM lib" in str(exc):  # OpenSSL's whole explanation for a damaged PEM body
            raise ConfigError(f"TLS certificate {cert} or key {key} is damaged: OpenSSL cannot parse "
                              "its PEM contents") from None
        raise ConfigError(f"cannot load TLS certificate {cert} with key {key}: {exc.reason or exc}") from None
    return context


def _require_pem(path: Path, what: str, marker: str) -> None:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read TLS {what} {path}: {exc.strerror or exc}") from None
    if marker.encode() not in text:
        raise ConfigError(f"TLS {what} {path} is not a PEM {what} (no '{marker}' line)")


def _no_password(key: Path) -> Callable[[], bytes]:
    def refuse() -> bytes:
        raise ConfigError(f"TLS private key {key} is encrypted; give the controller an unencrypted key "
                          "(readable only by its user)")
    return refuse

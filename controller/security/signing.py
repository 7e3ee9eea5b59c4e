"""HMAC-SHA256 signatures of critical requests: canonical string, client helper, verifier with replay cache.

A critical request carries three headers:

    X-Tpmon-Timestamp: 1700000000                      (Unix seconds, an integer)
    X-Tpmon-Nonce:     q3J8cF0w-lbT3mU2x9yZAg         (16-64 characters of A-Z a-z 0-9 _ -, new per request)
    X-Tpmon-Signature: 5d41402abc4b2a76b9719d911017c592...  (64 lowercase hex digits)

The signature is HMAC-SHA256, keyed with the signing secret (the content of the controller's
`signing.secret` file with surrounding whitespace removed, used as bytes as it is, not
hex-decoded), over the canonical string: five lines joined by "\\n", no trailing newline:

    POST                                   the method, upper case
    /api/v1/batch/apply-settings?dry=1     the request target exactly as sent: path and query, still percent-encoded
    1700000000                             the X-Tpmon-Timestamp value
    q3J8cF0w-lbT3mU2x9yZAg                 the X-Tpmon-Nonce value
    e3b0c44298fc1c149afbf4c8996fb924...    SHA-256 of the body bytes, lowercase hex (this one: an empty body)

The controller refuses a timestamp more than `signature_max_age_s` (default 300) away from its
own clock, and a nonce it has already accepted within that window; a nonce is remembered only
once its request verified, so unsigned noise cannot fill the cache.
"""
from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping

TIMESTAMP_HEADER = "X-Tpmon-Timestamp"
NONCE_HEADER = "X-Tpmon-Nonce"
SIGNATURE_HEADER = "X-Tpmon-Signature"
HEADERS = (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)

_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")


class SignatureRejected(Exception):
    """The message is the reason given to the client."""


def canonical_string(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    """The text that is signed (see the module docstring)."""
    return "\n".join((method.upper(), path, timestamp, nonce, hashlib.sha256(body).hexdigest()))


def signature(secret: bytes, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    """HMAC-SHA256 of the canonical string, lowercase hex."""
    message = canonical_string(method, path, timestamp, nonce, body).encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def new_nonce() -> str:
    """22 URL-safe characters from 16 random bytes."""
    return secrets.token_urlsafe(16)


def sign(secret: bytes, method: str, path: str, body: bytes, now: float | None = None,
         nonce: str | None = None) -> dict[str, str]:
    """The headers that make this request verify."""
    timestamp = str(int(time.time() if now is None else now))
    nonce = new_nonce() if nonce is None else nonce
    return {TIMESTAMP_HEADER: timestamp, NONCE_HEADER: nonce,
            SIGNATURE_HEADER: signature(secret, method, path, timestamp, nonce, body)}


def signed_headers(secret: bytes, method: str, url_path: str, body: bytes | str = b"") -> dict[str, str]:
    """Client helper: the three headers for `method url_path` with `body`, signed now with a fresh nonce.

    `url_path` is the path and query exactly as the request will send them (e.g.
    "/api/v1/batch/apply-settings"); a str body is signed as its UTF-8 bytes.
    """
    data = body.encode("utf-8") if isinstance(body, str) else body
    return sign(secret, method, url_path, data)


class RequestVerifier:
    """Checks signatures against one secret and remembers accepted nonces for the freshness window."""

    def __init__(self, secret: bytes, max_age_s: float, clock: Callable[[], float] = time.time,
                 max_nonces: int = 100_000) -> None:
        self.secret, self.max_age_s, self.clock = secret, max_age_s, clock
        self.max_nonces = max_nonces
        self._seen: set[str] = set()
        self._expiry: list[tuple[float, str]] = []  # heap of (when the nonce may be forgotten, nonce)

    def __len__(self) -> int:
        """Nonces currently remembered."""
        return len(self._seen)

    def verify(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> None:
        """Raise SignatureRejected unless the headers sign exactly this request, fresh and unreplayed."""
        timestamp, nonce, given = self._headers(headers)
        now = self.clock()
        if abs(now - int(timestamp)) > self.max_age_s:
            raise SignatureRejected(f"stale or future timestamp: {TIMESTAMP_HEADER} {timestamp} is more than "
                                    f"{self.max_age_s:g} s away from the controller's clock ({int(now)})")
        expected = signature(self.secret, method, path, timestamp, nonce, body)
        if not hmac.compare_digest(expected, given.lower()):
            raise SignatureRejected("signature does not match this request (method, path and query as sent, "
                                    "timestamp, nonce and body must be signed exactly; see `tpmon sign`)")
        self._remember(nonce, int(timestamp), now)

    @staticmethod
    def _headers(headers: Mapping[str, str]) -> tuple[str, str, str]:
        values = [headers.get(name) for name in HEADERS]
        missing = [name for name, value in zip(HEADERS, values) if not value]
        if missing:
            noun = "header" if len(missing) == 1 else "headers"
            raise SignatureRejected(f"missing {noun} {', '.join(missing)}: this request must be signed "
                                    "(see `tpmon sign`)")
        timestamp, nonce, given = (v.strip() for v in values)
        if not _TIMESTAMP.fullmatch(timestamp):
            raise SignatureRejected(f"{TIMESTAMP_HEADER} must be whole Unix seconds")
        if not _NONCE.fullmatch(nonce):
            raise SignatureRejected(f"{NONCE_HEADER} must be 16-64 characters of A-Z, a-z, 0-9, _ and -")
        if not _SIGNATURE.fullmatch(given):
            raise SignatureRejected(f"{SIGNATURE_HEADER} must be 64 hex digits (HMAC-SHA256)")
        return timestamp, nonce, given

    def _remember(self, nonce: str, timestamp: int, now: float) -> None:
        """Refuse a nonce seen within the window; else keep it until its timestamp can no longer pass."""
        self._forget_expired(now)
        if nonce in self._seen:
            raise SignatureRejected(f"replayed nonce: {NONCE_HEADER} was already used within the last "
                                    f"{self.max_age_s:g} s; sign each request anew")
        if len(self._seen) >= self.max_nonces:
            # Fail closed: forgetting a live nonce would let its request be replayed.
            raise SignatureRejected("too many signed requests within the freshness window; retry later")
        self._seen.add(nonce)
        heapq.heappush(self._expiry, (timestamp + self.max_age_s, nonce))

    def _forget_expired(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            self._seen.discard(heapq.heappop(self._expiry)[1])

"""HMAC-SHA256 signatures of critical requests (INTERFACE STUB: helper replaces the body)."""
from __future__ import annotations

import time
from typing import Callable, Mapping

TIMESTAMP_HEADER = "X-Tpmon-Timestamp"
NONCE_HEADER = "X-Tpmon-Nonce"
SIGNATURE_HEADER = "X-Tpmon-Signature"


class SignatureRejected(Exception):
    """The message is the reason given to the client."""


def sign(secret: bytes, method: str, path: str, body: bytes, now: float | None = None,
         nonce: str | None = None) -> dict[str, str]:
    """The headers that make this request verify."""
    raise NotImplementedError


class RequestVerifier:
    def __init__(self, secret: bytes, max_age_s: float, clock: Callable[[], float] = time.time) -> None:
        self.secret, self.max_age_s, self.clock = secret, max_age_s, clock

    def verify(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> None:
        """Raise SignatureRejected unless the headers sign exactly this request, fresh and unreplayed."""
        raise SignatureRejected("request signing is not implemented yet")

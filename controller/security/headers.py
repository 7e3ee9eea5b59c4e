"""Security headers and CORS (INTERFACE STUB: helper replaces the body, keeps the signatures)."""
from __future__ import annotations

from typing import Iterable

from aiohttp import web


class SecurityHeaders:
    def __init__(self, cors_origins: Iterable[str]) -> None:
        self.cors_origins = frozenset(cors_origins)

    def apply(self, request: web.Request, response: web.StreamResponse) -> None:
        """Add the security headers (and CORS headers for a whitelisted Origin) to `response`."""

    def preflight(self, request: web.Request) -> web.Response:
        """Answer an OPTIONS preflight: 204 with CORS headers for a whitelisted origin, else 403."""
        return web.Response(status=403)

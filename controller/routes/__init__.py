"""HTTP routes grouped by API area; each module has `setup_routes(app)`."""
from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_PREFIXES = ("/api/v1", "/api")  # canonical first; /api/ for clients written against the plan


def add_api_route(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Register `path` under every API prefix (GET also answers HEAD)."""
    for prefix in API_PREFIXES:
        app.router.add_route(method, prefix + path, handler)

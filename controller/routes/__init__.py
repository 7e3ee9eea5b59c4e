"""HTTP routes grouped by API area; each module has `setup_routes(app)` and declares `Endpoint`s.

An `Endpoint` is the one declaration of a route: the handler, who may call it (permission),
whether it changes something (write rate limit, audit), whether it must be signed, and the
request and response definitions the OpenAPI document is generated from. The middleware
reads the same declaration, so a route cannot be served without its security settings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import web

from controller.security.principal import Permission

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_PREFIXES = ("/api/v1", "/api")  # canonical first; /api/ for clients written against the plan


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str                         # under the API prefix, e.g. "/config/knobs/{stationId}/{extension}"
    handler: Handler
    summary: str
    permission: Permission | None     # None: open (health, metrics): must reveal nothing sensitive
    write: bool = False               # counts against the write rate limit
    signed: bool = False              # critical: needs an HMAC-SHA256 signature (see security/signing.py)
    tags: tuple[str, ...] = ()
    prefixed: bool = True             # False: served at `path` exactly (e.g. /metrics), not under /api
    # Request and response definitions for validation and the OpenAPI document (see controller/api/).
    openapi: dict[str, Any] = field(default_factory=dict)


ENDPOINTS = web.AppKey("endpoints", dict)  # aiohttp route object -> Endpoint


def add_endpoint(app: web.Application, endpoint: Endpoint) -> None:
    """Register `endpoint` under every API prefix (GET also answers HEAD)."""
    table = app.setdefault(ENDPOINTS, {})
    paths = [prefix + endpoint.path for prefix in API_PREFIXES] if endpoint.prefixed else [endpoint.path]
    for path in paths:
        route = app.router.add_route(endpoint.method, path, endpoint.handler)
        table[route] = endpoint
        if endpoint.method == "GET":
            for head in app.router.routes():
                if head.method == "HEAD" and head.resource is route.resource:
                    table[head] = endpoint


def endpoints(app: web.Application) -> list[Endpoint]:
    """Every declared endpoint once, in registration order."""
    unique = {id(e): e for e in app.get(ENDPOINTS, {}).values()}  # by identity: fields may be unhashable
    return list(unique.values())

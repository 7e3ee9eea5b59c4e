"""HTTP routes grouped by API area; each module has `setup_routes(app)` and declares `Endpoint`s.

An `Endpoint` is the one declaration of a route: the handler, who may call it (permission),
whether it changes something (write rate limit, audit), whether it must be signed, and the
request and response definitions the OpenAPI document is generated from. The middleware
reads the same declaration, so a route cannot be served without its security settings, and
add_endpoint puts the declared query and body models in front of the handler, so a route
cannot take input its document does not describe.

Declaring a route with input and output (the handler reads `query_of(request, HistoryQuery)`
or `body_of(request, KnobChange)` from controller.http.params):

    add_endpoint(app, Endpoint("GET", "/snapshots/history", get_history, "History of one point",
                               Permission.READ_METRICS, tags=("history",), query=HistoryQuery,
                               responses={200: Reply("Points in time order", History)}, errors=(404,)))

400 (query or body), 401/403/429 (any permission), 413 (any body) and 304 (`cached`) are
documented from the declaration itself; `errors` adds the statuses only the handler knows.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from controller.app_keys import ENDPOINTS
from controller.http.params import validating
from controller.security.principal import Permission

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_PREFIXES = ("/api/v1", "/api")  # canonical first; /api/ for clients written against the plan


@dataclass(frozen=True)
class Reply:
    """One documented answer: a JSON body described by a pydantic model, or another media type's schema."""
    description: str
    model: type[BaseModel] | None = None       # JSON body (application/json)
    media_type: str = "application/json"
    schema: Mapping[str, Any] | None = field(default=None, compare=False)  # a non-model body, e.g. text/plain


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
    # Input and output, for validation and the OpenAPI document (controller/api/):
    responses: Mapping[int, Reply] = field(default_factory=dict, compare=False)  # at least the success answer
    query: type[BaseModel] | None = None       # query parameters (None: takes none; any given is a 400)
    body: type[BaseModel] | None = None        # JSON request body, validated before the handler runs
    body_required: bool = True                 # False: an empty body is the body model's defaults
    # Regexes of {segments} for routing only (the document shows plain {name}): /alerts/{alertId} must not
    # swallow /alerts/configure, so a method that path lacks is a 405 there, not a lookup of alert 'configure'.
    route_patterns: Mapping[str, str] = field(default_factory=dict, compare=False)
    path_params: type[BaseModel] | None = None  # documents the {segments}; the handler resolves them (404/403)
    errors: tuple[int, ...] = ()               # error statuses only the handler knows (404 unknown point, 409 …)
    cached: bool = False                       # served by routes.cached: ETag, If-None-Match -> 304, gzip
    description: str = ""                      # more than the summary, for the document
    # True: the handler admits its caller itself, with the same verifier, limiter and audit (a WebSocket
    # upgrade, whose token may come as ?token= or a first message, since browsers cannot set headers).
    authenticates: bool = False




def add_endpoint(app: web.Application, endpoint: Endpoint) -> None:
    """Register `endpoint` under every API prefix (only its method: HEAD is not served, and 405 says so)."""
    table = app.setdefault(ENDPOINTS, {})
    handler = validating(endpoint.handler, endpoint.query, endpoint.body, endpoint.body_required)
    for path in paths_of(endpoint):
        table[app.router.add_route(endpoint.method, routed(path, endpoint.route_patterns), handler)] = endpoint


def routed(path: str, patterns: Mapping[str, str]) -> str:
    """`path` with each `{name}` given a pattern written `{name:regex}`, as aiohttp's router takes it."""
    for name, regex in patterns.items():
        path = path.replace("{" + name + "}", "{" + name + ":" + regex + "}")
    return path


def paths_of(endpoint: Endpoint) -> list[str]:
    """Where `endpoint` is served, canonical path first."""
    return [prefix + endpoint.path for prefix in API_PREFIXES] if endpoint.prefixed else [endpoint.path]


def endpoints(app: web.Application) -> list[Endpoint]:
    """Every declared endpoint once, in registration order."""
    unique = {id(e): e for e in app.get(ENDPOINTS, {}).values()}  # by identity: fields may be unhashable
    return list(unique.values())

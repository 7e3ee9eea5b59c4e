"""The request middleware: trace ids, the error envelope, timing, metrics and access logs.

One middleware rather than two nested ones: every layer is a coroutine frame on every
request, and the snapshot endpoint's budget is a few microseconds of Python per request.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from controller.app_keys import ENDPOINTS, SERVICES
from controller.http import logs
from controller.http.errors import CODES, ApiError, error_response
from controller.security.guard import PRINCIPAL, RATE_HEADERS

log = logging.getLogger("tpmon.controller.http")
access = logging.getLogger("tpmon.controller.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SLOW_REQUEST_SECONDS = 0.1  # a read slower than this is logged at INFO (the plan's budget is 50 ms)


def route_label(request: web.Request) -> str:
    """The route template (`/api/v1/config/knobs/{stationId}/{extension}`), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    trace = logs.incoming_trace_id(request.headers)
    trace_token, span_token = logs.trace_id.set(trace), logs.span_id.set(logs.new_span_id())
    started = time.perf_counter()
    response: web.StreamResponse | None = None
    try:
        if request.method == "OPTIONS":  # CORS preflight: answered before routing (no route has OPTIONS)
            response = request.app[SERVICES].headers.preflight(request)
        else:
            response = await _enveloped(request, handler)
        response.headers["X-Trace-Id"] = trace
        request.app[SERVICES].headers.apply(request, response)
        return response
    finally:
        elapsed = time.perf_counter() - started
        status = response.status if response is not None else 500
        if status != 101:  # a WebSocket ends here when it closes: its lifetime is no request's latency
            request.app[SERVICES].telemetry.observe_request(route_label(request), request.method, status, elapsed)
        level = _access_level(request.method, status, elapsed)
        if access.isEnabledFor(level):
            principal = request.get(PRINCIPAL)
            access.log(level, "%s %s %d", request.method, request.path, status, extra={"metadata": {
                "method": request.method, "path": request.path, "duration": round(elapsed * 1000, 3),
                "statusCode": status, "userId": principal.subject if principal else None}})
        logs.trace_id.reset(trace_token)
        logs.span_id.reset(span_token)


def _access_level(method: str, status: int, elapsed: float) -> int:
    """INFO for changes, errors and slow requests; DEBUG for fast successful reads.

    Dashboards poll the snapshot several times a second each: logging every such GET at
    INFO would cost about 40% of the endpoint's throughput and bury the lines that matter.
    Every request is still counted and timed in /metrics; log_level = "DEBUG" shows them all.
    """
    if method not in ("GET", "HEAD") or status >= 400 or elapsed >= SLOW_REQUEST_SECONDS:
        return logging.INFO
    return logging.DEBUG


async def _enveloped(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Admit the request, run it; every failure leaves as the JSON envelope (unexpected: a 500 with the trace id)."""
    try:
        endpoint = request.app[ENDPOINTS].get(request.match_info.route)
        if endpoint is not None and not endpoint.authenticates:
            principal = request.app[SERVICES].guard.admit(request, endpoint)
            if endpoint.signed and principal is not None:
                await request.app[SERVICES].guard.verify_signature(request, principal)
        response = await handler(request)
        rate_headers = request.get(RATE_HEADERS)
        if rate_headers:
            response.headers.update(rate_headers)
        return response
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, CODES.get(exc.status, "error"), _http_message(request, exc),
                              headers=headers)
    except Exception:
        trace = logs.trace_id.get() or ""
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error",
                              f"internal error; quote trace id {trace} when reporting it", traceId=trace)


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such endpoint: {request.method} {request.path} (see GET /api/v1/catalog and the README)"
    if exc.status == 405:
        return f"method {request.method} is not allowed on {request.path}; allowed: {exc.headers.get('Allow', '')}"
    if exc.status == 413:
        return "the request body is too large"
    return exc.reason

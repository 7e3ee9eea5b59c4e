"""GET /api/v1/health in the plan's shape, and GET /metrics (Prometheus exposition)."""
from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.app_keys import SERVICES
from controller.clock import iso_ms
from controller.health.models import Health
from controller.http.endpoint import Endpoint, Reply, add_endpoint
from controller.http.errors import json_response
from controller.live.state import Status
from shared.version import VERSION

HISTORY_BACKLOG = 10_000  # samples waiting for the history writer (~1 min of 24 points): it is failing or slow
STALE_SNAPSHOT_TICKS = 10  # a snapshot older than this many ticks means the build loop is stuck


def health_status(app: web.Application) -> tuple[str, list[str]]:
    """healthy | degraded | unhealthy, with the reasons.

    - unhealthy: the controller cannot do its job: the agent link's receive loop is not
      running, the config store is closed, or the snapshot is older than 10 ticks (the
      build loop is stuck). Answered with HTTP 503 so a load balancer can act on it.
    - degraded: it works, but not every configured point is `active` (an agent is
      offline, a point is stale, or agents have not connected yet), or an agent refused
      a knob set. HTTP 200.
    - healthy: all of the above fine and every configured point active. HTTP 200.
    """
    reasons: list[str] = []
    if not app[SERVICES].link.running:
        reasons.append("agent link is not running")
    if app[SERVICES].desired.open_handles == 0:
        reasons.append("config store is closed")
    cache, clock = app[SERVICES].snapshots, app[SERVICES].clock
    max_age = STALE_SNAPSHOT_TICKS * app[SERVICES].settings.tick_ms / 1000
    if cache.full is None or clock.wall() - cache.full.built_at > max_age:
        reasons.append("snapshot is not being rebuilt")
    if reasons:
        return "unhealthy", reasons
    counts = app[SERVICES].live.status_counts()
    not_active = len(app[SERVICES].live.points) - counts[Status.ACTIVE]
    if not_active:
        reasons.append(f"{not_active} of {len(app[SERVICES].live.points)} points not active")
    if app[SERVICES].history.queued > HISTORY_BACKLOG:
        reasons.append(f"history writer is behind: {app[SERVICES].history.queued} samples waiting")
    if app[SERVICES].knob_sync.rejected:
        reasons.append(f"{len(app[SERVICES].knob_sync.rejected)} points refused their knob set")
    return ("degraded" if reasons else "healthy"), reasons


def health_document(app: web.Application) -> dict[str, Any]:
    live, link, ingest = app[SERVICES].live, app[SERVICES].link, app[SERVICES].ingest
    status, reasons = health_status(app)
    active = [p for p in live.points if live.status(p) is Status.ACTIVE]
    return {
        "status": status,
        "uptime": round((app[SERVICES].clock.monotonic() - app[SERVICES].started_at) * 1000),
        "activeStations": len({p.station for p in active}),
        "activeExtensions": len(active),
        "lastDataUpdate": iso_ms(live.last_sample_wall),
        "systemMetrics": {
            "apiLatency": round(app[SERVICES].telemetry.recent_latency_ms(), 3),
            "dbConnections": app[SERVICES].desired.open_handles + app[SERVICES].history.open_handles,
            "cacheHitRate": round(app[SERVICES].snapshots.hit_ratio, 4),
            "queueDepth": app[SERVICES].knob_sync.outstanding(),
        },
        "version": VERSION,
        "reasons": reasons,
        "points": {s.value: n for s, n in live.status_counts().items()},
        "link": {"endpoint": link.endpoint, "security": "curve" if link.curve else "insecure",
                 "handshakesRefused": link.refused, "framesReceived": dict(link.received),
                 "framesMalformed": link.malformed, "messagesRejected": ingest.rejected,
                 "sequenceGaps": live.total_gaps()},
    }


async def get_health(request: web.Request) -> web.Response:
    doc = health_document(request.app)
    return json_response(doc, status=503 if doc["status"] == "unhealthy" else 200)


async def get_metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[SERVICES].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup_routes(app: web.Application) -> None:
    # Open to probes and Prometheus: counts and states only, no knob values, keys or client data.
    add_endpoint(app, Endpoint("GET", "/health", get_health, "Service health in the plan's shape", None,
                               tags=("health",),
                               responses={200: Reply("healthy or degraded", Health),
                                          503: Reply("unhealthy: the link loop is down, the store closed or the "
                                                     "snapshot not rebuilt for 10 ticks", Health)},
                               description=health_status.__doc__ or ""))
    add_endpoint(app, Endpoint("GET", "/metrics", get_metrics, "Prometheus exposition of the controller", None,
                               tags=("health",), prefixed=False,
                               responses={200: Reply("Prometheus text format 0.0.4", media_type="text/plain",
                                                     schema={"type": "string"})}))

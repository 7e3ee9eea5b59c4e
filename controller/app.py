"""The aiohttp application factory: services created once, resources opened in cleanup_ctx."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import zmq.asyncio
from aiohttp import web
from prometheus_client import CollectorRegistry

from controller import keys, middleware
from controller.alerts.service import AlertService
from controller.clock import Clock, SystemClock
from controller.batch import BatchApplier
from controller.config_store import ConfigStore
from controller.documents import DocumentFile
from controller.events import EventBus
from controller.history.store import HistoryStore
from controller.ingest import Ingest
from controller.knob_history import KnobHistory
from controller.knob_sync import KnobSync
from controller.link import AgentLink, AgentUnreachable
from controller.link_auth import load_server_keys
from controller.live import LiveState
from controller.routes import ENDPOINTS, batch, catalog, config, health, knob_history, openapi, snapshots, templates
from controller.routes import alerts as alert_routes, thresholds
from controller.routes import history as history_routes
from controller.security import secret_files
from controller.security.audit import AuditLog
from controller.security.guard import Guard
from controller.security.headers import SecurityHeaders
from controller.security.ratelimit import RateLimiter
from controller.security.signing import RequestVerifier
from controller.security.tokens import TokenKeys, TokenVerifier
from controller.settings import ControllerSettings
from controller.snapshot import SnapshotCache, render
from controller.stream.service import setup_stream
from controller.telemetry import ControllerMetrics
from controller.templates import TemplateStore
from shared.protocol import heartbeat
from shared.topology import Topology

log = logging.getLogger("tpmon.controller")


def create_app(settings: ControllerSettings, *, registry: CollectorRegistry | None = None,
               clock: Clock | None = None, zmq_context: zmq.asyncio.Context | None = None) -> web.Application:
    clock = clock or SystemClock()
    registry = registry if registry is not None else CollectorRegistry()
    topology = Topology(settings.stations)
    # client_max_size: a full knob set is ~4 KB; a body near a megabyte is not an API call (413).
    app = web.Application(middlewares=[middleware.observe], client_max_size=settings.max_body_bytes)
    app[ENDPOINTS] = {}

    live = LiveState(topology, clock, settings.stale_after_ms / 1000, settings.offline_after_ms / 1000)
    store = ConfigStore(settings.store_path, topology, clock)
    link = AgentLink(settings.link_endpoint, zmq_context)
    events = EventBus()
    metrics_history = HistoryStore.from_settings(settings, clock)  # raw/1m/5m/1h tiers; knob history's mean_between
    changes = KnobHistory(DocumentFile(settings.data_file("knob_history.json")), topology, clock, metrics_history,
                          window_s=settings.knob_history_window_s, settle_s=2 * settings.history_flush_ms / 1000 + 1,
                          max_changes=settings.knob_history_max_changes)
    knobs = KnobSync(store, live, link.send_to_station, clock, settings.ack_timeout_ms / 1000, changes, events)
    metrics = ControllerMetrics(registry)
    ingest = Ingest(topology, live, knobs, link, on_rejected=lambda _: metrics.link_rejected.inc())
    ingest.attach()
    ingest.sample_observers.append(metrics_history.append)
    link.on_malformed = lambda _: metrics.link_malformed.inc()
    link.on_received = lambda name: metrics.link_frames.labels(name).inc()
    cache = SnapshotCache(topology, live, clock)
    metrics.bind(lambda: cache.hit_ratio, live.total_gaps, knobs.outstanding)
    metrics.bind_history(lambda: metrics_history.stats, lambda: metrics_history.queued)

    app[keys.SETTINGS], app[keys.TOPOLOGY], app[keys.CLOCK] = settings, topology, clock
    app[keys.STARTED_AT] = clock.monotonic()
    app[keys.LIVE], app[keys.STORE], app[keys.KNOBS], app[keys.LINK] = live, store, knobs, link
    app[keys.INGEST], app[keys.SNAPSHOTS], app[keys.METRICS], app[keys.REGISTRY] = ingest, cache, metrics, registry
    app[keys.CATALOG] = render(catalog.catalog_document(topology), clock.wall())
    app[keys.EVENTS] = events
    app[keys.KNOB_HISTORY], app[keys.BATCH] = changes, BatchApplier(knobs, clock.wall)
    app[keys.TEMPLATES] = TemplateStore(DocumentFile(settings.data_file("templates.json")), clock.wall)
    app[keys.LAST_STATUS] = {}
    app[keys.HISTORY] = metrics_history
    app[keys.AUDIT] = audit = AuditLog(settings.audit_log_path, clock.wall)
    app[keys.GUARD] = security_guard(settings, audit, clock)
    app[keys.HEADERS] = SecurityHeaders(settings.cors_origins, hsts=settings.tls)
    app[keys.ALERTS] = alerts = AlertService(topology, clock, app[keys.EVENTS], settings.data_file("alert_rules.json"),
                                             settings.data_file("alerts.json"), settings.alerts_keep_resolved,
                                             settings.alerts_keep_resolved_days)
    ingest.sample_observers.append(alerts.observe)

    for area in (snapshots, config, knob_history, templates, batch, catalog, health, openapi):
        area.setup_routes(app)
    setup_stream(app)  # /api/v1/ws and /socket.io/, fed by _tick
    thresholds.setup_routes(app)
    alert_routes.setup_routes(app)
    history_routes.setup_routes(app)
    app.cleanup_ctx.append(_audit_ctx)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_history_ctx)
    app.cleanup_ctx.append(_alerts_ctx)
    app.cleanup_ctx.append(_changes_ctx)
    app.cleanup_ctx.append(_link_ctx)
    app.cleanup_ctx.append(_loops_ctx)
    return app


def security_guard(settings: ControllerSettings, audit: AuditLog, clock: Clock) -> Guard:
    """The guard from settings: secrets are read (HS and signing secrets created on first start)."""
    verifier = None
    if settings.auth:
        secret = secret_files.load_or_create(settings.jwt_secret_path) if settings.jwt_algorithm.startswith("HS") else None
        public = Path(settings.jwt_public_key_file) if settings.jwt_public_key_file else None
        verifier = TokenVerifier(TokenKeys.from_files(settings.jwt_algorithm, secret, public), clock.wall)
    else:
        log.warning("authentication is OFF (auth = false): every caller is an admin of every station")
    limiter = RateLimiter(settings.rate_limit_per_minute, settings.write_rate_limit_per_minute, clock.monotonic)
    signatures = RequestVerifier(secret_files.load_or_create(settings.signing_secret_path),
                                 settings.signature_max_age_s, clock.wall)
    return Guard(verifier, limiter, signatures, audit)


async def _audit_ctx(app: web.Application) -> AsyncIterator[None]:
    app[keys.AUDIT].open()
    yield
    app[keys.AUDIT].close()


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[keys.STORE].open()
    yield
    await app[keys.STORE].close()


async def _history_ctx(app: web.Application) -> AsyncIterator[None]:
    """The history file opened (pending rows of open spans taken back) before samples or knob history need it."""
    await asyncio.to_thread(app[keys.HISTORY].open)
    yield
    await asyncio.to_thread(app[keys.HISTORY].close)


async def _changes_ctx(app: web.Application) -> AsyncIterator[None]:
    """Knob history (after the config store: it drops records of versions the store never got) and templates."""
    history, store = app[keys.KNOB_HISTORY], app[keys.STORE]
    await history.open(lambda point: store.get(point).version)
    await app[keys.TEMPLATES].open()
    history.start_filling()
    yield
    await app[keys.TEMPLATES].close()
    await history.close()


async def _alerts_ctx(app: web.Application) -> AsyncIterator[None]:
    """Rules and alerts loaded (alerts active at a crash fire again) before the link brings samples."""
    await app[keys.ALERTS].open()
    yield
    await app[keys.ALERTS].close()


async def _link_ctx(app: web.Application) -> AsyncIterator[None]:
    """Bind the agent link: CURVE with the keys and allow-list (missing ones stop the start), or plaintext if insecure."""
    link, settings = app[keys.LINK], app[keys.SETTINGS]
    link.start(None if settings.insecure else load_server_keys(settings), app[keys.AUDIT])
    log.info("agent link bound on %s", link.endpoint)
    yield
    await link.close()


async def _loops_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    app[keys.SNAPSHOTS].build()  # so the first request never waits for a tick
    tasks = [asyncio.create_task(_every(settings.tick_ms / 1000, lambda: _tick(app)), name="tpmon-snapshot"),
             asyncio.create_task(_every(settings.heartbeat_ms / 1000, lambda: _heartbeat(app)), name="tpmon-heartbeat")]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _every(interval: float, step: Callable[[], Awaitable[None]]) -> None:
    """Run `step` on a fixed schedule (no drift); a failing step is logged, the schedule goes on."""
    loop = asyncio.get_running_loop()
    due = loop.time()
    while True:
        try:
            await step()
        except Exception:
            log.exception("periodic task failed")
        due += interval
        now = loop.time()
        if due < now:  # fell behind (a long GC pause or a suspended host): skip, don't burst
            due = now + interval
        await asyncio.sleep(due - now)


async def _tick(app: web.Application) -> None:
    """Build the snapshot (about a millisecond for 24 points, so on the loop) and update gauges."""
    cache, metrics = app[keys.SNAPSHOTS], app[keys.METRICS]
    cache.build()
    metrics.snapshot_build.observe(cache.last_build_seconds)
    for status, count in cache.status_counts.items():
        metrics.points.labels(status.value).set(count)
    _publish_status_changes(app)
    app[keys.STREAM].on_tick()  # metrics-update to every due subscription, from the snapshot just built


def _publish_status_changes(app: web.Application) -> None:
    """A `status-change` event for every point whose status differs from the last tick's."""
    live, seen = app[keys.LIVE], app[keys.LAST_STATUS]
    for point in live.points:
        status = live.status(point).value
        previous = seen.get(point)
        if status != previous:
            seen[point] = status
            if previous is not None:
                app[keys.EVENTS].publish("status-change", {"station": point.station, "extension": point.extension,
                                                           "status": status, "previous": previous})


async def _heartbeat(app: web.Application) -> None:
    """Tell every agent we have heard from that we are alive; a refused send means it is gone."""
    link, live, clock = app[keys.LINK], app[keys.LIVE], app[keys.CLOCK]
    msg = heartbeat(clock.wall())
    for station in link.known_stations():
        try:
            await link.send_to_station(station, msg)
        except AgentUnreachable:
            live.agent_gone(station)

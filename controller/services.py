"""Every long-lived service of the controller, built once and wired here.

`build_services` is the one place that knows how the parts connect: which observers a
received sample reaches, which store backs which service, which figures the telemetry
reads. Handlers reach a service through `request.app[SERVICES]`; nothing else holds them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import zmq.asyncio
from prometheus_client import CollectorRegistry

from controller.alerts.service import AlertService
from controller.catalog.document import catalog_document
from controller.clock import Clock
from controller.documents import DocumentFile
from controller.events import EventBus
from controller.history.store import HistoryStore
from controller.http.openapi import ApiDocument
from controller.knobs.batch import BatchApplier
from controller.knobs.changes import KnobChangeLog
from controller.knobs.desired import DesiredKnobStore
from controller.knobs.sync import KnobSync
from controller.knobs.templates import TemplateStore
from controller.link.ingest import Ingest
from controller.link.router import AgentLink
from controller.live.snapshot import Rendered, SnapshotCache, render
from controller.live.state import LiveState
from controller.optimizer.replay import ReplayClient
from controller.optimizer.service import OptimizerService
from controller.security import secret_files
from controller.security.audit import AuditLog
from controller.security.guard import Guard
from controller.security.headers import SecurityHeaders
from controller.security.ratelimit import RateLimiter
from controller.security.signing import RequestVerifier
from controller.security.tokens import TokenKeys, TokenVerifier
from controller.settings import ControllerSettings
from controller.stream.client import StreamLimits
from controller.stream.hub import StreamHub
from controller.stream.telemetry import StreamCollector
from controller.telemetry import ControllerTelemetry
from shared.topology import Point, Topology

log = logging.getLogger("tpmon.controller")


@dataclass
class Services:
    settings: ControllerSettings
    topology: Topology
    clock: Clock
    started_at: float                 # monotonic time the services were built (uptime)
    registry: CollectorRegistry       # Prometheus registry of /metrics
    telemetry: ControllerTelemetry    # the controller's own figures on it
    events: EventBus                  # knob-changed, alert, status-change, … to the stream hub
    audit: AuditLog
    guard: Guard                      # authentication, rate limits, permissions, signatures
    headers: SecurityHeaders          # security headers and CORS on every response
    link: AgentLink                   # the ZeroMQ ROUTER the agents connect to
    ingest: Ingest                    # agent messages -> live state, observers, knob sync
    live: LiveState                   # newest sample and status of every point
    snapshots: SnapshotCache          # the snapshot document, built once per tick
    catalog: Rendered                 # the catalog document, rendered once
    history: HistoryStore             # metric history: raw/1m/5m/1h tiers (SQLite)
    alerts: AlertService              # thresholds, alert rules, the engine, alerts
    desired: DesiredKnobStore         # desired knob set of every point (what the controller wants)
    knob_changes: KnobChangeLog       # every change of desired knobs, with metrics before and after
    knob_sync: KnobSync               # the one change path: desired -> agents, acks, pending
    templates: TemplateStore          # built-in and user configuration templates
    batch: BatchApplier               # batch apply (templates go through it too)
    stream: StreamHub                 # Socket.IO and WebSocket clients, the per-tick fan-out
    optimizer: OptimizerService       # models, what-if replays, analyses (docs/optimizer.md)
    openapi: ApiDocument              # the OpenAPI document, rendered at startup from the routes


def build_services(settings: ControllerSettings, registry: CollectorRegistry, clock: Clock,
                   zmq_context: zmq.asyncio.Context | None = None) -> Services:
    topology = Topology(settings.stations)
    telemetry = ControllerTelemetry(registry)
    events = EventBus()
    audit = AuditLog(settings.audit_log_path, clock.wall)
    live = LiveState(topology, clock, settings.stale_after_ms / 1000, settings.offline_after_ms / 1000)
    link = AgentLink(settings.link_endpoint, zmq_context)
    link.on_malformed = lambda _: telemetry.link_malformed.inc()
    link.on_received = lambda name: telemetry.link_frames.labels(name).inc()

    history = HistoryStore.from_settings(settings, clock)
    desired = DesiredKnobStore(DocumentFile(settings.store_path), topology, clock)
    knob_changes = KnobChangeLog(settings.data_file("knob_changes.sqlite"), topology, clock, history,
                                 window_s=settings.knob_history_window_s,
                                 settle_s=2 * settings.history_flush_ms / 1000 + 1,  # two flushes: on disk
                                 retention_days=settings.knob_history_retention_days,
                                 legacy_file=settings.data_file("knob_history.json"))  # imported once
    knob_sync = KnobSync(desired, live, link.send_to_station, clock, settings.ack_timeout_ms / 1000, knob_changes,
                         events, audit)
    alerts = AlertService(topology, clock, events, settings.data_file("alert_rules.json"),
                          settings.data_file("alerts.json"), settings.alerts_keep_resolved,
                          settings.alerts_keep_resolved_days)

    replay = ReplayClient(link.send_to_station, clock)
    optimizer = OptimizerService(
        topology, clock, events, registry, history, knob_changes, knob_sync, live, replay,
        settings.data_file("optimizer"), learn=settings.optimizer_learning,
        learn_interval_s=settings.optimizer_learn_interval_s, retrain_every_s=settings.optimizer_retrain_s,
        lookback_s=settings.optimizer_lookback_s, train_budget_s=settings.optimizer_train_budget_s,
        min_rows=settings.optimizer_min_rows, keep_analyses_s=settings.optimizer_keep_analyses_s,
        degraded=lambda: {Point(a["station"], a["extension"]) for a in alerts.book.active()})

    ingest = Ingest(topology, live, knob_sync, link, on_rejected=lambda _: telemetry.link_rejected.inc(),
                    on_evaluation=replay.on_evaluation)
    ingest.attach()
    ingest.sample_observers += [history.append, alerts.observe]  # cheap, on the loop, in this order

    snapshots = SnapshotCache(topology, live, clock)
    stream = StreamHub(topology, snapshots, events, clock, settings.tick_ms, StreamLimits(
        max_buffer_bytes=settings.stream_max_buffer_bytes, max_pending_events=settings.stream_max_pending_events,
        stall_timeout_s=settings.stream_stall_timeout_ms / 1000, max_subscriptions=settings.stream_max_subscriptions))
    registry.register(StreamCollector(stream))
    telemetry.bind(lambda: snapshots.hit_ratio, live.total_gaps, knob_sync.outstanding)
    telemetry.bind_history(lambda: history.stats, lambda: history.queued)

    return Services(
        settings=settings, topology=topology, clock=clock, started_at=clock.monotonic(), registry=registry,
        telemetry=telemetry, events=events, audit=audit, guard=security_guard(settings, audit, clock),
        headers=SecurityHeaders(settings.cors_origins, hsts=settings.tls), link=link, ingest=ingest, live=live,
        snapshots=snapshots, catalog=render(catalog_document(topology), clock.wall()), history=history,
        alerts=alerts, desired=desired, knob_changes=knob_changes, knob_sync=knob_sync,
        templates=TemplateStore(DocumentFile(settings.data_file("templates.json")), clock.wall),
        batch=BatchApplier(knob_sync, clock.wall), stream=stream, optimizer=optimizer, openapi=ApiDocument())


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

"""Every piece of application state, behind a typed `web.AppKey`, declared in one place."""
from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from controller.alerts.service import AlertService
from controller.api.openapi import ApiDocument
from controller.batch import BatchApplier
from controller.clock import Clock
from controller.config_store import ConfigStore
from controller.events import EventBus
from controller.history.store import HistoryStore
from controller.ingest import Ingest
from controller.knob_history import KnobHistory
from controller.knob_sync import KnobSync
from controller.link import AgentLink
from controller.live import LiveState
from controller.security.audit import AuditLog
from controller.security.guard import Guard
from controller.security.headers import SecurityHeaders
from controller.settings import ControllerSettings
from controller.snapshot import Rendered, SnapshotCache
from controller.stream.hub import StreamHub
from controller.telemetry import ControllerMetrics
from controller.templates import TemplateStore
from shared.topology import Topology

SETTINGS = web.AppKey("settings", ControllerSettings)
TOPOLOGY = web.AppKey("topology", Topology)
CLOCK = web.AppKey("clock", Clock)
STARTED_AT = web.AppKey("started_at", float)          # monotonic time the app was created
LIVE = web.AppKey("live", LiveState)
STORE = web.AppKey("store", ConfigStore)
KNOBS = web.AppKey("knobs", KnobSync)
LINK = web.AppKey("link", AgentLink)
INGEST = web.AppKey("ingest", Ingest)
SNAPSHOTS = web.AppKey("snapshots", SnapshotCache)
STREAM = web.AppKey("stream", StreamHub)              # Socket.IO and WebSocket clients, the per-tick fan-out
METRICS = web.AppKey("metrics", ControllerMetrics)
REGISTRY = web.AppKey("registry", CollectorRegistry)
CATALOG = web.AppKey("catalog", Rendered)             # the catalog document, rendered once
GUARD = web.AppKey("guard", Guard)                   # authentication, limits, permissions, signatures
HEADERS = web.AppKey("headers", SecurityHeaders)     # security headers and CORS on every response
AUDIT = web.AppKey("audit", AuditLog)
OPENAPI = web.AppKey("openapi", ApiDocument)         # the OpenAPI document, rendered at startup
EVENTS = web.AppKey("events", EventBus)              # knob-changed, alert, status-change, optimization-complete
LAST_STATUS = web.AppKey("last_status", dict)         # point -> status at the last tick (for status-change)
KNOB_HISTORY = web.AppKey("knob_history", KnobHistory)  # every change of desired knobs, with metrics before/after
TEMPLATES = web.AppKey("templates", TemplateStore)        # built-in and user configuration templates
BATCH = web.AppKey("batch", BatchApplier)                # batch apply (templates go through it too)
ALERTS = web.AppKey("alerts", AlertService)                 # thresholds, alert rules, the engine, alerts
HISTORY = web.AppKey("history", HistoryStore)            # raw/1m/5m/1h metric history (SQLite)

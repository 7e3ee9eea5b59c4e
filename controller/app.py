"""The aiohttp application: services built once, route areas registered, resources opened in order."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import zmq.asyncio
from aiohttp import web
from prometheus_client import CollectorRegistry

from controller.alerts import routes as alert_routes
from controller.alerts import threshold_routes
from controller.app_keys import SERVICES
from controller.catalog import routes as catalog_routes
from controller.clock import Clock, SystemClock
from controller.health import routes as health_routes
from controller.history import routes as history_routes
from controller.http import middleware, openapi_routes
from controller.knobs import batch_routes, change_routes, template_routes
from controller.knobs import routes as knob_routes
from controller.link.curve import load_server_keys
from controller.live import routes as snapshot_routes
from controller.optimizer import autotune_routes
from controller.optimizer import routes as optimizer_routes
from controller.periodic import PeriodicWork
from controller.services import Services, build_services
from controller.settings import ControllerSettings
from controller.stream import routes as stream_routes

log = logging.getLogger("tpmon.controller")

# Every API area, each with `setup_routes(app)`; the OpenAPI document lists them in this order.
ROUTE_AREAS = (snapshot_routes, knob_routes, change_routes, template_routes, batch_routes, catalog_routes,
               health_routes, openapi_routes, stream_routes, threshold_routes, alert_routes, history_routes,
               optimizer_routes, autotune_routes)


def create_app(settings: ControllerSettings, *, registry: CollectorRegistry | None = None, clock: Clock | None = None,
               zmq_context: zmq.asyncio.Context | None = None) -> web.Application:
    services = build_services(settings, registry if registry is not None else CollectorRegistry(),
                              clock or SystemClock(), zmq_context)
    # client_max_size: a full knob set is ~4 KB; a body near a megabyte is not an API call (413).
    app = web.Application(middlewares=[middleware.observe], client_max_size=settings.max_body_bytes)
    app[SERVICES] = services
    for area in ROUTE_AREAS:
        area.setup_routes(app)
    for context in LIFECYCLE:
        app.cleanup_ctx.append(lambda _app, context=context: context(services))
    return app


Context = Callable[[Services], AsyncIterator[None]]


async def _audit(s: Services) -> AsyncIterator[None]:
    s.audit.open()
    yield
    s.audit.close()


async def _desired(s: Services) -> AsyncIterator[None]:
    await s.desired.open()
    yield
    await s.desired.close()


async def _history(s: Services) -> AsyncIterator[None]:
    """The history file opened (pending rows of open spans taken back) before samples or knob changes need it."""
    await asyncio.to_thread(s.history.open)
    yield
    await asyncio.to_thread(s.history.close)


async def _alerts(s: Services) -> AsyncIterator[None]:
    """Rules and alerts loaded (alerts active at a crash fire again) before the link brings samples."""
    await s.alerts.open()
    yield
    await s.alerts.close()


async def _knob_changes(s: Services) -> AsyncIterator[None]:
    """Knob changes (after the desired store: records of versions it never got are dropped) and templates."""
    await s.knob_changes.open(lambda point: s.desired.get(point).version)
    await s.templates.open()
    s.knob_changes.start_filling()
    yield
    await s.templates.close()
    await s.knob_changes.close()


async def _optimizer(s: Services) -> AsyncIterator[None]:
    """Models, replay rows and analyses loaded (after history and the knob change log it reads), learning started."""
    await s.optimizer.open()
    yield
    await s.optimizer.close()


async def _link(s: Services) -> AsyncIterator[None]:
    """Bind the agent link: CURVE with the keys and allow-list (missing ones stop the start), or plaintext if insecure."""
    s.link.start(None if s.settings.insecure else load_server_keys(s.settings), s.audit)
    log.info("agent link bound on %s", s.link.endpoint)
    yield
    await s.link.close()


async def _periodic(s: Services) -> AsyncIterator[None]:
    work = PeriodicWork(s)
    work.start()
    yield
    await work.stop()


# The resources of the controller, opened in this order and closed in the reverse order.
# The rule: a store opens before anything that reads or writes it, and the agent link opens
# last but one, so no sample or acknowledgement arrives before every observer of it is open;
# the periodic work starts after the link and stops first.
LIFECYCLE: tuple[Context, ...] = (_audit, _desired, _history, _alerts, _knob_changes, _optimizer, _link, _periodic)

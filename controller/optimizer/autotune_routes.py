"""POST and GET /optimize/auto-tune: auto-tune's settings (effective at once) and every point's state."""
from __future__ import annotations

from aiohttp import web

from controller.app_keys import SERVICES
from controller.http import logs
from controller.http.endpoint import Endpoint, Reply, add_endpoint
from controller.http.errors import json_response
from controller.http.params import body_of
from controller.optimizer.autotune import AutoTuneSettings
from controller.optimizer.autotune_models import AutoTuneRequest, AutoTuneStatus
from controller.optimizer.proposal import Mode
from controller.optimizer.routes import scope_points
from controller.optimizer.targets import Goal
from controller.security.guard import client_address, principal_of
from controller.security.principal import Permission


def _visible(request: web.Request) -> list:
    principal = principal_of(request)
    return [p for p in request.app[SERVICES].topology.points if principal.sees(p.station)]


async def configure_autotune(request: web.Request) -> web.Response:
    body = body_of(request, AutoTuneRequest)
    services = request.app[SERVICES]
    scope = scope_points(request, body.scope) if body.scope is not None else None
    t, c, s = body.targets, body.targets.constraints, body.schedule
    settings = AutoTuneSettings(body.enabled, Mode(body.mode), Goal(t.primaryGoal),
                                Goal(t.secondaryGoal) if t.secondaryGoal else None, c.maxLatencyMs, c.minQualityScore,
                                c.maxPacketLoss, s.evaluationInterval / 1000, s.adjustmentCooldown / 1000,
                                s.maxAdjustmentsPerHour, scope)
    await services.optimizer.autotune.configure(settings)
    services.audit.record("optimizer.autotune", who=principal_of(request).subject, what="auto-tune settings",
                          where=client_address(request), trace=logs.trace_id.get() or "", outcome="enabled" if body.enabled else "disabled",
                          settings=settings.to_json())
    return json_response(services.optimizer.autotune.status(_visible(request)))


async def autotune_status(request: web.Request) -> web.Response:
    return json_response(request.app[SERVICES].optimizer.autotune.status(_visible(request)))


def setup_routes(app: web.Application) -> None:
    add_endpoint(app, Endpoint(
        "POST", "/optimize/auto-tune", configure_autotune, "Configure auto-tune (effective at once)",
        Permission.EXECUTE_OPTIMIZATION, write=True, tags=("optimizer",), body=AutoTuneRequest,
        responses={200: Reply("The settings now in force and every visible point's state", AutoTuneStatus)},
        errors=(403, 404),
        description="Per point in scope, every evaluationInterval, outside its cooldown and under its hourly cap: "
                    "the best supported change is applied (source optimizer), verified on the point's own metrics "
                    "and kept only if the primary goal measured better with no constraint broken; otherwise it is "
                    "rolled back (source rollback). `enabled: false` starts nothing new; a change under "
                    "verification is still verified. See docs/optimizer.md."))
    add_endpoint(app, Endpoint(
        "GET", "/optimize/auto-tune", autotune_status, "Auto-tune's settings and every visible point's state",
        Permission.EXECUTE_OPTIMIZATION, tags=("optimizer",),
        responses={200: Reply("Settings and per point: state, last change and outcome, next evaluation",
                              AutoTuneStatus)}))

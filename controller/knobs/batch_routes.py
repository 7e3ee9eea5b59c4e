"""POST /api/v1/batch/apply-settings: one set of knob changes over many points (signed), and the batch runner templates share."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from controller.app_keys import SERVICES
from controller.http import logs
from controller.http.endpoint import Endpoint, Reply, add_endpoint
from controller.http.errors import ApiError, json_response
from controller.http.params import body_of
from controller.knobs.batch import BatchOutcome, BatchRefused, Validation
from controller.knobs.batch_models import BatchOptions, BatchRequest, BatchResult, BatchTargets
from controller.knobs.changes import Attribution
from controller.security.guard import client_address, principal_of
from controller.security.principal import Permission
from shared.topology import Point


def target_points(request: web.Request, targets: BatchTargets) -> list[Point]:
    """Every (station, extension) pair named: 404 for an unknown station, 403 (the whole request) outside the token's scope."""
    topology = request.app[SERVICES].topology
    stations = list(dict.fromkeys(targets.stations))
    unknown = [s for s in stations if not topology.has_station(s)]
    if unknown:
        raise ApiError(404, f"unknown station{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                            f"(known: Station-1 … Station-{topology.station_count}); nothing was changed",
                       [{"field": "targets.stations", "problem": f"unknown station {s}"} for s in unknown])
    unseen = principal_of(request).unseen(stations)
    if unseen:
        raise ApiError(403, f"this token is not scoped to {', '.join(unseen)}; nothing was changed",
                       [{"field": "targets.stations", "problem": f"{s} is outside the token's stations"}
                        for s in unseen])
    return [Point(s, e) for s in stations for e in dict.fromkeys(targets.extensions)]


async def run_batch(request: web.Request, points: list[Point], settings: Mapping[str, Any], options: BatchOptions,
                    source: str, template_id: str | None = None) -> BatchOutcome:
    """Apply through the batch path, audit one record, and turn a strict refusal into a 400."""
    who = Attribution(principal_of(request).subject, source, options.reason or None, template_id=template_id,
                      where=client_address(request))
    audit = {"who": who.by, "where": client_address(request), "trace": logs.trace_id.get() or "",
             "source": source, "templateId": template_id, "validation": options.validation,
             "rollbackOnError": options.rollbackOnError, "settings": dict(settings), "reason": options.reason}
    try:
        outcome = await request.app[SERVICES].batch.apply(points, settings, Validation(options.validation),
                                                      options.rollbackOnError, who)
    except BatchRefused as exc:
        request.app[SERVICES].audit.record("config.batch", what=f"batch on {len(points)} point(s)", outcome="refused",
                                       problems=len(exc.problems), **audit)
        count = len(exc.problems)
        raise ApiError(400, f"{count} invalid setting{'s' if count != 1 else ''} (strict validation); "
                            "nothing was changed", exc.problems, code="validation_failed") from None
    request.app[SERVICES].audit.record("config.batch", what=f"batch {outcome.batch_id} on {len(points)} point(s)",
                                   outcome=outcome.status, batchId=outcome.batch_id,
                                   targets={t.point.id: t.status.value for t in outcome.targets}, **audit)
    return outcome


def batch_json(outcome: BatchOutcome, options: BatchOptions) -> dict[str, Any]:
    return {"batchId": outcome.batch_id, "status": outcome.status, "validation": options.validation,
            "rollbackOnError": options.rollbackOnError, "summary": outcome.summary(),
            "results": [t.to_json() for t in outcome.targets]}


async def apply_settings(request: web.Request) -> web.Response:
    body = body_of(request, BatchRequest)
    points = target_points(request, body.targets)
    outcome = await run_batch(request, points, body.settings.root, body, "batch")
    return json_response(batch_json(outcome, body))


def setup_routes(app: web.Application) -> None:
    add_endpoint(app, Endpoint(
        "POST", "/batch/apply-settings", apply_settings, "Apply knob settings to many points at once (signed)",
        Permission.WRITE_KNOBS, write=True, signed=True, tags=("batch",), body=BatchRequest, errors=(404,),
        responses={200: Reply("What happened at every target", BatchResult)},
        description="Targets are every (station, extension) pair of `targets`. Each target is validated against "
                    "its own stored set (cross-knob rules depend on it). `strict` refuses the whole request if any "
                    "setting is invalid for any target (400 listing every problem; nothing changes); `lenient` "
                    "applies what is valid and reports the rest per target. The answer comes once every agent "
                    "acknowledged or ack_timeout_ms passed; with `rollbackOnError`, any target not acknowledged "
                    "restores every changed target's previous set. Overlapping batches never interleave on a "
                    "point. Without a valid signature the answer is 401."))

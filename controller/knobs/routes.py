"""GET/POST /api/v1/config/knobs/{stationId}/{extension}: desired knobs, their version, applied state."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from controller.app_keys import SERVICES
from controller.http.endpoint import Endpoint, Reply, add_endpoint
from controller.http.errors import ApiError, json_response
from controller.http.models import PointPath
from controller.http.params import body_of, query_of
from controller.knobs.changes import Attribution
from controller.knobs.models import KnobChange, KnobChangeQuery, KnobChangeResult, KnobState
from controller.knobs.sync import InvalidKnobs
from controller.security.guard import client_address, principal_of
from controller.security.principal import Permission
from shared.topology import Point

KNOBS_PATH = "/config/knobs/{stationId}/{extension}"


def point_of(request: web.Request) -> Point:
    """The point named in the path: 404 when unknown, 403 when outside the caller's stations."""
    station, ext = request.match_info["stationId"], request.match_info["extension"]
    try:
        point = request.app[SERVICES].topology.point(station, ext)
    except KeyError as exc:
        field = "stationId" if not request.app[SERVICES].topology.has_station(station) else "extension"
        raise ApiError(404, exc.args[0], [{"field": field, "problem": exc.args[0]}]) from None
    if not principal_of(request).sees(point.station):
        raise ApiError(403, f"this token is not scoped to {point.station}",
                       [{"field": "stationId", "problem": f"{point.station} is outside the token's stations"}])
    return point


def _operator(request: web.Request) -> str:
    """Who made a change: the token's subject (the plan's `sub`), never a header the client chooses."""
    return principal_of(request).subject


async def get_knobs(request: web.Request) -> web.Response:
    point = point_of(request)
    app = request.app
    desired = app[SERVICES].desired.get(point)
    applied_version = app[SERVICES].live.points[point].applied_version
    applied = applied_version == desired.version
    if applied:
        status = "applied"
    elif not app[SERVICES].live.agent_online(point.station):
        status = "agent offline"
    else:
        status = "pending"
    doc: dict[str, Any] = {
        "station": point.station, "extension": point.extension, "config": desired.knobs,
        "version": desired.version, "appliedVersion": applied_version, "applied": applied,
        "status": status, "updatedAt": desired.updated_at, "updatedBy": desired.updated_by,
    }
    refused = app[SERVICES].knob_sync.rejected.get(point)
    if refused is not None and refused.version == desired.version:
        doc["rejected"] = {"version": refused.version, "errors": refused.errors}
    return json_response(doc)


async def post_knobs(request: web.Request) -> web.Response:
    point = point_of(request)
    partial = body_of(request, KnobChange).root  # every value checked against the catalog already
    reason = query_of(request, KnobChangeQuery).reason or None
    try:
        who = Attribution(_operator(request), "api", reason, where=client_address(request))
        result = await request.app[SERVICES].knob_sync.change(point, partial, who)
    except InvalidKnobs as exc:
        count = len(exc.problems)
        raise ApiError(400, f"{count} invalid knob value{'s' if count != 1 else ''}; nothing was changed",
                       [p.to_json() for p in exc.problems], code="validation_failed") from None
    doc: dict[str, Any] = {"station": point.station, "extension": point.extension,
                           "config": result.desired.knobs, "version": result.desired.version,
                           "applied": result.applied, "appliedVersion": result.applied_version}
    if result.reason:
        doc["reason"] = result.reason
    if result.errors:
        doc["errors"] = result.errors
    return json_response(doc)


def setup_routes(app: web.Application) -> None:
    add_endpoint(app, Endpoint("GET", KNOBS_PATH, get_knobs, "Desired knobs of a point, their version and applied state",
                               Permission.READ_METRICS, tags=("config",), path_params=PointPath,
                               responses={200: Reply("The point's desired knobs (all of the catalog)", KnobState)},
                               errors=(404,)))
    add_endpoint(app, Endpoint("POST", KNOBS_PATH, post_knobs,
                               "Change some knobs of a point; answers with the agent's acknowledgement",
                               Permission.WRITE_KNOBS, write=True, tags=("config",), path_params=PointPath,
                               body=KnobChange, query=KnobChangeQuery, errors=(404,),
                               responses={200: Reply("Stored as the next version; `applied` says whether the agent "
                                                     "acknowledged it within ack_timeout_ms", KnobChangeResult)},
                               description="Values are checked against the knob catalog, then cross-knob rules "
                                           "against the stored set; any problem is a 400 listing every knob at "
                                           "fault and nothing changes. The change is stored before it is sent, "
                                           "so an offline agent gets it when it reconnects. `?reason=` (optional) "
                                           "is kept with the change in the knob history."))

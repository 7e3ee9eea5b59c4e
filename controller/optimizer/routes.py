"""The analysis API: POST /optimize, GET /optimize/{analysisId}, POST /optimize/predict, GET /optimize/models.

Permission execute:optimization; station scopes apply: a scope naming a station outside the
caller's token is a 403, an unknown one a 404 (as batch targets); a stored analysis shows only the caller's
stations (404 when it holds none of them).
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from controller.app_keys import SERVICES
from controller.clock import iso_ms
from controller.http.endpoint import Endpoint, Reply, add_endpoint
from controller.http.errors import ApiError, json_response
from controller.http.params import body_of
from controller.knobs.changes import Attribution
from controller.knobs.sync import InvalidKnobs
from controller.optimizer.analysis import AnalysisNotFound, AnalysisRequest
from controller.optimizer.api_models import (
    ANALYSIS_ID_PATTERN,
    Analysis,
    AnalysisPath,
    ApplyRequest,
    ApplyResult,
    Models,
    OptimizeRequest,
    Prediction,
    PredictRequest,
    Scope,
)
from controller.optimizer.proposal import Mode
from controller.optimizer.targets import Target, constraints_of, resolve_target
from controller.security.guard import client_address, principal_of
from controller.security.principal import Permission
from shared.topology import Point

ANALYSIS_ID = ANALYSIS_ID_PATTERN[1:-1]   # the router's pattern: the document's without its anchors


def scope_points(request: web.Request, scope: Scope | None, field: str = "scope") -> tuple[Point, ...]:
    """The points a scope names (default: every station the caller sees)."""
    topology = request.app[SERVICES].topology
    principal = principal_of(request)
    if scope is None:
        return tuple(p for p in topology.points if principal.sees(p.station))
    stations = list(dict.fromkeys(scope.stations))
    unknown = [s for s in stations if not topology.has_station(s)]
    if unknown:
        raise ApiError(404, f"unknown station{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in the scope "
                            f"(known: Station-1 … Station-{topology.station_count}); nothing was done",
                       [{"field": f"{field}.stations", "problem": f"unknown station {s}"} for s in unknown])
    unseen = principal.unseen(stations)
    if unseen:
        raise ApiError(403, f"this token is not scoped to {', '.join(unseen)}; nothing was done",
                       [{"field": f"{field}.stations", "problem": f"{s} is outside the token's stations"}
                        for s in unseen])
    return tuple(Point(s, e) for s in stations for e in dict.fromkeys(scope.extensions))


def targets_of(names: list[str]) -> tuple[Target, ...]:
    resolved = [resolve_target(n) for n in names]
    return tuple(dict.fromkeys(t for t in resolved if t is not None))


async def optimize(request: web.Request) -> web.Response:
    body = body_of(request, OptimizeRequest)
    points = scope_points(request, body.scope)
    c = body.constraints
    analysis = AnalysisRequest(targets_of(body.targetMetrics),
                               constraints_of(c.maxLatency, c.minQuality, c.maxPacketLoss, c.preserveStability),
                               points, Mode(body.mode), body.model_dump(mode="json", exclude_none=True))
    doc = await request.app[SERVICES].optimizer.analyze(analysis)
    return json_response(doc)


def visible(request: web.Request, doc: dict[str, Any]) -> dict[str, Any]:
    """The analysis as the caller may see it: only their stations' points and recommendations."""
    principal = principal_of(request)
    points = [p for p in doc["points"] if principal.sees(p["station"])]
    if not points:
        raise AnalysisNotFound(doc["analysisId"])
    recs = [r for r in doc["recommendations"] if principal.sees(r["station"])]
    return {**doc, "points": points, "recommendations": recs,
            "overallConfidence": min((r["confidence"] for r in recs), default=None)}


async def get_analysis(request: web.Request) -> web.Response:
    analysis_id = request.match_info["analysisId"]
    try:
        doc = visible(request, request.app[SERVICES].optimizer.analyses.get(analysis_id))
    except AnalysisNotFound:
        raise ApiError(404, f"no analysis {analysis_id} (analyses are kept at least an hour)") from None
    return json_response(doc)


async def apply(request: web.Request) -> web.Response:
    """Apply an analysis's change sets through the one change path (source optimizer), then verify each."""
    services = request.app[SERVICES]
    principal = principal_of(request)
    if not principal.can(Permission.WRITE_KNOBS):
        raise ApiError(403, "applying an analysis changes knobs: the token needs write:knobs too")
    body = body_of(request, ApplyRequest)
    analysis_id = request.match_info["analysisId"]
    try:
        doc = visible(request, services.optimizer.analyses.get(analysis_id))
    except AnalysisNotFound:
        raise ApiError(404, f"no analysis {analysis_id} (analyses are kept at least an hour)") from None
    sets: dict[str, list[dict[str, Any]]] = {}
    for rec in doc["recommendations"]:
        sets.setdefault(rec["changeSetId"], []).append(rec)
    wanted = body.changeSetIds or list(sets)
    unknown = [c for c in wanted if c not in sets]
    if unknown:
        raise ApiError(400, f"analysis {analysis_id} has no change set {', '.join(unknown)}; nothing was changed",
                       [{"field": "changeSetIds", "problem": f"unknown change set {c}"} for c in unknown])
    if not wanted:
        raise ApiError(400, f"analysis {analysis_id} recommends nothing to apply",
                       [{"field": "changeSetIds", "problem": "the analysis has no recommendation"}])
    who = Attribution(principal.subject, "optimizer", body.reason or f"analysis {analysis_id}",
                      where=client_address(request))
    results = [await services.optimizer.apply_change_set(analysis_id, sid, sets[sid], doc["request"], who)
               for sid in wanted]
    record = {"appliedAt": iso_ms(services.clock.wall()), "by": principal.subject, "changeSetIds": wanted,
              "results": results,
              "verification": [{"station": r["station"], "extension": r["extension"], "changeSetId": r["changeSetId"],
                                "version": r["version"], "status": "verifying" if r["verifying"] else "not verified"}
                               for r in results]}
    await services.optimizer.record_apply(analysis_id, record)
    applied = sum(r["status"] == "applied" for r in results)
    failed = sum(r["status"] in ("rejected", "conflict", "refused") for r in results)
    return json_response({
        "analysisId": analysis_id,
        "status": "applied" if applied == len(results) else "failed" if applied == 0 and failed == len(results)
        else "partial",
        "summary": {"applied": applied, "pending": sum(r["status"] == "pending" for r in results), "failed": failed},
        "results": results, "verifying": [r["changeSetId"] for r in results if r["verifying"]]})


async def predict(request: web.Request) -> web.Response:
    body = body_of(request, PredictRequest)
    services = request.app[SERVICES]
    point = scope_points(request, Scope(stations=[body.station], extensions=[body.extension]), "station")[0]
    try:
        clean = services.knob_sync.check(point, body.knobs.root) if body.knobs.root else {}
    except InvalidKnobs as exc:
        raise ApiError(400, f"{len(exc.problems)} invalid knob value(s)",
                       [{"field": f"knobs.{p.field}", "problem": p.problem} for p in exc.problems],
                       code="validation_failed") from None
    keys = [t.key for t in targets_of(body.targetMetrics)]
    services.optimizer.learner.want(keys)
    predictions = await services.optimizer.engine.predict(point, clean, keys)
    return json_response({"station": point.station, "extension": point.extension, "knobs": clean,
                          "predictions": predictions})


async def get_models(request: web.Request) -> web.Response:
    return json_response(request.app[SERVICES].optimizer.models_json())


def setup_routes(app: web.Application) -> None:
    add_endpoint(app, Endpoint(
        "POST", "/optimize", optimize, "Analyse points and recommend knob changes the models support",
        Permission.EXECUTE_OPTIMIZATION, write=True, tags=("optimizer",), body=OptimizeRequest,
        responses={200: Reply("The analysis (stored for GET /optimize/{analysisId} and apply)", Analysis)},
        errors=(403, 404),
        description="Per point in scope, the first target (in the order given) with a change whose pessimistic "
                    "predicted end improves it inside the constraints. Nothing is recommended that the models "
                    "cannot support; `points` says why per point. See docs/optimizer.md."))
    add_endpoint(app, Endpoint(
        "GET", "/optimize/models", get_models, "The trained models: rows, holdout error, coverage, importances",
        Permission.EXECUTE_OPTIMIZATION, tags=("optimizer",), responses={200: Reply("Every model", Models)}))
    add_endpoint(app, Endpoint(
        "POST", "/optimize/predict", predict, "Predict a point's targets under a partial knob set",
        Permission.EXECUTE_OPTIMIZATION, tags=("optimizer",), body=PredictRequest,
        responses={200: Reply("Per target: today's value, the predicted median and interval, confidence",
                              Prediction)}, errors=(403, 404),
        description="Knobs are checked like a change against the point's stored set: a value the catalog refuses, "
                    "or one that breaks a cross-knob rule with the stored set, is a 400 naming the knob."))
    add_endpoint(app, Endpoint(
        "POST", "/optimize/{analysisId}/apply", apply, "Apply an analysis's change sets (signed) and verify them",
        Permission.EXECUTE_OPTIMIZATION, write=True, signed=True, tags=("optimizer",), body=ApplyRequest,
        body_required=False, route_patterns={"analysisId": ANALYSIS_ID}, path_params=AnalysisPath,
        responses={200: Reply("Per change set: applied or pending, and whether its verification runs", ApplyResult)},
        errors=(403, 404),
        description="Needs write:knobs as well. Each change set goes through the one change path (source "
                    "optimizer), as a batch would; a point whose knobs changed since the analysis is a `conflict` "
                    "and a change set replay refuted is `refused` (nothing changes for either). Every applied set "
                    "is then verified as auto-tune verifies (kept or rolled back), and the outcome recorded on the "
                    "analysis (GET /optimize/{analysisId})."))
    add_endpoint(app, Endpoint(
        "GET", "/optimize/{analysisId}", get_analysis, "A stored analysis",
        Permission.EXECUTE_OPTIMIZATION, tags=("optimizer",), route_patterns={"analysisId": ANALYSIS_ID},
        path_params=AnalysisPath,
        responses={200: Reply("The analysis as stored, the caller's stations only", Analysis)}, errors=(404,)))

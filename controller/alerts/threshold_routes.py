"""GET/POST /api/v1/config/metrics: metric thresholds (the plan's body), one per metric and scope."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from controller.alerts import edits
from controller.alerts.models import RuleDoc, RuleQuery, ThresholdBody, ThresholdList
from controller.alerts.rules import Rule
from controller.app_keys import SERVICES
from controller.http import logs
from controller.http.endpoint import Endpoint, Reply, add_endpoint
from controller.http.errors import json_response
from controller.http.params import body_of, query_of
from controller.security.guard import client_address, principal_of
from controller.security.principal import Permission

PATH = "/config/metrics"


def visible_rules(request: web.Request) -> list[Rule]:
    """The rules that cover at least one of the caller's stations, optionally of one metric."""
    metric_id = query_of(request, RuleQuery).metricId
    stations = principal_of(request).stations
    return [r for r in request.app[SERVICES].alerts.all_rules()
            if r.touches(stations) and (metric_id is None or r.metric_id == metric_id)]


def audit_rule(request: web.Request, what: str, rule: Rule, outcome: str) -> None:
    request.app[SERVICES].audit.record("config.change", who=principal_of(request).subject, what=what,
                                   where=client_address(request), trace=logs.trace_id.get() or "", outcome=outcome,
                                   rule=rule.to_json())


async def get_thresholds(request: web.Request) -> web.Response:
    docs = [r.to_json() for r in visible_rules(request)]
    return json_response({"thresholds": docs, "count": len(docs)})


async def post_threshold(request: web.Request) -> web.Response:
    return await save_rule(request, edits.threshold, body_of(request, ThresholdBody), "threshold")


async def save_rule(request: web.Request, build: Callable[..., Rule], body: Any, what: str) -> web.Response:
    """Build a rule from `body` against the rules in force, store it, audit it: 201 when new, else 200."""
    service = request.app[SERVICES].alerts
    async with service.edits:  # build and save as one step, so two edits never build on the same old set
        rule = build(body, service.rules, principal_of(request).stations, request.app[SERVICES].topology)
        created = service.rules.get(rule.id) is None
        rule = await service.save_rule(rule, principal_of(request).subject)
    audit_rule(request, f"{what} {rule.id}", rule, "created" if created else "updated")
    return json_response(rule.to_json(), status=201 if created else 200)


def setup_routes(app: web.Application) -> None:
    add_endpoint(app, Endpoint("GET", PATH, get_thresholds, "Thresholds and rules in force",
                               Permission.READ_METRICS, tags=("thresholds",), query=RuleQuery,
                               responses={200: Reply("Every threshold and rule covering a station of the token, "
                                                     "shipped defaults included", ThresholdList)},
                               description="Thresholds and alert rules are one kind of object (a rule); this lists "
                                           "them all with their levels, direction, timing and scope."))
    add_endpoint(app, Endpoint("POST", PATH, post_threshold, "Set the warning and critical levels of a metric",
                               Permission.MANAGE_ALERTS, write=True, tags=("thresholds",), body=ThresholdBody,
                               responses={200: Reply("The threshold was updated", RuleDoc),
                                          201: Reply("A new threshold was created", RuleDoc)},
                               description="One threshold per metric and scope: posting the same metricId, stations "
                                           "and extensions again updates it (omitted options keep their values). "
                                           "Without stations and extensions it replaces the shipped default of that "
                                           "metric; with them it overrides the general one on those points only. "
                                           "Levels are checked against the metric's range and the direction "
                                           "(critical worse than warning); any problem is a 400 and nothing "
                                           "changes. A token scoped to some stations sets thresholds for those "
                                           "only (its stations when none are given); others are a 403."))

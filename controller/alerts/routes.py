"""The alert API: list, acknowledge, dismiss, configure rules, list and delete rules."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from controller.alerts import edits
from controller.alerts.models import (
    AcknowledgeBody,
    AlertDoc,
    AlertPage,
    AlertPath,
    AlertQuery,
    RuleBody,
    RuleDoc,
    RuleList,
    RulePath,
    RuleQuery,
)
from controller.alerts.service import AlertConflict, AlertFilter, AlertNotFound
from controller.alerts.threshold_routes import audit_rule, save_rule, visible_rules
from controller.app_keys import SERVICES
from controller.http import logs
from controller.http.endpoint import Endpoint, Reply, add_endpoint
from controller.http.errors import ApiError, json_response
from controller.http.params import body_of, query_of
from controller.live.routes import scoped_stations
from controller.security.guard import client_address, principal_of
from controller.security.principal import Permission

TAGS = ("alerts",)


def _scoped_filter(request: web.Request, query: AlertQuery) -> AlertFilter:
    principal, topology = principal_of(request), request.app[SERVICES].topology
    unknown = [s for s in query.station if not topology.has_station(s)]
    if unknown:
        raise ApiError(404, f"unknown station {', '.join(unknown)} (known: Station-1 … Station-{topology.station_count})",
                       [{"field": "station", "problem": f"unknown station {name}"} for name in unknown])
    if query.station and principal.stations is not None:
        scoped_stations(principal, query.station, topology.stations)  # 403 for one outside the token's
    return AlertFilter(state=query.state, severities=frozenset(query.severity) or None,
                       stations=frozenset(query.station) or None, extensions=frozenset(query.extension) or None,
                       acknowledged=query.acknowledged, scope=principal.stations)


async def get_alerts(request: web.Request) -> web.Response:
    query = query_of(request, AlertQuery)
    where = _scoped_filter(request, query)
    before = int(query.cursor) if query.cursor else None
    page, total, next_seq = request.app[SERVICES].alerts.list_alerts(where, query.limit, before)
    return json_response({"alerts": page, "count": len(page), "total": total,
                          "nextCursor": str(next_seq) if next_seq is not None else None})


def _alert_of(request: web.Request) -> dict[str, Any]:
    """The alert in the path: 404 when unknown, 403 when its station is outside the caller's."""
    alert_id = request.match_info["alertId"]
    try:
        alert = request.app[SERVICES].alerts.get(alert_id)
    except AlertNotFound:
        raise ApiError(404, f"no alert {alert_id!r} (resolved alerts are kept for a while, then forgotten)",
                       [{"field": "alertId", "problem": "unknown alert"}]) from None
    if not principal_of(request).sees(alert["station"]):
        raise ApiError(403, f"this token is not scoped to {alert['station']}",
                       [{"field": "alertId", "problem": f"{alert['station']} is outside the token's stations"}])
    return alert


def _audit(request: web.Request, event: str, alert: dict[str, Any], **details: Any) -> None:
    request.app[SERVICES].audit.record(event, who=principal_of(request).subject, what=f"alert {alert['id']}",
                                   where=client_address(request), trace=logs.trace_id.get() or "",
                                   outcome="applied", **details)


async def acknowledge(request: web.Request) -> web.Response:
    alert = _alert_of(request)
    body = body_of(request, AcknowledgeBody)
    try:
        alert = await request.app[SERVICES].alerts.acknowledge(alert["id"], principal_of(request).subject, body.comment)
    except AlertConflict as exc:
        raise ApiError(409, str(exc), [{"field": "alertId", "problem": "already acknowledged"}]) from None
    _audit(request, "alert.acknowledge", alert, comment=body.comment)
    return json_response(alert)


async def dismiss(request: web.Request) -> web.Response:
    alert = _alert_of(request)
    try:
        alert = await request.app[SERVICES].alerts.dismiss(alert["id"], principal_of(request).subject)
    except AlertConflict as exc:
        raise ApiError(409, str(exc), [{"field": "alertId", "problem": "already dismissed"}]) from None
    _audit(request, "alert.dismiss", alert)
    return json_response(alert)


async def configure(request: web.Request) -> web.Response:
    return await save_rule(request, edits.configured, body_of(request, RuleBody), "alert rule")


async def get_rules(request: web.Request) -> web.Response:
    docs = [r.to_json() for r in visible_rules(request)]
    return json_response({"rules": docs, "count": len(docs)})


async def delete_rule(request: web.Request) -> web.Response:
    rule_id = request.match_info["ruleId"]
    service = request.app[SERVICES].alerts
    async with service.edits:
        rule = service.rules.get(rule_id)
        if rule is None or not rule.touches(principal_of(request).stations):
            raise ApiError(404, f"no rule {rule_id!r}", [{"field": "ruleId", "problem": "unknown rule"}])
        if not rule.within(principal_of(request).stations):
            raise ApiError(403, f"rule {rule_id} covers stations outside this token's",
                           [{"field": "ruleId", "problem": "covers stations outside the token's"}])
        if service.rules.is_default(rule_id):
            raise ApiError(409, f"{rule_id} is a shipped default: disable it (enabled: false) or change its levels "
                                "instead", [{"field": "ruleId", "problem": "a shipped default cannot be deleted"}])
        await service.delete_rule(rule_id, principal_of(request).subject)
    audit_rule(request, f"alert rule {rule_id}", rule, "deleted")
    return json_response(rule.to_json())


def setup_routes(app: web.Application) -> None:
    add_endpoint(app, Endpoint("GET", "/alerts", get_alerts, "Alerts, active by default, newest first",
                               Permission.READ_METRICS, tags=TAGS, query=AlertQuery, errors=(404,),
                               responses={200: Reply("One page of alerts", AlertPage)},
                               description="Filters combine (and). A token scoped to some stations sees only their "
                                           "alerts. Pages of `limit` alerts; `nextCursor` fetches the next one."))
    add_endpoint(app, Endpoint("GET", "/alerts/rules", get_rules, "Alert rules and thresholds in force",
                               Permission.READ_METRICS, tags=TAGS, query=RuleQuery,
                               responses={200: Reply("Every rule covering a station of the token", RuleList)}))
    add_endpoint(app, Endpoint("POST", "/alerts/configure", configure, "Create or update an alert rule",
                               Permission.MANAGE_ALERTS, write=True, tags=TAGS, body=RuleBody, errors=(403, 409),
                               responses={200: Reply("The rule was updated", RuleDoc),
                                          201: Reply("A new rule was created", RuleDoc)},
                               description="A rule names a metric, a comparison (above/below), warning and/or "
                                           "critical levels (or one threshold with a severity), how long the "
                                           "condition holds before firing (duration), how long the value must be "
                                           "clear to resolve (clearDuration, hysteresis), the window judged, "
                                           "enabled, and its stations and extensions. An id or name that names an "
                                           "existing rule updates it (omitted fields kept)."))
    add_endpoint(app, Endpoint("DELETE", "/alerts/rules/{ruleId}", delete_rule, "Delete an alert rule",
                               Permission.MANAGE_ALERTS, write=True, tags=TAGS, path_params=RulePath,
                               errors=(403, 404, 409), responses={200: Reply("The deleted rule", RuleDoc)},
                               description="Its active alerts resolve unless another rule covers them. Shipped "
                                           "defaults cannot be deleted (409): disable them instead."))
    add_endpoint(app, Endpoint("POST", "/alerts/acknowledge/{alertId}", acknowledge, "Acknowledge an alert",
                               Permission.MANAGE_ALERTS, write=True, tags=TAGS, path_params=AlertPath,
                               body=AcknowledgeBody, body_required=False, errors=(403, 404, 409),
                               responses={200: Reply("The acknowledged alert", AlertDoc)},
                               description="acknowledgedBy is the token's subject. The body is optional. An "
                                           "escalation to critical asks for a new acknowledgement."))
    add_endpoint(app, Endpoint("DELETE", "/alerts/{alertId}", dismiss, "Dismiss an alert",
                               Permission.MANAGE_ALERTS, write=True, tags=TAGS, path_params=AlertPath,
                               route_patterns={"alertId": r"alert_[^/]*"},  # /alerts/configure is no alert
                               errors=(403, 404, 409), responses={200: Reply("The dismissed alert", AlertDoc)},
                               description="Resolves it (resolvedBy: the token's subject, dismissed: true) and hides "
                                           "it from the active list; if the violation goes on, a new alert fires "
                                           "after the rule's duration."))

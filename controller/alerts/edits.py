"""Threshold and rule bodies turned into the `Rule` to store: merge over the stored one, scope, checks.

Every problem is an ApiError listing each field at fault: 400 for bad values (nothing is
stored), 403 for stations outside the caller's token, 404/409 for rules that cannot be
changed that way. Omitted fields keep the stored rule's values, or the defaults for a new one.
"""
from __future__ import annotations

from typing import Any

from controller.alerts.models import RuleBody, ThresholdBody
from controller.alerts.rules import (
    DEFAULT_DURATION_MS,
    Direction,
    Rule,
    default_direction,
    default_window_ms,
    problems,
    sorted_stations,
    threshold_id,
)
from controller.alerts.ruleset import RuleSet
from controller.http.errors import ApiError
from shared.metrics import METRICS_BY_ID
from shared.topology import EXTENSIONS, Topology

Scope = tuple[tuple[str, ...] | None, tuple[str, ...] | None]
OPTION_FIELDS = {"duration": "duration_ms", "clearDuration": "clear_duration_ms", "hysteresis": "hysteresis",
                 "window": "window_ms", "enabled": "enabled"}


def scope_of(stations: list[str] | None, extensions: list[str] | None, allowed: frozenset[str] | None,
             topology: Topology) -> Scope:
    """The rule's stations (None: all) and extensions (None: all); stations default to the caller's."""
    if stations is None:
        chosen = None if allowed is None else sorted_stations([s for s in topology.stations if s in allowed])
        if chosen == ():
            raise ApiError(403, "this token's stations match none of the configured stations",
                           [{"field": "stations", "problem": "no station in scope"}])
    else:
        refused = [s for s in dict.fromkeys(stations) if allowed is not None and s not in allowed]
        if refused:
            raise ApiError(403, f"this token is not scoped to {', '.join(refused)}",
                           [{"field": "stations", "problem": f"{s} is outside the token's stations"} for s in refused])
        chosen = sorted_stations(stations)
    exts = None if extensions is None else tuple(e for e in EXTENSIONS if e in extensions)
    return chosen, exts


def new_rule(rule_id: str, name: str, metric_id: str, source: str, scope: Scope) -> Rule:
    """A rule with every default: direction from the metric, 30 s for/clear, the metric kind's window."""
    metric = METRICS_BY_ID[metric_id]
    return Rule(id=rule_id, name=name, metric_id=metric_id, direction=default_direction(metric_id), warning=None,
                critical=None, duration_ms=DEFAULT_DURATION_MS, clear_duration_ms=DEFAULT_DURATION_MS, hysteresis=0.0,
                window_ms=default_window_ms(metric), enabled=True, stations=scope[0], extensions=scope[1],
                source=source)


def _options(body: ThresholdBody | RuleBody) -> dict[str, Any]:
    return {attr: getattr(body, name) for name, attr in OPTION_FIELDS.items()
            if name in body.model_fields_set and getattr(body, name) is not None}


def checked(rule: Rule, topology: Topology, rename: dict[str, str]) -> Rule:
    found = problems(rule, topology)
    if found:
        details = [{"field": rename.get(p["field"], p["field"]), "problem": p["problem"]} for p in found]
        count = len(details)
        raise ApiError(400, f"{count} invalid field{'s' if count != 1 else ''}; nothing was changed", details,
                       code="validation_failed")
    return rule


# --- POST /config/metrics --------------------------------------------------------------------------

def threshold(body: ThresholdBody, rules: RuleSet, allowed: frozenset[str] | None, topology: Topology) -> Rule:
    scope = scope_of(body.stations, body.extensions, allowed, topology)
    rule_id = threshold_id(body.metricId, *scope)
    base = rules.get(rule_id) or new_rule(rule_id, _scope_name(body.metricId, scope), body.metricId, "threshold",
                                          scope)
    changes = _options(body)
    if body.direction is not None:
        changes["direction"] = Direction(body.direction)
    rule = base.changed(warning=body.thresholds.warning, critical=body.thresholds.critical, **changes)
    return checked(rule, topology, {"warning": "thresholds.warning", "critical": "thresholds.critical",
                                    "levels": "thresholds"})


def _scope_name(metric_id: str, scope: Scope) -> str:
    stations = ",".join(scope[0]) if scope[0] is not None else "every station"
    exts = "" if scope[1] is None else "/" + ",".join(scope[1])
    return f"{metric_id} on {stations}{exts}"


# --- POST /alerts/configure ------------------------------------------------------------------------

def configured(body: RuleBody, rules: RuleSet, allowed: frozenset[str] | None, topology: Topology) -> Rule:
    """The rule the body creates or updates (found by id, else by name)."""
    existing = rules.get(body.id) if body.id else (rules.by_name(body.name) if body.name else None)
    if existing is None:
        if body.metricId is None:
            raise ApiError(400, "a new rule needs a metricId", [{"field": "metricId", "problem": "required for a "
                                                                 "new rule (no rule has this id or name)"}],
                           code="validation_failed")
        rule_id = body.id or rules.next_rule_id()
        scope = scope_of(body.stations, body.extensions, allowed, topology)
        base = new_rule(rule_id, body.name or rule_id, body.metricId, "rule", scope)
    else:
        if not existing.within(allowed):
            raise ApiError(403, f"rule {existing.id} covers stations outside this token's",
                           [{"field": "id", "problem": f"{existing.id} covers stations outside the token's"}])
        if body.metricId is not None and body.metricId != existing.metric_id:
            raise ApiError(400, "a rule's metric cannot change; create another rule for that metric",
                           [{"field": "metricId", "problem": f"rule {existing.id} watches {existing.metric_id}"}],
                           code="validation_failed")
        base = existing.changed(stations=_stations(body, existing, allowed, topology),
                                extensions=_extensions(body, existing))
    if body.name is not None and body.name != base.name:
        holder = rules.by_name(body.name)
        if holder is not None and holder.id != base.id:
            raise ApiError(409, f"the name {body.name!r} belongs to rule {holder.id}",
                           [{"field": "name", "problem": f"used by rule {holder.id}"}])
    changes = _options(body)
    if body.name is not None:
        changes["name"] = body.name
    if body.comparison is not None:
        changes["direction"] = Direction(body.comparison)
    changes.update(_levels(body))
    return checked(base.changed(**changes), topology, _level_names(body))


def _stations(body: RuleBody, existing: Rule, allowed: frozenset[str] | None,
              topology: Topology) -> tuple[str, ...] | None:
    if "stations" not in body.model_fields_set:
        return existing.stations
    if body.stations is None:  # an explicit null: every station
        if allowed is not None:
            raise ApiError(403, "only a token for every station can give a rule every station",
                           [{"field": "stations", "problem": "every station (null) is outside the token's"}])
        return None
    return scope_of(body.stations, None, allowed, topology)[0]


def _extensions(body: RuleBody, existing: Rule) -> tuple[str, ...] | None:
    if "extensions" not in body.model_fields_set:
        return existing.extensions
    return None if body.extensions is None else tuple(e for e in EXTENSIONS if e in body.extensions)


def _levels(body: RuleBody) -> dict[str, float | None]:
    if body.levels is not None and (body.threshold is not None or body.severity is not None):
        raise ApiError(400, "give levels, or threshold with severity, not both",
                       [{"field": "threshold", "problem": "not with levels"}], code="validation_failed")
    if body.severity is not None and body.threshold is None:
        raise ApiError(400, "severity goes with threshold", [{"field": "threshold", "problem": "required with "
                                                                                               "severity"}],
                       code="validation_failed")
    if body.levels is not None:
        return {"warning": body.levels.warning, "critical": body.levels.critical}
    if body.threshold is not None:
        severity = body.severity or "warning"
        return {"warning": body.threshold if severity == "warning" else None,
                "critical": body.threshold if severity == "critical" else None}
    return {}


def _level_names(body: RuleBody) -> dict[str, str]:
    if body.threshold is not None:
        return {"warning": "threshold", "critical": "threshold", "levels": "threshold"}
    return {"warning": "levels.warning", "critical": "levels.critical", "levels": "levels"}

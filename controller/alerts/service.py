"""The alert service: rules, engine and book together, as the API and ingest use them.

It is the sample observer (`observe`), turns the engine's transitions into alert documents
and "alert" events, and carries out the API's operations: list, acknowledge, dismiss,
save or delete a rule. A rule change re-plans the engine at once; an active alert that no
enabled rule covers any more is resolved, by the subject who made the change.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.alerts.alert import AlertIds, apply_severity, new_alert, resolve
from controller.alerts.book import AlertBook, epoch_of
from controller.alerts.engine import AlertEngine
from controller.alerts.rules import Rule, Severity
from controller.alerts.ruleset import RuleSet
from controller.alerts.watch import Transition, Watch
from controller.clock import Clock, iso_ms
from controller.documents import DocumentFile
from controller.events import EventBus
from controller.sample import Sample
from shared.topology import Point, Topology

log = logging.getLogger("tpmon.controller.alerts")
SYSTEM = "system"  # resolvedBy when the value itself recovered


class AlertNotFound(LookupError):
    pass


class AlertConflict(ValueError):
    pass


@dataclass(frozen=True)
class AlertFilter:
    state: str = "active"                       # active | resolved | all
    severities: frozenset[str] | None = None
    stations: frozenset[str] | None = None      # requested (already checked against the caller's scope)
    extensions: frozenset[str] | None = None
    acknowledged: bool | None = None
    scope: frozenset[str] | None = None         # the caller's stations (None: all)

    def matches(self, alert: dict[str, Any]) -> bool:
        if self.state == "active" and alert["resolved"] or self.state == "resolved" and not alert["resolved"]:
            return False
        return ((self.severities is None or alert["severity"] in self.severities)
                and (self.stations is None or alert["station"] in self.stations)
                and (self.scope is None or alert["station"] in self.scope)
                and (self.extensions is None or alert["extension"] in self.extensions)
                and (self.acknowledged is None or alert["acknowledged"] is self.acknowledged))


class AlertService:
    def __init__(self, topology: Topology, clock: Clock, events: EventBus, rules_path: Path, alerts_path: Path,
                 keep_resolved: int = 1000, keep_days: float = 30, flush_delay: float = 0.25) -> None:
        self.topology = topology
        self.clock = clock
        self.events = events
        self.rules = RuleSet(DocumentFile(rules_path))
        self.book = AlertBook(DocumentFile(alerts_path), clock.wall, keep_resolved, keep_days, flush_delay)
        self.engine = AlertEngine(topology, clock, self._on_transition)
        self.ids = AlertIds(lambda alert_id: self.book.get(alert_id) is not None)
        self.edits = asyncio.Lock()  # rule edits read, merge and save one at a time

    # --- lifecycle --------------------------------------------------------------------------------

    async def open(self) -> None:
        await self.rules.file.open()
        await self.book.file.open()
        await self.rules.load()
        await self.book.load()
        self.engine.set_rules(self.rules.all().values())
        self._restore_active()
        await self.book.flush()  # alerts resolved while restoring, and expired ones dropped

    def _restore_active(self) -> None:
        """Alerts active before a restart fire again at once; those no enabled rule covers now are resolved."""
        now_wall, now_mono = self.clock.wall(), self.clock.monotonic()
        for alert in self.book.active():
            watch = None
            if self.topology.has_point(alert["station"], alert["extension"]):
                watch = self.engine.watch(Point(alert["station"], alert["extension"]), alert["metricId"])
            if watch is None:
                resolve(alert, now_wall, SYSTEM)
                self.book.changed(alert)
                continue
            started = (epoch_of(alert["timestamp"]) or now_wall) - alert["duration"] / 1000
            watch.restore(Severity(alert["severity"]), now_mono - max(0.0, now_wall - started))

    async def close(self) -> None:
        await self.book.close()
        await self.book.file.close()
        await self.rules.file.close()

    # --- the engine's side ------------------------------------------------------------------------

    def observe(self, sample: Sample) -> None:
        self.engine.observe(sample.point, sample.measured_at, sample.values)

    def _on_transition(self, watch: Watch, t: Transition) -> None:
        key = (watch.point.station, watch.point.extension, watch.rule.metric_id)
        alert = self.book.active_for(key)
        wall = self.clock.wall()
        if alert is None:
            if t.severity is None:
                return  # resolving an alert that was dismissed meanwhile: nothing to say
            alert = new_alert(self.ids.next(wall), watch.point, watch.rule, t, wall)
            self.book.add(alert)
            action = "created"
        elif t.severity is None:
            resolve(alert, wall, SYSTEM, t.duration_ms)
            self.book.changed(alert)
            action = "resolved"
        else:
            apply_severity(alert, watch.rule, t)
            self.book.changed(alert)
            action = t.action
        log.info("alert %s %s: %s", alert["id"], action, alert["message"])
        self.events.publish("alert", {"action": action, "alert": dict(alert)})
        self.book.schedule_flush()

    # --- alerts over the API ----------------------------------------------------------------------

    def list_alerts(self, where: AlertFilter, limit: int, before: int | None) -> tuple[list[dict], int, int | None]:
        """(one page newest first, how many match in all, the cursor of the next page or None)."""
        page: list[dict[str, Any]] = []
        total = 0
        next_cursor = None
        for seq, alert in self.book.newest_first():
            if not where.matches(alert):
                continue
            total += 1
            if before is not None and seq >= before:
                continue
            if len(page) < limit:
                page.append(alert)
                last = seq
            elif next_cursor is None:
                next_cursor = last
        return page, total, next_cursor

    def get(self, alert_id: str) -> dict[str, Any]:
        alert = self.book.get(alert_id)
        if alert is None:
            raise AlertNotFound(alert_id)
        return alert

    async def acknowledge(self, alert_id: str, who: str, comment: str | None) -> dict[str, Any]:
        alert = self.get(alert_id)
        if alert["acknowledged"]:
            raise AlertConflict(f"alert {alert_id} was already acknowledged by {alert['acknowledgedBy']} "
                                f"at {alert['acknowledgedAt']}")
        alert.update(acknowledged=True, acknowledgedBy=who, acknowledgedAt=iso_ms(self.clock.wall()), comment=comment)
        return await self._saved(alert, "acknowledged")

    async def dismiss(self, alert_id: str, who: str) -> dict[str, Any]:
        """Resolve and hide an alert; its point and metric start over (a violation that holds fires anew)."""
        alert = self.get(alert_id)
        if alert["dismissed"]:
            raise AlertConflict(f"alert {alert_id} was already dismissed by {alert['resolvedBy']}")
        if not alert["resolved"]:
            resolve(alert, self.clock.wall(), who, dismissed=True)
            watch = self._watch_of(alert)
            if watch is not None:
                watch.reset()
        else:
            alert["dismissed"] = True
        return await self._saved(alert, "dismissed")

    async def _saved(self, alert: dict[str, Any], action: str) -> dict[str, Any]:
        self.book.changed(alert)
        await self.book.flush()  # on disk before the API answers
        self.events.publish("alert", {"action": action, "alert": dict(alert)})
        return alert

    def _watch_of(self, alert: dict[str, Any]) -> Watch | None:
        if not self.topology.has_point(alert["station"], alert["extension"]):
            return None
        return self.engine.watch(Point(alert["station"], alert["extension"]), alert["metricId"])

    # --- rules --------------------------------------------------------------------------------------

    def all_rules(self) -> list[Rule]:
        return list(self.rules.all().values())

    async def save_rule(self, rule: Rule, who: str) -> Rule:
        """Store a new or changed rule (stamped with who and when) and put it in force."""
        now = iso_ms(self.clock.wall())
        if self.rules.get(rule.id) is None:
            rule = rule.changed(created_by=who, created_at=now)
        rule = await self.rules.save(rule.changed(updated_by=who, updated_at=now))
        await self._replan(who)
        return rule

    async def delete_rule(self, rule_id: str, who: str) -> Rule:
        rule = self.rules.get(rule_id)
        if rule is None:
            raise AlertNotFound(rule_id)
        await self.rules.delete(rule_id)
        await self._replan(who)
        return rule

    async def _replan(self, who: str) -> None:
        orphans = self.engine.set_rules(self.rules.all().values())
        wall = self.clock.wall()
        for watch in orphans:
            alert = self.book.active_for((watch.point.station, watch.point.extension, watch.rule.metric_id))
            if alert is not None:
                resolve(alert, wall, who, watch.lasted(self.clock.monotonic()))
                self.book.changed(alert)
                self.events.publish("alert", {"action": "resolved", "alert": dict(alert)})
        for alert in self.book.active():  # an alert goes on under the rule that now covers its point
            watch = self._watch_of(alert)
            if watch is not None and alert["ruleId"] != watch.rule.id:
                alert["ruleId"] = watch.rule.id
                self.book.changed(alert)
        await self.book.flush()

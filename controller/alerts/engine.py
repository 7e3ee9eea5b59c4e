"""The alert engine: which rule applies to each point and metric, and every sample judged against it.

`set_rules` precomputes, per point, the watches (metric index, rule, state) that apply, so a
sample costs one dict lookup and a few comparisons per watched metric on the event loop.
Transitions (created, escalated, deescalated, resolved) go to `on_transition`; the alert
book turns them into documents, events and writes.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from controller.alerts.rules import Rule
from controller.alerts.watch import Transition, Watch, number
from controller.clock import Clock
from shared.metrics import METRICS
from shared.topology import Point, Topology

log = logging.getLogger("tpmon.controller.alerts")

INDEX: dict[str, int] = {m.metric_id: i for i, m in enumerate(METRICS)}
TransitionSink = Callable[[Watch, Transition], None]


def applicable(rules: Iterable[Rule], points: Iterable[Point]) -> dict[tuple[Point, str], Rule]:
    """For each point and metric, the most specific rule covering it (most recent among equals), enabled or not."""
    rules = list(rules)
    chosen: dict[tuple[Point, str], Rule] = {}
    for point in points:
        for rule in rules:
            if rule.covers(point):
                key = (point, rule.metric_id)
                best = chosen.get(key)
                if best is None or rule.specificity > best.specificity:
                    chosen[key] = rule
    return chosen


class AlertEngine:
    def __init__(self, topology: Topology, clock: Clock, on_transition: TransitionSink) -> None:
        self.topology = topology
        self.clock = clock
        self.on_transition = on_transition
        self._plan: dict[Point, tuple[Watch, ...]] = {}
        self._watches: dict[tuple[Point, str], Watch] = {}
        self.samples = 0  # samples judged (for tests and telemetry)

    def set_rules(self, rules: Iterable[Rule]) -> list[Watch]:
        """Apply a new rule set; returns the firing watches no enabled rule covers any more (to resolve)."""
        watches: dict[tuple[Point, str], Watch] = {}
        for key, rule in applicable(rules, self.topology.points).items():
            if not rule.enabled:
                continue  # a disabled rule still shadows more general ones: nothing watches this metric here
            watch = self._watches.get(key)
            if watch is None:
                watch = Watch(key[0], rule, INDEX[rule.metric_id])
            elif watch.rule is not rule:
                watch.rebind(rule)
            watches[key] = watch
        orphans = [w for key, w in self._watches.items() if key not in watches and w.level is not None]
        self._watches = watches
        plan: dict[Point, list[Watch]] = {}
        for (point, _), watch in watches.items():
            plan.setdefault(point, []).append(watch)
        self._plan = {point: tuple(ws) for point, ws in plan.items()}
        return orphans

    def watch(self, point: Point, metric_id: str) -> Watch | None:
        return self._watches.get((point, metric_id))

    def watches(self) -> list[Watch]:
        return list(self._watches.values())

    def observe(self, point: Point, measured_at: float, values: Sequence[object]) -> None:
        """A sample observer (controller/ingest.py): judge the point's watched metrics."""
        watches = self._plan.get(point)
        if not watches:
            return
        self.samples += 1
        now = self.clock.monotonic()
        count = len(values)
        for watch in watches:
            if watch.index >= count:
                continue
            value = number(values[watch.index])
            if value is None:
                continue  # null (undefined now) or malformed: the state waits for a real value
            transition = watch.step(now, value)
            if transition is not None:
                self.on_transition(watch, transition)

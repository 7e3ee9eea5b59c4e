"""The controller's event bus: services publish what happened, the stream hub (and tests) listen.

Events are the plan's real-time event names with a JSON-ready body:
- "knob-changed": {station, extension, changes: {knob: {old, new}}, version, changedBy, source, status}
- "alert": {action: created|escalated|deescalated|acknowledged|resolved|dismissed, alert: <alert document>}
- "status-change": {station, extension, status, previous}
- "optimization-complete": {kind: "analysis", analysisId, summary} when an analysis finished, or {kind:
  "auto-tune", station, extension, outcome: kept|rolled_back|cancelled, reason, version, knobs, goal, before,
  after, predicted, replayDelta, at, analysisId} when a change auto-tune (or an applied analysis) made was judged
- "knob-applied": {station, extension, version, appliedAt, source} once per version an agent reports
  applied (its ACK, or a sample or HELLO running it when the ACK was lost): a verification window
  starts here, on real application, not on the request. Not one of the plan's stream events, so a
  stream subscription gets it only when it names it.
Publishing is synchronous and cheap (callbacks must not block: a slow listener queues work
of its own); a listener that raises is logged and does not stop the others.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("tpmon.controller.events")

Listener = Callable[[str, dict[str, Any]], None]
PLAN_EVENTS = ("knob-changed", "alert", "status-change", "optimization-complete")  # a subscription's default
EVENTS = PLAN_EVENTS + ("knob-applied",)


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self.published: dict[str, int] = {name: 0 for name in EVENTS}

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns the function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def publish(self, event: str, data: dict[str, Any]) -> None:
        if event not in self.published:
            raise ValueError(f"unknown event {event!r}; known: {', '.join(EVENTS)}")
        self.published[event] += 1
        for listener in list(self._listeners):
            try:
                listener(event, data)
            except Exception:
                log.exception("listener for %s failed", event)

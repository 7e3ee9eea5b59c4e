"""One point's metric under one rule: the value judged (window mean or counter increase) and its alert state.

States, Prometheus-like: inactive -> pending (a level breached, not yet for `duration`) ->
firing at warning or critical. Each level has its own pending timer, so a value that jumps
straight past critical fires critical after `duration`. A firing level is held until the
value is clear of it by `hysteresis` for `clear_duration`: a value wobbling at a level can
neither re-fire nor resolve on every sample. Going up (escalation) takes `duration`; going
down (de-escalation, then resolution) takes `clear_duration`. Everything here runs on the
event loop for every sample: a few comparisons and a deque append.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from controller.alerts.rules import RANK, Direction, Rule, Severity
from shared.topology import Point

RESUM_EVERY = 4096  # recompute a running sum from scratch now and then: float drift stays negligible


class Signal:
    """Turns a stream of raw values into the value compared with the levels."""

    def update(self, now: float, value: float) -> float:
        raise NotImplementedError


class Raw(Signal):
    def update(self, now: float, value: float) -> float:
        return value


class WindowMean(Signal):
    """Mean of the samples of the last `window` seconds (a noisy gauge judged on its recent level)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._samples: deque[tuple[float, float]] = deque()
        self._sum = 0.0
        self._pops = 0

    def update(self, now: float, value: float) -> float:
        samples = self._samples
        samples.append((now, value))
        self._sum += value
        horizon = now - self.window
        while samples[0][0] < horizon:
            self._sum -= samples.popleft()[1]
            self._pops += 1
        if self._pops >= RESUM_EVERY:
            self._pops, self._sum = 0, math.fsum(v for _, v in samples)
        return self._sum / len(samples)


class WindowIncrease(Signal):
    """How much a cumulative counter grew over the last `window` seconds; a drop is a restart (counts again from 0)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._samples: deque[tuple[float, float]] = deque()  # (time, counter with restarts folded in)
        self._offset = 0.0
        self._last_raw: float | None = None

    def update(self, now: float, value: float) -> float:
        if self._last_raw is not None and value < self._last_raw:
            self._offset += self._last_raw  # the agent restarted: its counter began again at 0
        self._last_raw = value
        samples = self._samples
        total = value + self._offset
        samples.append((now, total))
        horizon = now - self.window
        while len(samples) > 1 and samples[1][0] <= horizon:  # keep one sample at or before the window's start
            samples.popleft()
        return total - samples[0][1]


def signal_for(rule: Rule) -> Signal:
    if rule.counter:
        return WindowIncrease(rule.window_ms / 1000)
    return WindowMean(rule.window_ms / 1000) if rule.window_ms > 0 else Raw()


def number(raw: Any) -> float | None:
    """A wire value as a float to compare (bools as 0/1); None when it is missing or not a finite number."""
    kind = type(raw)
    if kind is float:
        return raw if math.isfinite(raw) else None
    if kind is int:
        return float(raw)
    if kind is bool:
        return 1.0 if raw else 0.0
    return None


@dataclass(frozen=True)
class Transition:
    action: str                   # created | escalated | deescalated | resolved
    severity: Severity | None     # the new severity (None when resolved)
    value: float                  # the judged value at the transition
    threshold: float | None       # the level of the new severity (None when resolved)
    duration_ms: int              # how long the violation has lasted so far


class Watch:
    """The alert state of one point and metric under the rule that applies there."""

    def __init__(self, point: Point, rule: Rule, index: int) -> None:
        self.point = point
        self.index = index                        # position of the metric in the sample's values
        self.rule = rule
        self.signal = signal_for(rule)
        self.level: Severity | None = None        # firing severity (the active alert's), None when inactive
        self.breach_since: dict[Severity, float] = {}  # when the value began to breach each level, continuously
        self.clear_since: float | None = None     # when the value began to be below the firing level
        self.episode_start: float | None = None   # when the current violation began
        self.value: float | None = None           # the last judged value

    def rebind(self, rule: Rule) -> None:
        """A changed rule: keep the firing state; keep the window when it judges the same way."""
        if (rule.window_ms, rule.metric_id) != (self.rule.window_ms, self.rule.metric_id):
            self.signal = signal_for(rule)
        self.rule = rule
        self.breach_since.clear()
        self.clear_since = None

    def restore(self, severity: Severity, episode_start: float) -> None:
        """Firing again after a restart: resolves only once samples show clear values for clear_duration."""
        self.level, self.episode_start = severity, episode_start

    def reset(self) -> None:
        """Back to inactive (the alert was dismissed): a violation must hold `duration` again to fire."""
        self.level, self.clear_since, self.episode_start = None, None, None
        self.breach_since.clear()

    def step(self, now: float, raw: float) -> Transition | None:
        value = self.value = self.signal.update(now, raw)
        rule = self.rule
        above = rule.direction is Direction.ABOVE
        reached: Severity | None = None
        held: Severity | None = None
        for severity, level in rule.levels():
            if (value > level) if above else (value < level):
                since = self.breach_since.setdefault(severity, now)
                if now - since >= rule.duration_ms / 1000:
                    reached = severity
            else:
                self.breach_since.pop(severity, None)
            if RANK[severity] <= RANK[self.level]:
                clear = (value <= level - rule.hysteresis) if above else (value >= level + rule.hysteresis)
                if not clear:
                    held = severity
        target = reached if RANK[reached] > RANK[held] else held
        return self._move(now, target, value)

    def _move(self, now: float, target: Severity | None, value: float) -> Transition | None:
        current = RANK[self.level]
        if RANK[target] == current:
            self.clear_since = None
            return None
        if RANK[target] > current:
            self.clear_since = None
            if self.level is None:
                self.episode_start = min(self.breach_since.values(), default=now)
                action = "created"
            else:
                action = "escalated"
            self.level = target
            return Transition(action, target, value, self.rule.level(target), self.lasted(now))
        if self.clear_since is None:
            self.clear_since = now
        if now - self.clear_since < self.rule.clear_duration_ms / 1000:
            return None
        lasted = self.lasted(now)
        self.level, self.clear_since = target, None
        if target is None:
            self.episode_start = None
            self.breach_since.clear()
            return Transition("resolved", None, value, None, lasted)
        return Transition("deescalated", target, value, self.rule.level(target), lasted)

    def lasted(self, now: float) -> int:
        """Milliseconds since the current violation began (0 when there is none)."""
        return int(round((now - (self.episode_start if self.episode_start is not None else now)) * 1000))

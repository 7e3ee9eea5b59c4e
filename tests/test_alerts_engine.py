"""The alert engine with a hand-moved clock: for-duration, hysteresis, escalation, resolution, scope, windows."""
from __future__ import annotations

import pytest

from controller.alerts.defaults import DEFAULTS, default_rules
from controller.alerts.engine import INDEX, AlertEngine
from controller.alerts.rules import Direction, Rule, Severity, problems
from controller.alerts.watch import Transition, Watch, WindowIncrease, WindowMean
from controller.clock import ManualClock
from shared.metrics import METRIC_COUNT
from shared.topology import Point, Topology

P1, P2 = Point("Station-1", "3333"), Point("Station-1", "4444")
LATENCY = "latency_end_to_end"


def rule(metric_id: str = LATENCY, warning: float | None = 200, critical: float | None = 300, *,
         direction: Direction = Direction.ABOVE, duration_s: float = 30, clear_s: float = 10,
         hysteresis: float = 20, window_s: float = 0, rule_id: str | None = None, enabled: bool = True,
         stations: tuple[str, ...] | None = None, extensions: tuple[str, ...] | None = None,
         revision: int = 1) -> Rule:
    return Rule(id=rule_id or metric_id, name=rule_id or metric_id, metric_id=metric_id, direction=direction,
                warning=warning, critical=critical, duration_ms=int(duration_s * 1000),
                clear_duration_ms=int(clear_s * 1000), hysteresis=hysteresis, window_ms=int(window_s * 1000),
                enabled=enabled, stations=stations, extensions=extensions, source="rule", revision=revision)


class Harness:
    """An engine over a 2-station topology, fed one value of one metric per call, recording transitions."""

    def __init__(self, *rules: Rule) -> None:
        self.clock = ManualClock()
        self.got: list[tuple[Point, str, Transition]] = []
        self.engine = AlertEngine(Topology(2), self.clock, lambda w, t: self.got.append((w.point, w.rule.id, t)))
        self.engine.set_rules(rules)

    def feed(self, value: object, seconds: float = 1.0, count: int = 1, point: Point = P1,
             metric_id: str = LATENCY) -> list[Transition]:
        """`count` samples of `value`, `seconds` apart (the clock moves before each)."""
        start = len(self.got)
        for _ in range(count):
            self.clock.advance(seconds)
            values: list[object] = [None] * METRIC_COUNT
            values[INDEX[metric_id]] = value
            self.engine.observe(point, 0.0, values)
        return [t for _, _, t in self.got[start:]]


def actions(transitions: list[Transition]) -> list[tuple[str, str | None]]:
    return [(t.action, t.severity.value if t.severity else None) for t in transitions]


def test_fires_only_after_the_duration_held():
    h = Harness(rule())
    assert h.feed(250, count=29) == []           # pending: 28 s since the first breach
    fired = h.feed(250, count=2)
    assert actions(fired) == [("created", "warning")]
    assert fired[0].value == 250 and fired[0].threshold == 200 and fired[0].duration_ms == 30_000


def test_a_short_dip_restarts_the_pending_time():
    h = Harness(rule())
    assert h.feed(250, count=20) == [] and h.feed(150) == [] and h.feed(250, count=30) == []
    assert actions(h.feed(250)) == [("created", "warning")]


def test_a_value_wobbling_at_the_level_neither_flaps_nor_resolves():
    h = Harness(rule())
    h.feed(250, count=31)
    wobble = [h.feed(v) for v in [195, 205] * 150]  # 5 minutes around 200: inside the 20 ms hysteresis band
    assert all(t == [] for t in wobble)
    assert h.feed(175, count=5) == [] and h.feed(205) == []  # clear for 5 s < clearDuration 10 s: still firing
    assert actions(h.feed(170, count=11)) == [("resolved", None)]


def test_escalates_and_de_escalates_in_place_and_resolves():
    h = Harness(rule())
    assert actions(h.feed(250, count=31)) == [("created", "warning")]
    assert h.feed(320, count=29) == []
    escalated = h.feed(320, count=2)
    assert actions(escalated) == [("escalated", "critical")] and escalated[0].threshold == 300
    assert escalated[0].duration_ms == 61_000  # since the violation began, not since the escalation
    assert h.feed(290, count=10) == []  # below 300 but not below 280 (hysteresis): still critical
    assert actions(h.feed(250, count=11)) == [("deescalated", "warning")]
    resolved = h.feed(100, count=11)
    assert actions(resolved) == [("resolved", None)] and resolved[0].duration_ms == 93_000


def test_jumping_past_critical_fires_critical_once():
    h = Harness(rule())
    assert actions(h.feed(500, count=40)) == [("created", "critical")]


def test_direction_below_for_a_score_where_lower_is_worse():
    h = Harness(rule("audioQuality_mos_score", 3.6, 3.1, direction=Direction.BELOW, hysteresis=0.1))
    feed = lambda v, n=1: actions(h.feed(v, count=n, metric_id="audioQuality_mos_score"))  # noqa: E731
    assert feed(4.2, 40) == []
    assert feed(3.4, 31) == [("created", "warning")]
    assert feed(2.5, 31) == [("escalated", "critical")]
    assert feed(3.15, 20) == []                          # above 3.1 but not by the 0.1 hysteresis
    assert feed(4.0, 11) == [("resolved", None)]


def test_one_state_per_point_and_metric():
    h = Harness(rule())
    h.feed(250, count=31, point=P1)
    assert h.feed(250, count=10, point=P2) == []  # P2's own pending time
    h.feed(250, count=25, point=P2)
    assert [(p, t.action) for p, _, t in h.got] == [(P1, "created"), (P2, "created")]


def test_null_and_malformed_values_are_skipped():
    h = Harness(rule())
    assert h.feed(None, count=50) == [] and h.feed("fast", count=5) == [] and h.feed(float("nan")) == []
    h.feed(250, count=31)
    assert h.feed(None, count=100) == []  # no samples, no resolution: the last values were bad


def test_the_most_specific_rule_applies_and_a_disabled_one_silences():
    general = rule(revision=1)
    station = rule(warning=400, critical=500, rule_id="s1", stations=("Station-1",), revision=2)
    silenced = rule(rule_id="s1-4444", stations=("Station-1",), extensions=("4444",), enabled=False, revision=3)
    h = Harness(general, station, silenced)
    assert h.engine.watch(P1, LATENCY).rule.id == "s1"
    assert h.engine.watch(P2, LATENCY) is None
    assert h.engine.watch(Point("Station-2", "3333"), LATENCY).rule.id == LATENCY
    assert h.feed(350, count=40, point=P1) == [] and h.feed(350, count=40, point=P2) == []
    assert actions(h.feed(350, count=31, point=Point("Station-2", "3333"))) == [("created", "critical")]


def test_a_changed_rule_keeps_the_firing_state_and_an_uncovered_one_is_returned():
    h = Harness(rule())
    h.feed(250, count=31)
    assert h.engine.set_rules([rule(warning=240, critical=300, revision=2)]) == []
    assert h.engine.watch(P1, LATENCY).level is Severity.WARNING
    orphans = h.engine.set_rules([])
    assert [w.point for w in orphans] == [P1]


def test_gauges_are_judged_on_their_window_mean():
    h = Harness(rule(window_s=10, duration_s=5))
    noisy = [150, 300] * 30  # mean 225 over any 10 s: above 200 although half the samples are below
    got = [t for v in noisy for t in h.feed(v)]
    assert actions(got) == [("created", "warning")]
    assert 200 < got[0].value < 250


def test_counters_are_judged_on_their_increase_over_the_window_and_survive_a_restart():
    metric = "buffer_underflow_count"
    h = Harness(rule(metric, 30, 150, window_s=60, duration_s=0, clear_s=0, hysteresis=0))
    feed = lambda v: actions(h.feed(v, metric_id=metric))  # noqa: E731
    total = 0
    for _ in range(120):           # 0.2 a second: 12 a minute
        total += 0.2
        assert feed(int(total)) == []
    for _ in range(10):             # 5 a second: the minute's increase passes 30
        total += 5
        got = feed(int(total))
    assert got == [] and h.engine.watch(P1, metric).level is Severity.WARNING
    assert feed(3) == []            # the agent restarted: its counter starts again, no negative increase
    assert h.engine.watch(P1, metric).value >= 50


def test_window_helpers():
    mean = WindowMean(2.0)
    assert [mean.update(t, v) for t, v in [(0, 1), (1, 3), (2, 5), (3.5, 7)]] == [1, 2, 3, 6]
    inc = WindowIncrease(2.0)
    assert [inc.update(t, v) for t, v in [(0, 10), (1, 12), (2, 15), (3, 20), (4, 2)]] == [0, 2, 5, 8, 7]


def test_a_watch_restored_after_a_restart_resolves_only_on_clear_values():
    w = Watch(P1, rule(), INDEX[LATENCY])
    w.restore(Severity.CRITICAL, episode_start=0.0)
    assert w.step(1.0, 350) is None and w.step(2.0, 100) is None
    assert w.step(12.0, 100).action == "resolved"


def test_rule_checks_name_each_problem():
    topology = Topology(2)
    assert problems(rule(), topology) == []
    bad = rule(warning=300, critical=200, stations=("Station-9",), extensions=("5555",))
    assert problems(bad, topology) == [
        {"field": "critical", "problem": "with direction above the critical level must be above the warning "
                                         "level (300)"},
        {"field": "stations.0", "problem": "unknown station 'Station-9' (known: Station-1 … Station-2)"},
        {"field": "extensions.0", "problem": "unknown extension '5555' (known: 3333, 4444)"}]
    assert problems(rule("packet_loss_rate", 0.5, 1.0), topology)[0]["problem"] == (
        "1 is the maximum of packet_loss_rate: a value can never be above it")
    assert problems(rule("audioQuality_mos_score", 3.6, 3.1), topology)[0]["field"] == "critical"
    assert problems(rule(warning=None, critical=None), topology)[0]["field"] == "levels"
    assert problems(rule("buffer_underflow_count", 5, 10, window_s=0), topology)[0]["field"] == "window"
    assert problems(rule("buffer_last_underflow_time", 1, 2), topology)[0]["field"] == "metricId"


@pytest.mark.parametrize("default", DEFAULTS, ids=lambda d: d.metric_id)
def test_shipped_defaults_are_valid_rules(default):
    shipped = default_rules()[default.metric_id]
    assert problems(shipped, Topology(12)) == [] and default.why


def test_messages_carry_the_metrics_units():
    from controller.alerts.alert import message
    from controller.alerts.defaults import default_rules as shipped
    rules = shipped()
    assert message(rules["latency_end_to_end"], Severity.CRITICAL, 340.26, 300) == (
        "Critical end-to-end latency detected: 340ms (threshold: 300ms)")
    assert message(rules["packet_loss_rate"], Severity.WARNING, 0.0812, 0.02) == (
        "Warning packet loss rate detected: 8.12% (threshold: 2%)")
    assert message(rules["audioQuality_mos_score"], Severity.CRITICAL, 2.034, 3.1) == (
        "Critical MOS score detected: 2.03 MOS (threshold: 3.1 MOS)")
    assert message(rules["buffer_underflow_count"], Severity.WARNING, 63, 30) == (
        "Warning buffer underflow count detected: 63 events/min (threshold: 30 events/min)")
    assert message(rules["latency_jitter"], Severity.WARNING, 33.8, 30) == (
        "Warning latency jitter detected: 33.8ms (threshold: 30ms)")

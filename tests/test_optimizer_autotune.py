"""Auto-tune's state machine on a real controller (KnobSync, history, change log) with a manual clock.

An in-process controller with a scripted agent that acknowledges knob sets; the proposer is
scripted (its proposals are what the engine would make); the station's metrics are fed to the
real history store sample by sample, so before and after windows are real history reads.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.app_keys import SERVICES
from controller.clock import ManualClock
from controller.documents import DocumentFile
from controller.knobs.changes import Attribution
from controller.optimizer.autotune import COOLDOWN, IDLE, VERIFYING, AutoTune, AutoTuneSettings
from controller.optimizer.proposal import Interval, Mode, Proposal
from controller.optimizer.targets import Goal
from controller.sample import Sample
from shared.metrics import METRICS
from shared.topology import Point
from tests.acking_agent import make_app, start_agents
from tests.auth import bearer

POINT = Point("Station-1", "3333")
T0 = 1_700_000_000.0
IDX = {m.key: i for i, m in enumerate(METRICS)}
SETTINGS = AutoTuneSettings(enabled=True, mode=Mode.CONSERVATIVE, primary=Goal.MINIMIZE_LATENCY,
                            max_latency_ms=400.0, evaluation_interval_s=40.0, cooldown_s=60.0, max_per_hour=6,
                            scope=(POINT,))


class ScriptedProposer:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.knobs: dict[str, Any] | None = {"playout_delay": 20}

    async def propose(self, point, goal, constraints, mode, avoid=(), secondary=None):
        self.calls.append({"point": point, "goal": goal.key, "avoid": list(avoid)})
        if self.knobs is None:
            return None
        return Proposal(point, dict(self.knobs), {k: 50 for k in self.knobs}, {"cs": tuple(self.knobs)}, goal.key,
                        {goal.key: 100.0}, {goal.key: Interval(70.0, 80.0, 90.0)}, 0.9, 0.01, ("model",))


class Feed:
    """Samples of POINT every 0.5 s into the real history store; latency from `latency(t)` with noise."""

    def __init__(self, services: Any, clock: ManualClock) -> None:
        self.services, self.clock, self.seq, self.t = services, clock, 0, clock.wall()
        self.rng = np.random.default_rng(5)

    async def until(self, end: float, latency: Callable[[float], float]) -> None:
        while self.t < end:
            self.t += 0.5
            self.seq += 1
            values: list[Any] = [None] * len(METRICS)
            values[IDX["latency.end_to_end"]] = latency(self.t) + self.rng.normal(0, 2.0)
            version = self.services.live.points[POINT].applied_version or 1
            self.services.history.append(Sample(POINT, self.seq, self.t, values, version, {"jitter_ms": 10.0}))
        self.clock.advance(end - self.clock.wall())
        await self.services.history.flush()


@pytest.fixture
async def rig(tmp_path: Path):
    clock = ManualClock(T0)
    app = make_app(tmp_path, clock=clock, offline_after_ms=10_000_000, stale_after_ms=10_000_000)
    async with TestClient(TestServer(app), headers=bearer(tmp_path)) as client:
        services = client.app[SERVICES]
        agents = await start_agents(client, {"Station-1": "ack"})
        proposer = ScriptedProposer()
        made: list[AutoTune] = []

        async def autotune() -> AutoTune:
            tune = AutoTune(services.topology, clock, services.knob_sync, services.live, services.history, proposer,
                            services.events, DocumentFile(tmp_path / "autotune.json"), settle_s=2.0)
            await tune.open(run=False)
            made.append(tune)
            return tune

        events: list[dict[str, Any]] = []
        services.events.subscribe(lambda name, body: events.append(body) if name == "optimization-complete" else None)
        yield services, clock, Feed(services, clock), proposer, autotune, events
        for tune in made:
            await tune.close()
        for agent in agents.values():
            agent.close()


async def change_applied(tune: AutoTune, feed: Feed, clock: ManualClock, before: float = 100.0) -> None:
    """Before-window at `before` ms, then auto-tune's change, applied by the agent and under verification."""
    await feed.until(clock.wall() + 40, lambda t: before)
    await tune.tick()
    await tune.wait_idle()
    assert tune.points[POINT].state == VERIFYING
    await tune.tick()                                          # the agent's ACK is in: applied


async def cycle(tune: AutoTune, feed: Feed, clock: ManualClock, before: float, after: float) -> None:
    """Before-window at `before` ms, a change, the after-window at `after` ms, then the verdict."""
    await change_applied(tune, feed, clock, before)
    await feed.until(clock.wall() + 40, lambda t: after)      # settle 2 s + a 30 s window, with room
    await tune.tick()


async def test_a_change_that_measured_better_is_kept(rig) -> None:
    services, clock, feed, proposer, autotune, events = rig
    tune = await autotune()
    await tune.configure(SETTINGS)
    await cycle(tune, feed, clock, before=100.0, after=80.0)
    state = tune.points[POINT]
    assert state.state == COOLDOWN and state.last_outcome["outcome"] == "kept"
    assert services.desired.get(POINT).knobs["playout_delay"] == 20
    assert events[-1]["kind"] == "auto-tune" and events[-1]["outcome"] == "kept"
    assert events[-1]["before"]["latency.end_to_end"] == pytest.approx(100, abs=2)
    assert events[-1]["after"]["latency.end_to_end"] == pytest.approx(80, abs=2)
    change = services.knob_changes.changes_of(POINT)[-1]
    assert change.who.source == "optimizer"


async def test_a_change_that_measured_worse_is_rolled_back_and_remembered(rig) -> None:
    services, clock, feed, proposer, autotune, events = rig
    tune = await autotune()
    await tune.configure(SETTINGS)
    await cycle(tune, feed, clock, before=100.0, after=130.0)
    state = tune.points[POINT]
    assert state.last_outcome["outcome"] == "rolled_back"
    assert services.desired.get(POINT).knobs["playout_delay"] == 50      # the defaults again
    last = services.knob_changes.changes_of(POINT)[-1]
    assert last.who.source == "rollback" and "no measured improvement" in last.who.reason
    assert state.bad[-1]["knobs"] == {"playout_delay": 20}
    await feed.until(clock.wall() + 70, lambda t: 100.0)                 # past the cooldown
    await tune.tick()
    await tune.wait_idle()
    assert proposer.calls[-1]["avoid"] == [{"playout_delay": 20}]


async def test_a_difference_within_the_noise_is_not_kept(rig) -> None:
    services, clock, feed, proposer, autotune, events = rig
    tune = await autotune()
    await tune.configure(SETTINGS)
    await cycle(tune, feed, clock, before=100.0, after=99.5)
    assert tune.points[POINT].last_outcome["outcome"] == "rolled_back"


async def test_a_broken_constraint_rolls_back_even_when_the_goal_improved(rig) -> None:
    services, clock, feed, proposer, autotune, events = rig
    tune = await autotune()
    await tune.configure(AutoTuneSettings(**{**SETTINGS.__dict__, "primary": Goal.MINIMIZE_LATENCY,
                                             "max_latency_ms": 90.0}))
    await cycle(tune, feed, clock, before=85.0, after=95.0)
    outcome = tune.points[POINT].last_outcome
    assert outcome["outcome"] == "rolled_back" and "maxLatency" in outcome["reason"]


async def test_cooldown_and_hourly_cap(rig) -> None:
    services, clock, feed, proposer, autotune, events = rig
    tune = await autotune()
    await tune.configure(AutoTuneSettings(**{**SETTINGS.__dict__, "max_per_hour": 2}))
    await cycle(tune, feed, clock, before=100.0, after=80.0)
    calls = len(proposer.calls)
    await feed.until(clock.wall() + 20, lambda t: 80.0)       # inside the 60 s cooldown
    await tune.tick()
    await tune.wait_idle()
    assert len(proposer.calls) == calls
    proposer.knobs = {"playout_delay": 10}
    await feed.until(clock.wall() + 45, lambda t: 80.0)       # cooldown over: a second change
    await cycle(tune, feed, clock, before=80.0, after=60.0)
    assert tune.points[POINT].last_outcome["outcome"] == "kept" and len(proposer.calls) == calls + 1
    await feed.until(clock.wall() + 70, lambda t: 60.0)       # cooldown over again, but 2 changes this hour
    await tune.tick()
    await tune.wait_idle()
    assert len(proposer.calls) == calls + 1 and "hourly cap" in tune.points[POINT].note
    assert tune.status([POINT])["points"][0]["adjustmentsLastHour"] == 2


async def test_a_persons_change_cancels_the_verification_and_is_never_reverted(rig) -> None:
    services, clock, feed, proposer, autotune, events = rig
    tune = await autotune()
    await tune.configure(SETTINGS)
    await feed.until(clock.wall() + 40, lambda t: 100.0)
    await tune.tick()
    await tune.wait_idle()
    assert tune.points[POINT].state == VERIFYING
    await services.knob_sync.change(POINT, {"agc_enabled": False}, Attribution("alice", "api"))
    assert tune.points[POINT].last_outcome["outcome"] == "cancelled"
    await feed.until(clock.wall() + 40, lambda t: 150.0)      # worse, but alice's change stands
    await tune.tick()
    desired = services.desired.get(POINT)
    assert desired.knobs["agc_enabled"] is False and desired.knobs["playout_delay"] == 20
    assert services.knob_changes.changes_of(POINT)[-1].who.by == "alice"


async def test_a_restart_mid_verification_verifies_after_it(rig) -> None:
    services, clock, feed, proposer, autotune, events = rig
    tune = await autotune()
    await tune.configure(SETTINGS)
    await change_applied(tune, feed, clock)
    await tune.close()                                        # the controller stops mid-verification
    again = await autotune()
    assert again.points[POINT].state == VERIFYING and again.settings.enabled
    await feed.until(clock.wall() + 40, lambda t: 130.0)
    await again.tick()
    assert again.points[POINT].last_outcome["outcome"] == "rolled_back"
    assert services.desired.get(POINT).knobs["playout_delay"] == 50


async def test_disabled_it_starts_nothing_and_no_proposal_means_no_change(rig) -> None:
    services, clock, feed, proposer, autotune, events = rig
    tune = await autotune()
    await tune.configure(AutoTuneSettings(**{**SETTINGS.__dict__, "enabled": False}))
    await feed.until(clock.wall() + 40, lambda t: 100.0)
    await tune.tick()
    await tune.wait_idle()
    assert not proposer.calls
    proposer.knobs = None
    await tune.configure(SETTINGS)
    await tune.tick()
    await tune.wait_idle()
    assert proposer.calls and tune.points[POINT].state == IDLE
    assert services.desired.get(POINT).version == 1


async def test_settings_per_scope_give_each_point_its_goal_and_survive_a_restart(rig) -> None:
    services, clock, feed, proposer, autotune, events = rig
    other = Point("Station-1", "4444")
    proposer.knobs = None
    tune = await autotune()
    await tune.configure(SETTINGS)                           # POINT: minimize latency
    underflows = AutoTuneSettings(**{**SETTINGS.__dict__, "primary": Goal.MINIMIZE_UNDERFLOWS, "scope": (other,)})
    await tune.configure(underflows)                         # the other point gets its own goal; POINT keeps its
    await tune.tick()
    await tune.wait_idle()
    goals = {c["point"]: c["goal"] for c in proposer.calls}
    assert goals == {POINT: "latency.end_to_end", other: "underflows_per_s"}
    status = {(p["station"], p["extension"]): p for p in tune.status([POINT, other])["points"]}
    assert status[("Station-1", "4444")]["primaryGoal"] == "minimize_underflows"
    assert status[("Station-1", "3333")]["primaryGoal"] == "minimize_latency"
    profiles = tune.status([POINT])["profiles"]                # the initial (disabled) settings keep the rest
    assert [p["enabled"] for p in profiles] == [False, True, True]
    assert {x["extension"] for x in profiles[1]["scope"]["points"] + profiles[2]["scope"]["points"]} == {"3333", "4444"}

    await tune.configure(AutoTuneSettings(**{**underflows.__dict__, "enabled": False}))   # off for `other` only
    await tune.close()
    again = await autotune()
    assert again.in_scope(POINT) and not again.in_scope(other)
    assert again.settings_for(POINT).primary is Goal.MINIMIZE_LATENCY

    await again.configure(AutoTuneSettings(**{**SETTINGS.__dict__, "scope": None}))        # no scope: every point
    assert len(again.profiles) == 1 and again.in_scope(other)


async def test_a_change_is_judged_by_the_settings_it_was_made_under(rig) -> None:
    services, clock, feed, proposer, autotune, events = rig
    tune = await autotune()
    await tune.configure(SETTINGS)
    await change_applied(tune, feed, clock)
    # New settings for the point while its change is verified: a goal the feed does not carry and a tight limit.
    await tune.configure(AutoTuneSettings(**{**SETTINGS.__dict__, "primary": Goal.MINIMIZE_UNDERFLOWS,
                                             "max_latency_ms": 50.0}))
    await feed.until(clock.wall() + 40, lambda t: 80.0)
    await tune.tick()
    outcome = tune.points[POINT].last_outcome
    assert outcome["outcome"] == "kept" and outcome["goal"] == "latency.end_to_end"

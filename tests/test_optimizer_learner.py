"""The learner's schedule: points in turn, and every other round a degraded point, longest unexplored first."""
from __future__ import annotations

from types import SimpleNamespace

from controller.clock import SystemClock
from controller.optimizer.learner import Learner
from shared.topology import Point, Topology


def learner(degraded: set[Point] | None, offline: set[str] = frozenset()) -> Learner:
    live = SimpleNamespace(agent_online=lambda station: station not in offline)
    engine = SimpleNamespace(live=live)
    return Learner(engine, models=None, bank=None, history=None, knob_set_at=None, topology=Topology(4),
                   clock=SystemClock(), degraded=None if degraded is None else (lambda: degraded))


def test_without_degraded_points_the_rounds_go_in_turn() -> None:
    topology = Topology(4)
    plain = learner(None)
    assert [plain._next_online() for _ in range(8)] == list(topology.points)
    quiet = learner(set())
    assert [quiet._next_online() for _ in range(8)] == list(topology.points)


def test_every_other_round_explores_a_degraded_point_least_recently_explored_first() -> None:
    topology = Topology(4)
    sick = {topology.point("Station-3", "3333"), topology.point("Station-4", "4444")}
    lrn = learner(sick)
    picks = [lrn._next_online() for _ in range(12)]
    assert set(picks[1::2]) == sick and picks[1] != picks[3]     # alternates between the two degraded points
    assert picks[0::2] == list(topology.points)[:6]              # and the others still get their turn
    assert sum(p in sick for p in picks) >= 6


def test_a_degraded_point_whose_agent_is_offline_is_skipped() -> None:
    topology = Topology(4)
    lrn = learner({topology.point("Station-3", "3333")}, offline={"Station-3"})
    picks = [lrn._next_online() for _ in range(6)]
    assert all(p.station != "Station-3" for p in picks)

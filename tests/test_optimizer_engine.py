"""Dataset, models, search and engine together on a real history store fed a world with a known effect.

The world: a point whose jitter makes the playout run dry unless the playout delay holds
enough audio back (underflows per second fall with playout_delay / jitter), and whose
latency grows one for one with the playout delay. Live history holds windows under many
knob versions; the engine must learn that, propose a longer delay when underflows are the
goal, respect a latency ceiling, and propose nothing where the models cannot support it.
"""
from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.optimizer.dataset import RowBank, RowBlock, history_rows, windowed
from controller.optimizer.engine import AnalysisEngine, Replayed, combined_effect
from controller.optimizer.features import FEATURE_INDEX
from controller.optimizer.proposal import Mode
from controller.optimizer.replay import ReplayUnavailable
from controller.optimizer.search_pool import SearchPool, SearchRequest, SearchTimeout
from controller.optimizer.targets import LATENCY, UNDERFLOWS, Constraints, constraints_of
from controller.optimizer.trainer import ModelSet
from controller.sample import Sample
from shared.knobs import defaults
from shared.metrics import METRICS
from shared.topology import Point
from tests.history_feed import Clocks

POINT = Point("Station-7", "3333")
SIBLING = Point("Station-7", "4444")
INDEX = {m.key: i for i, m in enumerate(METRICS)}
JITTER = 60.0
EVERY = 0.5


def underflow_rate(playout: float, jitter: float) -> float:
    return 6.0 * np.exp(-playout / jitter)


@dataclass
class World:
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(7))
    knob_sets: dict[int, dict[str, Any]] = field(default_factory=dict)
    underflows: float = 0.0
    received: float = 0.0

    def samples(self, point: Point, start: float, version: int, playout: int, n: int, seq0: int) -> list[Sample]:
        knobs = {**defaults(), "playout_delay": playout, "jitter_buffer_depth": max(200, playout)}
        self.knob_sets[version] = knobs
        out = []
        for i in range(n):
            self.underflows += self.rng.poisson(underflow_rate(playout, JITTER) * EVERY)
            self.received += 25
            values: list[Any] = [None] * len(METRICS)
            values[INDEX["latency.end_to_end"]] = 40.0 + playout + self.rng.normal(0, 3)
            values[INDEX["buffer.underflow_count"]] = int(self.underflows)
            values[INDEX["packet.loss_count"]] = 0
            values[INDEX["packet.received_count"]] = int(self.received)
            values[INDEX["audioQuality.mos_score"]] = 4.2 - 0.3 * underflow_rate(playout, JITTER)
            values[INDEX["audioQuality.snr"]] = 25.0
            values[INDEX["performance.cpu_usage"]] = 10.0
            out.append(Sample(point, seq0 + i, start + i * EVERY, values, version,
                              {"jitter_ms": JITTER, "delay_ms": 70.0, "loss_rate": 0.002}))
        return out


class FakeDesired:
    def __init__(self, knobs: dict[str, Any], version: int) -> None:
        self.knobs, self.version = knobs, version


@dataclass
class FakePointLive:
    conditions: dict[str, Any]
    applied_version: int


class FakeLive:
    def __init__(self, version: int) -> None:
        cond = {"jitter_ms": JITTER, "delay_ms": 70.0, "loss_rate": 0.002}
        self.points = {POINT: FakePointLive(cond, version), SIBLING: FakePointLive(cond, 1)}

    def agent_online(self, station: str) -> bool:
        return False   # no replay in this test: the models' word alone


class FakeSync:
    def __init__(self, knobs: dict[str, Any], version: int) -> None:
        self.store = self
        self._desired = FakeDesired(knobs, version)

    def get(self, point: Point) -> FakeDesired:
        return self._desired


@pytest.fixture
async def learned(tmp_path: Path):
    clocks = Clocks()
    store = clocks.store(tmp_path / "history.sqlite")
    store.open()
    world = World()
    t, seq = clocks.wall, 1
    playouts = [20, 40, 60, 80, 120, 160, 220, 300, 30, 50, 100, 140, 200, 260, 70, 90, 180, 240, 110, 45]
    for version, playout in enumerate(playouts, start=1):
        for s in world.samples(POINT, t, version, playout, 120, seq):
            store.append(s)
        t += 120 * EVERY
        seq += 120
    last_version = len(playouts) + 1
    for s in world.samples(POINT, t, last_version, 40, 130, seq):   # today: a short delay, many underflows
        store.append(s)
    t += 130 * EVERY
    clocks.wall = t
    clocks.mono += 10_000
    store.flush_now()

    async def knob_set_at(point: Point, version: int) -> dict[str, Any] | None:
        return world.knob_sets.get(version)

    rows = await history_rows(store, knob_set_at, [POINT, SIBLING], clocks.wall - 4 * 3600, clocks.wall + 1, 3.0)
    models = ModelSet(tmp_path / "models", time_budget_s=20, min_rows=100, wall=lambda: clocks.wall)
    run = await models.train(rows, [LATENCY.key, UNDERFLOWS.key, "quality"])
    clock = type("C", (), {"wall": staticmethod(lambda: clocks.wall), "monotonic": staticmethod(lambda: clocks.mono)})
    engine = AnalysisEngine(store, FakeSync(world.knob_sets[last_version], last_version), FakeLive(last_version),
                            models, RowBank(None), None, clock, now_window_s=60.0, candidates=800)
    yield engine, rows, run, models
    models.close()
    store.close()


def test_windows_never_span_versions_and_count_rates() -> None:
    ts = np.arange(0, 12, 0.5)
    series = {"underflows_per_s": np.full(len(ts), 2.0), "latency.end_to_end": np.arange(len(ts), dtype=float)}
    cut = np.zeros(len(ts), dtype=np.int64)
    cut[10] = 1
    ends, means, last = windowed(ts, series, 3.0, cut)
    assert list(last) == [5, 9, 15, 21]           # 0..5, 6..9 (cut), 10..15, 16..21 (22..23: a stub, dropped)
    assert means[0, 3] == pytest.approx(2.0)


async def test_history_rows_carry_each_windows_full_knob_set(learned) -> None:
    _, rows, run, _ = learned
    assert isinstance(rows, RowBlock) and len(rows) > 400
    assert not run.missing, run.missing
    playout = rows.features[:, FEATURE_INDEX["knob.playout_delay"]]
    assert set(np.unique(playout)) >= {20.0, 300.0, 40.0}


async def test_engine_proposes_a_longer_playout_delay_for_underflows(learned) -> None:
    engine, _, _, _ = learned
    outcome = await engine.outcome(POINT, UNDERFLOWS, Constraints(), Mode.CONSERVATIVE)
    assert outcome.proposal is not None, outcome.reason
    p = outcome.proposal
    assert p.knobs.get("playout_delay", 40) > 40 or p.knobs.get("jitter_buffer_depth") is not None
    predicted = p.predicted[UNDERFLOWS.key]
    assert predicted.hi < p.now[UNDERFLOWS.key]          # pessimistic: even the upper end is better
    assert predicted.lo <= predicted.median <= predicted.hi
    assert 0.5 < p.confidence <= 1.0
    assert p.evidence == ("model",)


async def test_a_latency_ceiling_bounds_the_proposal(learned) -> None:
    engine, _, _, _ = learned
    ceiling = constraints_of(max_latency_ms=150.0)
    outcome = await engine.outcome(POINT, UNDERFLOWS, ceiling, Mode.BALANCED)
    assert outcome.proposal is not None, outcome.reason
    assert outcome.proposal.predicted[LATENCY.key].hi <= 150.0
    assert 40 < outcome.proposal.knobs["playout_delay"] <= 110   # 40 ms + playout under 150 ms, pessimistically


async def test_nothing_is_proposed_without_a_model(learned) -> None:
    engine, _, _, models = learned
    del models.models[LATENCY.key]
    outcome = await engine.outcome(POINT, LATENCY, Constraints(), Mode.BALANCED)
    assert outcome.proposal is None and "too little data" in outcome.reason


async def test_prediction_follows_the_learned_effect(learned) -> None:
    engine, _, _, _ = learned
    short = await engine.predict(POINT, {"playout_delay": 20}, [LATENCY.key, UNDERFLOWS.key])
    long = await engine.predict(POINT, {"playout_delay": 200}, [LATENCY.key, UNDERFLOWS.key])
    assert long[LATENCY.key]["predicted"] > short[LATENCY.key]["predicted"] + 100
    assert long[UNDERFLOWS.key]["predicted"] < short[UNDERFLOWS.key]["predicted"]
    interval = long[LATENCY.key]["interval"]
    assert interval["p10"] <= interval["median"] <= interval["p90"]


async def test_an_aggressive_proposal_carries_only_the_knobs_that_matter(learned) -> None:
    # Only the playout delay acts in this world: whatever else a wide random draw moved is pruned away.
    engine, _, _, _ = learned
    outcome = await engine.outcome(POINT, UNDERFLOWS, Constraints(), Mode.AGGRESSIVE)
    assert outcome.proposal is not None, outcome.reason
    assert set(outcome.proposal.knobs) <= {"playout_delay", "jitter_buffer_depth"}, outcome.proposal.knobs
    assert outcome.proposal.predicted[UNDERFLOWS.key].hi < outcome.proposal.now[UNDERFLOWS.key]


def _replayed(engine, version: int, partial: dict, underflows: tuple[float, float],
              latency: tuple[float, float] = (0.0, 0.5), age_s: float = 60.0) -> Replayed:
    nan = (float("nan"), float("nan"))
    return Replayed(engine.clock.wall() - age_s, version, partial,
                    {UNDERFLOWS.key: underflows, LATENCY.key: latency, "quality": nan, "residual_loss": nan}, True)


async def test_the_points_own_replays_support_a_change_the_models_cannot(learned) -> None:
    engine, _, _, _ = learned
    version = engine.knob_sync.store.get(POINT).version
    good = {"playout_delay": 90}
    engine.replayed[POINT] = deque([
        _replayed(engine, version, {"playout_delay": 60}, (-0.1, 0.2)),                 # within the noise
        _replayed(engine, version, {"playout_delay": 70}, (-2.0, 0.3), latency=(+30.0, 1.0)),   # breaks the limit
        _replayed(engine, version - 1, {"playout_delay": 80}, (-3.0, 0.3)),             # another version
        _replayed(engine, version, {"playout_delay": 100}, (-3.0, 0.3), age_s=5000),     # too old
        _replayed(engine, version, {"playout_delay": 1000}, (-4.0, 0.3)),               # outside the trust region
        _replayed(engine, version, {"playout_delay": 95}, (-3.0, 0.3)),                # one trace only
        _replayed(engine, version, good, (-1.4, 0.25), latency=(-1.0, 0.5)),           # two traces
        _replayed(engine, version, good, (-1.6, 0.25), latency=(-1.0, 0.5)),
    ])
    # A latency ceiling already broken today (~80 ms): no model candidate's pessimistic end keeps it.
    ceiling = constraints_of(max_latency_ms=10.0)
    outcome = await engine.outcome(POINT, UNDERFLOWS, ceiling, Mode.BALANCED)
    assert outcome.proposal is not None, outcome.reason
    p = outcome.proposal
    assert p.knobs == good and p.evidence == ("replay",) and outcome.supported == 0
    today = p.now[UNDERFLOWS.key]
    interval = p.predicted[UNDERFLOWS.key]
    assert interval.median == pytest.approx(today - 1.5)
    # the two traces' errors combined (their spread, 0.1, is smaller): 0.25 * sqrt(2) / 2
    assert interval.hi - interval.median == pytest.approx(1.2816 * 0.25 * 2 ** 0.5 / 2, rel=1e-3)
    assert p.confidence > 0.99 and p.replay_delta[UNDERFLOWS.key] == -1.5

    engine.replayed[POINT].pop()                         # one trace of it left: nothing holds, the answer says so
    outcome = await engine.outcome(POINT, UNDERFLOWS, ceiling, Mode.BALANCED)
    assert outcome.proposal is None and "no replay of this point measured one" in outcome.reason


def test_traces_that_disagree_widen_the_combined_error() -> None:
    agree = combined_effect([{UNDERFLOWS.key: (-3.0, 0.2)}, {UNDERFLOWS.key: (-3.1, 0.2)}])
    disagree = combined_effect([{UNDERFLOWS.key: (-3.0, 0.2)}, {UNDERFLOWS.key: (-0.2, 0.2)}])
    assert agree[UNDERFLOWS.key] == pytest.approx((-3.05, 0.2 * 2 ** 0.5 / 2))
    assert disagree[UNDERFLOWS.key] == pytest.approx((-1.6, 2.8 / 2))   # the traces' spread: std 1.98 / sqrt(2)


async def test_the_search_runs_in_a_worker_process_as_it_would_in_process(learned) -> None:
    engine, _, _, models = learned
    now = await engine.state(POINT, [UNDERFLOWS.key])
    request = SearchRequest(UNDERFLOWS, Constraints(), dict(now.now), dict(now.knobs), now.context, Mode.BALANCED,
                            400, seed=3)
    local = await SearchPool(in_process=True).search(models.models, request)
    pool = SearchPool(timeout_s=60, workers=2)
    try:
        # two at once: each worker takes one and is sent the models
        remote, other = await asyncio.gather(pool.search(models.models, request), pool.search(models.models, request))
        assert remote.drawn == local.drawn and remote.supported == local.supported > 0
        assert [b.partial for b in remote.best] == [b.partial for b in local.best] == [b.partial for b in other.best]
        assert all(w.sent for w in pool._workers)             # both hold the models now: not sent again
        again = await pool.search(models.models, request)
        assert [b.partial for b in again.best] == [b.partial for b in local.best]
        pool.timeout_s = 0.001                                # a search over its time: abandoned, worker replaced
        with pytest.raises(SearchTimeout):
            await pool.search(models.models, request)
        pool.timeout_s = 60
        assert [b.partial for b in (await pool.search(models.models, request)).best] == [b.partial for b in local.best]
    finally:
        pool.close()


async def test_nothing_is_changed_unchecked_while_the_agent_could_check_it(learned) -> None:
    engine, _, _, _ = learned

    class Unavailable:
        async def evaluate(self, point, sets, timeout_s):
            raise ReplayUnavailable("agent Station-7 did not answer the replay within 60 s")

    assert (await engine.outcome(POINT, UNDERFLOWS, Constraints(), Mode.CONSERVATIVE)).proposal is not None
    engine.replay, engine.live.agent_online = Unavailable(), lambda station: True
    outcome = await engine.outcome(POINT, UNDERFLOWS, Constraints(), Mode.CONSERVATIVE)
    assert outcome.proposal is None and "could not check" in outcome.reason and "did not answer" in outcome.reason
    # An analysis answers from the models at once (its replay check follows): not blocked.
    assert (await engine.outcome(POINT, UNDERFLOWS, Constraints(), Mode.CONSERVATIVE, use_replay=False)).proposal

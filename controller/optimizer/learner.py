"""How the optimizer learns: what-if replays that explore the knob space, and periodic retraining.

Live history at defaults says little about what knobs do, so every `interval_s` the learner
takes an online point and asks its agent to replay its recent trace under
today's set, `explore` random candidates of every trust region (weighted toward the knob
categories that act on the core targets) and, once models exist, the models' best candidate
for each core target (so what the models believe is checked where it matters). The windows
become training rows. Points are taken in turn, but every other round goes to a degraded point
(one with active alerts; the one explored longest ago): a recommendation needs some 15-20
replays of its point (docs/optimizer.md), which plain round robin over a site reaches in hours.
Every `retrain_every_s` (and at the first chance after the first replay
rows arrive) the models are retrained on those rows plus `lookback_s` of live history, which
includes the live outcomes of every change applied (they are history samples under a version).
"""
from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Collection, Iterable
from typing import Any

import numpy as np

from controller.clock import Clock
from controller.optimizer.dataset import RowBank, RowBlock, history_rows
from controller.optimizer.engine import REPLAY_SIGMAS, AnalysisEngine, PointNow, Replayed
from controller.optimizer.proposal import Mode
from controller.optimizer.replay import ReplayUnavailable
from controller.optimizer.search import PRIOR, move_weights, sample_candidates
from controller.optimizer.search_pool import SearchRequest, SearchTimeout
from controller.optimizer.targets import (
    LATENCY,
    MINIMIZE,
    QUALITY,
    RESIDUAL_LOSS,
    TARGETS,
    UNDERFLOWS,
    Constraints,
    Target,
)
from controller.optimizer.trainer import ModelSet, TrainingRun
from shared.protocol import MAX_CANDIDATES
from shared.topology import Point, Topology

log = logging.getLogger("tpmon.controller.optimizer")

CORE_TARGETS: tuple[str, ...] = (LATENCY.key, QUALITY.key, RESIDUAL_LOSS.key, UNDERFLOWS.key)


class Learner:
    def __init__(self, engine: AnalysisEngine, models: ModelSet, bank: RowBank, history: object,
                 knob_set_at: object, topology: Topology, clock: Clock, *, interval_s: float = 30.0, explore: int = 8,
                 retrain_every_s: float = 300.0, lookback_s: float = 3600.0, seed: int = 1,
                 degraded: Callable[[], Collection[Point]] | None = None) -> None:
        self.engine, self.models, self.bank = engine, models, bank
        self.history, self.knob_set_at, self.topology, self.clock = history, knob_set_at, topology, clock
        self.interval_s, self.explore, self.retrain_every_s, self.lookback_s = (
            interval_s, explore, retrain_every_s, lookback_s)
        self.targets: set[str] = set(CORE_TARGETS)
        self.replays = self.replay_failures = 0
        self.rng = np.random.default_rng(seed)
        self._next = 0
        self.degraded = degraded            # points with active alerts, asked every other round
        self._rounds = 0
        self._explored: dict[Point, int] = {}  # point -> the round it was last explored in
        self._last_train = clock.monotonic()   # the first periodic training waits a full period
        self._rows_at_train = -1
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def want(self, keys: Iterable[str]) -> None:
        """Targets an analysis asked for get a model at the next training."""
        self.targets.update(k for k in keys if k in TARGETS)

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed round is logged; the next one starts afresh
                log.exception("optimizer learning round failed")

    async def step(self) -> None:
        point = self._next_online()
        if point is not None and self.engine.replay is not None:
            await self.explore_point(point)
        first_rows = len(self.bank.rows) > 0 and self._rows_at_train < 0 and not self.models.models
        if first_rows or self.clock.monotonic() - self._last_train >= self.retrain_every_s:
            await self.retrain()

    def _next_online(self) -> Point | None:
        self._rounds += 1
        point = self._next_degraded() if self._rounds % 2 == 0 else None
        point = point or self._next_in_turn()
        if point is not None:
            self._explored[point] = self._rounds
        return point

    def _next_degraded(self) -> Point | None:
        if self.degraded is None:
            return None
        online = [p for p in self.degraded() if self.engine.live.agent_online(p.station)]
        return min(online, key=lambda p: (self._explored.get(p, 0), p.id), default=None)

    def _next_in_turn(self) -> Point | None:
        points = self.topology.points
        for i in range(len(points)):
            point = points[(self._next + i) % len(points)]
            if self.engine.live.agent_online(point.station):
                self._next = (self._next + i + 1) % len(points)
                return point
        return None

    async def explore_point(self, point: Point) -> int:
        """Replay today's set, random candidates and the models' best ones on `point`'s agent; rows kept."""
        now = await self.engine.state(point, CORE_TARGETS)
        if now.pending or now.samples < 10:
            return 0
        weights = np.mean([move_weights(t) for t in PRIOR], axis=0)
        # Every trust region gets draws: the wide ones teach the models most, the narrow ones can become
        # proposals of the narrower modes on the strength of this replay alone (engine.replay_supported).
        shares = {Mode.AGGRESSIVE: 0.4, Mode.BALANCED: 0.35, Mode.CONSERVATIVE: 0.25}
        candidates = [c for mode, share in shares.items()
                      for c in sample_candidates(now.knobs, mode, max(1, round(self.explore * share)), self.rng, weights)]
        for key in CORE_TARGETS:
            if key in self.models.models:
                try:
                    found = await self.engine.search_pool.search(self.models.models, SearchRequest(
                        TARGETS[key], Constraints(), dict(now.now), dict(now.knobs), now.context, Mode.BALANCED, 500,
                        int(self.rng.integers(2**31)), prune_top=1, keep=1))
                except SearchTimeout as exc:
                    log.info("exploration search on %s: %s", point.id, exc)
                    continue
                candidates += [b.partial for b in found.best]
        # Replay evidence needs two traces (engine.REPLAY_TRACES): the candidates one trace measured best
        # for each core target are measured again on this fresh one.
        candidates += self._second_looks(now, len(candidates))
        sets = [now.knobs] + [{**now.knobs, **c} for c in candidates]
        try:
            answer = await self.engine.replay.evaluate(point, sets, self.engine.replay_timeout_s)
        except ReplayUnavailable as exc:
            self.replay_failures += 1
            log.info("exploration replay on %s unavailable: %s", point.id, exc)
            return 0
        self.engine.keep_replay(answer, now)
        self.replays += 1
        return len(answer.results)

    def _second_looks(self, now: PointNow, room: int) -> list[dict[str, Any]]:
        """Per core target, the single-trace candidate with the largest gain beyond its error, not yet seen twice."""
        once = [r for r in self.engine.remembered(now) if r.traces == 1]
        picked: list[dict[str, Any]] = []
        for key in CORE_TARGETS:
            target = TARGETS[key]
            def gain(r: Replayed, target: Target = target) -> float:
                mean, se = r.effect.get(target.key, (math.nan, math.nan))
                g = -mean if target.direction == MINIMIZE else mean
                return g - REPLAY_SIGMAS * se if math.isfinite(g) and math.isfinite(se) else -math.inf
            best = max(once, key=gain, default=None)
            if best is not None and gain(best) > 0 and best.partial not in picked:
                picked.append(best.partial)
        return picked[:max(0, MAX_CANDIDATES - 1 - room)]   # today's set is the first of the replay

    async def retrain(self) -> TrainingRun:
        end = self.clock.wall()
        live = await history_rows(self.history, self.knob_set_at, self.topology.points, end - self.lookback_s, end,
                                  self.engine.window_s)
        rows = RowBlock.join([self.bank.rows, live])
        self._rows_at_train = len(self.bank.rows)
        self._last_train = self.clock.monotonic()
        run = await self.models.train(rows, sorted(self.targets))
        await asyncio.to_thread(self.bank.save)
        return run

"""The search off the event loop: candidates drawn, scored by the models and pruned in a worker process.

Drawing a couple of thousand candidates, encoding and scoring them and pruning the winners
takes a few hundred milliseconds of CPU; on the event loop that would stall every request
and the 150 ms tick meanwhile. So `SearchPool.search` runs `search` in a spawned worker (as
training does), bounded by `timeout_s`: a search over it is abandoned, the worker replaced,
and the caller told (SearchTimeout). With `workers` > 1 (the controller uses two on a machine
with two cores or more) the points of one analysis are searched side by side. The worker keeps the models it was sent, keyed
by when each was trained and on how many rows, so a model's bytes cross the pipe once per
training, not once per search. Without a pool (`SearchPool(in_process=True)`, unit tests)
the same function runs in the caller.
"""
from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from controller.optimizer.models import QuantileModel
from controller.optimizer.proposal import Mode
from controller.optimizer.search import Scored, move_weights, near, prune, sample_candidates, score
from controller.optimizer.targets import Constraints, Target


@dataclass(frozen=True)
class SearchRequest:
    goal: Target
    constraints: Constraints
    now: dict[str, float | None]           # today's measured value of each target
    current: dict[str, Any]                # the full knob set the point runs
    context: np.ndarray                    # the point's non-knob features
    mode: Mode
    count: int                             # candidates to draw
    seed: int
    avoid: tuple[dict[str, Any], ...] = ()  # rolled-back regions
    secondary: Target | None = None
    prune_top: int = 3                     # the best this many are pruned to the moves they need
    keep: int = 10                         # supported candidates returned


@dataclass(frozen=True)
class SearchResult:
    drawn: int                                          # candidates drawn (outside the avoided regions)
    supported: int                                      # of them supported by the models
    best: list[Scored] = field(default_factory=list)    # best first: the pruned top, then the next ones


class SearchTimeout(Exception):
    pass


class _StaleModels(Exception):
    """The worker lacks a model the parent believes it sent (the worker was replaced): send them all."""


Identity = tuple[float, int]
_WORKER_MODELS: dict[str, tuple[Identity, QuantileModel]] = {}


def _identity(model: QuantileModel) -> Identity:
    return (model.report.trained_at, model.report.rows)


def search(models: Mapping[str, QuantileModel], req: SearchRequest) -> SearchResult:
    """Draw, score and prune: the whole search for one point and goal."""
    rng = np.random.default_rng(req.seed)
    drawn = sample_candidates(req.current, req.mode, req.count, rng, move_weights(req.goal.key))
    drawn = [c for c in drawn if not any(near(c, bad) for bad in req.avoid)]
    scored = score(models, req.goal, req.constraints, req.now, req.current, drawn, req.context, req.secondary)
    pruned = {repr(sorted(p.partial.items())): p for p in (
        prune(models, req.goal, req.constraints, req.now, req.current, c, req.context, req.secondary)
        for c in scored[:req.prune_top])}
    best = list(pruned.values()) + scored[req.prune_top:]
    return SearchResult(len(drawn), len(scored), best[:req.keep])


def _search_in_worker(models: dict[str, tuple[Identity, bytes | None]], req: SearchRequest) -> SearchResult:
    for key, (identity, blob) in models.items():
        if blob is not None:
            _WORKER_MODELS[key] = (identity, QuantileModel.from_bytes(blob))
        elif _WORKER_MODELS.get(key, (None,))[0] != identity:
            raise _StaleModels(key)
    return search({k: _WORKER_MODELS[k][1] for k in models}, req)


def _ready() -> bool:
    return True


class _Worker:
    """One spawned search process and the models it holds."""

    def __init__(self) -> None:
        self.pool: ProcessPoolExecutor | None = None
        self.sent: dict[str, Identity] = {}   # target -> the model the process holds

    def executor(self) -> ProcessPoolExecutor:
        if self.pool is None:  # spawn: the controller has threads and sockets a fork would copy half-alive
            self.pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            # shutdown() waits for nothing but leaves a running search running: stop the process itself.
            for process in list(getattr(self.pool, "_processes", {}).values()):
                process.terminate()
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
        self.sent.clear()


class SearchPool:
    """`workers` search processes (one search each at a time): an analysis's points are searched side by side."""

    def __init__(self, timeout_s: float = 10.0, in_process: bool = False, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers: {workers} (at least 1)")
        self.timeout_s, self.in_process = timeout_s, in_process
        self._workers = [_Worker() for _ in range(workers)]
        self._free: asyncio.Queue[_Worker] | None = None   # made on the running loop, at the first search

    async def search(self, models: Mapping[str, QuantileModel], req: SearchRequest) -> SearchResult:
        if self.in_process:
            return search(models, req)
        needed = {t.key for t in (req.goal, *req.constraints.targets, *((req.secondary,) if req.secondary else ()))}
        chosen = {k: m for k, m in models.items() if k in needed}
        if self._free is None:
            self._free = asyncio.Queue()
            for w in self._workers:
                self._free.put_nowait(w)
        worker = await self._free.get()
        try:
            return await self._run(worker, chosen, req)
        finally:
            self._free.put_nowait(worker)

    async def _run(self, worker: _Worker, chosen: Mapping[str, QuantileModel], req: SearchRequest) -> SearchResult:
        for _attempt in range(2):
            shipped = {k: (_identity(m), None if worker.sent.get(k) == _identity(m) else m.to_bytes())
                       for k, m in chosen.items()}
            try:
                result = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(
                    worker.executor(), _search_in_worker, shipped, req), self.timeout_s)
            except _StaleModels:
                worker.sent.clear()
                continue
            except (TimeoutError, BrokenProcessPool) as exc:
                worker.close()
                raise SearchTimeout(f"the search did not finish in {self.timeout_s:.0f} s "
                                    f"({exc.__class__.__name__}); its worker was replaced") from exc
            worker.sent.update({k: _identity(m) for k, m in chosen.items()})
            return result
        raise SearchTimeout("the search worker lost its models twice")  # pragma: no cover - defensive

    def warm(self) -> None:
        """Start the workers now (spawning one and importing XGBoost take most of a second), so the first
        analysis after a start does not pay for it."""
        if not self.in_process:
            for w in self._workers:
                w.executor().submit(_ready)

    def close(self) -> None:
        for w in self._workers:
            w.close()

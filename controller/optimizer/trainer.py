"""The models in use: trained off the event loop in a process pool, bounded in time, kept on disk across restarts.

Training reads every row it can learn from (replay rows from the RowBank, live windows from
metric history over `lookback_s`), then trains one QuantileModel per target in a separate
process (XGBoost would otherwise hold a core of the event loop's process for seconds). A
target with too few rows keeps no model: the analysis then says there is too little data
rather than guessing. Each trained model is written to `<dir>/<target>.model` (atomically),
so a restarted controller answers with the models it had.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from controller.optimizer.dataset import RowBlock
from controller.optimizer.features import HOUR_FEATURES, MONOTONE
from controller.optimizer.models import NotEnoughData, QuantileModel, train_in_pool
from shared.atomic_file import atomic_write

log = logging.getLogger("tpmon.controller.optimizer")


@dataclass
class TrainingRun:
    """What the last training did: when, how long, and per target its model or why there is none."""
    started_at: float = 0.0
    seconds: float = 0.0
    rows: int = 0
    missing: dict[str, str] = field(default_factory=dict)   # target -> why no model (too few rows, time out)


def ignored_features(times: np.ndarray) -> tuple[str, ...]:
    """The hour of day means something once the rows span two days; before, it only says "recently"."""
    span = float(times.max() - times.min()) if len(times) else 0.0
    return () if span >= 2 * 86400 else HOUR_FEATURES


class ModelSet:
    def __init__(self, directory: Path | None, coverage: float = 0.8, time_budget_s: float = 20.0,
                 min_rows: int = 200, seed: int = 0, wall: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.coverage, self.time_budget_s, self.min_rows, self.seed = coverage, time_budget_s, min_rows, seed
        self.wall = wall
        self.models: dict[str, QuantileModel] = {}
        self.last_run = TrainingRun()
        self._pool: ProcessPoolExecutor | None = None
        self._lock = asyncio.Lock()

    def open(self) -> None:
        """Load the models a previous run left (a model that does not load is dropped with a warning)."""
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.directory.glob("*.model")):
            try:
                model = QuantileModel.from_bytes(path.read_bytes())
            except Exception as exc:  # a model of another version or a damaged file: retrain rather than fail
                log.warning("model %s not loaded (%s): it will be retrained", path.name, exc)
                continue
            self.models[model.target] = model

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:  # spawn: the controller has threads and sockets a fork would copy half-alive
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    async def train(self, rows: RowBlock, targets: Iterable[str]) -> TrainingRun:
        """Train a model of each target on `rows` (one training at a time); a target keeps its old model if this fails."""
        async with self._lock:
            run = TrainingRun(started_at=self.wall(), rows=len(rows))
            started = time.monotonic()
            loop = asyncio.get_running_loop()
            for target in targets:
                data = rows.training_set(target)
                monotone = MONOTONE.get(target, {})
                try:
                    blob = await asyncio.wait_for(loop.run_in_executor(
                        self._executor(), train_in_pool, data, target, monotone, self.coverage, self.seed,
                        self.time_budget_s, self.wall(), ignored_features(rows.times), self.min_rows),
                        self.time_budget_s * 3 + 30)
                except NotEnoughData as exc:
                    run.missing[target] = str(exc)
                    continue
                except (TimeoutError, BrokenProcessPool) as exc:
                    run.missing[target] = f"training did not finish ({exc.__class__.__name__}); the worker was restarted"
                    self.close()
                    continue
                model = QuantileModel.from_bytes(blob)
                self.models[target] = model
                if self.directory is not None:
                    await asyncio.to_thread(atomic_write, self.directory / f"{target}.model", blob)
            run.seconds = time.monotonic() - started
            self.last_run = run
            log.info("trained %d model(s) on %d rows in %.1f s%s", len(self.models), run.rows, run.seconds,
                     f"; no model of {', '.join(run.missing)}" if run.missing else "")
            return run

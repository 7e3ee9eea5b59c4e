"""The optimizer as the controller runs it: models, replay rows, the learner, the engine and stored analyses.

Wired like the alert service: built once in build_services, opened in the app's lifecycle
after history and the knob change log (it reads both), closed before them. Analyses publish
"optimization-complete" and feed `optimization_execution_time_seconds`.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

from controller.clock import Clock
from controller.documents import DocumentFile
from controller.events import EventBus
from controller.optimizer.analysis import AnalysisRequest, AnalysisStore, analyze, confirm
from controller.optimizer.dataset import RowBank
from controller.optimizer.engine import AnalysisEngine
from controller.optimizer.learner import Learner
from controller.optimizer.replay import ReplayClient
from controller.optimizer.trainer import ModelSet
from shared.topology import Topology

log = logging.getLogger("tpmon.controller.optimizer")

_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class OptimizerService:
    def __init__(self, topology: Topology, clock: Clock, events: EventBus, registry: CollectorRegistry,
                 history: Any, knob_changes: Any, knob_sync: Any, live: Any, replay: ReplayClient | None,
                 directory: Path, *, learn: bool = True, learn_interval_s: float = 30.0,
                 retrain_every_s: float = 300.0, lookback_s: float = 3600.0, train_budget_s: float = 20.0,
                 min_rows: int = 200, keep_analyses_s: float = 86400.0) -> None:
        self.topology, self.clock, self.events, self.learn = topology, clock, events, learn
        self.models = ModelSet(directory / "models", time_budget_s=train_budget_s, min_rows=min_rows, wall=clock.wall)
        self.bank = RowBank(directory / "replay_rows.npz")
        self.engine = AnalysisEngine(history, knob_sync, live, self.models, self.bank, replay, clock)
        self.learner = Learner(self.engine, self.models, self.bank, history, knob_changes.knob_set_at, topology,
                               clock, interval_s=learn_interval_s, retrain_every_s=retrain_every_s,
                               lookback_s=lookback_s)
        self.analyses = AnalysisStore(DocumentFile(directory / "analyses.json"), clock, keep_analyses_s)
        self.execution_time = Histogram("optimization_execution_time_seconds",
                                        "Time one optimization analysis took to compute", buckets=_BUCKETS,
                                        registry=registry)
        self._expiry: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        await asyncio.to_thread(self.models.open)
        await asyncio.to_thread(self.bank.load)
        await self.analyses.open()
        if self.learn:
            self.learner.start()
        self._expiry = asyncio.get_running_loop().create_task(self._expire_forever())

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        for task in list(self._checks):
            task.cancel()
        await self.learner.stop()
        self.models.close()
        await asyncio.to_thread(self.bank.save)
        await self.analyses.close()

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(600)
            await self.analyses.expire()

    async def analyze(self, request: AnalysisRequest) -> dict[str, Any]:
        self.learner.want(t.key for t in request.targets)
        doc = await analyze(self.engine, self.analyses, request)
        self.execution_time.observe(doc["estimatedTime"] / 1000)
        self.events.publish("optimization-complete", {
            "kind": "analysis", "analysisId": doc["analysisId"],
            "summary": {"recommendations": len(doc["recommendations"]), "points": len(doc["points"]),
                        "overallConfidence": doc["overallConfidence"], "estimatedTime": doc["estimatedTime"]}})
        if doc["recommendations"]:
            self._spawn(confirm(self.engine, self.analyses, doc, request))
        return doc

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._checks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._checks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("replay check of an analysis failed", exc_info=task.exception())

    def models_json(self) -> dict[str, Any]:
        run = self.models.last_run
        return {"models": [m.report.to_json() for _, m in sorted(self.models.models.items())],
                "missing": dict(run.missing), "lastTraining": {"startedAt": run.started_at, "seconds": round(run.seconds, 3),
                                                                "rows": run.rows},
                "replayRows": len(self.bank.rows), "replays": self.learner.replays}

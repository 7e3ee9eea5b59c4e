"""The optimizer as the controller runs it: models, replay rows, the learner, the engine and stored analyses.

Wired like the alert service: built once in build_services, opened in the app's lifecycle
after history and the knob change log (it reads both), closed before them. Analyses publish
"optimization-complete" and feed `optimization_execution_time_seconds`.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

from controller.clock import Clock
from controller.documents import DocumentFile
from controller.events import EventBus
from controller.knobs.changes import Attribution
from controller.knobs.sync import InvalidKnobs
from controller.optimizer.analysis import AnalysisRequest, AnalysisStore, analyze, confirm
from controller.optimizer.autotune import AutoTune, constraints_from_request
from controller.optimizer.dataset import RowBank
from controller.optimizer.engine import AnalysisEngine
from controller.optimizer.learner import Learner
from controller.optimizer.replay import ReplayClient
from controller.optimizer.search_pool import SearchPool
from controller.optimizer.trainer import ModelSet
from controller.optimizer.verify import measure_window
from shared.topology import Point, Topology

log = logging.getLogger("tpmon.controller.optimizer")
# Before and after windows of an applied analysis's change. Underflows come in bursts: in 30 s windows a
# real fall of 4.4 -> 2.0 /s stayed inside the noise (2.6-2.9) in half the runs of the processes test.
APPLY_WINDOW_S = 60.0

_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class OptimizerService:
    def __init__(self, topology: Topology, clock: Clock, events: EventBus, registry: CollectorRegistry,
                 history: Any, knob_changes: Any, knob_sync: Any, live: Any, replay: ReplayClient | None,
                 directory: Path, *, learn: bool = True, learn_interval_s: float = 30.0,
                 retrain_every_s: float = 300.0, lookback_s: float = 3600.0, train_budget_s: float = 20.0,
                 min_rows: int = 200, keep_analyses_s: float = 86400.0,
                 degraded: Callable[[], Collection[Point]] | None = None) -> None:
        self.topology, self.clock, self.events, self.learn = topology, clock, events, learn
        self.models = ModelSet(directory / "models", time_budget_s=train_budget_s, min_rows=min_rows, wall=clock.wall)
        self.bank = RowBank(directory / "replay_rows.npz")
        self.engine = AnalysisEngine(history, knob_sync, live, self.models, self.bank, replay, clock,
                                     search_pool=SearchPool(workers=min(2, os.cpu_count() or 1)))
        self.learner = Learner(self.engine, self.models, self.bank, history, knob_changes.knob_set_at, topology,
                               clock, interval_s=learn_interval_s, retrain_every_s=retrain_every_s,
                               lookback_s=lookback_s, degraded=degraded)
        self.analyses = AnalysisStore(DocumentFile(directory / "analyses.json"), clock, keep_analyses_s)
        self.execution_time = Histogram("optimization_execution_time_seconds",
                                        "Time one optimization analysis took to compute", buckets=_BUCKETS,
                                        registry=registry)
        self.autotune = AutoTune(topology, clock, knob_sync, live, history, self.engine, events,
                                 DocumentFile(directory / "autotune.json"), registry)
        events.subscribe(self._on_event)
        self._expiry: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        await asyncio.to_thread(self.models.open)
        await asyncio.to_thread(self.bank.load)
        await self.analyses.open()
        await self.autotune.open()
        self.engine.search_pool.warm()
        if self.learn:
            self.learner.start()
        self._expiry = asyncio.get_running_loop().create_task(self._expire_forever())

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        for task in list(self._checks):
            task.cancel()
        await self.learner.stop()
        await self.autotune.close()
        self.models.close()
        self.engine.search_pool.close()
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

    async def apply_change_set(self, analysis_id: str, set_id: str, recs: list[dict[str, Any]],
                               request: dict[str, Any], who: Attribution) -> dict[str, Any]:
        """One change set of an analysis through the one change path, then handed to auto-tune's verification."""
        first = recs[0]
        point = Point(first["station"], first["extension"])
        knobs = {r["knob"]: r["recommendedValue"] for r in recs}
        row: dict[str, Any] = {"station": point.station, "extension": point.extension, "changeSetId": set_id,
                               "version": None, "previousVersion": None, "reason": None, "errors": [],
                               "verifying": False}
        desired = self.engine.knob_sync.store.get(point)
        if first.get("replayCheck", {}).get("status") == "refuted":
            return {**row, "status": "refused", "previousVersion": desired.version,
                    "reason": f"replay on the agent measured this change as no better: {first['replayCheck'].get('reason')}"}
        if first.get("baseVersion") is not None and desired.version != first["baseVersion"]:
            return {**row, "status": "conflict", "previousVersion": desired.version,
                    "reason": f"{point.id} is at version {desired.version}, not {first['baseVersion']} as analysed: "
                              "run a new analysis"}
        constraints = request.get("constraints", {})
        keys = list(dict.fromkeys([first["goal"], *(t.key for t in constraints_from_request(constraints).targets)]))
        now = self.clock.wall()
        await self.engine.history.flush()
        before = await measure_window(self.engine.history, point, now - APPLY_WINDOW_S, now, keys)
        try:
            result = await self.engine.knob_sync.change(point, knobs, who)
        except InvalidKnobs as exc:
            return {**row, "status": "rejected", "previousVersion": desired.version, "reason": str(exc),
                    "errors": [p.to_json() for p in exc.problems]}
        row.update(version=result.desired.version, previousVersion=desired.version, reason=result.reason,
                   errors=result.errors)
        if not result.applied and result.applied_version is not None:
            return {**row, "status": "rejected"}
        await self.autotune.adopt(point, {
            "version": result.desired.version, "knobs": knobs, "previous": {r["knob"]: r["currentValue"] for r in recs},
            "goal": first["goal"], "committedAt": now, "appliedAt": now if result.applied else None,
            "before": {k: v.to_json() for k, v in before.items()},
            "predicted": {first["goal"]: first["predictedInterval"]}, "evidence": first["evidence"],
            "analysisId": analysis_id, "constraints": constraints, "windowS": APPLY_WINDOW_S})
        return {**row, "status": "applied" if result.applied else "pending", "verifying": True}

    async def record_apply(self, analysis_id: str, record: dict[str, Any]) -> None:
        doc = self.analyses.get(analysis_id)
        doc["applied"].append(record)
        await self.analyses.put(doc)

    def _on_event(self, name: str, body: dict[str, Any]) -> None:
        """An applied analysis's verification outcome is written onto the analysis."""
        if name != "optimization-complete" or body.get("kind") != "auto-tune" or not body.get("analysisId"):
            return
        self._spawn(self._record_outcome(body))

    async def _record_outcome(self, body: dict[str, Any]) -> None:
        try:
            doc = self.analyses.get(body["analysisId"])
        except LookupError:
            return   # expired meanwhile
        for record in doc["applied"]:
            for v in record["verification"]:
                if v["station"] == body["station"] and v["extension"] == body["extension"] and \
                        v.get("version") == body["version"]:
                    v.update(status=body["outcome"], reason=body["reason"], before=body["before"],
                             after=body["after"], predicted=body["predicted"], at=body["at"])
        await self.analyses.put(doc)

    def models_json(self) -> dict[str, Any]:
        run = self.models.last_run
        return {"models": [m.report.to_json() for _, m in sorted(self.models.models.items())],
                "missing": dict(run.missing), "lastTraining": {"startedAt": run.started_at, "seconds": round(run.seconds, 3),
                                                                "rows": run.rows},
                "replayRows": len(self.bank.rows), "replays": self.learner.replays}

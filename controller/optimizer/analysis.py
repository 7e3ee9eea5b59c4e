"""POST /optimize's work: one analysis over the points in scope, in the plan's shape, stored for later reads and apply.

Per point, the targets are tried in the order the request names them: the first target with
a supported change (engine.outcome) gives the point's recommendation; the others, and the
constrained targets, are reported in its expectedImpact. Every knob of one point's change
shares one changeSetId: the models predicted them together, so they are applied together,
and the expectedImpact shown is that of the whole set. A point without a supported change
is listed in `points` with the reason (too little data, no recent samples, a change pending,
nothing the models support) — the answer never invents a recommendation.

The answer comes from the models alone (so it is fast); then, for each point with a
recommendation whose agent is online, the change set is replayed on the agent beside today's
set (`confirm`): the stored analysis gains `replayCheck` per recommendation (confirmed,
refuted or unanswerable, with the replayed differences) and "replay" joins its evidence when
replay confirmed it. Apply refuses a change set that replay refuted.

`estimatedTime` is the time this analysis took to compute, in milliseconds (measured).
Analyses are kept in a TinyDB document (analyses.json) for `keep_s` (at least an hour),
across restarts; apply outcomes are written back onto them.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tinydb import Query

from controller.clock import Clock, iso_ms
from controller.documents import DocumentFile
from controller.optimizer.engine import AnalysisEngine, Outcome
from controller.optimizer.proposal import Mode, Proposal
from controller.optimizer.targets import MINIMIZE, TARGETS, Constraints, Target
from shared.topology import Point

TABLE = "analyses"


@dataclass(frozen=True)
class AnalysisRequest:
    targets: tuple[Target, ...]
    constraints: Constraints
    points: tuple[Point, ...]
    mode: Mode = Mode.BALANCED
    echo: dict[str, Any] | None = None     # the request as given, kept on the analysis


class AnalysisNotFound(LookupError):
    pass


class AnalysisStore:
    def __init__(self, file: DocumentFile, clock: Clock, keep_s: float = 86400.0) -> None:
        self.file, self.clock, self.keep_s = file, clock, max(keep_s, 3600.0)
        self._docs: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        await self.file.open()
        docs = await self.file.load(lambda db: db.table(TABLE).all())
        self._docs = {d["analysisId"]: dict(d) for d in docs}
        await self.expire()

    async def close(self) -> None:
        await self.file.close()

    def get(self, analysis_id: str) -> dict[str, Any]:
        doc = self._docs.get(analysis_id)
        if doc is None:
            raise AnalysisNotFound(analysis_id)
        return doc

    async def put(self, doc: dict[str, Any]) -> None:
        async with self._lock:
            analysis_id = doc["analysisId"]
            await self.file.write(lambda db: db.table(TABLE).upsert(doc, Query().analysisId == analysis_id))
            self._docs[analysis_id] = doc

    async def expire(self) -> int:
        cutoff = self.clock.wall() - self.keep_s
        old = [k for k, d in self._docs.items() if d.get("createdAtEpoch", 0) < cutoff]
        if old:
            async with self._lock:
                await self.file.write(lambda db: db.table(TABLE).remove(Query().analysisId.one_of(old)))
                for k in old:
                    self._docs.pop(k, None)
        return len(old)

    def new_id(self) -> str:
        now = self.clock.wall()
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d_%H%M%S")
        base, n = f"opt_{stamp}", 1
        while (f"{base}_{n}" if n > 1 else base) in self._docs:
            n += 1
        return f"{base}_{n}" if n > 1 else base


async def analyze(engine: AnalysisEngine, store: AnalysisStore, request: AnalysisRequest,
                  on_done: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    analysis_id = store.new_id()
    # side by side: the search pool has a worker per core, the history reads overlap too
    outcomes = await asyncio.gather(*(_best(engine, point, request) for point in request.points))
    recommendations, points = [], []
    for outcome in outcomes:
        points.append({"station": outcome.point.station, "extension": outcome.point.extension,
                       "outcome": "recommended" if outcome.proposal else "none", "reason": outcome.reason,
                       "candidates": outcome.candidates, "supported": outcome.supported})
        if outcome.proposal is not None:
            recommendations += recommendation_rows(outcome.proposal, request.targets, request.constraints)
    confidences = [r["confidence"] for r in recommendations]
    now = engine.clock.wall()
    doc = {
        "analysisId": analysis_id, "createdAt": iso_ms(now), "createdAtEpoch": now,
        "recommendations": recommendations,
        "overallConfidence": round(min(confidences), 3) if confidences else None,
        "estimatedTime": round((time.perf_counter() - started) * 1000),
        "status": "complete",
        "message": (f"{len(recommendations)} recommendation(s) for {sum(p['outcome'] == 'recommended' for p in points)} "
                    f"of {len(points)} point(s)") if recommendations else
                   "no recommendation: the models and replays support no change for these points now (see points)",
        "request": request.echo or {}, "points": points, "applied": [], "replayChecked": not recommendations,
    }
    await store.put(doc)
    if on_done is not None:
        on_done(doc)
    return doc


async def confirm(engine: AnalysisEngine, store: AnalysisStore, doc: dict[str, Any], request: AnalysisRequest) -> None:
    """Replay each recommended change set on its agent and record the verdict on the stored analysis."""
    by_set: dict[str, list[dict[str, Any]]] = {}
    for rec in doc["recommendations"]:
        by_set.setdefault(rec["changeSetId"], []).append(rec)
    for recs in by_set.values():
        point = Point(recs[0]["station"], recs[0]["extension"])
        goal = TARGETS[recs[0]["goal"]]
        check: dict[str, Any]
        if engine.replay is None or not engine.live.agent_online(point.station):
            check = {"status": "unavailable", "reason": "the agent is offline"}
        else:
            now = await engine.state(point, [goal.key, *(t.key for t in request.constraints.targets)])
            verdicts = await engine.replay_check(now, [{r["knob"]: r["recommendedValue"] for r in recs}], goal,
                                                 request.constraints)
            if verdicts is None:
                check = {"status": "unavailable", "reason": "the agent did not answer the replay"}
            else:
                v = verdicts[0]
                check = {"status": v.status, "measured": {k: round(x, 5) for k, x in v.measured.items()},
                         "reason": v.reason}
        for rec in recs:
            rec["replayCheck"] = check
            if check["status"] == "confirmed" and "replay" not in rec["evidence"]:
                rec["evidence"] = ["replay", *rec["evidence"]]
    doc["replayChecked"] = True
    await store.put(doc)


async def _best(engine: AnalysisEngine, point: Point, request: AnalysisRequest) -> Outcome:
    """The first target (in the request's order) with a supported change; else the first target's reason."""
    first: Outcome | None = None
    for i, target in enumerate(request.targets):
        secondary = request.targets[i + 1] if i + 1 < len(request.targets) else None
        outcome = await engine.outcome(point, target, request.constraints, request.mode, secondary=secondary,
                                       use_replay=False)
        if outcome.proposal is not None:
            return outcome
        first = first or outcome
    assert first is not None
    return first


def recommendation_rows(proposal: Proposal, targets: Sequence[Target], constraints: Constraints) -> list[dict[str, Any]]:
    """The plan's recommendation entries of one proposal: one per knob, the set's impact on each."""
    impact = expected_impact(proposal, [TARGETS[proposal.goal], *targets, *constraints.targets])
    [(set_id, _)] = proposal.change_sets.items()
    goal = proposal.predicted[proposal.goal]
    return [{"station": proposal.point.station, "extension": proposal.point.extension, "knob": knob,
             "currentValue": proposal.current[knob], "recommendedValue": value, "expectedImpact": impact,
             "confidence": round(proposal.confidence, 3), "risk": proposal.risk,
             "riskProbability": round(proposal.risk_probability, 3), "evidence": list(proposal.evidence),
             "changeSetId": set_id, "goal": proposal.goal, "baseVersion": proposal.base_version,
             "replayCheck": {"status": "pending"},
             "predictedInterval": {"p10": _r(goal.lo), "median": _r(goal.median), "p90": _r(goal.hi)}}
            for knob, value in proposal.knobs.items()]


def expected_impact(proposal: Proposal, targets: Sequence[Target]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for target in dict.fromkeys(targets):
        predicted = proposal.predicted.get(target.key)
        if predicted is None:
            continue
        current = proposal.now.get(target.key)
        entry: dict[str, Any] = {"current": _r(current), "predicted": _r(predicted.median),
                                 "p10": _r(predicted.lo), "p90": _r(predicted.hi), "unit": target.unit}
        if current:
            change = (predicted.median - current) / abs(current)
            better = change < 0 if target.direction == MINIMIZE else change > 0
            entry["improvement" if better else "degradation"] = f"{abs(change) * 100:.1f}%"
        out[target.label] = entry
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)

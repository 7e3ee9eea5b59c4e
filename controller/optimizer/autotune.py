"""Auto-tune: per point, propose, apply through the one change path, verify on live metrics, keep or roll back.

Per point in scope, every `evaluation_interval_s`, outside its cooldown and under its hourly
cap, the proposer (the analysis engine) is asked for its best supported change. The change
goes through KnobSync (source `optimizer`); once the agent reports it applied, `settle_s`
later a window as long as the before-window is measured and judged (verify.py): kept only
if the primary goal improved beyond the noise and no constraint broke; otherwise reverted
(source `rollback`, with the figures as the reason) and the region remembered as bad for
that point, so it is not proposed again. A change not applied within `apply_timeout_s` is
reverted too.

A person's change (any other source) to a point under verification cancels the
verification at once and is never reverted over: the revert itself would also refuse
(KnobSync.revert's expected version). `enabled: false` stops new evaluations at once; a
change already under verification is still verified and kept or rolled back, so a change
that hurt is never left behind by switching auto-tune off.

Settings are per scope: a POST with a scope sets the settings of those points (a goal per
station, say) and leaves the others' as they were; one without a scope sets every point's.
The change under verification carries its goal, constraints and windows, so a point moved to
other settings meanwhile is still judged by what it was changed for.

Settings and every point's state are written to autotune.json on each transition, so a
restarted controller resumes: a change under verification is judged from history once its
after-window is complete, or reverted when it cannot be judged honestly.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from tinydb.table import Document

from controller.clock import Clock, iso_ms
from controller.documents import DocumentFile
from controller.events import EventBus
from controller.knobs.changes import Attribution
from controller.knobs.sync import InvalidKnobs, KnobSync, RevertConflict
from controller.optimizer.proposal import Mode, Proposer
from controller.optimizer.targets import TARGETS, Constraints, Goal, constraints_of
from controller.optimizer.verify import WindowStats, broken_constraints, judge, measure_window
from shared.topology import Point, Topology

log = logging.getLogger("tpmon.controller.optimizer")

OPTIMIZER, ROLLBACK = "optimizer", "rollback"
IDLE, EVALUATING, VERIFYING, COOLDOWN = "idle", "evaluating", "verifying", "cooldown"
HOUR_S = 3600.0


@dataclass(frozen=True)
class AutoTuneSettings:
    enabled: bool = False
    mode: Mode = Mode.BALANCED
    primary: Goal = Goal.MINIMIZE_LATENCY
    secondary: Goal | None = None
    max_latency_ms: float | None = None
    min_quality: float | None = None
    max_packet_loss: float | None = None
    evaluation_interval_s: float = 300.0
    cooldown_s: float = 600.0
    max_per_hour: int = 6
    scope: tuple[Point, ...] | None = None     # None: every point

    @property
    def constraints(self) -> Constraints:
        return constraints_of(self.max_latency_ms, self.min_quality, self.max_packet_loss,
                              field_prefix="targets.constraints.")

    @property
    def window_s(self) -> float:
        """Before and after windows: half the evaluation interval, 30 s to 2 min. Under 30 s a window holds
        too few 5 s blocks to tell a change from the noise: bench optimize saw station 7's underflows fall
        5.9 -> 3.3 /s in 15 s windows against a noise threshold of 3.1."""
        return min(120.0, max(30.0, self.evaluation_interval_s / 2))

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "enabled": self.enabled, "mode": self.mode.value,
            "targets": {"primaryGoal": self.primary.value,
                        "secondaryGoal": self.secondary.value if self.secondary else None,
                        "constraints": {"maxLatencyMs": self.max_latency_ms, "minQualityScore": self.min_quality,
                                        "maxPacketLoss": self.max_packet_loss}},
            "schedule": {"evaluationInterval": round(self.evaluation_interval_s * 1000),
                         "adjustmentCooldown": round(self.cooldown_s * 1000), "maxAdjustmentsPerHour": self.max_per_hour}}
        if self.scope is not None:
            doc["scope"] = {"points": [{"station": p.station, "extension": p.extension} for p in self.scope]}
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> AutoTuneSettings:
        t, c, s = doc["targets"], doc["targets"]["constraints"], doc["schedule"]
        scope = doc.get("scope")
        return cls(bool(doc["enabled"]), Mode(doc["mode"]), Goal(t["primaryGoal"]),
                   Goal(t["secondaryGoal"]) if t.get("secondaryGoal") else None, c.get("maxLatencyMs"),
                   c.get("minQualityScore"), c.get("maxPacketLoss"), s["evaluationInterval"] / 1000,
                   s["adjustmentCooldown"] / 1000, int(s["maxAdjustmentsPerHour"]),
                   tuple(Point(p["station"], p["extension"]) for p in scope["points"]) if scope else None)


@dataclass
class PointTune:
    state: str = IDLE
    next_evaluation: float = 0.0
    cooldown_until: float = 0.0
    adjustments: list[float] = field(default_factory=list)    # wall times of changes made
    change: dict[str, Any] | None = None                        # the change under verification
    last_change: dict[str, Any] | None = None
    last_outcome: dict[str, Any] | None = None
    note: str | None = None                                     # what the last evaluation found
    bad: list[dict[str, Any]] = field(default_factory=list)     # rolled-back regions: {"knobs", "conditions"}

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PointTune:
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class AutoTune:
    def __init__(self, topology: Topology, clock: Clock, knob_sync: KnobSync, live: Any, history: Any,
                 proposer: Proposer, events: EventBus, file: DocumentFile, registry: CollectorRegistry | None = None,
                 *, settle_s: float = 3.0, apply_timeout_s: float = 60.0, tick_s: float = 1.0) -> None:
        self.topology, self.clock, self.knob_sync, self.live, self.history = topology, clock, knob_sync, live, history
        self.proposer, self.events, self.file = proposer, events, file
        self.settle_s, self.apply_timeout_s, self.tick_s = settle_s, apply_timeout_s, tick_s
        self.profiles: list[AutoTuneSettings] = [AutoTuneSettings()]  # later ones win for their scope
        self.points: dict[Point, PointTune] = {p: PointTune() for p in topology.points}
        self.outcomes = Counter("optimizer_changes", "Auto-tune and applied-analysis changes by outcome "
                                "(kept, rolled_back, cancelled)", ["outcome"], registry=registry) if registry else None
        self._tasks: dict[Point, asyncio.Task[None]] = {}
        self._loop: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        events.subscribe(self._on_event)

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self, run: bool = True) -> None:
        await self.file.open()
        doc = await self.file.load(lambda db: db.table("autotune").get(doc_id=1))
        if doc:
            self.profiles = [AutoTuneSettings.from_json(d) for d in doc.get("profiles", [doc["settings"]])]
            for key, state in doc.get("points", {}).items():
                station, ext = key.split("/")
                if self.topology.has_point(station, ext):
                    self.points[Point(station, ext)] = PointTune.from_json(state)
        for tune in self.points.values():
            if tune.state == EVALUATING:   # a proposal asked for but never applied before the stop: start over
                tune.state = IDLE
        if run:
            self._loop = asyncio.get_running_loop().create_task(self._forever())

    async def close(self) -> None:
        for task in [self._loop, *self._tasks.values()]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*[t for t in [self._loop, *self._tasks.values()] if t is not None],
                             return_exceptions=True)
        await self.file.close()

    async def _forever(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("auto-tune tick failed")
            await asyncio.sleep(self.tick_s)

    @property
    def settings(self) -> AutoTuneSettings:
        """The settings posted last."""
        return self.profiles[-1]

    def settings_for(self, point: Point) -> AutoTuneSettings | None:
        """The settings `point` follows: the last posted whose scope holds it (None: no settings name it)."""
        for profile in reversed(self.profiles):
            if profile.scope is None or point in profile.scope:
                return profile
        return None

    async def configure(self, settings: AutoTuneSettings) -> None:
        """New settings for their scope, effective at once (disabling cancels evaluations not yet applied)."""
        async with self._lock:
            now = self.clock.wall()
            affected = self.topology.points if settings.scope is None else settings.scope
            for point in affected:
                old = self.settings_for(point)
                if settings.enabled and not (old is not None and old.enabled):
                    self.points[point].next_evaluation = now    # first evaluation at the next tick
                task = self._tasks.get(point)
                if not settings.enabled and task is not None and self.points[point].state == EVALUATING:
                    task.cancel()
                    self.points[point].state = IDLE
            self.profiles = [*self._without(settings.scope), settings]
            await self._save()

    def _without(self, scope: tuple[Point, ...] | None) -> list[AutoTuneSettings]:
        """The profiles as they apply to the points outside `scope` (empty ones dropped)."""
        if scope is None:
            return []
        kept = []
        for profile in self.profiles:
            rest = tuple(p for p in (profile.scope or self.topology.points) if p not in scope)
            if rest:
                kept.append(replace(profile, scope=rest))
        return kept

    def in_scope(self, point: Point) -> bool:
        """Auto-tune works on `point` (settings name it and are enabled)."""
        settings = self.settings_for(point)
        return settings is not None and settings.enabled

    # --- the cycle ------------------------------------------------------------------------

    async def tick(self) -> None:
        """Start due evaluations, advance verifications (tests call this with a manual clock)."""
        now = self.clock.wall()
        for point, tune in self.points.items():
            if point in self._tasks:
                continue
            if tune.state == VERIFYING:
                await self._advance(point, tune, now)
            elif self.in_scope(point) and self._due(tune, now, self._settings(point).max_per_hour):
                tune.state = EVALUATING
                self._tasks[point] = asyncio.get_running_loop().create_task(self._evaluate(point, tune))
                self._tasks[point].add_done_callback(lambda _t, p=point: self._tasks.pop(p, None))

    def _due(self, tune: PointTune, now: float, cap: int) -> bool:
        if now < tune.next_evaluation or now < tune.cooldown_until:
            return False
        tune.adjustments = [t for t in tune.adjustments if t > now - HOUR_S]
        if len(tune.adjustments) >= cap:
            tune.note = f"hourly cap reached ({cap} changes in the last hour)"
            tune.next_evaluation = tune.adjustments[0] + HOUR_S
            return False
        return True

    async def wait_idle(self) -> None:
        """Until the evaluations in flight are done (tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _settings(self, point: Point) -> AutoTuneSettings:
        return self.settings_for(point) or AutoTuneSettings()

    async def _evaluate(self, point: Point, tune: PointTune) -> None:
        s = self._settings(point)
        try:
            avoid = [b["knobs"] for b in tune.bad]
            proposal = await self.proposer.propose(point, s.primary.target, s.constraints, s.mode, avoid,
                                                   secondary=s.secondary.target if s.secondary else None)
            now = self.clock.wall()
            tune.next_evaluation = now + s.evaluation_interval_s
            if proposal is None:
                tune.state, tune.note = IDLE, "no change the models and replays support"
                return
            if not self.in_scope(point):   # switched off while the proposal was being worked out
                tune.state = IDLE
                return
            keys = self._keys(proposal.goal, s.constraints)
            before = await measure_window(self.history, point, now - s.window_s, now, keys)
            reason = (f"auto-tune ({s.primary.value}): predicted {proposal.goal} "
                      f"{proposal.predicted[proposal.goal].median:.4g} from {_fmt(proposal.now.get(proposal.goal))}")
            try:
                result = await self.knob_sync.change(point, proposal.knobs, Attribution(OPTIMIZER, OPTIMIZER, reason))
            except InvalidKnobs as exc:
                tune.state, tune.note = IDLE, f"the proposal was refused: {exc}"
                return
            tune.adjustments.append(now)
            tune.change = {"version": result.desired.version, "knobs": proposal.knobs, "previous": proposal.current,
                           "goal": proposal.goal, "committedAt": now, "appliedAt": now if result.applied else None,
                           "before": {k: v.to_json() for k, v in before.items()},
                           "predicted": {k: v.to_json() for k, v in proposal.predicted.items()},
                           "replayDelta": proposal.replay_delta, "evidence": list(proposal.evidence),
                           "conditions": dict(self.live.points[point].conditions),
                           "constraints": {"maxLatency": s.max_latency_ms, "minQuality": s.min_quality,
                                           "maxPacketLoss": s.max_packet_loss},
                           "windowS": s.window_s, "cooldownS": s.cooldown_s}
            tune.last_change = {k: tune.change[k] for k in ("version", "knobs", "previous", "goal", "committedAt")}
            tune.state, tune.note = VERIFYING, None
        except asyncio.CancelledError:
            tune.state = IDLE
            raise
        except Exception as exc:
            log.exception("auto-tune evaluation of %s failed", point.id)
            tune.state, tune.note = IDLE, f"evaluation failed: {exc}"
            tune.next_evaluation = self.clock.wall() + s.evaluation_interval_s
        finally:
            await self._save()

    @staticmethod
    def _keys(goal: str, constraints: Constraints) -> list[str]:
        return list(dict.fromkeys([goal, *(t.key for t in constraints.targets)]))

    async def adopt(self, point: Point, change: dict[str, Any]) -> None:
        """Verify a change made elsewhere (an applied analysis) as auto-tune verifies its own, enabled or not.

        `change` holds version, knobs, previous, goal, committedAt, appliedAt, before (WindowStats
        documents), predicted, evidence, analysisId and that analysis's constraints (limits as
        {"maxLatency": .., ...})."""
        async with self._lock:
            tune = self.points[point]
            if tune.state == VERIFYING and tune.change is not None:
                self._finish(point, tune, "cancelled", "an applied analysis changed the point: its change is "
                                                       "verified instead", {})
            tune.change = dict(change)
            tune.last_change = {k: change[k] for k in ("version", "knobs", "previous", "goal", "committedAt")}
            tune.state, tune.note = VERIFYING, None
            await self._save()

    async def _advance(self, point: Point, tune: PointTune, now: float) -> None:
        change = tune.change
        if change is None:
            tune.state = IDLE
            return
        if change["appliedAt"] is None:
            applied = self.live.points[point].applied_version
            if applied is not None and applied >= change["version"]:
                change["appliedAt"] = now
                await self._save()
            elif now - change["committedAt"] > self.apply_timeout_s:
                await self._roll_back(point, tune, f"the agent did not apply version {change['version']} within "
                                                   f"{self.apply_timeout_s:.0f} s", {}, None)
            return
        window = float(change.get("windowS") or self._settings(point).window_s)
        start = change["appliedAt"] + self.settle_s
        if now < start + window:
            return
        await self.history.flush()
        constraints = (constraints_from_request(change["constraints"]) if "constraints" in change
                       else self._settings(point).constraints)
        keys = self._keys(change["goal"], constraints)
        after = await measure_window(self.history, point, start, start + window, keys)
        before = {k: WindowStats(**v) for k, v in change["before"].items()}
        verdict = judge(before[change["goal"]], after[change["goal"]], TARGETS[change["goal"]])
        broken = broken_constraints(before, after, constraints)
        if verdict.delta is None:
            await self._roll_back(point, tune, f"not verifiable: {verdict.reason}", after, verdict.reason)
        elif verdict.improved and not broken:
            self._finish(point, tune, "kept", f"measured better: {verdict.reason}", after)
        else:
            why = verdict.reason if not verdict.improved else ""
            why = "; ".join(x for x in [("no measured improvement: " + why) if why else "",
                                        ("broke " + ", ".join(broken)) if broken else ""] if x)
            await self._roll_back(point, tune, why, after, verdict.reason)
        await self._save()

    async def _roll_back(self, point: Point, tune: PointTune, why: str, after: dict[str, WindowStats],
                         figures: str | None) -> None:
        change = tune.change
        assert change is not None
        try:
            await self.knob_sync.revert(point, change["version"] - 1, Attribution(OPTIMIZER, ROLLBACK, why),
                                        expected=change["version"])
        except RevertConflict as exc:   # somebody changed the point meanwhile: never undo their change
            self._finish(point, tune, "cancelled", f"not rolled back: {exc}", after)
            return
        tune.bad.append({"knobs": change["knobs"], "conditions": change.get("conditions", {}), "reason": why})
        tune.bad = tune.bad[-20:]
        self._finish(point, tune, "rolled_back", why, after)

    def _finish(self, point: Point, tune: PointTune, outcome: str, reason: str, after: dict[str, WindowStats]) -> None:
        change = tune.change or {}
        now = self.clock.wall()
        before = {k: v.get("mean") for k, v in change.get("before", {}).items()}
        measured = {k: v.mean for k, v in after.items()}
        doc = {"outcome": outcome, "reason": reason, "version": change.get("version"), "knobs": change.get("knobs"),
               "goal": change.get("goal"), "before": before, "after": measured,
               "predicted": {k: v.get("median") for k, v in change.get("predicted", {}).items()},
               "replayDelta": change.get("replayDelta", {}), "at": iso_ms(now),
               "analysisId": change.get("analysisId")}
        tune.last_outcome = doc
        tune.change = None
        tune.state = COOLDOWN
        cooldown = change.get("cooldownS")
        tune.cooldown_until = now + float(self._settings(point).cooldown_s if cooldown is None else cooldown)
        tune.next_evaluation = max(tune.next_evaluation, tune.cooldown_until)
        if self.outcomes is not None:
            self.outcomes.labels(outcome).inc()
        self.events.publish("optimization-complete", {"kind": "auto-tune", "station": point.station,
                                                      "extension": point.extension, **doc})
        log.info("auto-tune %s %s v%s: %s", point.id, outcome, doc["version"], reason)

    # --- people ---------------------------------------------------------------------------

    def _on_event(self, name: str, body: dict[str, Any]) -> None:
        if name != "knob-changed" or body.get("source") in (OPTIMIZER, ROLLBACK):
            return
        point = Point(body.get("station", ""), body.get("extension", ""))
        tune = self.points.get(point)
        if tune is None or tune.state != VERIFYING or tune.change is None:
            return
        if int(body.get("version", 0)) > tune.change["version"]:
            self._finish(point, tune, "cancelled", f"{body.get('changedBy')} changed the knobs "
                                                   f"(source {body.get('source')}): their change stands", {})
            asyncio.get_running_loop().create_task(self._save())

    # --- persistence and reading ----------------------------------------------------------

    async def _save(self) -> None:
        doc = {"settings": self.settings.to_json(), "profiles": [p.to_json() for p in self.profiles],
               "points": {p.id: t.to_json() for p, t in self.points.items()}}
        await self.file.write(lambda db: db.table("autotune").upsert(Document(doc, doc_id=1)))

    def status(self, visible: Iterable[Point]) -> dict[str, Any]:
        now = self.clock.wall()
        points = []
        for point in visible:
            t, s = self.points[point], self.settings_for(point)
            points.append({"station": point.station, "extension": point.extension,
                           "inScope": self.in_scope(point), "state": t.state,
                           "primaryGoal": s.primary.value if s is not None else None,
                           "lastChange": t.last_change, "lastOutcome": t.last_outcome, "note": t.note,
                           "nextEvaluation": iso_ms(max(t.next_evaluation, t.cooldown_until))
                           if self.in_scope(point) else None,
                           "adjustmentsLastHour": sum(1 for a in t.adjustments if a > now - HOUR_S)})
        return {"settings": self.settings.to_json(), "profiles": [p.to_json() for p in self.profiles],
                "points": points}


def constraints_from_request(doc: dict[str, Any]) -> Constraints:
    """The constraints of an analysis request as stored ({maxLatency, minQuality, maxPacketLoss, preserveStability})."""
    return constraints_of(doc.get("maxLatency"), doc.get("minQuality"), doc.get("maxPacketLoss"),
                          bool(doc.get("preserveStability")))


def _fmt(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.4g}"


"""Batch knob changes over many points: strict or lenient validation, one wait for every ACK, rollback on error.

A batch holds the locks of all its points from validation to the end (rollback included),
taken in one fixed order, so two overlapping batches (or a batch and a single change) never
interleave on a point and never deadlock. Each target is validated against its own stored
set, since cross-knob rules (min <= size <= max, playout delay <= depth) depend on it.

- strict: any invalid setting for any target refuses the whole batch (BatchRefused, nothing changes);
- lenient: each target gets the settings valid for it, the rest are reported as its errors.

With rollback_on_error, a target whose agent does not acknowledge within ack_timeout (offline,
silent or refusing) makes every changed target go back to its previous set, recorded as
source "rollback"; without it the failures are reported and the other targets keep the change.
"""
from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from controller.knobs.changes import Attribution
from controller.knobs.sync import ChangeResult, KnobSync, Staged
from shared.knobs import KnobProblem, consistency_problems, validate
from shared.topology import Point


class Validation(str, Enum):
    STRICT = "strict"
    LENIENT = "lenient"


class TargetStatus(str, Enum):
    APPLIED = "applied"          # the agent acknowledged the new set
    ROLLED_BACK = "rolled_back"  # acknowledged, then restored because another target failed
    FAILED = "failed"            # not acknowledged in time (offline, silent) or refused by the agent
    SKIPPED = "skipped"          # lenient: no setting was valid for this target; nothing changed


class BatchRefused(Exception):
    """Strict validation found problems; nothing was changed. `problems` are {field, problem} dicts."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__(f"{len(problems)} invalid setting(s)")
        self.problems = problems


@dataclass
class TargetOutcome:
    point: Point
    status: TargetStatus
    version: int                 # the point's desired version when the batch was done with it
    previous_version: int        # before the batch
    reason: str | None = None
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"station": self.point.station, "extension": self.point.extension, "status": self.status.value,
                "version": self.version, "previousVersion": self.previous_version, "reason": self.reason,
                "errors": self.errors}


@dataclass
class BatchOutcome:
    batch_id: str
    targets: list[TargetOutcome]
    rolled_back: bool

    @property
    def status(self) -> str:
        """rolled_back, applied (every changed target), failed (none applied) or partial."""
        if self.rolled_back:
            return "rolled_back"
        counts = self.summary()
        if counts["applied"] and not counts["failed"]:
            return "applied"
        return "failed" if not counts["applied"] else "partial"

    def summary(self) -> dict[str, int]:
        counts = {s.value: 0 for s in TargetStatus}
        for target in self.targets:
            counts[target.status.value] += 1
        return counts


def new_batch_id(now: float) -> str:
    """`batch_20240115_103045_3fa9c1`: UTC time of the batch and 24 random bits."""
    return f"batch_{datetime.fromtimestamp(now, UTC):%Y%m%d_%H%M%S}_{secrets.token_hex(3)}"


def lenient_subset(clean: Mapping[str, Any], base: Mapping[str, Any]) -> tuple[dict[str, Any], list[KnobProblem]]:
    """The settings of `clean` that keep `base` consistent, and a problem for each one left out.

    A setting is left out when dropping it removes a cross-knob problem; when no setting's
    removal helps, the target's own set breaks a rule and nothing can be applied to it.
    """
    accepted, left_out = dict(clean), []
    while found := consistency_problems({**base, **accepted}):
        involved = [k for k in accepted
                    if len(consistency_problems({**base, **{n: v for n, v in accepted.items() if n != k}})) < len(found)]
        if not involved:
            why = "; ".join(str(p) for p in found)
            return {}, left_out + [KnobProblem(k, f"not applied: this point's set breaks a rule ({why})")
                                   for k in accepted]
        why = "; ".join(str(p) for p in found)
        for k in involved:
            left_out.append(KnobProblem(k, f"not applied: conflicts with this point's set ({why})"))
            del accepted[k]
    return accepted, left_out


class BatchApplier:
    def __init__(self, knobs: KnobSync, wall: Callable[[], float]) -> None:
        self.knobs = knobs
        self.wall = wall

    async def apply(self, points: Sequence[Point], settings: Mapping[str, Any], validation: Validation,
                    rollback_on_error: bool, who: Attribution) -> BatchOutcome:
        """Change `settings` on every point; BatchRefused (strict) before anything changed."""
        batch_id = new_batch_id(self.wall())
        who = replace(who, batch_id=batch_id)
        clean, catalog_problems = validate(settings)
        if validation is Validation.STRICT and catalog_problems:
            raise BatchRefused([_detail(p) for p in catalog_problems])
        async with self.knobs.locked(points):
            accepted, errors = self._per_target(points, clean, catalog_problems, validation)
            before = {p: self.knobs.store.get(p).version for p in points}
            staged = await self.knobs.commit({p: accepted[p] for p in points if accepted[p]}, who)
            results = await asyncio.gather(*(self.knobs.settle(s) for s in staged))
            failed = [(s, r) for s, r in zip(staged, results) if not r.applied]
            rolled_back = rollback_on_error and bool(failed)
            restored = await self._roll_back(staged, who, batch_id, failed) if rolled_back else {}
        outcomes = {s.point: _outcome(s, r, rolled_back, restored) for s, r in zip(staged, results)}
        targets = [outcomes.get(p) or TargetOutcome(p, TargetStatus.SKIPPED, before[p], before[p],
                                                   "no setting was valid for this point; nothing changed")
                   for p in points]
        for target in targets:
            target.errors = errors[target.point] + target.errors
            if target.status is TargetStatus.APPLIED and errors[target.point]:
                target.reason = f"{len(errors[target.point])} setting(s) not applied here: see errors"
        return BatchOutcome(batch_id, targets, rolled_back)

    def _per_target(self, points: Sequence[Point], clean: dict[str, Any], catalog_problems: list[KnobProblem],
                    validation: Validation) -> tuple[dict[Point, dict[str, Any]], dict[Point, list[dict[str, str]]]]:
        """Each point's settings to apply and its problems; BatchRefused when strict and any point has one."""
        accepted: dict[Point, dict[str, Any]] = {}
        errors: dict[Point, list[dict[str, str]]] = {}
        refused: list[dict[str, str]] = []
        for point in points:
            base = self.knobs.store.get(point).knobs
            if validation is Validation.STRICT:
                accepted[point], errors[point] = clean, []
                refused += [_detail(p, point) for p in consistency_problems({**base, **clean})]
            else:
                accepted[point], left_out = lenient_subset(clean, base)
                errors[point] = [p.to_json() for p in catalog_problems + left_out]
        if refused:
            raise BatchRefused(refused)
        return accepted, errors

    async def _roll_back(self, staged: list[Staged], who: Attribution, batch_id: str,
                         failed: list[tuple[Staged, ChangeResult]]) -> dict[Point, ChangeResult]:
        """Revert every changed point to its previous set (source "rollback") and wait for the ACKs."""
        first = failed[0][0].point
        why = f"rollback of {batch_id}: {first.id} was not acknowledged"
        if len(failed) > 1:
            why += f" (nor {len(failed) - 1} other point(s))"
        undo = await self.knobs.commit_reverts({s.point: (s.previous.version, s.desired.version) for s in staged},
                                               replace(who, source="rollback", reason=why),
                                               known_sets={s.point: s.previous.knobs for s in staged})
        results = await asyncio.gather(*(self.knobs.settle(s) for s in undo))
        return {s.point: r for s, r in zip(undo, results)}


def _outcome(staged: Staged, result: ChangeResult, rolled_back: bool,
             restored: dict[Point, ChangeResult]) -> TargetOutcome:
    point, before = staged.point, staged.previous.version
    if not rolled_back:
        if result.applied:
            return TargetOutcome(point, TargetStatus.APPLIED, staged.desired.version, before)
        return TargetOutcome(point, TargetStatus.FAILED, staged.desired.version, before, result.reason,
                             list(result.errors))
    undo = restored.get(point)
    version = undo.desired.version if undo is not None else staged.desired.version
    if undo is None:
        restore = "its values were already the previous ones"
    elif undo.applied:
        restore = f"the previous set is back as version {version}, acknowledged by the agent"
    else:
        restore = (f"the previous set is stored as version {version} and will be applied when the agent "
                   "acknowledges it")
    if result.applied:
        return TargetOutcome(point, TargetStatus.ROLLED_BACK, version, before, f"rolled back: {restore}")
    cause = (result.reason or "not acknowledged").split(";")[0]
    return TargetOutcome(point, TargetStatus.FAILED, version, before, f"{cause}; the batch was rolled back: {restore}",
                         list(result.errors))


def _detail(problem: KnobProblem, point: Point | None = None) -> dict[str, str]:
    """A problem of the batch's `settings`; per point when it comes from that point's own set."""
    text = f"{point.id}: {problem.problem}" if point is not None else problem.problem
    return {"field": f"settings.{problem.field}", "problem": text}

"""Request and response models of POST and GET /optimize/auto-tune: the plan's body as written, plus a scope.

Floors and ceilings: an evaluation at most every 10 s (a shorter interval could not hold a
before and an after window), a cooldown of 0 to 24 h, 1 to 60 adjustments per hour.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from controller.http.models import Body, StrictBody
from controller.optimizer.api_models import Scope, WholeNumber
from controller.optimizer.targets import Goal

GoalName = Literal[tuple(g.value for g in Goal)]  # type: ignore[valid-type]
DAY_MS = 86_400_000


class AutoTuneConstraints(StrictBody):
    maxLatencyMs: float | None = Field(None, gt=0, le=10000, description="End-to-end latency ceiling, ms")
    minQualityScore: float | None = Field(None, ge=0, le=1, description="Quality score floor (docs/optimizer.md)")
    maxPacketLoss: float | None = Field(None, ge=0, le=1, description="Residual loss after repair per window, ratio")


class AutoTuneTargets(StrictBody):
    primaryGoal: GoalName = Field(description="A change is kept only when this measured better")
    secondaryGoal: GoalName | None = Field(None, description="Breaks ties between supported candidates")
    constraints: AutoTuneConstraints = Field(default_factory=AutoTuneConstraints)


class AutoTuneSchedule(StrictBody):
    evaluationInterval: WholeNumber = Field(300_000, ge=10_000, le=DAY_MS, description="Per point, ms between evaluations")
    adjustmentCooldown: WholeNumber = Field(600_000, ge=0, le=DAY_MS, description="After a change's outcome, ms of rest")
    maxAdjustmentsPerHour: WholeNumber = Field(6, ge=1, le=60)


class AutoTuneRequest(StrictBody):
    enabled: bool
    mode: Literal["conservative", "balanced", "aggressive"] = "balanced"
    targets: AutoTuneTargets
    schedule: AutoTuneSchedule = Field(default_factory=AutoTuneSchedule)
    scope: Scope = Field(None, description="Points these settings are for (default: all); other points keep theirs")  # type: ignore[assignment]


class AutoTuneStatusConstraints(Body):
    maxLatencyMs: float | None
    minQualityScore: float | None
    maxPacketLoss: float | None


class AutoTuneStatusTargets(Body):
    primaryGoal: str
    secondaryGoal: str | None
    constraints: AutoTuneStatusConstraints


class AutoTuneStatusSchedule(Body):
    evaluationInterval: int
    adjustmentCooldown: int
    maxAdjustmentsPerHour: int


class ScopePoint(Body):
    station: str
    extension: str


class AutoTuneStatusScope(Body):
    points: list[ScopePoint]


class AutoTuneSettingsDoc(Body):
    enabled: bool
    mode: str
    targets: AutoTuneStatusTargets
    schedule: AutoTuneStatusSchedule
    scope: AutoTuneStatusScope | SkipJsonSchema[None] = None


class PointStatus(Body):
    station: str
    extension: str
    inScope: bool = Field(description="Enabled settings name this point")
    primaryGoal: str | None = Field(description="The goal of the settings this point follows")
    state: Literal["idle", "evaluating", "verifying", "cooldown"]
    lastChange: dict[str, Any] | None
    lastOutcome: dict[str, Any] | None = Field(description="kept | rolled_back | cancelled, with before/after figures")
    note: str | None
    nextEvaluation: str | None
    adjustmentsLastHour: int


class AutoTuneStatus(Body):
    settings: AutoTuneSettingsDoc = Field(description="The settings posted last")
    profiles: list[AutoTuneSettingsDoc] = Field(description="Every settings in force, each with the points it "
                                                "covers (a later POST's scope takes its points from earlier ones)")
    points: list[PointStatus]

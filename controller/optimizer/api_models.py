"""Request and response models of the analysis API: POST /optimize, GET /optimize/{analysisId}, apply, predict, models.

Requests take the plan's bodies as written (camelCase). A target is a category of the plan
(`latency`, `audioQuality`, `packet`, `buffer`) or a target key (`latency.end_to_end`,
`quality`, `residual_loss`, `underflows_per_s`, or a gauge with a known better direction);
anything else is a 400 naming the list item.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, WithJsonSchema, field_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from controller.catalog.schemas import CatalogModel, knob_properties
from controller.http.models import PYTHON_RE, STATION_PATTERN, Body, Problem, StrictBody
from controller.optimizer.targets import CATEGORY_TARGETS, TARGETS, resolve_target
from shared.topology import EXTENSIONS

StationId = Annotated[str, Field(pattern=STATION_PATTERN, examples=["Station-1"])]
Extension = Literal[tuple(EXTENSIONS)]  # type: ignore[valid-type]
_TARGET_NAMES = sorted(CATEGORY_TARGETS) + sorted(TARGETS)


def _known_target(name: str) -> str:
    if resolve_target(name) is None:
        raise PydanticCustomError("unknown_target", "unknown target {name}: use a category ({categories}) or one of "
                                  "{keys}", {"name": name, "categories": ", ".join(sorted(CATEGORY_TARGETS)),
                                             "keys": ", ".join(sorted(TARGETS))})
    return name


TargetName = Annotated[str, AfterValidator(_known_target), Field(examples=["latency", "audioQuality"]),
                       WithJsonSchema({"type": "string", "enum": _TARGET_NAMES})]


ANALYSIS_ID_PATTERN = r"^opt_[0-9]{8}_[0-9]{6}(?:_[0-9]+)?$"


class AnalysisPath(BaseModel):
    """The `{analysisId}` segment."""
    analysisId: str = Field(description="An analysis's id, as POST /optimize answered it; unknown or expired: 404",
                            json_schema_extra={"pattern": ANALYSIS_ID_PATTERN, "examples": ["opt_20240115_103045"]})


def _whole(value: Any) -> Any:
    """A JSON number that is a whole number (58629.0 is 58629); booleans are not numbers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WholeNumber = Annotated[int, BeforeValidator(_whole)]


class Scope(StrictBody):
    """Every (station, extension) pair of these lists; default: every station the caller may see."""
    model_config = {**StrictBody.model_config, **PYTHON_RE}
    stations: list[StationId] = Field(min_length=1, max_length=1000)
    extensions: list[Extension] = Field(default_factory=lambda: list(EXTENSIONS), min_length=1)


class OptimizeConstraints(StrictBody):
    maxLatency: float | None = Field(None, gt=0, le=10000, description="End-to-end latency a change may not exceed, ms")
    minQuality: float | None = Field(None, ge=0, le=1, description="Quality score a change must keep (docs/optimizer.md)")
    maxPacketLoss: float | None = Field(None, ge=0, le=1, description="Residual loss after repair per window, ratio")
    preserveStability: bool = Field(False, description="Underflows per second may not rise (median) by more than 0.1")


class OptimizeRequest(StrictBody):
    targetMetrics: list[TargetName] = Field(min_length=1, max_length=8, description=(
        "What to improve, in order of preference: per point the first with a supported change wins"))
    constraints: OptimizeConstraints = Field(default_factory=OptimizeConstraints)
    # Typed as the model alone (default not validated): an Optional would report each error twice, once per branch.
    scope: Scope = Field(None, description="The points to analyse (default: every station the caller sees)")  # type: ignore[assignment]
    mode: Literal["conservative", "balanced", "aggressive"] = Field("balanced", description=(
        "The trust region: 1, 3 or 5 knobs or change sets at most, with small to wide steps"))


class Impact(Body):
    current: float | None
    predicted: float | None
    p10: float | None
    p90: float | None
    unit: str
    improvement: str | SkipJsonSchema[None] = None
    degradation: str | SkipJsonSchema[None] = None


class Interval(Body):
    p10: float | None
    median: float | None
    p90: float | None


class Recommendation(Body):
    station: str
    extension: str
    knob: str
    currentValue: Any
    recommendedValue: Any
    expectedImpact: dict[str, Impact] = Field(description="The change set's predicted effect on each target")
    confidence: float = Field(ge=0, le=1, description="P(the goal improves), from the calibrated intervals")
    risk: Literal["low", "medium", "high"]
    riskProbability: float = Field(ge=0, le=1, description="P(some constraint breaks)")
    evidence: list[Literal["replay", "model"]]
    changeSetId: str
    goal: str
    baseVersion: int | None = Field(description="The point's desired knob version the analysis saw")
    predictedInterval: Interval
    replayCheck: ReplayCheck


class ReplayCheck(Body):
    """The change set replayed on the agent beside today's set, after the answer (GET shows the result)."""
    status: Literal["pending", "confirmed", "refuted", "unanswerable", "unavailable"]
    measured: dict[str, float] | SkipJsonSchema[None] = Field(None, description=(
        "Per target: the replayed mean minus today's set's, on the same trace"))
    reason: str | SkipJsonSchema[None] = None


class PointOutcome(Body):
    station: str
    extension: str
    outcome: Literal["recommended", "none"]
    reason: str | None
    candidates: int
    supported: int


class AppliedRecord(Body):
    appliedAt: str
    by: str
    changeSetIds: list[str]
    results: list[dict[str, Any]]
    verification: list[dict[str, Any]]


class Analysis(Body):
    analysisId: str = Field(examples=["opt_20240115_103045"])
    createdAt: str
    createdAtEpoch: float
    recommendations: list[Recommendation]
    overallConfidence: float | None
    estimatedTime: int = Field(description="Milliseconds this analysis took to compute (measured)")
    status: Literal["complete"]
    message: str
    request: dict[str, Any]
    points: list[PointOutcome]
    applied: list[AppliedRecord]
    replayChecked: bool = Field(description="Every recommendation's replay check has finished")


class ApplyRequest(StrictBody):
    changeSetIds: list[Annotated[str, Field(min_length=1, max_length=200)]] | SkipJsonSchema[None] = Field(
        None, min_length=1, max_length=1000, description="Apply only these change sets (default: all)")
    reason: str | SkipJsonSchema[None] = Field(None, max_length=500)


class ApplySummary(Body):
    applied: int
    pending: int
    failed: int


class ApplyTarget(Body):
    station: str
    extension: str
    changeSetId: str
    status: Literal["applied", "pending", "rejected", "conflict", "refused"] = Field(description=(
        "applied: acknowledged; pending: stored, the agent has not acknowledged yet; rejected: the agent refused "
        "it; conflict: the point's knobs changed since the analysis; refused: replay measured it as no better"))
    version: int | None
    previousVersion: int | None
    reason: str | None
    errors: list[Problem]
    verifying: bool


class ApplyResult(Body):
    analysisId: str
    status: Literal["applied", "partial", "failed"]
    summary: ApplySummary
    results: list[ApplyTarget]
    verifying: list[str] = Field(description="Change sets whose before/after verification is running")


class PredictKnobs(CatalogModel):
    """Knobs and the values to predict under (a partial set; {} predicts today's set)."""

    @classmethod
    def catalog_schema(cls) -> dict[str, Any]:
        return {"type": "object", "properties": knob_properties(), "additionalProperties": False}

    @field_validator("root", mode="before")
    @classmethod
    def _an_object(cls, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise PydanticCustomError("knob_object", "expected an object of knob names to values")
        return value


class PredictRequest(StrictBody):
    model_config = {**StrictBody.model_config, **PYTHON_RE}
    station: StationId
    extension: Extension
    knobs: PredictKnobs = Field(description=(
        "A partial knob set (checked like a change: 400 per invalid knob); {} predicts today's set"))
    targetMetrics: list[TargetName] = Field(default_factory=lambda: ["latency", "audioQuality", "packet", "buffer"],
                                            min_length=1, max_length=8)


class PredictedTarget(Body):
    current: float | None
    predicted: float | None
    interval: Interval | SkipJsonSchema[None] = None
    confidence: float | SkipJsonSchema[None] = None
    unit: str | SkipJsonSchema[None] = None
    coverage: float | SkipJsonSchema[None] = None
    reason: str | SkipJsonSchema[None] = None


class Prediction(Body):
    station: str
    extension: str
    knobs: dict[str, Any]
    predictions: dict[str, PredictedTarget]


class ModelInfo(Body):
    target: str
    rows: int
    trainedAt: str
    holdoutRows: int
    holdoutMae: float
    coverage: float
    rawCoverage: float
    nominalCoverage: float
    conformalOffset: float
    meanIntervalWidth: float
    importances: dict[str, float]


class Models(Body):
    models: list[ModelInfo]
    missing: dict[str, str] = Field(description="Targets without a model and why")
    lastTraining: dict[str, Any]
    replayRows: int
    replays: int


__all__ = ["Analysis", "ApplyRequest", "ApplyResult", "Models", "OptimizeRequest", "PredictRequest", "Prediction",
           "Problem"]

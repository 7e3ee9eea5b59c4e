"""Request and response models of thresholds, alert rules and alerts (validation and OpenAPI).

Bodies check shapes and types here; what needs the catalog, the topology or the rule as a
whole (levels in the metric's range and in the direction's order, known stations) is
checked by controller/alerts/rules.py, and reported with the same field names.
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from controller.alerts.rules import MAX_DURATION_MS, MAX_WINDOW_MS
from controller.http.models import (
    NAME_PATTERN,
    STATION_PATTERN,
    STATION_SCHEMA,
    Body,
    CommaList,
    QueryModel,
    StationList,
    StrictBody,
)
from shared.metrics import METRICS, METRICS_BY_ID, MetricType
from shared.topology import EXTENSIONS

THRESHOLD_METRICS = [m.metric_id for m in METRICS if m.type is not MetricType.TIMESTAMP]
RULE_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
ALERT_ID_PATTERN = r"^alert_[0-9]{8}_[0-9]{6}_[0-9]{3,6}$"


def _known_metric(name: str) -> str:
    metric = METRICS_BY_ID.get(name)
    if metric is None:
        raise PydanticCustomError("unknown_metric", "unknown metric {name}; use a metricId from GET /api/v1/catalog, "
                                                    "such as latency_end_to_end", {"name": repr(name)})
    if metric.type is MetricType.TIMESTAMP:
        raise PydanticCustomError("timestamp_metric", "{name} is a timestamp; it has no threshold", {"name": name})
    return name


MetricId = Annotated[str, AfterValidator(_known_metric),
                     WithJsonSchema({"type": "string", "enum": THRESHOLD_METRICS,
                                     "description": "`category_name` from the catalog (not a timestamp metric)"})]
Level = Annotated[float, Field(allow_inf_nan=False)]
StationName = Annotated[str, Field(pattern=STATION_PATTERN)]
Extension = Literal[tuple(EXTENSIONS)]  # type: ignore[valid-type]
DirectionName = Literal["above", "below"]
Milliseconds = Annotated[int, Field(ge=0, le=MAX_DURATION_MS)]
STATIONS_DOC = ("Stations the rule covers (at least one); omitted: every station the token may see "
                "(an unscoped token: every station, also ones configured later). Unknown: 400; outside the "
                "token's stations: 403")
EXTENSIONS_DOC = "Extensions the rule covers; omitted: both"


class Levels(StrictBody):
    """Warning and critical levels in the metric's unit (at least one): the critical one worse in the direction."""
    warning: Level | None = Field(None, description="Level of a warning alert", examples=[200])
    critical: Level | None = Field(None, description="Level of a critical alert", examples=[300])


class RuleOptions(StrictBody):
    """Fields thresholds and rules share; each omitted one keeps its stored value (or the default when new)."""
    duration: Milliseconds | None = Field(None, description=(
        "How long (ms) the condition must hold before the alert fires, like Prometheus `for` (default 30000)"))
    clearDuration: Milliseconds | None = Field(None, description=(
        "How long (ms) the value must be clear before the alert de-escalates or resolves (default 30000)"))
    hysteresis: Level | None = Field(None, ge=0, description=(
        "Clear means beyond the level by this much, in the metric's unit (default 0)"))
    window: int | None = Field(None, ge=0, le=MAX_WINDOW_MS, description=(
        "Gauges: judged on their mean over this many ms (0: each sample; default 10000). "
        "Counters: on their increase over it (1000 at least; default 60000)"))
    enabled: bool | None = Field(None, description="False keeps the rule (and its scope) but raises no alerts")
    stations: list[StationName] | None = Field(None, min_length=1, max_length=1000, description=STATIONS_DOC)
    extensions: list[Extension] | None = Field(None, min_length=1, max_length=len(EXTENSIONS),
                                               description=EXTENSIONS_DOC)


class ThresholdBody(RuleOptions):
    """The plan's threshold body: one per metric and scope (posting the same metric and scope again updates it)."""
    problem_noun: ClassVar[str] = "threshold field"
    metricId: MetricId = Field(examples=["buffer_overflow_count"])
    thresholds: Levels
    direction: DirectionName | None = Field(None, description=(
        "above: values over a level violate it; below: values under it (default from the metric: below for "
        "MOS, PESQ, SNR, SINAD, efficiency, goodput, throughput, stability, cache hits; above otherwise)"))


class RuleBody(RuleOptions):
    """An alert rule: created, or updated when `id` or `name` names an existing rule (omitted fields kept)."""
    problem_noun: ClassVar[str] = "rule field"
    id: str | None = Field(None, pattern=RULE_ID_PATTERN, description=(
        "The rule to update, or the id of a new rule (default: rule_<n>, or the threshold's id for a metric)"))
    name: str | None = Field(None, min_length=1, max_length=100, pattern=NAME_PATTERN, description=(
        "A readable name; without an id, an existing rule of this name is updated"))
    metricId: MetricId | None = Field(None, description="Required for a new rule")
    comparison: DirectionName | None = Field(None, description="above | below (default from the metric)")
    levels: Levels | None = Field(None, description="Warning and critical levels (or give threshold and severity)")
    threshold: Level | None = Field(None, description="One level, with `severity` (instead of `levels`)")
    severity: Literal["warning", "critical"] | None = Field(None, description=(
        "The severity of `threshold` (default warning)"))


class AcknowledgeBody(StrictBody):
    comment: str | None = Field(None, max_length=500, description="Optional note kept with the acknowledgement")


def _severities(names: tuple[str, ...]) -> tuple[str, ...]:
    bad = [n for n in names if n not in ("warning", "critical")]
    if bad:
        raise PydanticCustomError("severity", "unknown severity {names} (warning, critical)",
                                  {"names": ", ".join(bad)})
    return names


def _extensions(names: tuple[str, ...]) -> tuple[str, ...]:
    bad = [n for n in names if n not in EXTENSIONS]
    if bad:
        raise PydanticCustomError("extension", "unknown extension {names} ({known})",
                                  {"names": ", ".join(bad), "known": ", ".join(EXTENSIONS)})
    return names


Severities = Annotated[CommaList, AfterValidator(_severities), WithJsonSchema({
    "type": "array", "minItems": 1, "items": {"type": "string", "enum": ["warning", "critical"]}})]
Extensions = Annotated[CommaList, AfterValidator(_extensions), WithJsonSchema({
    "type": "array", "minItems": 1, "items": {"type": "string", "enum": list(EXTENSIONS)}})]


class AlertQuery(QueryModel):
    state: Literal["active", "resolved", "all"] = Field("active", description=(
        "active (default): not resolved; resolved: resolved or dismissed; all: both"))
    severity: Severities = Field((), description="Only these severities, comma-separated")
    station: StationList = Field((), description=(
        "Only these stations, comma-separated; unknown: 404, outside the token's stations: 403"))
    extension: Extensions = Field((), description="Only these extensions, comma-separated")
    acknowledged: bool | SkipJsonSchema[None] = Field(None, description="Only acknowledged (true) or unacknowledged "
                                                                        "(false) alerts")
    limit: int = Field(100, ge=1, le=1000, description="Alerts per page (default 100, at most 1000)")
    cursor: Annotated[str, Field(pattern=r"^[0-9]{0,12}$")] | SkipJsonSchema[None] = Field(None, description=(
        "`nextCursor` of the previous page: the alerts after it (older); empty: the first page"))


class RuleQuery(QueryModel):
    metricId: str | SkipJsonSchema[None] = Field(None, max_length=64, description="Only rules of this metric")


class AlertPath(BaseModel):
    alertId: str = Field(description="An alert id such as alert_20240115_103045_001 (unknown: 404)",
                         json_schema_extra={"pattern": ALERT_ID_PATTERN})


class RulePath(BaseModel):
    ruleId: str = Field(description="A rule id from GET /api/v1/alerts/rules (unknown: 404)",
                        json_schema_extra={"pattern": RULE_ID_PATTERN})


# --- answers -------------------------------------------------------------------------------------

class LevelsOut(Body):
    warning: float | None
    critical: float | None


class RuleDoc(Body):
    """A threshold or rule as the engine applies it."""
    id: str = Field(examples=["latency_end_to_end"])
    name: str
    source: Literal["default", "threshold", "rule"] = Field(description=(
        "Where it was created: shipped default, POST /config/metrics or POST /alerts/configure"))
    metricId: str = Field(examples=["latency_end_to_end"])
    metric: str = Field(description="The metric's category, as in alerts", examples=["latency"])
    unit: str = Field(examples=["ms"])
    direction: DirectionName
    thresholds: LevelsOut
    duration: int = Field(ge=0, description="ms the condition holds before firing")
    clearDuration: int = Field(ge=0, description="ms the value is clear before de-escalating or resolving")
    hysteresis: float = Field(ge=0)
    window: int = Field(ge=0, description="ms of the mean (gauges) or increase (counters) judged")
    evaluates: str = Field(description="What is compared with the levels, in words")
    enabled: bool
    stations: list[str] | None = Field(description="null: every station", json_schema_extra={"items": STATION_SCHEMA})
    extensions: list[str] | None = Field(description="null: every extension")
    createdBy: str
    createdAt: str | None = Field(json_schema_extra={"format": "date-time"})
    updatedBy: str | None
    updatedAt: str | None = Field(json_schema_extra={"format": "date-time"})


class ThresholdList(Body):
    thresholds: list[RuleDoc]
    count: int = Field(ge=0)


class RuleList(Body):
    rules: list[RuleDoc]
    count: int = Field(ge=0)


class AlertDoc(Body):
    """The plan's alert document, plus metricId, ruleId, comment, resolved, resolvedAt, resolvedBy, dismissed."""
    id: str = Field(examples=["alert_20240115_103045_001"])
    severity: Literal["warning", "critical"]
    type: Literal["threshold_violation"]
    metric: str = Field(description="The metric's category, as the plan shows (`latency`)", examples=["latency"])
    metricId: str = Field(description="The exact metric", examples=["latency_end_to_end"])
    ruleId: str = Field(description="The rule that raised it (or last changed its severity)")
    station: str = Field(examples=["Station-1"])
    extension: str = Field(examples=["3333"])
    value: float = Field(description="The judged value when the alert reached its current severity")
    threshold: float = Field(description="The level of the current severity")
    duration: int = Field(ge=0, description="ms the violation had lasted at the last change (at resolution: "
                                            "its whole length)")
    message: str = Field(examples=["Critical end-to-end latency detected: 320ms (threshold: 300ms)"])
    timestamp: str = Field(description="When it fired", json_schema_extra={"format": "date-time"})
    acknowledged: bool
    acknowledgedBy: str | None
    acknowledgedAt: str | None = Field(json_schema_extra={"format": "date-time"})
    comment: str | None = Field(description="The acknowledgement's comment")
    resolved: bool
    resolvedAt: str | None = Field(json_schema_extra={"format": "date-time"})
    resolvedBy: str | None = Field(description="`system` when the value recovered, else the token subject that "
                                               "dismissed it or disabled its rule")
    dismissed: bool


class AlertPage(Body):
    alerts: list[AlertDoc]
    count: int = Field(ge=0, description="Alerts on this page")
    total: int = Field(ge=0, description="Alerts matching the filters, on every page")
    nextCursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")

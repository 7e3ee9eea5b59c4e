"""Response bodies of the API as pydantic models: the OpenAPI document's schemas, checked against real answers.

Handlers build plain dicts (the snapshot is prebuilt bytes); these models describe those
documents field for field and are never on the request path. Every model forbids extra
fields, so a field a handler adds without declaring it breaks the schema test. A field
typed `X | SkipJsonSchema[None] = None` is omitted when absent (never sent as null).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import SkipJsonSchema

from controller.catalog.schemas import KnobSet, PointMetrics
from controller.http.models import STATION_PATTERN
from controller.live.state import Status
from shared.knobs import KNOB_CATEGORIES
from shared.metrics import CATEGORIES, MetricKind, MetricType
from shared.topology import EXTENSIONS

class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- the error envelope --------------------------------------------------------------------

class Problem(Body):
    """One thing wrong with a request: where (a dotted path into the query, body or headers) and what."""
    field: str = Field(examples=["agc_target_level"])
    problem: str = Field(examples=["-80 is below the minimum -31"])


class ErrorBody(Body):
    code: str = Field(description="Stable machine-readable code: bad_request, validation_failed, unauthorized, "
                                  "forbidden, not_found, method_not_allowed, payload_too_large, rate_limited, "
                                  "conflict, not_ready, internal_error", examples=["validation_failed"])
    message: str = Field(description="What went wrong, in plain words")
    details: list[Problem] = Field(description="One entry per field at fault (may be empty)")
    traceId: str | SkipJsonSchema[None] = Field(None, description="Only on 500: quote it when reporting")


class ErrorEnvelope(Body):
    """Every error the API answers: `{"error": {"code", "message", "details": [{"field", "problem"}]}}`."""
    error: ErrorBody


# --- snapshots -----------------------------------------------------------------------------

class PointSnapshot(Body):
    metrics: PointMetrics | None = Field(description="Null until the point has reported (status offline)")
    status: Status = Field(description="active: a sample within stale_after_ms; stale: agent reachable, no sample "
                                       "lately; offline: agent silent for offline_after_ms or never seen")
    measuredAt: str | None = Field(description="The agent's measurement time of these metrics (null: never)",
                                   json_schema_extra={"format": "date-time"})


# The plan's keys for a station's extensions (`extension_3333`), derived from the topology.
StationSnapshot = create_model("StationSnapshot", __base__=Body, __module__=__name__,
                               __doc__="A station's points, keyed `extension_<number>`.",
                               **{f"extension_{ext}": (PointSnapshot, ...) for ext in EXTENSIONS})


class Snapshot(Body):
    """The live state of every point in scope, built once per tick."""
    timestamp: str = Field(description="When this snapshot was built", json_schema_extra={"format": "date-time"})
    stations: dict[str, StationSnapshot] = Field(json_schema_extra={"propertyNames": {"pattern": STATION_PATTERN}})


# --- knobs ---------------------------------------------------------------------------------

class Rejection(Body):
    version: int
    errors: list[Problem]


class KnobState(Body):
    """A point's desired knobs and whether its agent runs them."""
    station: str = Field(examples=["Station-1"])
    extension: str = Field(examples=["3333"])
    config: KnobSet
    version: int = Field(ge=1, description="Desired version: 1 for the catalog defaults, +1 per accepted change")
    appliedVersion: int | None = Field(description="Version the agent last reported running (null: never heard)")
    applied: bool = Field(description="True when the agent runs the desired version")
    status: Literal["applied", "pending", "agent offline"]
    updatedAt: str | None = Field(description="Time of the last change (null: never changed)",
                                  json_schema_extra={"format": "date-time"})
    updatedBy: str = Field(description="Token subject of the last change (empty: never changed)")
    rejected: Rejection | SkipJsonSchema[None] = Field(
        None, description="Present when the agent refused the desired version: its per-knob errors")


class KnobChangeResult(Body):
    """The stored change and what the agent answered within ack_timeout_ms."""
    station: str = Field(examples=["Station-1"])
    extension: str = Field(examples=["3333"])
    config: KnobSet
    version: int = Field(ge=1)
    applied: bool = Field(description="True once the agent acknowledged this version")
    appliedVersion: int | None = Field(description="Version the agent acknowledged (null: no answer)")
    reason: str | SkipJsonSchema[None] = Field(None, description="Why applied is false, in plain words")
    errors: list[Problem] | SkipJsonSchema[None] = Field(None, description="The agent's per-knob errors, if it refused")


# --- catalog -------------------------------------------------------------------------------

class MetricInfo(Body):
    category: Literal[CATEGORIES]  # type: ignore[valid-type]
    name: str
    unit: str
    type: MetricType
    kind: MetricKind
    minimum: float | None
    maximum: float | None
    measured: str = Field(description="How the agent computes it")
    estimate: bool = Field(description="True when the value is a model's estimate, not a measurement")
    nullable: bool
    decimals: int = Field(ge=0, description="Resolution: agents round values to this many decimal places "
                                            "(0 for ints and bools)")
    key: str = Field(description="`category.name`, as in ?fields=", examples=["latency.end_to_end"])
    metricId: str = Field(description="`category_name`, as in thresholds and alerts", examples=["latency_end_to_end"])


class KnobInfo(Body):
    name: str
    category: Literal[KNOB_CATEGORIES]  # type: ignore[valid-type]
    type: Literal["bool", "int", "float", "enum"]
    unit: str
    default: bool | int | float | str
    description: str
    appliedBy: Literal["pipeline", "external"]
    choices: list[str] | SkipJsonSchema[None] = Field(None, description="enum knobs only")
    minimum: float | None | SkipJsonSchema[None] = Field(None, description="numeric and bool knobs")
    maximum: float | None | SkipJsonSchema[None] = Field(None, description="numeric and bool knobs")


class CatalogCounts(Body):
    metrics: int
    knobs: int
    points: int
    metricsByCategory: dict[str, int]
    knobsByCategory: dict[str, int]


class CatalogCategories(Body):
    metrics: list[str]
    knobs: list[str]


class ExtensionInfo(Body):
    extension: str
    language: str
    key: str = Field(examples=["extension_3333"])


class TopologyInfo(Body):
    stations: list[str]
    extensions: list[ExtensionInfo]


class CatalogDocument(Body):
    """The metric and knob catalogs with counts and the configured topology."""
    metrics: list[MetricInfo]
    knobs: list[KnobInfo]
    counts: CatalogCounts
    categories: CatalogCategories
    topology: TopologyInfo


# --- health --------------------------------------------------------------------------------

class SystemMetrics(Body):
    apiLatency: float = Field(ge=0, description="Mean duration of recent requests, ms")
    dbConnections: int = Field(ge=0, description="Open store handles: the config store plus the history store's SQLite connections")
    cacheHitRate: float = Field(ge=0, le=1, description="Snapshot requests served from prebuilt bytes")
    queueDepth: int = Field(ge=0, description="Unacknowledged knob sets plus requests waiting for an ACK")


class LinkHealth(Body):
    endpoint: str
    security: Literal["curve", "insecure"] = Field(description="CURVE-authenticated agents, or a plaintext link")
    handshakesRefused: int = Field(ge=0, description="Agent connections refused: key not in the allow-list")
    framesReceived: dict[str, int] = Field(description="Valid frames by message type")
    framesMalformed: int
    messagesRejected: int
    sequenceGaps: int


class Health(Body):
    """Service health in the plan's shape; 503 with the same document when unhealthy."""
    status: Literal["healthy", "degraded", "unhealthy"]
    uptime: int = Field(ge=0, description="Milliseconds since the controller started")
    activeStations: int = Field(ge=0)
    activeExtensions: int = Field(ge=0)
    lastDataUpdate: str | None = Field(description="When the last sample arrived (null: none yet)",
                                       json_schema_extra={"format": "date-time"})
    systemMetrics: SystemMetrics
    version: str
    reasons: list[str] = Field(description="Why the status is not healthy")
    points: dict[Status, int] = Field(description="Points by status")
    link: LinkHealth


class OpenApiDocument(BaseModel):
    """This OpenAPI document (3.1)."""
    model_config = ConfigDict(extra="allow")

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]

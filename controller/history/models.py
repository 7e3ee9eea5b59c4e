"""Query and response models of GET /api/v1/snapshots/history (validation and the OpenAPI document).

The metrics of a history point are described from the catalog, like the snapshot's: a raw
point carries each metric's value, a rollup point an object per metric whose fields depend
on the metric's kind and type ({avg, min, max}, {delta}, {sum}, {fractionTrue}, {last}).
Besides its metrics, a raw point always carries the sample's context (`knobVersion`,
`conditions`) and a rollup point the knob versions of its bucket (`knobVersions`): `fields`
selects metrics only.
"""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from controller.catalog.schemas import CatalogModel, by_category, metric_schema
from controller.http.models import STATION_PATTERN, Body, MetricFields, QueryModel
from shared.metrics import Metric, MetricKind, MetricType
from shared.topology import EXTENSIONS

TIME_RANGES = ("1h", "6h", "24h", "7d", "30d")
RESOLUTIONS = ("raw", "1m", "5m", "1h")
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,400}$"
DATE_TIME = {"format": "date-time"}


class HistoryQuery(QueryModel):
    station: str = Field(description="Station-1 … Station-N; unknown: 404, outside the token's stations: 403",
                         json_schema_extra={"pattern": STATION_PATTERN, "examples": ["Station-1"]})
    extension: str = Field(description="Language extension (3333 English, 4444 French); unknown: 404",
                           json_schema_extra={"enum": list(EXTENSIONS)})
    # Optional parameters typed without `| None` (the default None is never validated), so a bad value is one
    # problem under the parameter's own name rather than one per union branch.
    timeRange: Literal[TIME_RANGES] = Field(  # type: ignore[valid-type,assignment]
        None, description="The last hour, 6 hours, day, week or 30 days up to now (default 1h). Not with from/to.")
    from_: datetime = Field(None, alias="from", description=(  # type: ignore[assignment]
        "Start of the window, ISO 8601 (`2024-01-15T10:00:00Z`; no zone means UTC), instead of timeRange"))
    to: datetime = Field(None, description=(  # type: ignore[assignment]
        "End of the window (exclusive), ISO 8601; default now. Needs `from`; must be after it."))
    resolution: Literal[RESOLUTIONS] = Field(  # type: ignore[valid-type,assignment]
        None, description="raw samples, or 1-minute, 5-minute or 1-hour rollups. Default: the finest whose points "
                          "over the window fit in one page of 1000 (raw counted at the 150 ms sample interval): "
                          "1h and 6h -> 1m, 24h -> 5m, 7d and 30d -> 1h.")
    fields: MetricFields = Field((), description=(
        "Metrics to include, comma-separated: `category.name` keys or whole categories, as in GET /api/v1/snapshots; "
        "default: all 68. Metrics only: raw points carry `knobVersion` and `conditions`, rollup points "
        "`knobVersions`, whatever it selects."))
    limit: int = Field(100, ge=1, le=1000, description="Points per page (default 100, at most 1000)")
    cursor: str = Field(None, pattern=CURSOR_PATTERN, description=(  # type: ignore[assignment]
        "`nextCursor` of the previous page; it carries the window and resolution of the first page's query"))


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return {**schema, "type": kinds if "null" in kinds else [*kinds, "null"]}


def _number(description: str) -> dict[str, Any]:
    return {"type": ["number", "null"], "description": description}


def rollup_fields(metric: Metric) -> dict[str, dict[str, Any]]:
    """What a rollup point shows of `metric` (null where the bucket had no value)."""
    if metric.type is MetricType.BOOL:
        return {"fractionTrue": {**_number("Share of the bucket's samples that were true"), "minimum": 0, "maximum": 1}}
    if metric.type is MetricType.TIMESTAMP:
        return {"last": {"type": ["string", "null"], **DATE_TIME, "description": "Latest value in the bucket"}}
    if metric.kind is MetricKind.COUNTER:
        return {"delta": _number("Increase over the bucket (a drop counts as a restart from 0)")}
    if metric.kind is MetricKind.DELTA:
        return {"sum": _number("Events over the bucket (sum of the samples' windows)")}
    return {"avg": _number("Mean of the bucket's samples"), "min": _number("Smallest sample"),
            "max": _number("Largest sample")}


def _history_metric(metric: Metric) -> dict[str, Any]:
    fields = rollup_fields(metric)
    rolled = {"type": "object", "properties": fields, "required": list(fields), "additionalProperties": False}
    raw = _nullable(metric_schema(metric))
    return {"description": raw.pop("description"), "anyOf": [raw, rolled]}


class HistoryMetrics(CatalogModel):
    """A history point's metrics by category: the value (raw) or the bucket's statistics (rollups). Every requested metric is present; null where no sample had a value."""

    @classmethod
    def catalog_schema(cls) -> dict[str, Any]:
        return by_category(_history_metric)


CONTEXT_NOTE = "Present whatever `fields` selects (it selects metrics only)"
BEFORE_CONTEXT = "samples stored before history kept the knob version and conditions"
KnobVersions = Annotated[list[int], Field(min_length=1, json_schema_extra={"uniqueItems": True})]


class HistoryRawPoint(Body):
    """A raw sample: its metrics as the agent sent them and the context it was measured in."""
    timestamp: str = Field(description="Measurement time, UTC, milliseconds", json_schema_extra=DATE_TIME)
    metrics: HistoryMetrics
    knobVersion: int | None = Field(description=(
        "The knob version the agent had applied while measuring this sample (the knob change history, "
        "GET /api/v1/config/knobs/{stationId}/{extension}/history, maps it to the full knob set it ran under); "
        f"null for {BEFORE_CONTEXT}. {CONTEXT_NOTE}."), examples=[4])
    conditions: dict[str, Any] | None = Field(description=(
        "The conditions the agent reported with this sample, as it sent them: the path in force (delay_ms, "
        "jitter_ms, loss_rate, burst_length, …), the room (noise_dbfs, echo_gain_db, …), the chain's "
        "algorithmic_delay_ms and the key applied knobs (buffer and network knobs, the DSP stages' *_enabled); "
        "values as sent: numbers, strings, booleans (lists and objects of them too; a value JSON cannot show, "
        "such as NaN, is null). "
        f"Null for {BEFORE_CONTEXT}, and for conditions too large to keep (over 128 keys, or over 16 KiB as JSON "
        f"through long strings or nested values). {CONTEXT_NOTE}."),
        examples=[{"delay_ms": 42.512, "jitter_ms": 8.0, "loss_rate": 0.01214, "fec_enabled": True}])


class HistoryRollupPoint(Body):
    """A 1m, 5m or 1h bucket: its metrics' statistics, its sample count and the knob versions they ran under."""
    timestamp: str = Field(description="The bucket's start, UTC, milliseconds", json_schema_extra=DATE_TIME)
    metrics: HistoryMetrics
    samples: int = Field(ge=1, description="Raw samples in the bucket")
    knobVersions: KnobVersions | None = Field(description=(
        "The distinct knob versions the bucket's samples ran under, ascending, each once: one version when the "
        "knobs held still over the bucket, several when they changed within it (`[3, 4]`); a coarser bucket "
        f"lists every version of the buckets it is made of. Null when none of its samples has one ({BEFORE_CONTEXT}); "
        f"a bucket holding some of those and some later samples lists the later ones' versions. {CONTEXT_NOTE}."),
        examples=[[3, 4]])


class History(Body):
    """Points of one monitoring point in time order, one page at a time."""
    station: str = Field(examples=["Station-1"])
    extension: str = Field(examples=["3333"])
    resolution: Literal[RESOLUTIONS]  # type: ignore[valid-type]
    from_: str = Field(alias="from", description="Start of the window (inclusive)", json_schema_extra=DATE_TIME)
    to: str = Field(description="End of the window (exclusive)", json_schema_extra=DATE_TIME)
    fields: list[str] = Field(description="The metrics shown, `category.name`, in catalog order")
    points: list[HistoryRawPoint] | list[HistoryRollupPoint] = Field(
        description="Raw points when `resolution` is raw, rollup points otherwise; in time order")
    count: int = Field(ge=0, description="Points in this page")
    nextCursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last one")

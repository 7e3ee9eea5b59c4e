"""Request and response models of knob change history, templates and batch operations (validation and OpenAPI).

Batch and template bodies name knobs through the catalog schema (`BatchSettings` documents
one property per knob, like KnobChange) but check only the object's shape: each setting is
validated per target by the batch itself, strictly (any problem is a 400 listing every
one) or leniently (reported per target), so the catalog is applied once, in one place.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema, field_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from controller.catalog.schemas import NO_KNOBS, CatalogModel, KnobChange
from controller.http.models import NAME_PATTERN, STATION_PATTERN, BodyModel, CommaList, QueryModel
from controller.http.responses import Body, Problem
from controller.knobs.changes import KEY_METRICS, SOURCES
from shared.knobs import KNOBS, KNOBS_BY_NAME
from shared.topology import EXTENSIONS

REASON = Field(None, max_length=500, description="Why: kept with every knob change in the knob history")
TEMPLATE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# No leading or trailing space, no line breaks: a name is one line an operator can type.
CATEGORY_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
CURSOR_PATTERN = r"^([0-9]{1,12}:[a-z0-9_]{1,64})?$"
SOURCE_DOC = (f"Where the change came from: {', '.join(SOURCES)} (an open set: later sources add values)")
# Patterns are checked with Python's `re`, the engine schema-driven clients (hypothesis) generate
# from: its `$` also matches before one final newline, which pydantic's default engine refuses.
PYTHON_RE = ConfigDict(regex_engine="python-re")


def _one_line(value: str) -> str:
    """The value without the one final newline a pattern's `$` lets through."""
    return value[:-1] if value.endswith("\n") else value


# --- knob history ---------------------------------------------------------------------------

def _known_knobs(names: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in KNOBS_BY_NAME]
    if unknown:
        raise PydanticCustomError("unknown_knob", "unknown knob {names}", {"names": ", ".join(unknown)})
    return names


KnobNames = Annotated[CommaList, AfterValidator(_known_knobs), WithJsonSchema({
    "type": "array", "minItems": 1, "items": {"type": "string", "enum": [k.name for k in KNOBS]}})]


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def iso_time(value: Any) -> datetime:
    """An RFC 3339 time with its zone (`2024-01-15T10:30:00Z`), as the schema's date-time format says.

    Never a bare number: pydantic's lax datetime would take `0.5` as epoch seconds."""
    if isinstance(value, datetime):
        return value
    problem = PydanticCustomError("iso_time", "should be an RFC 3339 time with a zone, such as 2024-01-15T10:30:00Z")
    text = value.strip().upper() if isinstance(value, str) else ""
    if not _RFC3339.fullmatch(text):
        raise problem
    text = re.sub(r"(T\d\d:\d\d):60", r"\1:59", text)  # a leap second: the second before it
    if text.startswith("0000-"):  # RFC 3339 allows year 0; Python's first year is 1
        return datetime.min.replace(tzinfo=timezone.utc)
    try:
        return datetime.fromisoformat(text)
    except ValueError:  # 2024-02-30 and the like
        raise problem from None


IsoTime = Annotated[datetime, PlainValidator(iso_time), WithJsonSchema({"type": "string", "format": "date-time"})]


class KnobChangesQuery(QueryModel):
    model_config = {**QueryModel.model_config, **PYTHON_RE}

    limit: int = Field(100, ge=1, le=1000, description="Rows per page (default 100, at most 1000)")
    # `?cursor=` and `?source=` (empty) mean none given, as an empty comma list does. Optional values
    # are declared with their plain type and a None default (not validated): a union would lose the
    # pattern from the schema, or report one error per branch.
    cursor: str = Field(None, pattern=CURSOR_PATTERN, description=(  # type: ignore[assignment]
        "`nextCursor` of the previous page: the rows after it (older)"))
    knob: KnobNames = Field((), description="Only these knobs, comma-separated (`agc_enabled,nr_level`)")
    since: IsoTime = Field(None, alias="from", description=(  # type: ignore[assignment]
        "Only changes at or after this time (RFC 3339, e.g. 2024-01-15T10:30:00Z)"))
    until: IsoTime = Field(None, alias="to", description=(  # type: ignore[assignment]
        "Only changes before this time (RFC 3339)"))
    source: str = Field(None, pattern=r"^[a-z_]{0,32}$", description=(  # type: ignore[assignment]
        f"Only changes from this source ({', '.join(SOURCES)})"))


KnobValue = bool | int | float | str
KeyMetrics = Annotated[dict[str, float | None], WithJsonSchema({
    "type": "object", "additionalProperties": False, "required": list(KEY_METRICS),
    "properties": {key: {"type": ["number", "null"]} for key in KEY_METRICS},
    "description": "Mean of each key metric over the window (null: no sample in it)"})]


class KnobChangeEntry(Body):
    """One knob of one accepted change (the plan's knob_config_history row)."""
    changeId: int = Field(ge=1, description="The change this row belongs to (its knobs share it)")
    knob: str = Field(examples=["agc_target_level"])
    old: KnobValue = Field(description="Desired value before the change")
    new: KnobValue = Field(description="Desired value the change set")
    version: int = Field(ge=2, description="The point's desired version this change created")
    changedBy: str = Field(description="Token subject of whoever made the change")
    changedAt: str = Field(json_schema_extra={"format": "date-time"})
    reason: str | None
    source: str = Field(description=SOURCE_DOC, examples=list(SOURCES))
    batchId: str | None = Field(description="The batch (or template application) that made the change")
    templateId: str | None = Field(description="The template applied, if the change came from one")
    metricsBefore: KeyMetrics | None = Field(description="Key metrics over the minute before the change "
                                                         "(null: no metric history available)")
    metricsAfter: KeyMetrics | None = Field(description="Key metrics over the minute after it; null until that "
                                                        "minute is over (see metricsAfterDue)")
    metricsAfterDue: str = Field(description="When metricsAfter is filled in", json_schema_extra={"format": "date-time"})


class KnobChangesPage(Body):
    """A point's knob changes, newest first, a knob per row."""
    station: str = Field(examples=["Station-1"])
    extension: str = Field(examples=["3333"])
    keyMetrics: list[str] = Field(description="The metrics averaged before and after each change")
    entries: list[KnobChangeEntry]
    nextCursor: str | None = Field(description="Pass as `cursor` for the next (older) page; null: no more")


class KnobChangeQuery(QueryModel):
    reason: str | SkipJsonSchema[None] = Field(None, max_length=500, description=(
        "Why: recorded with the change in the knob history (the body stays the plain knob object); empty: none"))


# --- batch ----------------------------------------------------------------------------------

StationId = Annotated[str, Field(pattern=STATION_PATTERN, examples=["Station-1"])]
Extension = Literal[tuple(EXTENSIONS)]  # type: ignore[valid-type]


class BatchTargets(BodyModel):
    """Every (station, extension) pair of these lists is a target."""
    model_config = {**BodyModel.model_config, **PYTHON_RE}

    stations: list[StationId] = Field(min_length=1, max_length=1000, description=(
        "Stations to change; unknown: 404, outside the token's stations: 403 (the whole request)"))
    extensions: list[Extension] = Field(default_factory=lambda: list(EXTENSIONS), min_length=1, description=(
        "Extensions of each station (default: all)"))


class BatchSettings(CatalogModel):
    """Knobs and their new values, as for a single point. Strict validation refuses the request on any invalid value; lenient applies the valid ones and reports the others per target."""

    @classmethod
    def catalog_schema(cls) -> dict[str, Any]:
        return KnobChange.catalog_schema()

    @field_validator("root", mode="before")
    @classmethod
    def _an_object(cls, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise PydanticCustomError("knob_object", "expected an object of knob names to values")
        if not value:
            raise PydanticCustomError("no_knobs", "{problem}", {"problem": NO_KNOBS})
        return value


class BatchOptions(BodyModel):
    validation: Literal["strict", "lenient"] = Field("strict", description=(
        "strict: any invalid setting for any target refuses the whole request (400, nothing changes); "
        "lenient: the valid settings are applied, the others reported per target"))
    rollbackOnError: bool = Field(False, description=(
        "If a target's agent does not acknowledge within ack_timeout_ms (offline, silent or refusing), restore "
        "every changed target's previous set"))
    reason: str | SkipJsonSchema[None] = REASON


class BatchRequest(BatchOptions):
    """The plan's batch body: targets, settings, validation and rollbackOnError."""
    targets: BatchTargets
    settings: BatchSettings


class BatchTargetResult(Body):
    station: str = Field(examples=["Station-1"])
    extension: str = Field(examples=["3333"])
    status: Literal["applied", "rolled_back", "failed", "skipped"] = Field(description=(
        "applied: acknowledged; rolled_back: acknowledged, then restored because another target failed; "
        "failed: not acknowledged in time or refused; skipped (lenient): no setting valid here"))
    version: int = Field(ge=1, description="The point's desired version after the batch")
    previousVersion: int = Field(ge=1, description="Its desired version before the batch")
    reason: str | None
    errors: list[Problem] = Field(description="Settings not applied here (lenient) and the agent's errors")


class BatchSummary(Body):
    applied: int
    rolled_back: int
    failed: int
    skipped: int


class BatchResult(Body):
    """What happened at every target."""
    batchId: str = Field(examples=["batch_20240115_103045_3fa9c1"])
    status: Literal["applied", "partial", "failed", "rolled_back"]
    validation: Literal["strict", "lenient"]
    rollbackOnError: bool
    summary: BatchSummary
    results: list[BatchTargetResult]


# --- templates ------------------------------------------------------------------------------

class TemplatePath(BaseModel):
    templateId: str = Field(description="A template's id (built-in ones are names like `low-latency`)",
                            json_schema_extra={"pattern": TEMPLATE_ID_PATTERN, "examples": ["low-latency"]})


class TemplateRequest(BodyModel):
    """A template: name (unique, case-insensitive), description, category and a partial knob set."""
    model_config = {**BodyModel.model_config, **PYTHON_RE}

    name: str = Field(min_length=1, max_length=80, pattern=NAME_PATTERN, examples=["Quiet studio"])
    description: str = Field("", max_length=2000)
    category: str = Field("general", min_length=1, max_length=40, pattern=CATEGORY_PATTERN,
                          examples=["noise"])
    config: KnobChange

    _single_lines = field_validator("name", "category")(_one_line)


class TemplateDocument(Body):
    """A configuration template (the plan's config_templates row)."""
    id: str = Field(examples=["low-latency"])
    name: str
    description: str
    category: str
    config: KnobChange
    builtin: bool = Field(description="Shipped with the controller: read-only (PUT and DELETE answer 409)")
    createdBy: str
    createdAt: str | None = Field(description="Null for built-in templates", json_schema_extra={"format": "date-time"})
    updatedBy: str | None
    updatedAt: str | None = Field(json_schema_extra={"format": "date-time"})
    usageCount: int = Field(ge=0, description="Applications that changed at least one point")
    conflictsWithDefaults: list[Problem] = Field(description=(
        "Cross-knob rules the config breaks on a point at the catalog defaults; such a point refuses it"))


class TemplateList(Body):
    templates: list[TemplateDocument]
    count: int = Field(ge=0)


class ApplyTemplateRequest(BatchOptions):
    """Where to apply the template, and how (as a batch)."""
    targets: BatchTargets


class ApplyTemplateResult(BatchResult):
    """The batch that applied the template, and its usage count afterwards."""
    templateId: str
    usageCount: int = Field(ge=0)


class Deleted(Body):
    id: str
    deleted: Literal[True]

"""Request and response models of a point's knobs: the change body, its answers, the knob change history.

A route declares `KnobChange` as its body (or a field of its body) and gets both the
validation (every value through `shared.knobs.validate`, one problem per knob) and the
OpenAPI schema (one property per knob with its type, range or choices, unit and
description, from controller.catalog.schemas). `KnobSet` is every knob, as answers carry
it. Batch and template models are in knobs/batch_models.py and knobs/template_models.py.
"""
from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, PlainValidator, ValidationError, WithJsonSchema, field_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import InitErrorDetails, PydanticCustomError

from controller.catalog.schemas import CatalogModel, knob_properties
from controller.http.models import PYTHON_RE, Body, CommaList, Problem, QueryModel
from controller.knobs.changes import KEY_METRICS, SOURCES
from shared.knobs import KNOBS, KNOBS_BY_NAME, validate

NO_KNOBS = 'no knobs given: send an object such as {"agc_enabled": true}'


# --- the knob change body -------------------------------------------------------------------

class KnobChange(CatalogModel):
    """Some knobs of one point, by name, with their new values (at least one). Each value is checked against the knob catalog (type, range or choices); cross-knob rules (buffer sizes, playout delay) are checked against the point's stored set, and any problem changes nothing."""

    problem_noun: ClassVar[str] = "knob value"  # "3 invalid knob values; nothing was changed"

    @classmethod
    def catalog_schema(cls) -> dict[str, Any]:
        return {"type": "object", "properties": knob_properties(), "additionalProperties": False,
                "minProperties": 1}

    @field_validator("root", mode="before")
    @classmethod
    def _through_the_catalog(cls, value: Any) -> dict[str, Any]:
        return checked_knobs(value)


class KnobSet(CatalogModel):
    """Every knob of a point (all of the catalog), by name."""

    @classmethod
    def catalog_schema(cls) -> dict[str, Any]:
        properties = knob_properties()
        return {"type": "object", "properties": properties, "required": list(properties),
                "additionalProperties": False}


def checked_knobs(value: Any) -> dict[str, Any]:
    """The canonical values of a partial knob set; a ValidationError with one error per bad knob."""
    if not isinstance(value, dict):
        raise PydanticCustomError("knob_object", "expected an object of knob names to values")
    if not value:
        raise PydanticCustomError("no_knobs", "{problem}", {"problem": NO_KNOBS})
    clean, problems = validate(value)
    if problems:
        # Raised from a validator, pydantic merges these errors under the field's own location.
        raise ValidationError.from_exception_data("KnobChange", [
            InitErrorDetails(type=PydanticCustomError("knob_value", "{problem}", {"problem": p.problem}),
                             loc=(p.field,), input=value.get(p.field)) for p in problems])
    return clean


# --- a point's knobs and the answer to a change ---------------------------------------------

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


class KnobChangeQuery(QueryModel):
    reason: str | SkipJsonSchema[None] = Field(None, max_length=500, description=(
        "Why: recorded with the change in the knob history (the body stays the plain knob object); empty: none"))


# --- knob change history --------------------------------------------------------------------

CURSOR_PATTERN = r"^([0-9]{1,12}:[a-z0-9_]{1,64})?$"
SOURCE_DOC = (f"Where the change came from: {', '.join(SOURCES)} (an open set: later sources add values)")


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
        return datetime.min.replace(tzinfo=UTC)
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

"""Request and response models of POST /api/v1/batch/apply-settings: targets, settings, options and results.

Batch bodies name knobs through the catalog schema (`BatchSettings` documents one property
per knob, like KnobChange) but check only the object's shape: each setting is validated per
target by the batch itself, strictly (any problem is a 400 listing every one) or leniently
(reported per target), so the catalog is applied once, in one place. Applying a template
runs a batch: its models (knobs/template_models.py) build on these.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from controller.catalog.schemas import CatalogModel
from controller.http.models import PYTHON_RE, STATION_PATTERN, Body, BodyModel, Problem
from controller.knobs.models import NO_KNOBS, KnobChange
from shared.topology import EXTENSIONS

REASON = Field(None, max_length=500, description="Why: kept with every knob change in the knob history")

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

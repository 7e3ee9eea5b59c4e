"""Models whose JSON Schema is generated from the knob and metric catalogs, never written out by hand.

A route declares `KnobChange` as its body (or a field of its body) and gets both the
validation (every value through `shared.knobs.validate`, one problem per knob) and the
OpenAPI schema (one property per knob with its type, range or choices, unit and
description). `KnobSet` and `PointMetrics` describe what responses carry.
"""
from __future__ import annotations

from functools import cache
from typing import Any, Callable, ClassVar

from pydantic import RootModel, ValidationError, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.knobs import KNOBS, Knob, KnobType, validate
from shared.metrics import CATEGORIES, Metric, MetricType, metrics_in

_KNOB_TYPES = {KnobType.BOOL: "boolean", KnobType.INT: "integer", KnobType.FLOAT: "number", KnobType.ENUM: "string"}
_METRIC_TYPES = {MetricType.BOOL: "boolean", MetricType.INT: "integer", MetricType.FLOAT: "number",
                 MetricType.TIMESTAMP: "string"}
NO_KNOBS = 'no knobs given: send an object such as {"agc_enabled": true}'


def knob_schema(knob: Knob) -> dict[str, Any]:
    """One knob's value: type, range or choices, unit, default and what it does."""
    unit = f" Unit: {knob.unit}." if knob.unit else ""
    schema: dict[str, Any] = {"type": _KNOB_TYPES[knob.type], "description": f"{knob.description}{unit}",
                              "default": knob.default, "x-category": knob.category, "x-applied-by": knob.applied_by}
    if knob.unit:
        schema["x-unit"] = knob.unit
    if knob.type is KnobType.ENUM:
        schema["enum"] = list(knob.choices)
    else:
        for keyword, bound in (("minimum", knob.minimum), ("maximum", knob.maximum)):
            if bound is not None:
                schema[keyword] = bound
    return schema


def metric_schema(metric: Metric) -> dict[str, Any]:
    """One metric's value as the snapshot shows it: JSON type, bounds, null when the catalog allows it."""
    json_type = _METRIC_TYPES[metric.type]
    spelled_by_type = metric.type in (MetricType.TIMESTAMP, MetricType.BOOL)  # their "unit" is the type again
    how = metric.measured if spelled_by_type or not metric.unit else f"{metric.measured} Unit: {metric.unit}."
    if metric.nullable:
        how += " Null while undefined."
    schema: dict[str, Any] = {"type": [json_type, "null"] if metric.nullable else json_type, "description": how,
                              "x-unit": metric.unit, "x-kind": metric.kind.value}
    if metric.type is MetricType.TIMESTAMP:
        schema["format"] = "date-time"
    elif metric.type is not MetricType.BOOL:
        for keyword, bound in (("minimum", metric.minimum), ("maximum", metric.maximum)):
            if bound is not None:
                schema[keyword] = bound
    if metric.estimate:
        schema["x-estimate"] = True
    return schema


@cache
def _knob_properties() -> dict[str, Any]:
    return {knob.name: knob_schema(knob) for knob in KNOBS}


class CatalogModel(RootModel[dict[str, Any]]):
    """A JSON object described by a catalog: subclasses say how in `catalog_schema`."""

    @classmethod
    def catalog_schema(cls) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        return {"title": cls.__name__, "description": (cls.__doc__ or "").strip(), **cls.catalog_schema()}


class KnobChange(CatalogModel):
    """Some knobs of one point, by name, with their new values (at least one). Each value is checked against the knob catalog (type, range or choices); cross-knob rules (buffer sizes, playout delay) are checked against the point's stored set, and any problem changes nothing."""

    problem_noun: ClassVar[str] = "knob value"  # "3 invalid knob values; nothing was changed"

    @classmethod
    def catalog_schema(cls) -> dict[str, Any]:
        return {"type": "object", "properties": _knob_properties(), "additionalProperties": False,
                "minProperties": 1}

    @field_validator("root", mode="before")
    @classmethod
    def _through_the_catalog(cls, value: Any) -> dict[str, Any]:
        return checked_knobs(value)


class KnobSet(CatalogModel):
    """Every knob of a point (all of the catalog), by name."""

    @classmethod
    def catalog_schema(cls) -> dict[str, Any]:
        properties = _knob_properties()
        return {"type": "object", "properties": properties, "required": list(properties),
                "additionalProperties": False}


class PointMetrics(CatalogModel):
    """A point's latest metrics by category (buffer, latency, packet, audioQuality, performance), each metric as the catalog declares it. Every category and metric is present unless `fields` narrowed them."""

    @classmethod
    def catalog_schema(cls) -> dict[str, Any]:
        return by_category(metric_schema)


def by_category(schema_of: Callable[[Metric], dict[str, Any]]) -> dict[str, Any]:
    """An object of the 5 categories, each an object of its metrics described by `schema_of`."""
    categories = {category: {"type": "object", "additionalProperties": False,
                             "properties": {m.name: schema_of(m) for m in metrics_in(category)}}
                  for category in CATEGORIES}
    return {"type": "object", "properties": categories, "additionalProperties": False}


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

"""JSON Schema generated from the knob and metric catalogs, never written out by hand.

`knob_schema` and `metric_schema` describe one knob or metric (type, range or choices, unit,
description), `by_category` an object of the metric categories, and a `CatalogModel` is a
model whose schema a subclass builds from them: the knob bodies (controller.knobs.models),
the snapshot's metrics (controller.live.models), the history series (controller.history.models).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from pydantic import RootModel

from shared.knobs import KNOBS, Knob, KnobType
from shared.metrics import CATEGORIES, Metric, MetricType, metrics_in

_KNOB_TYPES = {KnobType.BOOL: "boolean", KnobType.INT: "integer", KnobType.FLOAT: "number", KnobType.ENUM: "string"}
_METRIC_TYPES = {MetricType.BOOL: "boolean", MetricType.INT: "integer", MetricType.FLOAT: "number",
                 MetricType.TIMESTAMP: "string"}


def knob_schema(knob: Knob) -> dict[str, Any]:
    """One knob's value: type, range or choices, unit, default and what it does."""
    unit = f" Unit: {knob.unit}." if knob.unit else ""
    schema: dict[str, Any] = {"type": _KNOB_TYPES[knob.type], "description": f"{knob.description}{unit}",
                              "default": knob.default, "x-category": knob.category, "x-applied-by": knob.applied_by,
                              "x-acts": knob.acts.value}
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
def knob_properties() -> dict[str, Any]:
    """Every knob's schema, by name: the properties of an object of knobs."""
    return {knob.name: knob_schema(knob) for knob in KNOBS}


class CatalogModel(RootModel[dict[str, Any]]):
    """A JSON object described by a catalog: subclasses say how in `catalog_schema`."""

    @classmethod
    def catalog_schema(cls) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        return {"title": cls.__name__, "description": (cls.__doc__ or "").strip(), **cls.catalog_schema()}


def by_category(schema_of: Callable[[Metric], dict[str, Any]]) -> dict[str, Any]:
    """An object of the 5 categories, each an object of its metrics described by `schema_of`."""
    categories = {category: {"type": "object", "additionalProperties": False,
                             "properties": {m.name: schema_of(m) for m in metrics_in(category)}}
                  for category in CATEGORIES}
    return {"type": "object", "properties": categories, "additionalProperties": False}

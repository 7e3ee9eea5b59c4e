"""Response model of GET /api/v1/catalog: the metric and knob catalogs, their counts and the topology."""
from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from controller.http.models import Body
from shared.knobs import KNOB_CATEGORIES
from shared.metrics import CATEGORIES, MetricKind, MetricType


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
    acts: Literal["receive", "dsp", "send", "external"] = Field(description=(
        "Where the knob acts: receive (jitter buffer, repair and retransmission requests on the receiving "
        "side), dsp (the audio chain), send (packetisation, FEC, pacing), external (the station's own engine)"))
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

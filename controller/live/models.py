"""Query and response models of GET /api/v1/snapshots: the filter, and the live state of every point in scope."""
from __future__ import annotations

from typing import Any

from pydantic import Field, create_model

from controller.catalog.schemas import CatalogModel, by_category, metric_schema
from controller.http.models import STATION_PATTERN, Body, MetricFields, QueryModel, StationList
from controller.live.state import Status
from shared.topology import EXTENSIONS


class SnapshotQuery(QueryModel):
    stations: StationList = Field((), description=(
        "Stations to include, comma-separated (`Station-1,Station-3`); default: every station the token may see. "
        "An unknown station is a 404, one outside the token's stations a 403."))
    fields: MetricFields = Field((), description=(
        "Metrics to include, comma-separated: `category.name` keys (`latency.end_to_end`) or whole categories "
        "(`latency`), as listed by GET /api/v1/catalog; default: all 68. An unknown name is a 400."))


class PointMetrics(CatalogModel):
    """A point's latest metrics by category (buffer, latency, packet, audioQuality, performance), each metric as the catalog declares it. Every category and metric is present unless `fields` narrowed them."""

    @classmethod
    def catalog_schema(cls) -> dict[str, Any]:
        return by_category(metric_schema)


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

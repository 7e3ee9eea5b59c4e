"""GET /api/v1/catalog: metric and knob catalogs with metadata, counts and the topology."""
from __future__ import annotations

from collections import Counter
from typing import Any

from aiohttp import web

from controller.app_keys import SERVICES
from controller.catalog.models import CatalogDocument
from controller.http.cached import serve
from controller.http.endpoint import Endpoint, Reply, add_endpoint
from controller.security.principal import Permission
from shared.knobs import KNOB_CATEGORIES, KNOBS, catalog_json
from shared.metrics import CATEGORIES, METRICS
from shared.topology import EXTENSIONS, Topology


def catalog_document(topology: Topology) -> dict[str, Any]:
    return {
        "metrics": [m.to_json() for m in METRICS],
        "knobs": catalog_json(),
        "counts": {
            "metrics": len(METRICS), "knobs": len(KNOBS), "points": len(topology.points),
            "metricsByCategory": dict(Counter(m.category for m in METRICS)),
            "knobsByCategory": dict(Counter(k.category for k in KNOBS)),
        },
        "categories": {"metrics": list(CATEGORIES), "knobs": list(KNOB_CATEGORIES)},
        "topology": {
            "stations": list(topology.stations),
            "extensions": [{"extension": ext, "language": lang, "key": f"extension_{ext}"}
                           for ext, lang in EXTENSIONS.items()],
        },
    }


async def get_catalog(request: web.Request) -> web.Response:
    return serve(request, request.app[SERVICES].catalog)


def setup_routes(app: web.Application) -> None:
    add_endpoint(app, Endpoint("GET", "/catalog", get_catalog, "Metric and knob catalogs with the topology",
                               Permission.READ_METRICS, tags=("catalog",), cached=True,
                               responses={200: Reply("Every metric and knob with its metadata", CatalogDocument)}))

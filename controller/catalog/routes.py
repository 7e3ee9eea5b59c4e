"""GET /api/v1/catalog: metric and knob catalogs with metadata, counts and the topology."""
from __future__ import annotations

from aiohttp import web

from controller.app_keys import SERVICES
from controller.catalog.models import CatalogDocument
from controller.http.cached import serve
from controller.http.endpoint import Endpoint, Reply, add_endpoint
from controller.security.principal import Permission


async def get_catalog(request: web.Request) -> web.Response:
    return serve(request, request.app[SERVICES].catalog)


def setup_routes(app: web.Application) -> None:
    add_endpoint(app, Endpoint("GET", "/catalog", get_catalog, "Metric and knob catalogs with the topology",
                               Permission.READ_METRICS, tags=("catalog",), cached=True,
                               responses={200: Reply("Every metric and knob with its metadata", CatalogDocument)}))

"""GET /api/v1/openapi.json: the OpenAPI document of every declared endpoint, built once when the app starts."""
from __future__ import annotations

from aiohttp import web

from controller.app_keys import SERVICES
from controller.http.cached import serve
from controller.http.endpoint import Endpoint, Reply, add_endpoint, endpoints
from controller.http.models import OpenApiDocument


def build(app: web.Application) -> None:
    app[SERVICES].openapi.build(endpoints(app), app[SERVICES].settings.max_body_bytes, app[SERVICES].clock.wall())


async def get_openapi(request: web.Request) -> web.Response:
    rendered = request.app[SERVICES].openapi.rendered
    if rendered is None:  # an app served without its startup signal (never in tpmon; some test rigs)
        build(request.app)
        rendered = request.app[SERVICES].openapi.rendered
    return serve(request, rendered)


async def _on_startup(app: web.Application) -> None:
    build(app)  # at startup, not here: areas set up after this one are in the document too


def setup_routes(app: web.Application) -> None:
    app.on_startup.append(_on_startup)
    # Open: the document describes the API, not its data or configuration.
    add_endpoint(app, Endpoint("GET", "/openapi.json", get_openapi, "This OpenAPI 3.1 document", None,
                               tags=("meta",), cached=True,
                               responses={200: Reply("The OpenAPI document of every route", OpenApiDocument)}))

"""GET /api/v1/snapshots: the live snapshot of every point, optionally filtered."""
from __future__ import annotations

from aiohttp import web

from controller import keys
from controller.errors import ApiError
from controller.routes import add_api_route
from controller.routes.cached import serve
from controller.snapshot import UnknownFields, UnknownStations


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


async def get_snapshots(request: web.Request) -> web.Response:
    stations, fields = _csv(request.query.get("stations")), _csv(request.query.get("fields"))
    try:
        rendered = request.app[keys.SNAPSHOTS].get(stations, fields)
    except UnknownStations as exc:
        topology = request.app[keys.TOPOLOGY]
        raise ApiError(404, f"unknown station {', '.join(exc.names)} (known: Station-1 … Station-{topology.station_count})",
                       [{"field": "stations", "problem": f"unknown station {name}"} for name in exc.names])
    except UnknownFields as exc:
        raise ApiError(400, f"unknown field {', '.join(exc.names)}; use category.name keys from GET /api/v1/catalog",
                       [{"field": "fields", "problem": f"unknown metric {name}"} for name in exc.names])
    return serve(request, rendered)


def setup_routes(app: web.Application) -> None:
    add_api_route(app, "GET", "/snapshots", get_snapshots)

"""GET /api/v1/snapshots: the live snapshot of every point, optionally filtered."""
from __future__ import annotations

from aiohttp import web

from controller.app_keys import SERVICES
from controller.http.cached import serve
from controller.http.endpoint import Endpoint, Reply, add_endpoint
from controller.http.errors import ApiError
from controller.http.params import query_of
from controller.live.models import Snapshot, SnapshotQuery
from controller.live.snapshot import UnknownFields, UnknownStations
from controller.security.guard import principal_of
from controller.security.principal import Permission, Principal


def scoped_stations(principal: Principal, requested: tuple[str, ...], known: tuple[str, ...]) -> tuple[str, ...]:
    """The stations to show: the request's (each must be in scope, else 403), or every one in scope."""
    if principal.stations is None:
        return requested
    if requested:
        refused = [s for s in principal.unseen(requested) if s in known]
        if refused:
            raise ApiError(403, f"this token is not scoped to {', '.join(refused)}",
                           [{"field": "stations", "problem": f"{name} is outside the token's stations"}
                            for name in refused])
        return requested
    visible = tuple(s for s in known if principal.sees(s))
    if not visible:
        raise ApiError(403, "this token's stations match none of the configured stations",
                       [{"field": "stations", "problem": "no station in scope"}])
    return visible


async def get_snapshots(request: web.Request) -> web.Response:
    query = query_of(request, SnapshotQuery)
    stations, fields = query.stations, query.fields
    topology = request.app[SERVICES].topology
    stations = scoped_stations(principal_of(request), stations, topology.stations)
    try:
        rendered = request.app[SERVICES].snapshots.get(stations, fields)
    except UnknownStations as exc:
        raise ApiError(404, f"unknown station {', '.join(exc.names)} (known: Station-1 … Station-{topology.station_count})",
                       [{"field": "stations", "problem": f"unknown station {name}"} for name in exc.names]) from None
    except UnknownFields as exc:
        raise ApiError(400, f"unknown field {', '.join(exc.names)}; use category.name keys from GET /api/v1/catalog",
                       [{"field": "fields", "problem": f"unknown metric {name}"} for name in exc.names]) from None
    return serve(request, rendered)


def setup_routes(app: web.Application) -> None:
    add_endpoint(app, Endpoint("GET", "/snapshots", get_snapshots,
                               "Live snapshot of every point in scope, optionally filtered",
                               Permission.READ_METRICS, tags=("snapshots",), query=SnapshotQuery,
                               responses={200: Reply("The snapshot (the same bytes for every identical request "
                                                     "within a tick)", Snapshot)},
                               errors=(404,), cached=True,
                               description="Stations → `extension_3333`/`extension_4444` → the 5 metric categories, "
                                           "with each point's status and measurement time. Rebuilt every tick "
                                           "(150 ms); a token scoped to some stations sees only those."))

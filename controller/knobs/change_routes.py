"""GET /api/v1/config/knobs/{stationId}/{extension}/history: a point's knob changes, newest first, paginated."""
from __future__ import annotations

import asyncio

from aiohttp import web

from controller.app_keys import SERVICES
from controller.http.endpoint import Endpoint, Reply, add_endpoint
from controller.http.errors import json_response
from controller.http.models import PointPath
from controller.http.params import query_of
from controller.knobs.changes import KEY_METRICS, epoch_of
from controller.knobs.models import KnobChangesPage, KnobChangesQuery
from controller.knobs.routes import KNOBS_PATH, point_of
from controller.security.principal import Permission


async def get_knob_history(request: web.Request) -> web.Response:
    point = point_of(request)
    q = query_of(request, KnobChangesQuery)
    # A bounded SQLite query (limit + 1 rows over an index), off the event loop all the same.
    page = await asyncio.to_thread(
        request.app[SERVICES].knob_changes.page, point, q.limit, q.cursor, q.knob,
        since=epoch_of(q.since) if q.since else None, until=epoch_of(q.until) if q.until else None,
        source=q.source or None)
    return json_response({"station": point.station, "extension": point.extension, "keyMetrics": list(KEY_METRICS),
                          "entries": page.rows, "nextCursor": page.next_cursor})


def setup_routes(app: web.Application) -> None:
    add_endpoint(app, Endpoint(
        "GET", KNOBS_PATH + "/history", get_knob_history, "Knob change history of a point, newest first",
        Permission.READ_METRICS, tags=("config",), path_params=PointPath, query=KnobChangesQuery, errors=(404,),
        responses={200: Reply("A page of changes, a knob per row", KnobChangesPage)},
        description="Every change of the point's desired knobs (API, template, batch, rollback, optimizer), a row "
                    "per knob with old and new value, version, who, when, why and source, and the key metrics "
                    "averaged over the minute before the change and (once it is over) the minute after it."))

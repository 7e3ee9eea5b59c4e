"""GET /api/v1/snapshots/history: one point's stored metrics over a window, raw or rolled up, paged."""
from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from aiohttp import web

from controller.app_keys import SERVICES
from controller.clock import iso_ms
from controller.history import view
from controller.history.models import History, HistoryQuery
from controller.history.reader import After
from controller.history.tiers import TIER_BY_NAME
from controller.http.endpoint import Endpoint, Reply, add_endpoint
from controller.http.errors import ApiError, json_response
from controller.http.params import query_of
from controller.security.guard import principal_of
from controller.security.principal import Permission
from shared.topology import Point

HOUR_MS = 3_600_000
RANGES_MS = {"1h": HOUR_MS, "6h": 6 * HOUR_MS, "24h": 24 * HOUR_MS, "7d": 7 * 24 * HOUR_MS, "30d": 30 * 24 * HOUR_MS}
LAST_MS = 253_402_300_799_999   # 9999-12-31T23:59:59.999Z: windows are clamped to [epoch, this]
NOMINAL_SAMPLE_MS = 150   # the agents' default sample interval: what `raw` costs in points
PAGE_MAX = 1000


def _point(request: web.Request, station: str, extension: str) -> Point:
    """As config.point_of, from the query: 404 unknown, 403 outside the token's stations."""
    topology = request.app[SERVICES].topology
    try:
        point = topology.point(station, extension)
    except KeyError as exc:
        field = "station" if not topology.has_station(station) else "extension"
        raise ApiError(404, exc.args[0], [{"field": field, "problem": exc.args[0]}]) from None
    if not principal_of(request).sees(point.station):
        raise ApiError(403, f"this token is not scoped to {point.station}",
                       [{"field": "station", "problem": f"{point.station} is outside the token's stations"}])
    return point


def _bad(field: str, problem: str) -> ApiError:
    return ApiError(400, f"{field}: {problem}", [{"field": field, "problem": problem}], code="validation_failed")


def _epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def window(query: HistoryQuery, now_ms: int) -> tuple[int, int]:
    """[from, to) in epoch ms from timeRange (default 1h) or from/to."""
    if query.timeRange is not None and (query.from_ is not None or query.to is not None):
        raise _bad("timeRange", "give timeRange or from/to, not both")
    if query.from_ is None:
        if query.to is not None:
            raise _bad("from", "required with to")
        return now_ms - RANGES_MS[query.timeRange or "1h"], now_ms
    start = _epoch_ms(query.from_)
    end = _epoch_ms(query.to) if query.to is not None else now_ms
    if start >= end:
        raise _bad("from", f"must be before to ({query.from_.isoformat()} is not before "
                           f"{query.to.isoformat() if query.to else 'now'})")
    # Nothing is stored before 1970 or after 9999; an empty page rather than a date no ISO string can show.
    start, end = min(max(start, 0), LAST_MS), min(max(end, 0), LAST_MS)
    return start, end


def default_resolution(start_ms: int, end_ms: int) -> str:
    """The finest resolution whose points over the window fit in one page of the maximum size."""
    span = end_ms - start_ms
    if span / NOMINAL_SAMPLE_MS <= PAGE_MAX:
        return "raw"
    for name in ("1m", "5m"):
        if span / TIER_BY_NAME[name].bucket_ms <= PAGE_MAX:
            return name
    return "1h"


def encode_cursor(point: Point, resolution: str, start: int, end: int, after: After) -> str:
    doc = {"p": point.id, "r": resolution, "f": start, "t": end, "a": after.ts_ms, "s": after.skip}
    return base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str, point: Point) -> tuple[str, int, int, After]:
    try:
        doc = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        resolution, start, end = doc["r"], int(doc["f"]), int(doc["t"])
        after = After(int(doc["a"]), int(doc["s"]))
        owner = doc["p"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise _bad("cursor", "not a cursor this endpoint made (pass nextCursor unchanged)") from None
    if owner != point.id:
        raise _bad("cursor", f"this cursor pages {owner}, not {point.id}")
    if (resolution not in TIER_BY_NAME or not 0 <= start <= end <= LAST_MS or not start <= after.ts_ms <= LAST_MS
            or not 1 <= after.skip <= 1_000_000):
        raise _bad("cursor", "not a cursor this endpoint made (pass nextCursor unchanged)")
    return resolution, start, end, after


async def get_history(request: web.Request) -> web.Response:
    query = query_of(request, HistoryQuery)
    point = _point(request, query.station, query.extension)
    if query.cursor is not None:
        resolution, start, end, after = decode_cursor(query.cursor, point)
        if query.resolution is not None and query.resolution != resolution:
            raise _bad("resolution", f"the cursor pages resolution {resolution}")
    else:
        start, end = window(query, int(request.app[SERVICES].clock.wall() * 1000))
        resolution, after = query.resolution or default_resolution(start, end), None
    metrics = view.metric_keys(query.fields)
    rows = await request.app[SERVICES].history.query(point, resolution, start, end, view.columns(resolution, metrics),
                                                 query.limit, after, context=True)
    next_cursor = None
    if rows.more:
        last = int(rows.ts[-1])
        same = int((rows.ts == last).sum()) + (after.skip if after is not None and after.ts_ms == last else 0)
        next_cursor = encode_cursor(point, resolution, start, end, After(last, same))
    points = view.points(resolution, metrics, rows)
    return json_response({"station": point.station, "extension": point.extension, "resolution": resolution,
                          "from": iso_ms(start / 1000), "to": iso_ms(end / 1000), "fields": [m.key for m in metrics],
                          "points": points, "count": len(points), "nextCursor": next_cursor})


def setup_routes(app: web.Application) -> None:
    add_endpoint(app, Endpoint(
        "GET", "/snapshots/history", get_history, "Stored metrics of one point over a window, raw or rolled up",
        Permission.READ_METRICS, tags=("snapshots",), query=HistoryQuery,
        responses={200: Reply("Points in time order, one page", History)}, errors=(404,),
        description="Raw samples as the agents sent them, or 1m/5m/1h rollups kept as samples arrive: per numeric "
                    "gauge {avg, min, max}, per counter {delta}, per delta metric {sum}, per flag {fractionTrue}, "
                    "per time {last}, and each point's `samples`. A raw point also carries the knob version its "
                    "sample ran under and the conditions the agent reported (`knobVersion`, `conditions`), a rollup "
                    "point the distinct knob versions of its bucket (`knobVersions`), whatever `fields` selects. "
                    "Raw is kept 7 days, 1m 30, 5m 90, 1h 365 "
                    "(configurable). Samples reach the store within history_flush_ms (1 s)."))

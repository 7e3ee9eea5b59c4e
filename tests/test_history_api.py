"""GET /api/v1/snapshots/history in-process: shapes, default resolutions, paging with a cursor, 400/403/404."""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from controller.app import create_app
from controller.app_keys import SERVICES
from controller.history.models import History
from controller.sample import Sample
from controller.settings import ControllerSettings
from shared.metrics import METRICS
from shared.topology import Point
from tests.auth import bearer
from tests.history_feed import Samples, expected_versions

URL = "/api/v1/snapshots/history"
POINT = "station=Station-1&extension=3333"


def make_app(tmp_path: Path) -> web.Application:
    settings = ControllerSettings(http_host="127.0.0.1", link_endpoint="tcp://127.0.0.1:*", data_dir=str(tmp_path),
                                  stations=2, insecure=True)
    return create_app(settings, registry=CollectorRegistry())


@pytest.fixture
async def loaded(tmp_path):
    """An app whose store holds 20 minutes of Station-1/3333 ending 2 minutes ago (1.5 s apart), each sample
    with its knob version (a new one every 173 samples) and conditions."""
    app = make_app(tmp_path)
    async with TestClient(TestServer(app), headers=bearer(tmp_path)) as client:
        # Half a second past a whole minute: no sample sits on a minute boundary, so each minute holds 40.
        samples = Samples(800, every=1.5, start=time.time() // 60 * 60 - 1320 + 0.5)
        store = app[SERVICES].history
        for i in range(samples.n):
            store.append(samples.sample(Point("Station-1", "3333"), i))
        await store.flush()
        yield client, samples, tmp_path


async def get(client: TestClient, query: str, **kw) -> tuple[int, dict]:
    resp = await client.get(f"{URL}?{query}", **kw)
    return resp.status, await resp.json()


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_raw_points_carry_the_values_sent(loaded):
    client, samples, _ = loaded
    start = float(samples.times[100])
    status, doc = await get(client, f"{POINT}&resolution=raw&from={iso(start)}&to={iso(samples.times[110])}")
    assert status == 200, doc
    assert doc["resolution"] == "raw" and doc["count"] == 10 and doc["nextCursor"] is None
    assert doc["fields"] == [m.key for m in METRICS] and "samples" not in doc["points"][0]
    first = doc["points"][0]
    assert first["timestamp"] == iso(samples.times[100])
    sent = samples.row(100)
    for m, value in zip(METRICS, sent):
        shown = first["metrics"][m.category][m.name]
        if m.type.value == "timestamp":
            assert shown == (None if value is None else iso(value)), m.key
        else:
            assert shown == value, m.key


async def test_raw_points_carry_the_knob_version_and_conditions_of_their_sample(loaded):
    client, samples, _ = loaded
    change = samples.knob_every   # the first sample of the second version
    window = f"from={iso(samples.times[change - 5])}&to={iso(samples.times[change + 5])}"
    for fields in ("", "&fields=latency.jitter"):   # whatever metrics are selected
        status, doc = await get(client, f"{POINT}&resolution=raw&{window}{fields}")
        assert status == 200 and doc["count"] == 10, doc
        History.model_validate(doc)
        assert [p["knobVersion"] for p in doc["points"]] == [samples.knob_version(change - 1)] * 5 + \
            [samples.knob_version(change)] * 5
        assert samples.knob_version(change) == samples.knob_version(change - 1) + 1
        for i, point in zip(range(change - 5, change + 5), doc["points"]):
            assert point["timestamp"] == iso(samples.times[i])
            assert json.dumps(point["conditions"], sort_keys=True) == json.dumps(samples.conditions(i), sort_keys=True)


async def test_rollup_points_list_the_knob_versions_of_their_bucket(loaded):
    client, samples, _ = loaded
    status, doc = await get(client, f"{POINT}&timeRange=1h&resolution=1m&fields=latency.jitter")
    assert status == 200 and doc["count"] >= 18, doc
    History.model_validate(doc)
    want = expected_versions(np.floor(samples.times * 1000).astype(np.int64), samples.knob_versions(), 60_000)
    got = {p["timestamp"]: p["knobVersions"] for p in doc["points"]}
    assert got == {iso(start / 1000): versions for start, versions in want.items() if iso(start / 1000) in got}
    assert any(len(v) == 2 for v in got.values())   # the minutes a change fell in list both versions
    assert all("knobVersion" not in p and "conditions" not in p for p in doc["points"])


async def test_rollup_points_show_statistics_by_kind(loaded):
    client = loaded[0]
    status, doc = await get(client, f"{POINT}&timeRange=1h&fields=latency.jitter,buffer.overflow_count,"
                                    "audioQuality.clipping_detected,buffer.last_overflow_time,performance.page_faults")
    assert status == 200 and doc["resolution"] == "1m", doc
    assert 18 <= doc["count"] <= 21
    point = doc["points"][1]
    assert point["samples"] == 40
    assert set(point["metrics"]["latency"]["jitter"]) == {"avg", "min", "max"}
    assert set(point["metrics"]["buffer"]["overflow_count"]) == {"delta"}
    assert set(point["metrics"]["buffer"]["last_overflow_time"]) == {"last"}
    assert 0 <= point["metrics"]["audioQuality"]["clipping_detected"]["fractionTrue"] <= 1
    assert set(point["metrics"]["performance"]["page_faults"]) == {"sum"}
    jitter = point["metrics"]["latency"]["jitter"]
    assert jitter["min"] <= jitter["avg"] <= jitter["max"]


@pytest.mark.parametrize("time_range,resolution", [("1h", "1m"), ("6h", "1m"), ("24h", "5m"), ("7d", "1h"),
                                                    ("30d", "1h")])
async def test_default_resolution_follows_the_range(loaded, time_range, resolution):
    status, doc = await get(loaded[0], f"{POINT}&timeRange={time_range}&fields=latency")
    assert status == 200 and doc["resolution"] == resolution
    assert list(doc["points"][0]["metrics"]) == ["latency"] if doc["points"] else True


async def test_a_short_window_defaults_to_raw_and_the_api_alias_answers_too(loaded):
    client, samples, _ = loaded
    query = f"{POINT}&from={iso(samples.times[10])}&to={iso(samples.times[90])}&fields=latency.jitter"  # 120 s
    status, doc = await get(client, query)
    assert status == 200 and doc["resolution"] == "raw" and doc["count"] == 80
    resp = await client.get(f"/api/snapshots/history?{query}")
    assert resp.status == 200 and (await resp.json())["points"] == doc["points"]


async def test_pages_follow_each_other_without_gaps_or_repeats(loaded):
    client, samples, _ = loaded
    window = f"from={iso(samples.times[0])}&to={iso(samples.times[-1] + 1)}&resolution=raw&fields=latency.jitter"
    status, whole = await get(client, f"{POINT}&{window}&limit=1000")
    assert status == 200 and whole["count"] == 800 and whole["nextCursor"] is None
    seen, cursor, pages = [], None, 0
    while True:
        status, page = await get(client, f"{POINT}&{window}&limit=77" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, page
        seen += page["points"]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == 11 and seen == whole["points"]


async def test_pages_do_not_split_samples_that_share_a_millisecond(tmp_path):
    app = make_app(tmp_path)
    async with TestClient(TestServer(app), headers=bearer(tmp_path)) as client:
        samples = Samples(5, start=time.time() - 60)
        store = app[SERVICES].history
        for i in (0, 1, 1, 1, 2, 3):  # three samples in the same millisecond
            store.append(Sample(Point("Station-1", "3333"), 0, float(samples.times[i]), samples.row(i), 0))
        await store.flush()
        window = f"from={iso(samples.times[0])}&to={iso(samples.times[4])}&fields=latency.jitter"
        seen, cursor = [], None
        while True:
            status, page = await get(client, f"{POINT}&{window}&limit=2" + (f"&cursor={cursor}" if cursor else ""))
            assert status == 200, page
            seen += [p["timestamp"] for p in page["points"]]
            if (cursor := page["nextCursor"]) is None:
                break
        assert seen == [iso(samples.times[i]) for i in (0, 1, 1, 1, 2, 3)]


@pytest.mark.parametrize("query,field", [
    ("extension=3333", "station"),
    ("station=Station-1", "extension"),
    (f"{POINT}&timeRange=1h&from=2024-01-01T00:00:00Z", "timeRange"),
    (f"{POINT}&to=2024-01-01T00:00:00Z", "from"),
    (f"{POINT}&from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z", "from"),
    (f"{POINT}&from=yesterday", "from"),
    (f"{POINT}&timeRange=2h", "timeRange"),
    (f"{POINT}&resolution=10s", "resolution"),
    (f"{POINT}&limit=0", "limit"),
    (f"{POINT}&limit=1001", "limit"),
    (f"{POINT}&fields=latency.nope", "fields"),
    (f"{POINT}&cursor=bm90LWEtY3Vyc29y", "cursor"),
    (f"{POINT}&cursor=not+a+cursor", "cursor"),
    (f"{POINT}&stations=Station-1", "stations"),
])
async def test_bad_queries_are_400_naming_the_parameter(loaded, query, field):
    status, doc = await get(loaded[0], query)
    assert status == 400, doc
    assert field in [d["field"] for d in doc["error"]["details"]], doc


async def test_a_cursor_belongs_to_its_point_and_resolution(loaded):
    client = loaded[0]
    status, page = await get(client, f"{POINT}&timeRange=1h&resolution=raw&limit=5")
    assert status == 200 and page["nextCursor"]
    cursor = page["nextCursor"]
    status, doc = await get(client, f"station=Station-1&extension=4444&cursor={cursor}")
    assert status == 400 and doc["error"]["details"][0]["field"] == "cursor"
    status, doc = await get(client, f"{POINT}&resolution=1m&cursor={cursor}")
    assert status == 400 and doc["error"]["details"][0]["field"] == "resolution"


@pytest.mark.parametrize("query,status,field", [
    ("station=Station-9&extension=3333", 404, "station"),
    ("station=Station-1&extension=5555", 404, "extension"),
])
async def test_unknown_points_are_404(loaded, query, status, field):
    got, doc = await get(loaded[0], query)
    assert got == status and doc["error"]["details"][0]["field"] == field


async def test_scope_and_permission(loaded):
    client, _, tmp_path = loaded
    other = bearer(tmp_path, "viewer", stations=["Station-2"])
    status, doc = await get(client, POINT, headers=other)
    assert status == 403 and doc["error"]["details"][0]["field"] == "station"
    status, doc = await get(client, POINT, headers=bearer(tmp_path, "viewer", stations=["Station-1"]))
    assert status == 200 and doc["station"] == "Station-1"
    resp = await client.get(f"{URL}?{POINT}", headers={"Authorization": "Bearer nope"})
    assert resp.status == 401


async def test_an_empty_window_is_an_empty_page(loaded):
    status, doc = await get(loaded[0], "station=Station-2&extension=4444&timeRange=24h")
    assert status == 200 and doc["points"] == [] and doc["count"] == 0 and doc["nextCursor"] is None

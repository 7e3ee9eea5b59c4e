"""Knob change history: records from every path, metrics before/after (a fake metric history), pagination, restarts.

The store's own behaviour (SQLite schema, knob sets, legacy import, retention, crash safety) is
tests/test_knob_changes_store.py.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.app_keys import SERVICES
from controller.clock import ManualClock, iso_ms
from controller.knobs.changes import KEY_METRICS, Attribution, Draft, KnobChangeLog
from shared.topology import Point, Topology
from tests.acking_agent import make_app, signed, start_agents
from tests.auth import bearer

pytestmark = pytest.mark.slow  # real sockets on loopback (each test well under a second)

KNOBS = "/api/v1/config/knobs/Station-1/3333"
HISTORY = KNOBS + "/history"
P = Point("Station-1", "3333")


class FakeMetrics:
    """The HistoryStore's mean_between over samples the test gives: (point, time, {metric: value})."""

    def __init__(self) -> None:
        self.samples: list[tuple[Point, float, dict[str, float]]] = []
        self.calls: list[tuple[Point, float, float]] = []

    def add(self, point: Point, start: float, end: float, values: dict[str, float]) -> None:
        self.samples += [(point, t, values) for t in range(int(start), int(end))]

    async def mean_between(self, point: Point, start: float, end: float, keys: list[str]) -> dict[str, float | None]:
        self.calls.append((point, start, end))
        rows = [v for p, t, v in self.samples if p == point and start <= t < end]
        return {k: (sum(r[k] for r in rows if k in r) / len(rows)) if rows and k in rows[0] else None for k in keys}


async def client_for(tmp_path: Path, clock: ManualClock, metrics: FakeMetrics | None) -> TestClient:
    app = make_app(tmp_path, clock=clock)
    app[SERVICES].knob_changes.metrics = metrics
    client = TestClient(TestServer(app), headers=bearer(tmp_path))
    await client.start_server()
    return client


@pytest.fixture
async def setup(tmp_path):
    clock, metrics = ManualClock(wall=float(int(time.time()))), FakeMetrics()
    client = await client_for(tmp_path, clock, metrics)
    client.agents = {}
    yield client, clock, metrics
    for agent in client.agents.values():
        agent.close()
    await client.close()


async def page(client, query: str = "") -> dict:
    resp = await client.get(HISTORY + query)
    doc = await resp.json()
    assert resp.status == 200, doc
    return doc


async def test_a_change_is_recorded_with_the_minute_before_and_later_the_minute_after(setup):
    client, clock, metrics = setup
    client.agents = await start_agents(client, {"Station-1": "ack"})
    t0 = clock.wall()
    metrics.add(P, t0 - 60, t0, {"latency.end_to_end": 100.0, "packet.loss_rate": 0.02})
    metrics.add(P, t0, t0 + 60, {"latency.end_to_end": 80.0, "packet.loss_rate": 0.01})
    metrics.add(Point("Station-1", "4444"), t0 - 60, t0, {"latency.end_to_end": 999.0})  # another point
    resp = await client.post(KNOBS + "?reason=jitter%20at%20night", json={"playout_delay": 20, "agc_enabled": False})
    assert resp.status == 200 and (await resp.json())["applied"] is True
    doc = await page(client)
    assert doc["keyMetrics"] == list(KEY_METRICS) and doc["nextCursor"] is None
    rows = {r["knob"]: r for r in doc["entries"]}
    assert set(rows) == {"agc_enabled", "playout_delay"}
    row = rows["playout_delay"]
    assert (row["old"], row["new"], row["version"]) == (50, 20, 2)
    assert row["changedBy"] == "test-admin" and row["source"] == "api" and row["reason"] == "jitter at night"
    assert row["changedAt"] == iso_ms(t0) and row["batchId"] is None
    assert row["metricsBefore"]["latency.end_to_end"] == 100.0 and row["metricsBefore"]["packet.loss_rate"] == pytest.approx(0.02)
    assert row["metricsBefore"]["audioQuality.mos_score"] is None  # no sample of it in the window
    settle = client.app[SERVICES].knob_changes.settle_s  # two history flushes and a second
    assert row["metricsAfter"] is None and row["metricsAfterDue"] == iso_ms(t0 + 60 + settle)
    assert await client.app[SERVICES].knob_changes.fill_due() == 0  # the minute after is not over
    clock.advance(66)
    assert await client.app[SERVICES].knob_changes.fill_due() == 1
    after = {r["knob"]: r for r in (await page(client))["entries"]}["playout_delay"]["metricsAfter"]
    assert after["latency.end_to_end"] == 80.0 and after["packet.loss_rate"] == pytest.approx(0.01)
    assert (P, t0, t0 + 60) in metrics.calls and (P, t0 - 60, t0) in metrics.calls


async def test_every_path_is_recorded_and_published(setup):
    client, clock, _ = setup
    client.agents = await start_agents(client, {"Station-1": "ack"})
    events: list[tuple[str, dict[str, Any]]] = []
    client.app[SERVICES].events.subscribe(lambda name, data: events.append((name, data)))
    await client.post(KNOBS, json={"nr_level": "low"})
    await signed(client, "POST", "/api/v1/batch/apply-settings",
                 {"targets": {"stations": ["Station-1"], "extensions": ["3333"]}, "settings": {"nr_level": "moderate"},
                  "reason": "batch reason"})
    await signed(client, "POST", "/api/v1/config/apply-template/noisy-room",
                 {"targets": {"stations": ["Station-1"], "extensions": ["3333"]}})
    entries = (await page(client, "?knob=nr_level"))["entries"]
    assert [(e["source"], e["old"], e["new"]) for e in entries] == [
        ("template", "moderate", "very_high"), ("batch", "low", "moderate"), ("api", "high", "low")]
    assert entries[0]["templateId"] == "noisy-room" and entries[0]["batchId"].startswith("batch_")
    assert entries[1]["reason"] == "batch reason"
    changed = [d for name, d in events if name == "knob-changed" and d["extension"] == "3333"]
    assert [(d["source"], d["status"], d["version"]) for d in changed] == [
        ("api", "applied", 2), ("batch", "applied", 3), ("template", "applied", 4)]
    assert changed[0]["changes"] == {"nr_level": {"old": "high", "new": "low"}}
    assert changed[0]["changedBy"] == "test-admin"


async def test_pages_filters_and_cursor(setup):
    client, clock, _ = setup
    for n in range(5):  # no agent: each change is stored (pending) and recorded all the same
        await client.post(KNOBS, json={"agc_max_gain": 10 + n, "agc_enabled": n % 2 == 0, "nr_level": "low"})
        clock.advance(10)
    rows, cursor, pages = [], "", 0
    while True:
        doc = await page(client, f"?limit=4{'&cursor=' + cursor if cursor else ''}")
        rows += doc["entries"]
        pages += 1
        cursor = doc["nextCursor"]
        if cursor is None:
            break
    assert pages == 4 and len(rows) == 15
    assert [r["version"] for r in rows] == [v for v in (6, 5, 4, 3, 2) for _ in range(3)]
    assert [r["knob"] for r in rows[:3]] == ["agc_enabled", "agc_max_gain", "nr_level"]
    gains = (await page(client, "?knob=agc_max_gain"))["entries"]
    assert [g["new"] for g in gains] == [14.0, 13.0, 12.0, 11.0, 10.0]
    t0 = clock.wall() - 50
    window = await page(client, f"?knob=agc_max_gain&from={iso_ms(t0 + 10)}&to={iso_ms(t0 + 30)}")
    assert [g["new"] for g in window["entries"]] == [12.0, 11.0]
    assert (await page(client, "?source=batch"))["entries"] == []


@pytest.mark.parametrize("query,field", [("?knob=loudness", "knob"), ("?limit=0", "limit"), ("?limit=1001", "limit"),
                                         ("?cursor=abc", "cursor"), ("?from=yesterday", "from"),
                                         ("?color=red", "color")])
async def test_bad_queries_are_400(setup, query, field):
    client, _, _ = setup
    resp = await client.get(HISTORY + query)
    doc = await resp.json()
    assert resp.status == 400 and doc["error"]["details"][0]["field"] == field, doc


async def test_history_needs_read_permission_and_the_station_in_scope(setup, tmp_path):
    client, _, _ = setup
    resp = await client.get(HISTORY, headers=bearer(tmp_path, "viewer", stations=["Station-2"]))
    assert resp.status == 403
    assert (await client.get(HISTORY, headers=bearer(tmp_path, "viewer"))).status == 200
    assert (await client.get("/api/v1/config/knobs/Station-9/3333/history")).status == 404
    assert (await client.get("/api/v1/config/knobs/Station-1%0A/3333/history")).status == 404  # not Station-1


async def test_after_windows_that_came_due_while_down_are_filled_on_start(tmp_path):
    clock = ManualClock(wall=float(int(time.time())))
    client = await client_for(tmp_path, clock, FakeMetrics())
    await client.post(KNOBS, json={"agc_enabled": False})
    t0 = clock.wall()
    await client.close()
    later, metrics = ManualClock(wall=t0 + 3600), FakeMetrics()
    metrics.add(P, t0, t0 + 60, {"latency.end_to_end": 42.0})
    client = await client_for(tmp_path, later, metrics)
    try:
        for _ in range(50):  # the filler's first pass runs as the app starts
            rows = (await page(client))["entries"]
            if rows[0]["metricsAfter"] is not None:
                break
            await asyncio.sleep(0.05)
        assert rows[0]["metricsAfter"]["latency.end_to_end"] == 42.0 and rows[0]["version"] == 2
        with closing(sqlite3.connect(tmp_path / "knob_changes.sqlite")) as db:
            stored = [json.loads(after) for (after,) in db.execute("SELECT after FROM changes WHERE after_filled")]
        assert [d["latency.end_to_end"] for d in stored] == [42.0]
    finally:
        await client.close()


# --- the store itself -------------------------------------------------------------------------

async def test_records_of_versions_never_stored_are_dropped_on_open(tmp_path):
    clock, topology = ManualClock(), Topology(2)
    history = KnobChangeLog(tmp_path / "h.sqlite", topology, clock)
    await history.open(lambda point: 1)
    await history.record([Draft(P, 2, {"agc_enabled": (True, False)})], Attribution("alice"))
    await history.record([Draft(P, 3, {"agc_enabled": (False, True)})], Attribution("alice"))
    await history.close()
    # The controller stopped after writing the record of version 3 and before storing it.
    reopened = KnobChangeLog(tmp_path / "h.sqlite", topology, clock)
    await reopened.open(lambda point: 2)
    assert [c.version for c in reopened.changes_of(P)] == [2]
    [again] = await reopened.record([Draft(P, 3, {"nr_enabled": (True, False)})], Attribution("bob"))
    assert again.seq == 3  # sequence numbers are never reused
    await reopened.close()
    with closing(sqlite3.connect(tmp_path / "h.sqlite")) as db:
        assert [seq for (seq,) in db.execute("SELECT seq FROM changes ORDER BY seq")] == [1, 3]
        assert [seq for (seq,) in db.execute("SELECT DISTINCT seq FROM change_knobs ORDER BY seq")] == [1, 3]


async def test_changes_older_than_the_retention_are_deleted_but_each_points_newest_stays(tmp_path):
    """Retention by age replaces the old count cap (max_changes): the store no longer rewrites itself,
    so its size costs nothing per change; records older than retention_days go, except the newest of each
    point (the knob set that point still runs)."""
    clock, other = ManualClock(), Point("Station-1", "4444")
    history = KnobChangeLog(tmp_path / "h.sqlite", Topology(1), clock, retention_days=2)
    await history.open(lambda point: 100)
    for version in range(2, 7):  # a day apart: versions 2..6 of P, and one change of the other point first
        if version == 2:
            await history.record([Draft(other, 2, {"agc_max_gain": (0, 1)})], Attribution("alice"))
        await history.record([Draft(P, version, {"agc_max_gain": (0, version)})], Attribution("alice"))
        clock.advance(86_400)
    assert await history.expire() == 3   # 2, 3 and 4 of P are over two days old; the other point keeps its one
    assert [c.version for c in history.changes_of(P)] == [5, 6] and len(history.changes_of(other)) == 1
    assert len(history) == 3
    await history.close()
    reopened = KnobChangeLog(tmp_path / "h.sqlite", Topology(1), clock, retention_days=2)
    clock.advance(86_400)
    await reopened.open(lambda point: 100)   # expires on open too
    assert [c.version for c in reopened.changes_of(P)] == [6] and len(reopened.changes_of(other)) == 1
    await reopened.close()
    with closing(sqlite3.connect(tmp_path / "h.sqlite")) as db:
        assert sorted(seq for (seq,) in db.execute("SELECT seq FROM change_knobs")) == [1, 6]


async def test_without_a_metric_history_before_and_after_are_null(tmp_path):
    clock = ManualClock()
    history = KnobChangeLog(tmp_path / "h.sqlite", Topology(1), clock)
    await history.open(lambda point: 1)
    [change] = await history.record([Draft(P, 2, {"agc_enabled": (True, False)})], Attribution("alice"))
    clock.advance(600)
    assert change.before is None and await history.fill_due() == 0
    assert history.row(change, "agc_enabled")["metricsAfter"] is None
    await history.close()

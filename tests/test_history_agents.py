"""History against a real controller and a real agent: what the agent sent, paged, and its first minute rolled up."""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.metrics import METRICS, MetricKind, MetricType
from tests.auth import token_for
from tests.procs import Proc, get_json, request, start_agent, start_controller, wait_until

pytestmark = pytest.mark.slow

HISTORY = "/api/v1/snapshots/history?station=Station-1&extension=3333"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Proc, str]]:
    tmp = tmp_path_factory.mktemp("history")
    controller, base, link_port = start_controller(tmp, stations=1, history_flush_ms=250)
    agent = start_agent(tmp, "Station-1", link_port)
    try:
        wait_until(lambda: _snapshot(base)["status"] == "active", 30, agent)
        yield tmp, controller, base
    finally:
        agent.stop()
        controller.stop()


def test_history_holds_what_the_agent_sent_and_rolls_up_its_minutes(system):
    tmp_path, controller, base = system
    seen = _snapshots(base, 6)
    raw = wait_until(lambda: _raw_covering(base, seen), 10, controller)
    by_time = {p["timestamp"]: p["metrics"] for p in raw}
    for measured_at, metrics in seen.items():
        assert by_time[measured_at] == metrics, measured_at   # field for field, value for value
    _values_are_at_their_resolution(raw)
    _context_is_the_agents(base, raw)
    _pages_match_one_request(base)
    _refusals(base, tmp_path)
    # The agent started within some minute: once it has closed (2 s grace, 250 ms flush) it is rolled up.
    first = wait_until(lambda: _rollups(base), 80, controller)[0]
    _rollup_matches_raw(base, first)


def test_a_controller_killed_mid_ingest_keeps_its_history_and_goes_on(system):
    tmp_path, controller, base = system
    before = _history(base, "timeRange=1h&resolution=raw&limit=1000&fields=latency,buffer")
    killed_at = time.time()
    controller.kill9()
    with sqlite3.connect(tmp_path / "controller" / "history.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    controller.start()
    wait_until(lambda: _snapshot(base)["status"] == "active", 30, controller)
    # Samples measured in the last flush interval before the read may land after it: compare the
    # window up to 2 s before the read, which was wholly committed when it was read.
    settled = datetime.fromtimestamp(_epoch(before["to"]) - 2.0, tz=UTC).isoformat().replace("+00:00", "Z")
    committed = [p for p in before["points"] if _epoch(p["timestamp"]) < _epoch(settled)]
    window = f"from={before['from']}&to={settled}&resolution=raw&limit=1000&fields=latency,buffer"
    assert committed and _history(base, window)["points"] == committed  # every sample read before the kill, unchanged
    after = wait_until(lambda: _newer_than(base, killed_at), 20, controller)
    assert after["count"] > 0                                      # and samples after the restart join them
    first_rollups = _history(base, "timeRange=1h&resolution=1m")["points"]
    for rollup in first_rollups[:1]:
        _rollup_matches_raw(base, rollup)


def _newer_than(base: str, epoch: float) -> dict | None:
    start = datetime.fromtimestamp(epoch, tz=UTC).isoformat().replace("+00:00", "Z")
    doc = _history(base, f"from={start}&resolution=raw&fields=latency.jitter")
    return doc if doc["count"] else None


def _snapshot(base: str) -> dict[str, Any]:
    status, doc = get_json(f"{base}/api/v1/snapshots?stations=Station-1")
    assert status == 200
    return doc["stations"]["Station-1"]["extension_3333"]


def _snapshots(base: str, count: int) -> dict[str, dict]:
    """`count` distinct samples as the snapshot showed them, by measurement time."""
    seen: dict[str, dict] = {}
    deadline = time.monotonic() + 20
    while len(seen) < count and time.monotonic() < deadline:
        point = _snapshot(base)
        seen[point["measuredAt"]] = point["metrics"]
        time.sleep(0.1)
    assert len(seen) >= count
    return seen


def _history(base: str, query: str) -> dict:
    status, doc, _ = request(f"{base}{HISTORY}&{query}")
    assert status == 200, doc
    return doc


def _raw_covering(base: str, seen: dict[str, dict]) -> list[dict] | None:
    doc = _history(base, f"from={min(seen)}&resolution=raw&limit=1000")
    return doc["points"] if {p["timestamp"] for p in doc["points"]} >= set(seen) else None


def _values_are_at_their_resolution(points: list[dict]) -> None:
    """The agent rounds every float to its metric's resolution, so history holds short decimals."""
    for p in points:
        for m in METRICS:
            value = p["metrics"][m.category][m.name]
            if m.type is MetricType.FLOAT and value is not None:
                assert round(value, m.decimals) == value, (m.key, value)


def _context_is_the_agents(base: str, points: list[dict]) -> None:
    """Each raw point carries the knob version the agent had applied (the one the controller knows it
    applied, once it has acknowledged) and the conditions it reported: its path, room and key knobs."""
    versions = [p["knobVersion"] for p in points]
    assert all(type(v) is int for v in versions) and versions == sorted(versions), versions
    status, knobs = get_json(f"{base}/api/v1/config/knobs/Station-1/3333")
    assert status == 200 and knobs["appliedVersion"] is not None and versions[-1] <= knobs["appliedVersion"], knobs
    for p in points:
        assert {"delay_ms", "jitter_ms", "loss_rate", "algorithmic_delay_ms", "fec_enabled"} <= set(p["conditions"])
        assert type(p["conditions"]["fec_enabled"]) is bool and type(p["conditions"]["delay_ms"]) is float


def _pages_match_one_request(base: str) -> None:
    # End the window on a sample 2 s old (the end is exclusive): samples measured just before "now"
    # may still be on their way (link, flush), and would join later pages but not the first answer.
    deadline = time.monotonic() + 15
    while True:
        whole = _history(base, "timeRange=1h&resolution=raw&limit=1000&fields=latency")
        settled = [p["timestamp"] for p in whole["points"]
                   if _epoch(p["timestamp"]) <= _epoch(whole["to"]) - 2.0]
        if len(settled) > 6 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    to = settled[-1]
    whole = _history(base, f"from={whole['from']}&to={to}&resolution=raw&limit=1000&fields=latency")
    pages, cursor = [], None
    while True:
        page = _history(base, f"from={whole['from']}&to={to}&resolution=raw&limit=2&fields=latency"
                              + (f"&cursor={cursor}" if cursor else ""))
        pages += page["points"]
        if (cursor := page["nextCursor"]) is None:
            break
    assert len(pages) >= 6 and pages == whole["points"]


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _refusals(base: str, tmp_path) -> None:
    assert request(f"{base}/api/v1/snapshots/history?extension=3333")[0] == 400
    assert request(f"{base}/api/v1/snapshots/history?station=Station-2&extension=3333")[0] == 404
    outsider = token_for(tmp_path / "controller", "viewer", stations=["Station-7"])
    status, doc, _ = request(f"{base}{HISTORY}", headers={"Authorization": f"Bearer {outsider}"})
    assert status == 403 and doc["error"]["code"] == "forbidden"
    assert request(f"{base}{HISTORY}", auth=False)[0] == 401


def _rollups(base: str) -> list[dict] | None:
    return _history(base, "timeRange=1h&resolution=1m")["points"] or None


def _rollup_matches_raw(base: str, rollup: dict) -> None:
    """The 1m row equals the aggregate of the raw samples of its minute, computed here."""
    start = rollup["timestamp"]
    end = (datetime.fromisoformat(start.replace("Z", "+00:00")) + timedelta(minutes=1)).isoformat()
    raw = _history(base, f"from={start}&to={end.replace('+00:00', 'Z')}&resolution=raw&limit=1000")["points"]
    assert rollup["samples"] == len(raw) > 0
    assert rollup["knobVersions"] == sorted({p["knobVersion"] for p in raw})
    for m in METRICS:
        values = [p["metrics"][m.category][m.name] for p in raw]
        shown = rollup["metrics"][m.category][m.name]
        present = [v for v in values if v is not None]
        if m.type is MetricType.BOOL:
            assert shown["fractionTrue"] == pytest.approx(sum(present) / len(present)), m.key
        elif m.type is MetricType.TIMESTAMP:
            assert shown["last"] == (present[-1] if present else None), m.key
        elif m.kind is MetricKind.COUNTER:
            # The first minute has no earlier sample: its increase is counted from its first sample.
            steps = [b - a if b >= a else b for a, b in zip(present, present[1:])]
            assert shown["delta"] == sum(steps), m.key
        elif m.kind is MetricKind.DELTA:
            assert shown["sum"] == sum(present), m.key
        elif present:
            assert shown["min"] == min(present) and shown["max"] == max(present), m.key
            assert shown["avg"] == pytest.approx(sum(present) / len(present), rel=1e-9), m.key
        else:
            assert shown == {"avg": None, "min": None, "max": None}, m.key

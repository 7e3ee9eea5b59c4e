"""The knob change store (SQLite): knob sets at a version, pages the SQL way, legacy import, memory, kill -9."""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from controller.clock import ManualClock
from controller.knobs.changes import Attribution, Change, Draft, KnobChangeLog, parse_cursor
from shared.config import ConfigError
from shared.knobs import defaults
from shared.topology import Point, Topology

ROOT = Path(__file__).resolve().parents[1]
P, Q = Point("Station-1", "3333"), Point("Station-1", "4444")
ALICE = Attribution("alice")


def log_at(tmp_path: Path, clock: ManualClock | None = None, **kwargs: Any) -> KnobChangeLog:
    return KnobChangeLog(tmp_path / "k.sqlite", Topology(2), clock or ManualClock(), **kwargs)


def draft(point: Point, version: int, base: dict[str, Any], **new: Any) -> Draft:
    return Draft(point, version, {k: (base[k], v) for k, v in new.items()}, {**base, **new})


async def test_every_version_maps_to_its_full_knob_set_also_after_a_restart(tmp_path):
    log = log_at(tmp_path)
    await log.open(lambda point: 1)
    v2 = {**defaults(), "agc_enabled": False}
    v3 = {**v2, "nr_level": "low", "agc_max_gain": 12.0}
    await log.record([draft(P, 2, defaults(), agc_enabled=False), draft(Q, 2, defaults(), nr_level="high")], ALICE)
    await log.record([draft(P, 3, v2, nr_level="low", agc_max_gain=12.0)], ALICE)
    assert await log.knob_set_at(P, 1) == defaults()      # never configured: the catalog defaults
    assert await log.knob_set_at(P, 2) == v2 and await log.knob_set_at(P, 3) == v3
    assert await log.knob_set_at(P, 4) is None and await log.knob_set_at(P, 0) is None
    await log.close()
    reopened = log_at(tmp_path)
    await reopened.open(lambda point: 3 if point == P else 2)
    assert await reopened.knob_set_at(P, 3) == v3 and (await reopened.knob_set_at(Q, 2))["nr_level"] == "high"
    assert type((await reopened.knob_set_at(P, 2))["agc_enabled"]) is bool
    await reopened.close()


async def test_knob_sets_of_discarded_or_never_stored_versions_are_gone(tmp_path):
    log = log_at(tmp_path)
    await log.open(lambda point: 1)
    [v2] = await log.record([draft(P, 2, defaults(), agc_enabled=False)], ALICE)
    await log.discard([v2])                      # its desired set could not be stored
    assert await log.knob_set_at(P, 2) is None and len(log) == 0
    await log.record([draft(P, 2, defaults(), nr_level="low")], ALICE)
    await log.record([draft(P, 3, defaults(), nr_level="high")], ALICE)
    await log.close()
    reopened = log_at(tmp_path)
    await reopened.open(lambda point: 2)          # the controller stopped before storing version 3
    assert (await reopened.knob_set_at(P, 2))["nr_level"] == "low" and await reopened.knob_set_at(P, 3) is None
    assert [c.seq for c in reopened.changes_of(P)] == [2]
    await reopened.close()


async def test_concurrent_records_get_distinct_seqs_and_all_are_stored(tmp_path):
    log = log_at(tmp_path)
    await log.open(lambda point: 1)
    points = Topology(2).points
    batches = await asyncio.gather(*(log.record([draft(p, 2, defaults(), agc_max_gain=float(i))], ALICE)
                                     for i, p in enumerate(points)))
    seqs = sorted(c.seq for batch in batches for c in batch)
    assert seqs == list(range(1, len(points) + 1)) and len(log) == len(points)
    assert all(len(log.changes_of(p)) == 1 for p in points)
    pages = await asyncio.gather(*(asyncio.to_thread(log.page, p, 5) for p in points))  # reads from threads
    assert [page.rows[0]["changeId"] for page in pages] == [c.seq for batch in batches for c in batch]
    await log.close()


async def test_a_due_after_window_is_averaged_once_even_by_overlapping_passes(tmp_path):
    class Metrics:
        def __init__(self) -> None:
            self.calls: list[tuple[float, float]] = []

        async def mean_between(self, point, start, end, keys):
            self.calls.append((start, end))
            await asyncio.sleep(0.01)
            return {"latency.end_to_end": 5.0}

    clock, metrics = ManualClock(), Metrics()
    log = log_at(tmp_path, clock, metrics=metrics, window_s=60, settle_s=5)
    await log.open(lambda point: 1)
    [change] = await log.record([draft(P, 2, defaults(), agc_enabled=False)], ALICE)
    clock.advance(65)
    assert sorted(await asyncio.gather(log.fill_due(), log.fill_due())) == [0, 1]
    assert metrics.calls.count((change.changed_at, change.changed_at + 60)) == 1
    assert log.page(P, 10).rows[0]["metricsAfter"]["latency.end_to_end"] == 5.0
    await log.close()


# --- pages: the same rows as the list scan they replace, by an indexed query ------------------

Rows = list[tuple[int, str]]   # (changeId, knob) of each row


def reference_page(changes: list[Change], limit: int, cursor: str | None, knobs: frozenset[str],
                   since: float | None, until: float | None, source: str | None) -> tuple[Rows, str | None]:
    """The previous implementation's walk over every change of the point, newest first."""
    after, rows = parse_cursor(cursor), []
    for change in reversed(changes):
        for knob in sorted(change.knobs):
            keep = ((not knobs or knob in knobs) and (since is None or change.changed_at >= since)
                    and (until is None or change.changed_at < until) and (source is None or change.who.source == source)
                    and (after is None or change.seq < after[0] or (change.seq == after[0] and knob > after[1])))
            if keep:
                if len(rows) == limit:
                    return rows, f"{rows[-1][0]}:{rows[-1][1]}"
                rows.append((change.seq, knob))
    return rows, None


async def test_pages_match_the_list_scan_for_every_filter_and_cursor(tmp_path):
    rng, clock = random.Random(7), ManualClock()
    log = log_at(tmp_path, clock)
    await log.open(lambda point: 10_000)
    names = ["agc_enabled", "agc_max_gain", "nr_level", "playout_delay", "packet_size"]
    versions = {P: 1, Q: 1}
    for _ in range(120):
        point = rng.choice([P, Q])
        versions[point] += 1
        knobs = {k: (0, rng.randint(1, 9)) for k in rng.sample(names, rng.randint(1, 4))}
        who = Attribution("bob", rng.choice(["api", "batch", "template"]))
        await log.record([Draft(point, versions[point], knobs)], who)
        clock.advance(rng.choice([0, 1, 7]))
    changes, t0 = log.changes_of(P), log.changes_of(P)[0].changed_at
    queries = [(7, frozenset(), None, None, None, 20), (3, frozenset({"nr_level"}), None, None, None, 5),
               (5, frozenset({"agc_enabled", "packet_size"}), t0 + 50, t0 + 300, None, 3),
               (4, frozenset(), None, None, "batch", 5), (1000, frozenset(), None, None, None, 1),
               (2, frozenset({"playout_delay"}), None, t0 + 200, "api", 3)]
    for limit, knobs, since, until, source, min_pages in queries:
        cursor, pages = None, 0
        while True:
            page = log.page(P, limit, cursor, knobs, since, until, source)
            want_rows, want_cursor = reference_page(changes, limit, cursor, knobs, since, until, source)
            assert [(r["changeId"], r["knob"]) for r in page.rows] == want_rows and page.next_cursor == want_cursor
            pages += 1
            if (cursor := page.next_cursor) is None:
                break
        assert pages >= min_pages   # the cursor was followed across pages
    assert log.page(P, 5, "999999:zzz").rows[0]["changeId"] == changes[-1].seq   # a cursor past the newest
    await log.close()


async def test_a_page_is_an_indexed_query_and_memory_does_not_grow_with_the_changes(tmp_path):
    log = log_at(tmp_path)
    await log.open(lambda point: 10_000)
    for version in range(2, 402):
        await log.record([Draft(P, version, {"agc_max_gain": (0, version), "nr_level": ("a", "b")})], ALICE)
    statements: list[str] = []
    log._reader.set_trace_callback(statements.append)
    log.page(P, 10, "300:agc_max_gain", ["nr_level", "agc_max_gain"], since=0.0, until=1e12, source="api")
    log.page(P, 10)
    log._reader.set_trace_callback(None)
    with closing(sqlite3.connect(tmp_path / "k.sqlite")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        plans = [[row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + s)]
                 for s in statements if s.startswith("SELECT")]
    steps = [step for plan in plans for step in plan]   # no SCAN of a table, no TEMP B-TREE to sort
    assert len(plans) == 6 and all(step.startswith(("SEARCH", "LIST SUBQUERY")) for step in steps), plans
    held = {name: len(value) for name, value in vars(log).items() if isinstance(value, (list, dict, set, tuple))}
    assert all(n < 100 for n in held.values()), held   # 400 changes, none of them in memory
    await log.close()


# --- upgrade from knob_history.json --------------------------------------------------------------

def legacy_doc(seq: int, point: Point, version: int, knobs: dict[str, tuple[Any, Any]], **extra: Any) -> dict[str, Any]:
    """A record as the TinyDB store wrote it (Change.to_doc of the previous release)."""
    return {"seq": seq, "station": point.station, "extension": point.extension, "version": version,
            "knobs": {k: {"old": o, "new": n} for k, (o, n) in knobs.items()}, "changed_at": 1_700_000_000.0 + seq,
            "changed_by": "carol", "source": "api", "reason": None, "batch_id": None, "template_id": None,
            "before": {"latency.end_to_end": 90.0}, "after": None, "after_filled": False, **extra}


async def test_an_older_installs_knob_history_json_is_imported_once(tmp_path):
    gain = defaults()["agc_max_gain"]
    docs = [legacy_doc(4, P, 2, {"agc_max_gain": (gain, 20.0)}, after={"latency.end_to_end": 70.0}, after_filled=True),
            legacy_doc(6, P, 3, {"agc_max_gain": (20.0, 25.0), "agc_enabled": (True, False)}, source="batch",
                       batch_id="batch_1", reason="night"),
            legacy_doc(7, Q, 5, {"nr_level": ("low", "high")}),           # older ones were capped away
            legacy_doc(8, P, 4, {"agc_enabled": (False, True)}),          # never stored: dropped like before
            {"seq": 9, "station": "Station-1"}]                             # unreadable: skipped
    legacy = tmp_path / "knob_history.json"
    legacy.write_text(json.dumps({"changes": {str(d["seq"]): d for d in docs}}))
    clock = ManualClock(wall=1_700_000_100.0)
    log = log_at(tmp_path, clock, legacy_file=legacy)
    await log.open(lambda point: 3 if point == P else 5)
    assert not legacy.exists() and (tmp_path / "knob_history.json.imported").exists()
    rows = log.page(P, 10).rows
    assert [(r["changeId"], r["knob"], r["old"], r["new"], r["version"]) for r in rows] == [
        (6, "agc_enabled", True, False, 3), (6, "agc_max_gain", 20.0, 25.0, 3), (4, "agc_max_gain", gain, 20.0, 2)]
    assert [rows[0][k] for k in ("source", "batchId", "reason", "changedBy")] == ["batch", "batch_1", "night", "carol"]
    assert rows[2]["metricsBefore"] == {"latency.end_to_end": 90.0}
    assert rows[2]["metricsAfter"] == {"latency.end_to_end": 70.0}
    assert rows[0]["metricsAfter"] is None
    # Knob sets the legacy records lacked, chained from the defaults where versions run 2, 3, … unbroken.
    assert await log.knob_set_at(P, 3) == {**defaults(), "agc_max_gain": 25.0, "agc_enabled": False}
    assert await log.knob_set_at(Q, 5) is None
    [new] = await log.record([Draft(P, 4, {"nr_level": ("high", "low")})], ALICE)
    assert new.seq == 9 and len(log) == 4   # after every legacy seq, the dropped one too
    await log.close()
    # A crash between the import's commit and the rename leaves the file: only renamed at the next start
    # (importing it again would bring back seq 8, dropped since, now that version 4 is stored).
    legacy.write_text((tmp_path / "knob_history.json.imported").read_text())
    again = log_at(tmp_path, clock, legacy_file=legacy)
    await again.open(lambda point: 4 if point == P else 5)
    assert [c.seq for c in again.changes_of(P)] == [4, 6, 9] and len(again) == 4
    await again.close()


async def test_an_unreadable_legacy_file_stops_the_start_instead_of_being_lost(tmp_path):
    legacy = tmp_path / "knob_history.json"
    legacy.write_text('{"changes": {"1": ')
    log = log_at(tmp_path, legacy_file=legacy)
    with pytest.raises(ConfigError, match="cannot be imported"):
        await log.open(lambda point: 1)
    await log.close()
    assert legacy.exists()


# --- crash safety -------------------------------------------------------------------------------

CHILD = """
import asyncio, sys
from pathlib import Path
from controller.clock import ManualClock
from controller.knobs.changes import Attribution, Draft, KnobChangeLog
from shared.topology import Point, Topology

async def main():
    log = KnobChangeLog(Path(sys.argv[1]), Topology(1), ManualClock())
    await log.open(lambda point: 10**9)
    for version in range(2, 10**6):
        [c] = await log.record([Draft(Point("Station-1", "3333"), version, {"agc_max_gain": (0, version)},
                                      {"agc_max_gain": version})], Attribution("child"))
        print(c.seq, version, flush=True)   # acknowledged: record() returned

asyncio.run(main())
"""


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_change(tmp_path):
    path = tmp_path / "k.sqlite"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    acked: list[tuple[int, int]] = []
    enough = threading.Event()

    def read() -> None:
        for line in child.stdout:
            acked.append(tuple(map(int, line.split())))
            if len(acked) >= 40:
                enough.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert enough.wait(60), "the child recorded too few changes"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    reader.join(5)

    async def reopened() -> tuple[dict[int, int], dict[str, Any] | None]:
        log = KnobChangeLog(path, Topology(1), ManualClock())
        await log.open(lambda point: 10**9)
        try:
            return {c.seq: c.version for c in log.changes_of(P)}, await log.knob_set_at(P, acked[-1][1])
        finally:
            await log.close()

    stored, last_set = asyncio.run(reopened())
    assert all(stored.get(seq) == version for seq, version in acked), (acked[-3:], max(stored))
    assert last_set == {"agc_max_gain": acked[-1][1]}
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

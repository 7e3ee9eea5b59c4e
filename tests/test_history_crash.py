"""kill -9 of a process writing through the history store: the file opens, is intact, lost at most the last flush.

The samples carry knob versions and conditions: what was kept of them is kept with them too
(raw rows' versions and conditions, rollup rows' versions), pending rows of open spans included.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from controller.history import view
from shared.metrics import METRICS
from shared.topology import Topology
from tests.history_feed import Clocks, Samples, expected_rollups, expected_versions
from tests.test_history_store import FAR, _same, close_everything

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FLUSH_MS = 200
# A sample appended at t is committed by t + FLUSH_MS + the flush's own duration; the margin covers that
# duration and scheduling on a busy 2-core machine. A store that lost a sealed minute would miss seconds.
MARGIN_S = 1.0


class Writer:
    """The child process and what it said it had appended, by wall time."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.history_writer", str(path), "0", str(FLUSH_MS)],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.rounds: list[tuple[int, float]] = []
        self.opened = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("open"):
                self.opened.set()
            elif len(parts := line.split()) == 2 and line.endswith("\n"):   # not a line the kill cut short
                self.rounds.append((int(parts[0]), float(parts[1])))

    def kill9(self) -> float:
        killed_at = time.time()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return killed_at


def test_kill_9_mid_ingest_loses_at_most_the_last_flush_and_nothing_else(tmp_path):
    path = tmp_path / "history.sqlite"
    writer = Writer(path)
    assert writer.opened.wait(30), writer.proc.stderr.read() if writer.proc.poll() is not None else "no start"
    deadline = time.time() + 20
    while (not writer.rounds or writer.rounds[-1][0] < 2500) and time.time() < deadline:  # ~6 minutes sealed
        time.sleep(0.05)
    killed_at = writer.kill9()
    assert writer.rounds[-1][0] >= 2500, "the writer was too slow to get past a few minutes"
    committed_by = max((r for r, wall in writer.rounds if wall <= killed_at - FLUSH_MS / 1000 - MARGIN_S), default=-1)

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # Open spans' pending rows, raw and rolled up, hold context of their own (checked row by row below).
        with_context = conn.execute("SELECT DISTINCT tier FROM pending WHERE context IS NOT NULL").fetchall()
        assert {tier for (tier,) in with_context} >= {0, 1}

    samples = Samples(12_000, every=0.15, seed=11)
    clocks = Clocks(wall=float(samples.times[0]))
    store = clocks.store(path)
    store.open()
    try:
        import asyncio
        kept = asyncio.run(_check(store, clocks, samples, committed_by, writer.rounds[-1][0]))
        lost_s = killed_at - dict(writer.rounds).get(kept + 1, killed_at)
        print(f"kill -9 lost the samples appended in the last {lost_s * 1000:.0f} ms (flush interval {FLUSH_MS} ms)")
    finally:
        store.close()


async def _check(store, clocks: Clocks, samples: Samples, committed_by: int, appended: int) -> int:
    points = Topology(12).points
    newest = []
    sent_conditions = [json.dumps(samples.conditions(r), sort_keys=True) for r in range(appended + 1)]
    for point in points:
        rows = await store.query(point, "raw", 0, FAR, tuple(m.key for m in METRICS))
        n = len(rows.ts)
        newest.append(n - 1)
        # Every round from the first to the newest kept, in order, with the values sent: no holes, no damage.
        assert np.array_equal(rows.ts, np.floor(samples.times[:n] * 1000).astype(np.int64)), point
        sent = samples.values[:n]
        assert np.array_equal(np.isnan(sent), np.isnan(rows.values))
        assert np.array_equal(sent[~np.isnan(sent)].view(np.uint64), rows.values[~np.isnan(rows.values)].view(np.uint64))
        assert committed_by <= n - 1 <= appended, (point, committed_by, n - 1, appended)
        kept = await store.query(point, "raw", 0, FAR, ("latency.jitter",), context=True)
        assert kept.knob_version.tolist() == samples.knob_versions(n).astype(float).tolist(), point
        assert [json.dumps(c, sort_keys=True) for c in kept.context] == sent_conditions[:n], point
        await _rollups_match_raw(store, point, samples, n)
    print(f"kept through round {min(newest)}..{max(newest)} of {appended} appended; "
          f"guaranteed {committed_by} (kill at most {FLUSH_MS} ms + {MARGIN_S} s after it)")
    # Writing on after the crash: the minute, 5 minutes and hour that were open come out whole.
    start = max(newest) + 1
    for r in range(start, start + 2000):
        clocks.wall = float(samples.times[r])
        for i, point in enumerate(points):
            if r > newest[i]:
                store.append(samples.sample(point, r))
        if r % 200 == 0:
            store.flush_now()
    store.flush_now()
    close_everything(store, clocks)
    for point in points[:4]:
        await _rollups_match_raw(store, point, samples, start + 2000, whole=True)
    return min(newest)


async def _rollups_match_raw(store, point, samples: Samples, n: int, whole: bool = False) -> None:
    ts_ms = np.floor(samples.times[:n] * 1000).astype(np.int64)
    for resolution, bucket_ms in (("1m", 60_000), ("5m", 300_000)):
        expected = expected_rollups(ts_ms, samples.values[:n], bucket_ms)
        versions = expected_versions(ts_ms, samples.knob_versions(n), bucket_ms)
        rows = await store.query(point, resolution, 0, FAR, view.columns(resolution, METRICS), context=True)
        got = view.points(resolution, METRICS, rows)
        assert got or not whole
        if whole:
            assert len(got) == len(expected)
        for doc in got:
            start = int(rows.ts[got.index(doc)])
            want = expected[start]
            assert doc["samples"] == want["samples"], (point, resolution, doc["timestamp"])
            assert doc["knobVersions"] == versions[start], (point, resolution, doc["timestamp"])
            for m in METRICS:
                _same(m, doc["metrics"][m.category][m.name], want[m.key], f"{point} {resolution} {m.key}")

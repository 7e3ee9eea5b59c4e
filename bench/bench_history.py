"""History store: ingest headroom, raw bytes per value on real samples, a 24 h query at 1m over 7 days, rollup vs raw.

Samples are recorded from a real agent (bench/replay.py), one recorded minute per extension,
and replayed with synthetic measurement times through the store's own path (append, writer
thread or flush, rollups, sealing, SQLite), so every figure is of the code as shipped:

- ingest: 24 points' samples appended as fast as possible with the writer thread running at
  its real 1 s cadence; samples per CPU second of the whole process (all threads) against
  the real rate of 24 points every 150 ms (160 samples/s);
- bytes per raw value: the file (SQLite pages, indexes, the rollup tiers, WAL checkpointed)
  over the values stored in the raw tier; baseline: the same values as float64 columns
  deflated by zlib -9 (a generic columnar store);
- 24 h at 1m: 7 days of 24 points loaded through the store (one sample per point every
  15 s, so the load takes a minute: the 1m tier holds exactly the rows it would at 150 ms),
  then 200 queries of one point's 24 h at 1m, all 68 metrics; baseline: fetching the same
  segment blobs from SQLite without decoding them;
- rollup vs raw: one point, one hour at 150 ms; the hour's 60 one-minute aggregates read
  from the 1m tier against computed from the raw tier (read, decoded, aggregated).
"""
from __future__ import annotations

import asyncio
import sqlite3
import statistics
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.replay import record_samples
from controller.history import rollup, view
from controller.history.reader import Reader
from controller.history.store import HistoryStore
from controller.history.tiers import TIER_BY_NAME
from controller.sample import Sample
from shared.metrics import METRICS
from shared.topology import Point, Topology

POINTS = Topology(12).points
DAYS = {"raw": 7, "1m": 30, "5m": 90, "1h": 365}
REAL_RATE = len(POINTS) / 0.15            # samples per second the controller receives
MINUTE = 60.0
BASE = 1_767_225_600.0                     # 2026-01-01T00:00:00Z: synthetic times start on a whole hour


@dataclass(frozen=True)
class Sizes:
    recorded: int          # samples recorded from the agent (both extensions); 800 are a minute
    record_timeout_s: float
    ingest_minutes: int
    real_rate_minutes: int
    rollup_minutes: int    # of one point, read back as 1m aggregates
    load_days: float       # loaded for the query figure
    queries: int


FULL = Sizes(recorded=840, record_timeout_s=150, ingest_minutes=10, real_rate_minutes=5, rollup_minutes=60,
             load_days=7, queries=200)
SMOKE = Sizes(recorded=20, record_timeout_s=30, ingest_minutes=1, real_rate_minutes=1, rollup_minutes=3,
              load_days=1 / 24, queries=5)


class Replay:
    """A recorded stream per extension, replayed minute after minute with synthetic times."""

    def __init__(self, samples: list[dict]) -> None:
        self.streams = {}
        self.context: dict[str, list[tuple[int, dict]]] = {}
        for ext in ("3333", "4444"):
            rows = [s for s in samples if s["extension"] == ext]
            offsets = np.array([s["measured_at"] for s in rows]) - rows[0]["measured_at"]
            keep = offsets < MINUTE                   # one recorded minute, replayed as each minute
            self.streams[ext] = ([r["metrics"] for r, k in zip(rows, keep) if k], offsets[keep])
            # What the agent ran under, as recorded: history stores it with every sample.
            self.context[ext] = [(r["knob_version"], r.get("conditions") or {}) for r, k in zip(rows, keep) if k]

    def minute(self, point: Point, start: float, every: int = 1) -> list[tuple[float, list]]:
        values, offsets = self.streams[point.extension]
        shift = (int(point.station.split("-")[1]) * 37) % len(values)  # points differ in phase
        return [(start + offsets[i], values[(i + shift) % len(values)]) for i in range(0, len(values), every)]

    def samples(self, point: Point, start: float, every: int = 1) -> list[Sample]:
        """The minute as the controller receives it: values with the recorded knob version and conditions."""
        values, offsets = self.streams[point.extension]
        context = self.context[point.extension]
        shift = (int(point.station.split("-")[1]) * 37) % len(values)
        return [Sample(point, i, start + offsets[i], values[(i + shift) % len(values)], *context[(i + shift) % len(values)])
                for i in range(0, len(values), every)]


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def store_at(path: Path, clock: Clock, flush_ms: int = 1000) -> HistoryStore:
    return HistoryStore(path, DAYS, flush_ms, clock=clock, monotonic=lambda: 0.0)


def seal_all(store: HistoryStore, clock: Clock) -> None:
    """Let every point's clock pass its open minute and flush: everything up to it is sealed."""
    store.flush_now()                    # every queued sample taken in at the old monotonic time first
    store.monotonic = lambda: 3600.0
    store.flush_now()


def ingest_and_bytes(tmp: Path, replay: Replay, minutes: int = 10) -> list[dict]:
    path = tmp / "bytes.sqlite"
    clock = Clock(BASE)
    store = store_at(path, clock)
    store.open()
    appended = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for m in range(minutes):
        batches = [replay.samples(p, BASE + m * MINUTE) for p in POINTS]
        for i in range(max(len(b) for b in batches)):
            for batch in batches:
                if i < len(batch):
                    clock.t = batch[i].measured_at
                    store.append(batch[i])
                    appended += 1
    while store.queued:
        time.sleep(0.05)
    seal_all(store, clock)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    store.close()
    append_us = _append_cost(path)
    raw_values = store.stats.samples * len(METRICS)
    blob_bytes, file_bytes = _sizes(path)
    baseline = _zlib_float64(replay, minutes)
    rate = appended / cpu
    return [
        {"figure": "history ingest, samples per CPU second (24 points, writer thread at 1 s)", "value": round(rate),
         "baseline": round(REAL_RATE), "ratio": rate / REAL_RATE, "goal": ">= 50", "met": rate / REAL_RATE >= 50},
        {"figure": "history append() on the event loop, us per sample", "value": append_us},
        {"figure": "history raw tier, bytes on disk per stored value (file, WAL checkpointed)",
         "value": file_bytes / raw_values, "baseline": baseline, "ratio": file_bytes / raw_values / baseline,
         "goal": "<= 2 bytes (Gorilla ~1.4)", "met": file_bytes / raw_values <= 2},
        {"figure": "history raw tier, segment blob bytes per value (codec alone)", "value": blob_bytes / raw_values},
        {"figure": f"history ingest wall seconds for the {minutes} minutes x 24 points", "value": wall},
    ]


def real_rate_cost(tmp: Path, replay: Replay, minutes: int = 5) -> list[dict]:
    """CPU per second of samples at the real rate: 160 samples, then the writer's flush, once per (synthetic) second."""
    clock = Clock(BASE)
    store = store_at(tmp / "real.sqlite", clock, flush_ms=3_600_000)  # flushed by hand, once per second of samples
    store.open()
    batches = [replay.samples(p, BASE + m * MINUTE) for m in range(minutes) for p in POINTS]
    samples = sorted((s for batch in batches for s in batch), key=lambda s: s.measured_at)
    cpu = time.process_time()
    second = BASE
    for sample in samples:
        if sample.measured_at >= second + 1:
            store.flush_now()
            second += 1
        clock.t = sample.measured_at
        store.append(sample)
    store.flush_now()
    cpu = time.process_time() - cpu
    store.close()
    per_second = cpu / (minutes * MINUTE)
    return [{"figure": "history at the real rate (24 points, 150 ms, a flush a second): CPU ms per second",
             "value": per_second * 1000, "baseline": 1000.0, "ratio": 1 / per_second,
             "goal": "headroom >= 50 (<= 20 ms per second)", "met": 1 / per_second >= 50}]


def _append_cost(path: Path) -> float:
    """What the event loop pays per sample (a store not opened: the samples are only queued, never written)."""
    store = store_at(path, Clock(BASE))
    point, values = POINTS[0], [0.0] * len(METRICS)
    n = 200_000
    started = time.perf_counter()
    for _ in range(n):
        store.append(Sample(point, 0, 0.0, values, 0))
    return (time.perf_counter() - started) / n * 1e6


def _sizes(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (blobs,) = conn.execute("SELECT sum(length(blob)) FROM segments WHERE tier = 0").fetchone()
    return blobs, path.stat().st_size


def _zlib_float64(replay: Replay, minutes: int) -> float:
    """Bytes per value of the same minutes as float64 columns (NaN for null), deflated with zlib -9."""
    total = count = 0
    for point in POINTS:
        rows = [v for _, v in replay.minute(point, BASE)]
        matrix = np.array([[np.nan if x is None else float(x) for x in r] for r in rows])
        total += len(zlib.compress(np.ascontiguousarray(matrix.T).tobytes(), 9)) * minutes
        count += matrix.size * minutes
    return total / count


def load_week(tmp: Path, replay: Replay, days: int = 7, every: int = 100) -> tuple[Path, float, int]:
    """`days` of 24 points, one recorded sample in `every` (every 15 s), through the store; returns the file."""
    path = tmp / "week.sqlite"
    clock = Clock(BASE)
    store = store_at(path, clock, flush_ms=3_600_000)  # flushed by hand, an hour of samples at a time
    store.open()
    started = time.perf_counter()
    appended = 0
    for m in range(int(days * 24 * 60)):
        for point in POINTS:
            for sample in replay.samples(point, BASE + m * MINUTE, every):
                store.append(sample)
                appended += 1
        clock.t = BASE + (m + 1) * MINUTE
        if m % 60 == 59:
            store.flush_now()
    seal_all(store, clock)
    store.close()
    return path, time.perf_counter() - started, appended


def query_day(path: Path, days: float = 7, queries: int = 200) -> list[dict]:
    """Queries of one point's last 24 h (or all of a shorter load) at 1m, ending anywhere in the loaded days."""
    window = min(86400.0, days * 86400)
    rng = np.random.default_rng(1)
    columns = view.columns("1m", METRICS)
    tier = TIER_BY_NAME["1m"]

    async def run() -> tuple[list[float], list[float], int]:
        store = store_at(path, Clock(BASE + days * 86400 + 86400))
        store.open()
        ours, floor, rows = [], [], 0
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            for _ in range(queries):
                point = POINTS[int(rng.integers(len(POINTS)))]
                end = int((BASE + window + rng.uniform(0, days * 86400 - window)) * 1000)
                start = end - int(window * 1000)
                t0 = time.perf_counter()
                got = await store.query(point, "1m", start, end, columns)
                ours.append(time.perf_counter() - t0)
                rows = len(got.ts)
                t0 = time.perf_counter()
                conn.execute("SELECT blob FROM segments WHERE tier = ? AND station = ? AND extension = ? AND "
                             "start_ms >= ? AND start_ms < ? AND end_ms >= ?",
                             (tier.id, point.station, point.extension, start - tier.span_ms, end, start)).fetchall()
                floor.append(time.perf_counter() - t0)
            conn.close()
        finally:
            store.close()
        return ours, floor, rows

    ours, floor, rows = asyncio.run(run())
    p99, p99_floor = np.percentile(ours, 99) * 1000, np.percentile(floor, 99) * 1000
    span = f"{window / 3600:g} h"
    return [{"figure": f"history {span} at 1m, one point, all metrics ({rows} rows), {days:g} days x 24 points "
                       "loaded: p99 ms",
             "value": p99, "baseline": p99_floor, "ratio": p99 / p99_floor, "goal": "p99 <= 10 ms", "met": p99 <= 10},
            {"figure": f"history {span} at 1m: p50 ms", "value": statistics.median(ours) * 1000,
             "baseline": statistics.median(floor) * 1000}]


def rollup_vs_raw(tmp: Path, replay: Replay, minutes: int = 60) -> list[dict]:
    path = tmp / "hour.sqlite"
    clock = Clock(BASE)
    store = store_at(path, clock)
    store.open()
    point = POINTS[0]
    for m in range(minutes):
        for sample in replay.samples(point, BASE + m * MINUTE):
            clock.t = sample.measured_at
            store.append(sample)
        store.flush_now()
    seal_all(store, clock)
    store.close()
    reader = Reader(path)
    start, end = int(BASE * 1000), int((BASE + minutes * MINUTE) * 1000)
    columns = view.columns("1m", METRICS)
    keys = tuple(m.key for m in METRICS)

    def from_tier() -> int:
        return len(reader.rows(TIER_BY_NAME["1m"], point, start, end, columns).ts)

    def from_raw() -> int:
        raw = reader.rows(TIER_BY_NAME["raw"], point, start, end, keys)
        starts, _ = rollup.from_raw(raw.ts, raw.values, 60_000, None)
        return len(starts)

    if not from_tier() == from_raw() == minutes:
        raise AssertionError(f"1m aggregates: {from_tier()} from the tier, {from_raw()} from raw, {minutes} expected")
    tier_s = _median_time(from_tier, 30)
    raw_s = _median_time(from_raw, 10)
    reader.close()
    raw_samples = sum(len(replay.minute(point, BASE)) for _ in range(minutes))
    return [{"figure": f"history {minutes / 60:g} h of 1m aggregates from the 1m tier, ms (one point, {minutes} rows)",
             "value": tier_s * 1000, "baseline": raw_s * 1000, "ratio": raw_s / tier_s,
             "goal": f"informative: baseline = the same aggregates computed from the raw tier ({raw_samples} samples)"}]


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(smoke: bool = False) -> list[dict]:
    sizes = SMOKE if smoke else FULL
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "record").mkdir()
        replay = Replay(record_samples(tmp / "record", count=sizes.recorded, timeout=sizes.record_timeout_s))
        rows = ingest_and_bytes(tmp, replay, sizes.ingest_minutes)
        rows += real_rate_cost(tmp, replay, sizes.real_rate_minutes)
        rows += rollup_vs_raw(tmp, replay, sizes.rollup_minutes)
        path, load_s, appended = load_week(tmp, replay, sizes.load_days)
        rows.append({"figure": f"history {sizes.load_days:g}-day load: {appended} samples through the store, seconds",
                     "value": load_s})
        rows += query_day(path, sizes.load_days, sizes.queries)
    return rows


if __name__ == "__main__":
    import sys
    for row in run("--smoke" in sys.argv):
        print(row)

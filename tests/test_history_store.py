"""HistoryStore in-process: values kept exactly, rollups equal aggregates from raw, restarts, retention, bad input."""
from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest

from controller.history import view
from controller.history.tiers import TIER_BY_NAME
from controller.live.state import json_value
from controller.sample import Sample
from shared.metrics import METRICS
from shared.topology import Point
from tests.history_feed import T0, Clocks, Samples, expected_rollups

P = Point("Station-1", "3333")
ALL = tuple(m.key for m in METRICS)
FAR = int((T0 + 400 * 86400) * 1000)


def feed(store, clocks: Clocks, samples: Samples, lo: int = 0, hi: int | None = None, flush_every: int = 97,
         point: Point = P) -> None:
    for i in range(lo, samples.n if hi is None else hi):
        store.append(samples.sample(point, i))   # with its knob version and conditions (test_history_context.py)
        clocks.wall = float(samples.times[i])
        if i % flush_every == 0:
            store.flush_now()
    store.flush_now()


def close_everything(store, clocks: Clocks) -> None:
    """Let the points' clocks run two hours past the last sample, so every bucket up to 1h closes."""
    clocks.mono += 7200
    clocks.wall += 7200
    store.flush_now()


async def tier_points(store, resolution: str) -> list[dict]:
    metrics = view.metric_keys(())
    rows = await store.query(P, resolution, 0, FAR, view.columns(resolution, metrics))
    return view.points(resolution, metrics, rows)


async def test_raw_tier_keeps_every_value_as_sent(tmp_path):
    clocks, samples = Clocks(), Samples(900)
    store = clocks.store(tmp_path / "h.sqlite")
    store.open()
    try:
        feed(store, clocks, samples)
        rows = await store.query(P, "raw", 0, FAR, ALL)
        assert np.array_equal(rows.ts, np.floor(samples.times * 1000).astype(np.int64))
        sent, kept = samples.values, rows.values
        assert np.array_equal(np.isnan(sent), np.isnan(kept))
        assert np.array_equal(sent[~np.isnan(sent)].view(np.uint64), kept[~np.isnan(kept)].view(np.uint64))
        assert store.stats.samples == 900 and store.stats.late == 0
    finally:
        store.close()


async def test_rollups_equal_aggregates_computed_from_raw(tmp_path):
    clocks, samples = Clocks(), Samples(5400)  # 2 h 15 min at 1.5 s
    store = clocks.store(tmp_path / "h.sqlite")
    store.open()
    try:
        feed(store, clocks, samples)
        close_everything(store, clocks)
        ts_ms = np.floor(samples.times * 1000).astype(np.int64)
        for resolution in ("1m", "5m", "1h"):
            expected = expected_rollups(ts_ms, samples.values, TIER_BY_NAME[resolution].bucket_ms)
            got = await tier_points(store, resolution)
            assert len(got) == len(expected) and len(got) > 1
            for point in got:
                start = _ms(point["timestamp"])
                want = expected[start]
                assert point["samples"] == want["samples"]
                for m in METRICS:
                    _same(m, point["metrics"][m.category][m.name], want[m.key], f"{resolution} {point['timestamp']} {m.key}")
    finally:
        store.close()


def _ms(iso: str) -> int:
    from datetime import datetime
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _same(metric, got: dict, want: dict, where: str) -> None:
    assert got.keys() == want.keys(), where
    for stat, value in want.items():
        if stat == "last":
            value = json_value(metric, value) if value is not None else None
        if value is None:
            assert got[stat] is None, where
        elif stat == "last":
            assert got[stat] == value, where
        else:
            assert got[stat] == pytest.approx(value, rel=1e-12, abs=1e-9), where


def straight_and_restarted(tmp_path, samples: Samples, cuts: tuple[int, ...] = (0, 21, 250, 1333, 2401, 4000, 5400)):
    """Two open stores of the same samples: one fed straight, one closed and reopened at each cut
    (by default at a half minute, inside a 5m bucket, across an hour)."""
    straight_clocks, restarted_clocks = Clocks(), Clocks()
    straight = straight_clocks.store(tmp_path / "a.sqlite")
    straight.open()
    feed(straight, straight_clocks, samples)
    close_everything(straight, straight_clocks)
    for lo, hi in zip(cuts, cuts[1:]):
        store = restarted_clocks.store(tmp_path / "b.sqlite")
        store.open()
        feed(store, restarted_clocks, samples, lo, hi)
        if hi == samples.n:
            close_everything(store, restarted_clocks)
        store.close()
    reopened = restarted_clocks.store(tmp_path / "b.sqlite")
    reopened.open()
    return straight, reopened


async def test_a_restart_mid_bucket_gives_the_same_tiers_as_no_restart(tmp_path):
    samples = Samples(5400, seed=3)
    straight, reopened = straight_and_restarted(tmp_path, samples)
    try:
        for resolution in ("raw", "1m", "5m", "1h"):
            columns = view.columns(resolution, METRICS)
            a = await straight.query(P, resolution, 0, FAR, columns)
            b = await reopened.query(P, resolution, 0, FAR, columns)
            assert len(a.ts) > 0 and np.array_equal(a.ts, b.ts), resolution
            assert np.array_equal(a.values.view(np.uint64), b.values.view(np.uint64)), resolution
    finally:
        straight.close()
        reopened.close()


async def test_retention_deletes_each_tier_after_its_days(tmp_path):
    clocks = Clocks()
    samples = Samples(3 * 24 * 60, every=60.0, seed=5)  # three days, one sample a minute
    store = clocks.store(tmp_path / "h.sqlite", days={"raw": 1, "1m": 2}, expire_every_s=0)
    store.open()
    try:
        feed(store, clocks, samples, flush_every=600)
        close_everything(store, clocks)
        now_ms = clocks.wall * 1000
        raw = await store.query(P, "raw", 0, FAR, ("latency.jitter",))
        one = await store.query(P, "1m", 0, FAR, ("samples",))
        five = await store.query(P, "5m", 0, FAR, ("samples",))
        # Whole segments go: a raw minute once its last row is a day old, a 1m hour once it is two days old.
        assert now_ms - 86_400_000 - 60_000 <= raw.ts[0] <= now_ms - 86_400_000 + 60_000
        assert now_ms - 2 * 86_400_000 - 3_600_000 <= one.ts[0] <= now_ms - 2 * 86_400_000 + 3_600_000
        assert five.ts[0] == int(samples.times[0] * 1000) // 300_000 * 300_000  # 90 days: all kept
        assert store.stats.expired > 0
    finally:
        store.close()


async def test_late_and_far_future_samples_are_counted_and_dropped(tmp_path):
    clocks, samples = Clocks(), Samples(400)
    store = clocks.store(tmp_path / "h.sqlite")
    store.open()
    try:
        feed(store, clocks, samples)
        store.append(Sample(P, 0, float(samples.times[0]), samples.row(0), 0))           # its minute is rolled up already
        store.append(Sample(P, 0, clocks.wall + 3600, samples.row(1), 0))                # an agent clock an hour ahead
        store.flush_now()
        assert store.stats.late == 1 and store.stats.future == 1
        rows = await store.query(P, "raw", 0, FAR, ("latency.jitter",))
        assert len(rows.ts) == 400
    finally:
        store.close()


async def test_samples_out_of_order_within_the_open_minute_are_kept_in_time_order(tmp_path):
    clocks, samples = Clocks(), Samples(30, every=1.0)
    store = clocks.store(tmp_path / "h.sqlite")
    store.open()
    try:
        order = list(range(0, 30, 2)) + list(range(1, 30, 2))
        for n, i in enumerate(order):
            store.append(Sample(P, 0, float(samples.times[i]), samples.row(i), 0))
            if n in (10, 20):
                store.flush_now()
        store.flush_now()
        rows = await store.query(P, "raw", 0, FAR, ("latency.jitter",))
        assert np.array_equal(rows.ts, np.floor(samples.times * 1000).astype(np.int64))
        assert store.stats.late == 0
    finally:
        store.close()


async def test_values_of_the_wrong_type_are_null_as_in_the_snapshot(tmp_path):
    clocks = Clocks()
    store = clocks.store(tmp_path / "h.sqlite")
    store.open()
    try:
        good = Samples(1).row(0)
        bad = list(good)
        bad[0] = "7"                      # a string where an int is due
        bad[15] = True                    # a bool where a float is due
        bad[16] = math.nan
        bad[17] = math.inf
        bad[52] = 1                       # an int where a bool is due
        store.append(Sample(P, 0, T0, bad, 0))
        store.flush_now()
        rows = await store.query(P, "raw", 0, FAR, ALL)
        shown = view.points("raw", METRICS, rows)[0]["metrics"]
        for m, value in zip(METRICS, bad):
            want = json_value(m, value)
            got = shown[m.category][m.name]
            assert (got is None) == (want is None), m.key
            if want is not None and m.type.value != "timestamp":
                assert got == want, m.key
    finally:
        store.close()


async def test_mean_between_averages_raw_samples_in_the_interval(tmp_path):
    clocks, samples = Clocks(), Samples(200)
    store = clocks.store(tmp_path / "h.sqlite")
    store.open()
    try:
        feed(store, clocks, samples)
        keys = ["latency.end_to_end", "audioQuality.clipping_detected", "audioQuality.pesq_score"]
        start, end = float(samples.times[20]), float(samples.times[120])
        means = await store.mean_between(P, start, end, keys)
        inside = (samples.times >= start) & (samples.times < end)
        for key in keys:
            column = samples.values[inside, [m.key for m in METRICS].index(key)]
            assert means[key] == pytest.approx(np.nanmean(column), rel=1e-12)
        empty = await store.mean_between(P, T0 - 100, T0 - 50, keys)
        assert empty == dict.fromkeys(keys)
        with pytest.raises(KeyError):
            await store.mean_between(P, start, end, ["latency.nope"])
    finally:
        store.close()


async def test_a_failed_flush_keeps_its_samples_for_the_next_one(tmp_path, monkeypatch):
    clocks, samples = Clocks(), Samples(200)
    store = clocks.store(tmp_path / "h.sqlite")
    store.open()
    try:
        feed(store, clocks, samples, 0, 100)
        real = store._writer.commit
        calls = []

        def failing(changes):
            calls.append(1)
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(store._writer, "commit", failing)
        feed(store, clocks, samples, 100, 200, flush_every=1000)
        assert calls and store.stats.write_errors >= 1 and store.queued > 0
        monkeypatch.setattr(store._writer, "commit", real)
        store.flush_now()
        rows = await store.query(P, "raw", 0, FAR, ("latency.jitter",))
        assert len(rows.ts) == 200 and store.queued == 0
    finally:
        store.close()


async def test_pending_chunks_of_a_span_are_compacted(tmp_path):
    clocks, samples = Clocks(), Samples(200, every=0.15)
    store = clocks.store(tmp_path / "h.sqlite", max_chunks=4)
    store.open()
    try:
        feed(store, clocks, samples, flush_every=3)   # ~67 flushes inside one or two minutes
        with sqlite3.connect(tmp_path / "h.sqlite") as conn:
            per_span = conn.execute("SELECT max(c) FROM (SELECT count(*) AS c FROM pending WHERE tier = 0 "
                                    "GROUP BY span_ms)").fetchone()[0]
        assert 1 <= per_span <= 4
        rows = await store.query(P, "raw", 0, FAR, ("latency.jitter",))
        assert len(rows.ts) == 200
        assert store.open_handles == 2   # the writer and the reader thread that just read
    finally:
        store.close()
    assert store.open_handles == 0

"""History keeps each raw sample's knob version and conditions, and each rollup bucket's knob versions.

Exactly (the version boundary falls on the sample where the agent's version changed; the
conditions read back as sent, types included), across a restart mid-span (pending rows carry
them), from files written before history kept them (null there), and cheaply (bytes per row).
"""
from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest

from controller.history import codec, context, rollup, view
from controller.history.codec import CorruptSegment
from controller.history.tiers import TIER_BY_NAME
from controller.sample import Sample
from shared.metrics import METRICS
from tests.history_feed import Clocks, Samples, expected_rollups, expected_versions
from tests.test_history_store import FAR, P, _same, close_everything, feed, straight_and_restarted

ALL = tuple(m.key for m in METRICS)


def as_json(value) -> str:
    """Type-exact comparison: Python's == says {"a": 1} == {"a": True} == {"a": 1.0}."""
    return json.dumps(value, sort_keys=True)


def ms(samples: Samples, n: int | None = None) -> np.ndarray:
    return np.floor(samples.times[:n] * 1000).astype(np.int64)


async def test_raw_rows_carry_the_knob_version_and_conditions_each_sample_ran_under(tmp_path):
    clocks, samples = Clocks(), Samples(900)
    store = clocks.store(tmp_path / "h.sqlite")
    store.open()
    try:
        feed(store, clocks, samples)
        rows = await store.query(P, "raw", 0, FAR, ("latency.jitter",), context=True)
        assert np.array_equal(rows.ts, ms(samples))
        assert rows.knob_version.tolist() == samples.knob_versions().astype(float).tolist()
        # The boundary is exact: the first sample of each version is the one the agent sent it with.
        changes = (np.flatnonzero(np.diff(rows.knob_version)) + 1).tolist()
        assert changes == list(range(samples.knob_every, samples.n, samples.knob_every))
        assert [as_json(c) for c in rows.context] == [as_json(samples.conditions(i)) for i in range(samples.n)]
        # A read without context has none, and the same values.
        plain = await store.query(P, "raw", 0, FAR, ("latency.jitter",))
        assert plain.context is None and plain.knob_version is None
        assert np.array_equal(plain.values.view(np.uint64), rows.values.view(np.uint64))
        # The API's points: knobVersion an integer, conditions as sent, whatever metrics are selected.
        points = view.points("raw", view.metric_keys(("latency.jitter",)), rows)
        i = samples.knob_every
        assert points[i - 1]["knobVersion"] == samples.knob_version(i - 1) == points[i]["knobVersion"] - 1
        assert type(points[i]["knobVersion"]) is int
        assert as_json(points[i]["conditions"]) == as_json(samples.conditions(i))
    finally:
        store.close()


async def test_context_follows_its_sample_when_samples_arrive_out_of_order(tmp_path):
    clocks, samples = Clocks(), Samples(30, every=1.0, knob_every=4)
    store = clocks.store(tmp_path / "h.sqlite")
    store.open()
    try:
        order = list(range(0, 30, 2)) + list(range(1, 30, 2))
        for n, i in enumerate(order):
            store.append(samples.sample(P, i))
            if n in (10, 20):
                store.flush_now()
        store.flush_now()
        rows = await store.query(P, "raw", 0, FAR, ("latency.jitter",), context=True)
        assert np.array_equal(rows.ts, ms(samples))
        assert rows.knob_version.tolist() == samples.knob_versions().astype(float).tolist()
        assert [as_json(c) for c in rows.context] == [as_json(samples.conditions(i)) for i in range(30)]
    finally:
        store.close()


async def test_rollup_buckets_list_the_knob_versions_they_cover(tmp_path):
    clocks, samples = Clocks(), Samples(5400)  # 2 h 15 min at 1.5 s, a new version every 173 samples (4.3 min)
    store = clocks.store(tmp_path / "h.sqlite")
    store.open()
    try:
        feed(store, clocks, samples)
        close_everything(store, clocks)
        for resolution in ("1m", "5m", "1h"):
            want = expected_versions(ms(samples), samples.knob_versions(), TIER_BY_NAME[resolution].bucket_ms)
            rows = await store.query(P, resolution, 0, FAR, view.columns(resolution, METRICS), context=True)
            got = {int(t): list(s) for t, s in zip(rows.ts.tolist(), rows.context.tolist())}
            assert got == want, resolution
            assert any(len(v) > 1 for v in got.values()), resolution   # buckets the change fell in list both
            points = view.points(resolution, METRICS, rows)
            assert [p["knobVersions"] for p in points] == [want[t] for t in rows.ts.tolist()]
    finally:
        store.close()


def test_versions_of_buckets_are_distinct_ascending_and_none_where_unknown():
    ts = np.array([0, 10, 20, 60_000, 60_010, 120_000, 120_001, 120_002], dtype=np.int64)
    versions = np.array([4, 3, 4, np.nan, np.nan, 7, np.nan, 7])
    assert rollup.versions_from_raw(ts, versions, 60_000) == [(3, 4), None, (7,)]
    sets = [(3, 4), None, (4, 9), None]
    assert rollup.versions_from_rollups(np.array([0, 60_000, 120_000, 300_000]), sets, 300_000) == [(3, 4, 9), None]


async def test_a_restart_mid_span_keeps_the_context_of_pending_rows(tmp_path):
    samples = Samples(5400, seed=3, knob_every=97)
    straight, reopened = straight_and_restarted(tmp_path, samples)
    try:
        for resolution in ("raw", "1m", "5m", "1h"):
            a = await straight.query(P, resolution, 0, FAR, ("samples",) if resolution != "raw" else ALL, context=True)
            b = await reopened.query(P, resolution, 0, FAR, ("samples",) if resolution != "raw" else ALL, context=True)
            assert len(a.ts) > 0 and np.array_equal(a.ts, b.ts), resolution
            assert [as_json(x) for x in a.context] == [as_json(x) for x in b.context], resolution
            if resolution == "raw":
                assert np.array_equal(a.knob_version, b.knob_version)
                assert b.knob_version.tolist() == samples.knob_versions().astype(float).tolist()
            else:
                want = expected_versions(ms(samples), samples.knob_versions(), TIER_BY_NAME[resolution].bucket_ms)
                assert [list(s) for s in b.context] == [want[t] for t in b.ts.tolist()], resolution
    finally:
        straight.close()
        reopened.close()


# --- files from before history kept context -----------------------------------------------

# controller/history/db.py's schema before this change (commit d482ba7), and its raw layout: the 68 metrics.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS layouts (id INTEGER PRIMARY KEY, names TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS segments (
    tier INTEGER NOT NULL, station TEXT NOT NULL, extension TEXT NOT NULL,
    start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, rows INTEGER NOT NULL,
    layout INTEGER NOT NULL, blob BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS segments_by_point ON segments (tier, station, extension, start_ms);
CREATE INDEX IF NOT EXISTS segments_by_age ON segments (tier, end_ms);
CREATE TABLE IF NOT EXISTS pending (
    tier INTEGER NOT NULL, station TEXT NOT NULL, extension TEXT NOT NULL, span_ms INTEGER NOT NULL,
    start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, rows INTEGER NOT NULL,
    layout INTEGER NOT NULL, blob BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS pending_by_point ON pending (tier, station, extension, span_ms);
"""
OLD_RAW = [m.key for m in METRICS]


def write_old_file(path, samples: Samples, n: int) -> None:
    """What the store wrote before it kept context, for samples[:n] (all in one 5-minute bucket): each closed
    minute a raw segment and a 1m row (pending, its hour is open), the open minute a pending raw chunk. The
    codec is unchanged (segment VERSION 1), so codec.encode writes the blobs the old store wrote."""
    ts, values = ms(samples, n), samples.values[:n]
    minute = ts - ts % 60_000
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
        conn.execute("INSERT INTO layouts (names) VALUES (?)", (json.dumps(OLD_RAW),))
        conn.execute("INSERT INTO layouts (names) VALUES (?)", (json.dumps(list(rollup.ROLLUP.names)),))
        key = (P.station, P.extension)
        closed = np.unique(minute)[:-1]
        for start in closed:
            rows = minute == start
            blob = codec.encode(ts[rows], values[rows], np.isnan(values[rows]), 6)
            conn.execute("INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (0, *key, int(ts[rows][0]), int(ts[rows][-1]), int(rows.sum()), 1, blob))
        open_rows = minute == minute[-1]
        blob = codec.encode(ts[open_rows], values[open_rows], np.isnan(values[open_rows]), 1)
        conn.execute("INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (0, *key, int(minute[-1]), int(ts[open_rows][0]), int(ts[open_rows][-1]), int(open_rows.sum()),
                      1, blob))
        done = minute < minute[-1]
        starts, rolled = rollup.from_raw(ts[done], values[done], 60_000, None)
        blob = codec.encode(starts, rolled, np.isnan(rolled), 1)
        conn.execute("INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (1, *key, int(starts[0] - starts[0] % 3_600_000), int(starts[0]), int(starts[-1]), len(starts),
                      2, blob))


async def test_segments_written_before_context_read_with_null_context_and_the_store_goes_on(tmp_path):
    path = tmp_path / "old.sqlite"
    samples = Samples(300, every=1.5, knob_every=100)
    old = 100   # T0 is 7:13.5 into the hour: 100 samples close minutes 7 and 8, minute 9 is open
    write_old_file(path, samples, old)
    clocks = Clocks(wall=float(samples.times[old - 1]))
    store = clocks.store(path)
    store.open()
    try:
        with sqlite3.connect(path) as conn:   # the writer gave the old tables their context column
            assert all(context_column in [r[1] for r in conn.execute(f"PRAGMA table_info({t})")]
                       for t, context_column in (("segments", "context"), ("pending", "context")))
        rows = await store.query(P, "raw", 0, FAR, ALL, context=True)
        assert np.array_equal(rows.ts, ms(samples, old))
        sent = samples.values[:old]
        kept = rows.values[~np.isnan(rows.values)]
        assert np.array_equal(sent[~np.isnan(sent)].view(np.uint64), kept.view(np.uint64))
        assert np.isnan(rows.knob_version).all() and all(c is None for c in rows.context)
        points = view.points("raw", METRICS, rows)
        assert {(p["knobVersion"], p["conditions"]) for p in points} == {(None, None)}
        one = await store.query(P, "1m", 0, FAR, view.columns("1m", METRICS), context=True)
        assert len(one.ts) == 2 and [p["knobVersions"] for p in view.points("1m", METRICS, one)] == [None, None]

        # New samples join the open minute and the open hour; what was old stays null, the rest is kept.
        feed(store, clocks, samples, old, samples.n)
        close_everything(store, clocks)
        rows = await store.query(P, "raw", 0, FAR, ALL, context=True)
        assert np.array_equal(rows.ts, ms(samples))
        assert np.isnan(rows.knob_version[:old]).all()
        assert rows.knob_version[old:].tolist() == samples.knob_versions()[old:].astype(float).tolist()
        assert all(c is None for c in rows.context[:old])
        assert [as_json(c) for c in rows.context[old:]] == [as_json(samples.conditions(i)) for i in range(old, 300)]
        for resolution in ("1m", "5m"):
            bucket = TIER_BY_NAME[resolution].bucket_ms
            rows = await store.query(P, resolution, 0, FAR, view.columns(resolution, METRICS), context=True)
            known = expected_versions(ms(samples)[old:], samples.knob_versions()[old:], bucket)
            assert [None if s is None else list(s) for s in rows.context] == [known.get(t) for t in rows.ts.tolist()]
            assert rows.context[-1] is not None and (resolution != "1m" or rows.context[0] is None), resolution
            # and the rollups themselves are those of every sample, old and new
            want = expected_rollups(ms(samples), samples.values, bucket)
            for doc, start in zip(view.points(resolution, METRICS, rows), rows.ts.tolist()):
                assert doc["samples"] == want[start]["samples"]
                for m in METRICS:
                    _same(m, doc["metrics"][m.category][m.name], want[start][m.key], f"{resolution} {m.key}")
    finally:
        store.close()


def test_a_reader_of_a_file_no_writer_has_opened_since_reads_null_context(tmp_path):
    from controller.history.reader import Reader
    path = tmp_path / "old.sqlite"
    samples = Samples(100)
    write_old_file(path, samples, 100)
    reader = Reader(path)
    try:
        rows = reader.rows(TIER_BY_NAME["raw"], P, 0, FAR, ("latency.jitter",), context=True)
        assert len(rows.ts) == 100 and np.isnan(rows.knob_version).all() and all(c is None for c in rows.context)
    finally:
        reader.close()


# --- the conditions codec -----------------------------------------------------------------

def kept(docs: list) -> list:
    take = context.Intake().take
    return [take(doc) for doc in docs]


FORMS = [context.encode_conditions, context.encode_condition_rows]   # sealed segments, pending chunks


@pytest.mark.parametrize("encode", FORMS)
def test_conditions_round_trip_with_their_types_absent_keys_and_unknown_rows(encode):
    docs = [
        {"delay_ms": 40.125, "burst": 2, "fec": True, "cc": "bbr", "odd": 1, "neg": -0.0},
        {"delay_ms": 40.5, "burst": 3, "fec": False, "cc": "cubic", "odd": 1.0, "neg": -0.0, "late": None},
        None,
        {},
        {"delay_ms": 1e-300, "odd": True, "big": 2 ** 63 + 1, "list": [1, "a", None], "nested": {"x": [1.5]},
         "uni": "é – 日本"},
        {"cc": "bbr", "burst": 2},   # keys in another order, some absent
    ]
    blob = encode(kept(docs))
    back = context.decode_conditions(blob)
    assert [as_json(d) for d in back] == [as_json(d) for d in docs]
    assert type(back[0]["burst"]) is int and type(back[0]["fec"]) is bool and type(back[1]["odd"]) is float
    assert math.copysign(1, back[0]["neg"]) == -1
    assert back[4]["big"] == 2 ** 63 + 1
    keep = np.array([False, True, False, False, True, False])
    assert [as_json(d) for d in context.decode_conditions(blob, keep)] == [as_json(docs[1]), as_json(docs[4])]


@pytest.mark.parametrize("encode", FORMS)
def test_conditions_json_cannot_show_are_made_showable_and_oversized_ones_are_not_kept(encode):
    docs = [{"nan": math.nan, "inf": math.inf, 7: "seven", "bytes": b"\x00", "ok": 1.5}, {"nan": 2.0},
            {"ok": math.nan}]
    back = context.decode_conditions(encode(kept(docs)))
    assert back[0] == {"nan": None, "inf": None, "7": "seven", "bytes": None, "ok": 1.5}
    assert back[1] == {"nan": 2.0} and back[2] == {"ok": None}
    assert context.conditions_of({"k": "x" * 20_000}) is None
    assert context.conditions_of({f"k{i}": i for i in range(context.MAX_CONDITIONS_KEYS + 1)}) is None
    assert context.conditions_of(["not", "a", "mapping"]) is None
    assert encode([None, None]) is None


def test_drifting_conditions_cost_a_few_bytes_a_row():
    """The agent's own conditions (the simulator's path drifts every sample) for a minute at 150 ms."""
    from agent.pipeline import CONDITION_KNOBS
    from agent.sim.conditions import SimConditions
    from agent.sim.source import SimPacketSource
    from shared.knobs import KNOBS
    knobs = {k.name: k.default for k in KNOBS}
    source = SimPacketSource(SimConditions(), 1, knobs)
    docs = [{**source.conditions(1.7e12 + i * 150.0), "algorithmic_delay_ms": 12.5,
             **{name: knobs[name] for name in CONDITION_KNOBS}} for i in range(400)]
    assert len({as_json(d) for d in docs}) > 300   # nearly every sample's conditions differ
    blob = context.encode_conditions(kept(docs))
    assert [as_json(d) for d in context.decode_conditions(blob)] == [as_json(d) for d in docs]
    per_value = len(blob) / (400 * len(METRICS))
    print(f"conditions of {len(docs[0])} keys drifting every sample: {len(blob) / 400:.2f} bytes a row, "
          f"{per_value:.3f} per raw metric value")
    assert per_value < 0.1
    steady = context.encode_conditions(kept([docs[0]] * 400))
    assert len(steady) < len(blob) and len(steady) < 1000


@pytest.mark.parametrize("encode", FORMS)
def test_damaged_context_blobs_are_refused(encode):
    blob = encode(kept([{"a": 1.5, "b": "x"}] * 5))
    sets = context.encode_versions([(3,), (3, 4), None])
    assert context.decode_versions(sets) == [(3,), (3, 4), None]
    for bad in (b"", b"XX" + blob[2:], blob[:2] + b"\x09" + blob[3:], blob[:len(blob) // 2], sets):
        with pytest.raises(CorruptSegment):
            context.decode_conditions(bad)
    with pytest.raises(CorruptSegment):
        context.decode_versions(blob)
    with pytest.raises(CorruptSegment):
        context.decode(False, sets, 4)   # rows that disagree with the segment's


async def test_a_value_json_cannot_hold_is_null_and_never_stops_the_flushes(tmp_path, monkeypatch, caplog):
    """An int beyond 64 bits (msgpack never decodes one; Python refuses JSON text over 4300 digits) is null, in a
    pending chunk and in the sealed segment; and should a context still fail to encode, its rows are stored
    without it, logged, and every flush goes on."""
    clocks, samples = Clocks(), Samples(100, every=1.5)   # from 7:13.5 into the hour: minute 7 seals
    store = clocks.store(tmp_path / "h.sqlite")
    store.open()
    try:
        store.append(Sample(P, 0, float(samples.times[0]), samples.row(0), 3, {"huge": 10 ** 5000, "ok": 1}))
        store.flush_now()
        rows = await store.query(P, "raw", 0, FAR, ("latency.jitter",), context=True)   # from the pending chunk
        assert rows.context.tolist() == [{"huge": None, "ok": 1}]
        feed(store, clocks, samples, 1, 60)
        with sqlite3.connect(tmp_path / "h.sqlite") as conn:
            assert conn.execute("SELECT count(*) FROM segments WHERE tier = 0").fetchone()[0] >= 1
        rows = await store.query(P, "raw", 0, FAR, ("latency.jitter",), context=True)
        assert rows.context[0] == {"huge": None, "ok": 1}   # now from the sealed segment
        assert [as_json(c) for c in rows.context[1:]] == [as_json(samples.conditions(i)) for i in range(1, 60)]

        def broken(rows):
            raise ValueError("a value no encoder takes")

        monkeypatch.setattr(context, "encode_condition_rows", broken)
        feed(store, clocks, samples, 60, 100)
        assert store.stats.write_errors == 0 and "could not be written" in caplog.text
        rows = await store.query(P, "raw", 0, FAR, ("latency.jitter",), context=True)
        assert len(rows.ts) == 100 and rows.knob_version[-1] == samples.knob_version(99)
    finally:
        store.close()


async def test_oversized_conditions_are_counted_and_the_sample_kept(tmp_path):
    clocks, samples = Clocks(), Samples(3)
    store = clocks.store(tmp_path / "h.sqlite")
    store.open()
    try:
        store.append(samples.sample(P, 0))
        store.append(Sample(P, 1, float(samples.times[1]), samples.row(1), 5, {"blob": "x" * 20_000}))
        store.append(Sample(P, 2, float(samples.times[2]), samples.row(2), 2 ** 60, {}))   # no float holds it
        store.flush_now()
        rows = await store.query(P, "raw", 0, FAR, ("latency.jitter",), context=True)
        assert len(rows.ts) == 3 and store.stats.conditions_dropped == 1
        assert rows.knob_version[:2].tolist() == [3.0, 5.0] and np.isnan(rows.knob_version[2])
        assert as_json(rows.context[0]) == as_json(samples.conditions(0))
        assert rows.context[1] is None and rows.context[2] == {}
    finally:
        store.close()

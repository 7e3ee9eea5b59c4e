"""SequenceTracker: RFC 3550 A.1/A.3/A.8 on hand-checked sequences, and the Cython build against its twin."""
from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from ext import sequence_py as sp
from tests.twins import load_twin


def _load(name: str) -> ModuleType:
    return load_twin(name, sp, "_sequence")


@pytest.fixture(params=["py", "c"], ids=["py", "c"])
def mod(request: pytest.FixtureRequest) -> ModuleType:
    return _load(request.param)


def feed(tracker, seqs, ts_step: float = 20.0, transit: float = 10.0) -> list[int]:
    return [tracker.update(s, s * ts_step + transit, s * ts_step) for s in seqs]


def test_probation_needs_two_sequential_packets(mod):
    st = mod.SequenceTracker()
    assert feed(st, [500]) == [sp.PROBATION]
    assert st.received == 0 and st.expected == 0
    assert feed(st, [502]) == [sp.PROBATION]        # not sequential: probation starts over
    assert feed(st, [503, 504]) == [sp.VALID, sp.VALID]
    assert st.base_seq == 503 and st.received == 2 and st.expected == 2 and st.lost == 0


def test_min_sequential_one_counts_the_first_packet(mod):
    st = mod.SequenceTracker(min_sequential=1)
    assert feed(st, [7, 8]) == [sp.VALID, sp.VALID]
    assert st.received == 2 and st.expected == 2


def test_wrap_at_65535_extends_the_sequence(mod):
    st = mod.SequenceTracker()
    assert feed(st, [65533, 65534, 65535, 0, 1]) == [sp.PROBATION] + [sp.VALID] * 4
    assert st.cycles == 65536 and st.max_seq == 1 and st.extended_max_seq == 65537
    assert st.expected == 4 and st.received == 4 and st.lost == 0


def test_reorder_across_the_wrap(mod):
    st = mod.SequenceTracker(min_sequential=1)
    assert feed(st, [65534, 65535, 1, 0, 2]) == [sp.VALID, sp.VALID, sp.VALID, sp.OUT_OF_ORDER, sp.VALID]
    assert st.expected == 5 and st.received == 5 and st.out_of_order == 1 and st.lost == 0


def test_reordered_packet_is_counted_once_and_fills_the_gap(mod):
    st = mod.SequenceTracker()
    assert feed(st, [10, 11, 12, 14, 13, 15]) == [sp.PROBATION, sp.VALID, sp.VALID, sp.VALID, sp.OUT_OF_ORDER,
                                                  sp.VALID]
    assert st.expected == 5 and st.received == 5 and st.lost == 0 and st.out_of_order == 1


def test_duplicates_make_rfc_loss_negative_and_are_counted(mod):
    st = mod.SequenceTracker(min_sequential=1)
    assert feed(st, [11, 12, 12, 13, 11]) == [sp.VALID, sp.VALID, sp.DUPLICATE, sp.VALID, sp.DUPLICATE]
    assert st.received == 5 and st.received_unique == 3 and st.expected == 3
    assert st.lost == -2 and st.lost_clipped == 0 and st.lost_unique == 0
    assert st.duplicates == 2 and st.out_of_order == 0


def test_burst_loss_and_interval_fraction(mod):
    st = mod.SequenceTracker(min_sequential=1)
    feed(st, [100, 101, 102, 110, 111, 112])           # 103..109 lost
    assert st.expected == 13 and st.received == 6 and st.lost == 7
    assert st.interval() == (13, 7, 7 / 13)
    assert st.interval() == (0, 0, 0.0)
    feed(st, [113, 115])
    assert st.interval() == (3, 1, 1 / 3)


def test_max_dropout_and_max_misorder_boundaries(mod):
    st = mod.SequenceTracker(min_sequential=1)
    feed(st, [1000])
    assert feed(st, [3999]) == [sp.VALID]                 # 2999 ahead: a gap, not a jump
    assert st.lost == 2998
    assert feed(st, [6999]) == [sp.BAD]                   # 3000 ahead: dropped until confirmed
    assert feed(st, [3900]) == [sp.OUT_OF_ORDER]          # 99 behind: reordered
    assert feed(st, [3899]) == [sp.BAD]                   # 100 behind: too old
    assert st.bad == 2 and st.received == 3


def test_restart_after_a_large_jump(mod):
    st = mod.SequenceTracker()
    feed(st, [1000, 1001, 1002])
    assert feed(st, [40000]) == [sp.BAD]
    assert feed(st, [1003]) == [sp.VALID]                 # a stray packet: the old stream goes on
    assert st.base_seq == 1001 and st.expected == 3
    assert feed(st, [40000, 40001]) == [sp.BAD, sp.RESTART]
    assert st.restarts == 1 and st.bad == 2 and st.base_seq == 40001
    assert st.received == 1 and st.expected == 1 and st.lost == 0
    assert feed(st, [40002, 40004]) == [sp.VALID, sp.VALID]
    assert st.expected == 4 and st.lost == 1


def test_interarrival_jitter_follows_rfc_3550_a8(mod):
    st = mod.SequenceTracker(min_sequential=1)
    st.update(0, 10.0, 0.0)            # transit 10
    st.update(1, 35.0, 20.0)           # transit 15: |D| = 5 -> J = 5/16
    assert st.jitter_ms == 0.3125
    st.update(2, 50.0, 40.0)           # transit 10: |D| = 5
    assert st.jitter_ms == 0.3125 + (5 - 0.3125) / 16
    st.update(2, 90.0, 40.0)           # a duplicate is not a new transit sample
    assert st.jitter_ms == 0.3125 + (5 - 0.3125) / 16 and st.last_transit_ms == 10.0


def test_constant_transit_has_zero_jitter(mod):
    st = mod.SequenceTracker()
    feed(st, range(200))
    assert st.jitter_ms == 0.0 and st.lost == 0 and st.received == 199


def random_stream(seed: int, n: int = 30000):
    rng = np.random.default_rng(seed)
    seqs, arr, ts = [], [], []
    k = 0
    for i in range(n):
        if rng.random() < 0.002:
            k += int(rng.integers(5, 40))            # burst loss
        if i == n // 2:
            k += 40000                                # sender restart (both halves wrap)
        s = (k + 65000) & 0xFFFF
        seqs.append(s)
        ts.append(20.0 * k)
        arr.append(20.0 * k + 30 + rng.exponential(10))
        if rng.random() < 0.01:                        # duplicate
            seqs.append(s)
            ts.append(20.0 * k)
            arr.append(arr[-1] + 1)
        k += 1
    order = np.argsort(np.array(arr) + np.where(np.random.default_rng(seed).random(len(arr)) < 0.02, 60.0, 0.0),
                       kind="stable")                  # some reordering
    return np.array(seqs, np.int64)[order], np.array(arr)[order], np.array(ts)[order]


def test_cython_and_python_twins_agree_packet_by_packet():
    c_mod = _load("c")
    seqs, arr, ts = random_stream(3)
    py, c = sp.SequenceTracker(), c_mod.SequenceTracker()
    for k in range(len(seqs)):
        a = py.update(int(seqs[k]), float(arr[k]), float(ts[k]))
        b = c.update(int(seqs[k]), float(arr[k]), float(ts[k]))
        assert a == b, k
        if k % 1000 == 0:
            assert py.counters() == c.counters(), k
            assert py.interval() == c.interval()
    assert py.counters() == c.counters()
    counters = py.counters()
    assert counters["duplicates"] > 100 and counters["out_of_order"] > 100 and counters["restarts"] == 1
    assert counters["cycles"] > 0 and counters["lost"] > 0


def test_update_many_matches_update(mod):
    seqs, arr, ts = random_stream(4, n=5000)
    one, many = mod.SequenceTracker(), mod.SequenceTracker()
    expect = [one.update(int(s), float(a), float(t)) for s, a, t in zip(seqs, arr, ts)]
    got = many.update_many(seqs, arr, ts)
    assert got.dtype == np.int8 and list(got) == expect
    assert one.counters() == many.counters()


def test_constants_match_between_builds():
    c_mod = _load("c")
    for name in ("VALID", "OUT_OF_ORDER", "DUPLICATE", "PROBATION", "BAD", "RESTART", "MAX_DROPOUT",
                 "MAX_MISORDER", "MIN_SEQUENTIAL", "RTP_SEQ_MOD", "SEEN_SLOTS"):
        assert getattr(c_mod, name) == getattr(sp, name), name


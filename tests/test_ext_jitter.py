"""JitterBuffer: playout semantics, knobs, counters, and the Cython build against its Python twin."""
from __future__ import annotations

import math
from types import ModuleType

import numpy as np
import pytest

from ext import jitter_py
from shared.knobs import defaults
from tests.twins import load_twin

PKT = 320          # bytes = 20 ms at 16 bytes/ms


def _load(name: str) -> ModuleType:
    return load_twin(name, jitter_py, "_jitter")


@pytest.fixture(params=["py", "c"], ids=["py", "c"])
def jb_mod(request: pytest.FixtureRequest) -> ModuleType:
    return _load(request.param)


def fixed(mod: ModuleType, **kw: object):
    cfg = dict(prefetch_ms=0, jitter_buffer_depth=40, playout_delay=0, adaptive_buffering=False)
    cfg.update(kw)
    return mod.JitterBuffer(**cfg)


def drive(jb, packets, t_end: float, tick: float = 20.0, t0: float = 0.0):
    """packets: (seq, ts, arrival, size, corrupted) in any order. Push what arrived by each tick, pop until WAIT."""
    packets = sorted(packets, key=lambda p: p[2])
    pushes, out = [], []
    k = 0
    t = t0
    while t <= t_end:
        while k < len(packets) and packets[k][2] <= t:
            s, ts, arr, size, bad = packets[k]
            pushes.append((s, jb.push(s, ts, arr, size, bad)))
            k += 1
        while True:
            item = jb.pop(t)
            if item[1] == jitter_py.WAIT:
                break
            out.append((t,) + tuple(item))
        t += tick
    return pushes, out


def steady(n: int, transit: float = 30.0, start_seq: int = 0):
    return [(start_seq + k, 20.0 * k, 20.0 * k + transit, PKT, False) for k in range(n)]


# ---- playout semantics -------------------------------------------------------------------------

def test_steady_stream_plays_every_packet_in_order_after_the_fixed_delay(jb_mod):
    jb = fixed(jb_mod, jitter_buffer_depth=60)
    _, out = drive(jb, steady(50), 50 * 20 + 100)
    played = [o for o in out if o[2] == jitter_py.PLAYED]
    assert [o[1] for o in played] == list(range(50))
    # transit 30 + delay 60 -> first tick at or after 90 is 100: every packet waits 100 - 30 = 70 ms
    assert {o[3] for o in played} == {70.0}
    assert played[0][0] == 100.0
    c = jb.counters()
    assert c["played"] == 50 and c["lost"] == 0 and c["dropped"] == 0
    assert c["played_bytes"] == 50 * PKT and c["fill_bytes"] - c["drain_bytes"] == c["level_bytes"]
    assert c["wait_total_ms"] == 50 * 70.0


def test_prefetch_holds_playout_until_enough_audio_is_buffered(jb_mod):
    jb = fixed(jb_mod, prefetch_ms=100, jitter_buffer_depth=0)
    _, out = drive(jb, steady(20), 520)
    first = out[0]
    # packets arrive at 20k + 30: the fifth (100 ms of audio) is in at 110, so playout starts at tick 120
    assert first[:3] == (120.0, 0, jitter_py.PLAYED) and first[3] == 90.0
    assert jb.counters()["underflow_count"] == 1   # 19 plays at 500; slot 20 (520) finds it empty


def test_reordered_packets_within_the_delay_play_in_sequence_order(jb_mod):
    pk = steady(10, transit=10)
    pk[3], pk[4] = (3, 60.0, 95.0, PKT, False), (4, 80.0, 91.0, PKT, False)   # 4 overtakes 3
    jb = fixed(jb_mod, jitter_buffer_depth=60)
    pushes, out = drive(jb, pk, 400, tick=1.0)
    assert all(st == jitter_py.ACCEPTED for _, st in pushes)
    assert [o[1] for o in out if o[2] == jitter_py.PLAYED] == list(range(10))


def test_packet_after_its_playout_slot_is_concealed_then_dropped_as_late(jb_mod):
    pk = steady(10, transit=10)
    pk[5] = (5, 100.0, 210.0, PKT, False)            # 100 ms later than the rest
    jb = fixed(jb_mod, jitter_buffer_depth=40)
    pushes, out = drive(jb, pk, 400)
    # start at 60 (ts 0 + transit 10 + delay 40 -> tick 60): packet 5's slot is 160, it arrives at 210
    assert (160.0, 5, jitter_py.LOST, 0.0) in out
    assert (5, jitter_py.LATE) in pushes
    c = jb.counters()
    assert c["lost"] == 1 and c["dropped_late"] == 1 and c["dropped"] == 1 and c["played"] == 9


def test_duplicates_are_dropped_before_and_after_playout(jb_mod):
    jb = fixed(jb_mod)
    assert jb.push(0, 0.0, 10.0, PKT) == jitter_py.ACCEPTED
    assert jb.push(0, 0.0, 11.0, PKT) == jitter_py.DUPLICATE
    assert jb.pop(50.0)[:2] == (0, jitter_py.PLAYED)
    assert jb.push(0, 0.0, 60.0, PKT) == jitter_py.DUPLICATE      # already played: a duplicate, not late
    c = jb.counters()
    assert c["dropped_duplicate"] == 2 and c["dropped_late"] == 0 and c["fill_bytes"] == PKT
    assert c["received_bytes"] == 3 * PKT


def test_corrupted_packet_is_counted_and_its_slot_concealed(jb_mod):
    pk = steady(6, transit=10)
    pk[2] = (2, 40.0, 50.0, PKT, True)
    jb = fixed(jb_mod)
    pushes, out = drive(jb, pk, 200)
    assert (2, jitter_py.CORRUPTED) in pushes
    assert [o[1:3] for o in out if o[2] != jitter_py.UNDERFLOW] == [
        (0, jitter_py.PLAYED), (1, jitter_py.PLAYED), (2, jitter_py.LOST), (3, jitter_py.PLAYED),
        (4, jitter_py.PLAYED), (5, jitter_py.PLAYED)]
    assert jb.counters()["corrupted"] == 1 and jb.counters()["lost"] == 1


def test_running_dry_counts_one_underflow_per_empty_slot_then_refetches(jb_mod):
    # a stall: packets 10..19 are held up and arrive together at 410, packet 20 on time again
    pk = [(k, 20.0 * k, 410.0 if 10 <= k < 20 else 20.0 * k + 10, PKT, False) for k in range(30)]
    jb = fixed(jb_mod, prefetch_ms=40, jitter_buffer_depth=40)
    pushes, out = drive(jb, pk, 440)
    under = [o[0] for o in out if o[2] == jitter_py.UNDERFLOW]
    # offset 60 (start at tick 60): the slot of packet 10 is 260. Dry, the slot clock runs on re-anchored at
    # base transit 10 + depth 40: by the tick at 400 the media time up to 350 has gone by as silence, so the
    # burst's packets 10..17 are late; 18 (slot 410) and 19 are not, and with 40 ms buffered playout resumes
    assert under == [260.0 + 20 * k for k in range(8)]
    assert [s for s, st in pushes if st == jitter_py.LATE] == list(range(10, 18))
    assert out[-2:] == [(420.0, 18, jitter_py.PLAYED, 10.0), (440.0, 19, jitter_py.PLAYED, 30.0)]
    c = jb.counters()
    assert c["underflow_count"] == 8 and c["underflow_events"] == 1 and c["last_underflow_ms"] == 400.0
    assert c["dropped_late"] == 8 and c["lost"] == 8 and jb.state == jitter_py.PLAYING
    assert jb.playout_offset_ms == 50.0 and jb.playout_delay_ms == 40.0     # the depth, not the stall


def test_fixed_delay_follows_the_base_transit_down_without_an_underflow(jb_mod):
    # playout starts on slow packets (transit 60), then the path is faster (10): the fixed offset comes down
    # to 10 + depth a quarter packet per packet, skipping nothing, instead of keeping 60 + depth for good
    pk = [(k, 20.0 * k, 20.0 * k + (60 if k < 5 else 10), PKT, False) for k in range(100)]
    jb = fixed(jb_mod, jitter_buffer_depth=40)
    _, out = drive(jb, pk, 1500)
    assert out[0][:3] == (100.0, 0, jitter_py.PLAYED)
    assert jb.playout_offset_ms == 50.0 and jb.playout_delay_ms == 40.0 and jb.base_transit_ms == 10.0
    assert [o[1] for o in out] == list(range(len(out))) and all(o[2] == jitter_py.PLAYED for o in out)
    assert len({o[0] for o in out}) < len(out)          # catching up: some ticks played two packets


def test_a_lasting_route_change_is_followed_once_the_base_transit_window_has_passed(jb_mod):
    # transit 10 ms, then 210 ms for good: until the faster transits leave the base window (four blocks of
    # 500 ms of arrivals) the slower packets are late; then the buffer re-anchors at 210 + depth
    pk = [(k, 20.0 * k, 20.0 * k + (10 if k < 10 else 210), PKT, False) for k in range(200)]
    jb = fixed(jb_mod, prefetch_ms=40, jitter_buffer_depth=40)
    _, out = drive(jb, pk, 200 * 20.0 + 400)
    played = [o for o in out if o[2] == jitter_py.PLAYED]
    resumed = [o for o in played if o[1] >= 10]
    assert [o[1] for o in played[:10]] == list(range(10))
    assert resumed and resumed[0][0] >= 2000.0          # not before the 10 ms transits are forgotten
    assert {o[3] for o in resumed} == {50.0}            # then all wait the depth (slot ts + 250, next tick)
    assert [o[1] for o in resumed] == list(range(resumed[0][1], 200))
    assert jb.base_transit_ms == 210.0 and jb.playout_offset_ms == 250.0   # ran dry at the end: still anchored


def test_empty_buffer_before_the_first_packet_is_not_an_underflow(jb_mod):
    jb = fixed(jb_mod)
    assert jb.pop(1000.0) == (-1, jitter_py.WAIT, 0.0)
    assert jb.counters()["underflow_count"] == 0 and math.isnan(jb.counters()["last_underflow_ms"])


# ---- overflow policies -----------------------------------------------------------------------------

def small(mod, policy: str, max_ms: float = 100.0):
    return mod.JitterBuffer(buffer_size=100, min_buffer_size=16, max_buffer_size=max_ms, prefetch_ms=0,
                            jitter_buffer_depth=500, playout_delay=0, adaptive_buffering=False,
                            buffer_overflow_policy=policy)


def test_drop_newest_refuses_packets_when_full(jb_mod):
    jb = small(jb_mod, "drop_newest")
    st = [jb.push(k, 20.0 * k, 1.0 + k, PKT) for k in range(7)]
    assert st == [jitter_py.ACCEPTED] * 5 + [jitter_py.OVERFLOW] * 2
    c = jb.counters()
    assert c["overflow_count"] == 2 and c["dropped_overflow"] == 2 and c["last_overflow_ms"] == 7.0
    assert c["level_bytes"] == 5 * PKT and c["level_percent"] == 100.0


def test_drop_oldest_evicts_and_playout_starts_from_the_oldest_left(jb_mod):
    jb = small(jb_mod, "drop_oldest")
    st = [jb.push(k, 20.0 * k, 1.0 + k, PKT) for k in range(7)]
    assert st == [jitter_py.ACCEPTED] * 7
    assert jb.counters()["dropped_evicted"] == 2 and jb.counters()["overflow_count"] == 2
    assert jb.pop(10.0)[:2] == (2, jitter_py.PLAYED)       # full: starts without waiting for the delay


def test_drop_oldest_while_playing_skips_ahead_without_a_gap(jb_mod):
    jb = small(jb_mod, "drop_oldest")
    jb.configure(jitter_buffer_depth=0)
    jb.push(0, 0.0, 0.0, PKT)
    assert jb.pop(0.0)[:2] == (0, jitter_py.PLAYED)
    for k in range(1, 8):                                  # a burst: 7 packets at once, room for 5
        jb.push(k, 20.0 * k, 20.0, PKT)
    # 1 and 2 were evicted: 3 plays in the slot 1 would have had
    assert jb.pop(20.0)[:2] == (3, jitter_py.PLAYED)
    assert jb.pop(20.0)[1] == jitter_py.WAIT
    assert jb.pop(40.0)[:2] == (4, jitter_py.PLAYED)
    assert jb.counters()["lost"] == 0 and jb.counters()["dropped_evicted"] == 2


def test_grow_raises_capacity_up_to_max_then_evicts(jb_mod):
    jb = small(jb_mod, "grow", max_ms=150.0)
    st = [jb.push(k, 20.0 * k, 1.0 + k, PKT) for k in range(8)]
    assert st == [jitter_py.ACCEPTED] * 8
    c = jb.counters()
    assert jb.capacity_ms == 150.0 and c["grow_count"] == 1
    assert c["overflow_count"] == 2 and c["dropped_evicted"] == 1


def test_capacity_shrinks_back_after_a_quiet_second(jb_mod):
    jb = jb_mod.JitterBuffer(buffer_size=100, min_buffer_size=16, max_buffer_size=400, prefetch_ms=0,
                             jitter_buffer_depth=20, playout_delay=0, adaptive_buffering=False,
                             buffer_overflow_policy="grow")
    for k in range(8):
        jb.push(k, 20.0 * k, 0.0, PKT)
    assert jb.capacity_ms == 225.0          # 100 -> 150 (x1.5) at the 6th packet -> 225 at the 8th
    drive(jb, [(k, 20.0 * k, 20.0 * k, PKT, False) for k in range(8, 200)], 200 * 20.0)
    assert jb.capacity_ms == 100.0 and jb.counters()["shrink_count"] >= 1


# ---- delay: fixed depth, adaptive, runtime changes -------------------------------------------------

def jittery(n: int, seed: int, mean_jitter: float, spikes: float = 0.02):
    rng = np.random.default_rng(seed)
    ts = 20.0 * np.arange(n)
    arr = ts + 30.0 + rng.exponential(mean_jitter, n) + (rng.random(n) < spikes) * rng.uniform(50, 200, n)
    return [(k, float(ts[k]), float(arr[k]), PKT, False) for k in range(n)]


def run_depth(mod, depth: float, pk) -> tuple[dict, float]:
    jb = fixed(mod, jitter_buffer_depth=depth, prefetch_ms=20)
    _, out = drive(jb, pk, pk[-1][1] + 400)
    waits = [o[3] for o in out if o[2] == jitter_py.PLAYED]
    return jb.counters(), float(np.mean(waits))


def test_deeper_buffer_trades_latency_for_fewer_underflows_and_late_drops(jb_mod):
    pk = jittery(3000, seed=7, mean_jitter=25.0)
    shallow, wait_shallow = run_depth(jb_mod, 40, pk)
    deep, wait_deep = run_depth(jb_mod, 200, pk)
    assert deep["underflow_count"] < shallow["underflow_count"]
    assert deep["dropped_late"] < shallow["dropped_late"] / 10
    assert deep["lost"] < shallow["lost"]
    assert wait_deep > wait_shallow + 100


def stalled(n: int, seed: int, mean_jitter: float = 6.0):
    """FIFO path, exponential queueing, and every few seconds a stall of 120-260 ms that releases a burst."""
    rng = np.random.default_rng(seed)
    ts = 20.0 * np.arange(n)
    arr = ts + 40.0 + rng.exponential(mean_jitter, n)
    k = 75
    while k < n:
        end = arr[k] + rng.uniform(120.0, 260.0)
        j = k
        while j < n and arr[j] < end:
            arr[j] = end + 0.1 * (j - k)
            j += 1
        k += int(rng.integers(75, 225))
    arr = np.maximum.accumulate(arr)
    return [(k, float(ts[k]), float(arr[k]), PKT, False) for k in range(n)]


def run_delay(jb, pk) -> tuple[dict, float, float]:
    """Drive on 20 ms ticks; mean delay in force (offset - base transit) while playing, mean wait of played."""
    delays, waits = [], []
    k, t = 0, 0.0
    while t < pk[-1][2] + 200:
        while k < len(pk) and pk[k][2] <= t:
            jb.push(*pk[k])
            k += 1
        while (item := jb.pop(t))[1] != jitter_py.WAIT:
            if item[1] == jitter_py.PLAYED:
                waits.append(item[2])
        if jb.state == jitter_py.PLAYING:
            delays.append(jb.playout_offset_ms - jb.base_transit_ms)
        t += 20.0
    return jb.counters(), float(np.mean(delays)), float(np.mean(waits))


def test_fixed_depth_is_the_playout_delay_through_stalls_and_underflows(jb_mod):
    # Before the fix each underflow restarted playout at the first (late) packet of the stall's burst and
    # the fixed offset kept that: every depth ended near the longest stall (~250 ms) on this stream.
    pk = stalled(6000, seed=1)
    res = {d: run_delay(fixed(jb_mod, jitter_buffer_depth=d, prefetch_ms=0), pk) for d in (10, 40, 200)}
    for depth, (c, delay, wait) in res.items():
        assert abs(delay - depth) < 1.5, (depth, delay)
        # a packet waits the depth less its queueing (mean 6 ms) plus up to one 20 ms tick
        assert depth - 10.0 < wait < depth + 20.0, (depth, wait)
        assert c["underflow_events"] >= 10 and c["dropped_late"] > 0, depth      # several stalls went by
    assert res[10][2] + 20 < res[40][2] and res[40][2] + 120 < res[200][2]
    assert res[10][0]["underflow_events"] > res[40][0]["underflow_events"] > res[200][0]["underflow_events"]


def test_adaptive_delay_rises_in_a_jitter_burst_and_falls_back_after_it(jb_mod):
    rng = np.random.default_rng(2)
    ts = 20.0 * np.arange(6000)
    arr = ts + 40.0 + rng.exponential(np.where((ts >= 40000) & (ts < 80000), 40.0, 2.0))
    for k in range(2100, 3900, 300):                     # stalls inside the burst, too
        arr[k:][arr[k:] < arr[k] + 250] = arr[k] + 250
    arr = np.maximum.accumulate(arr)
    pk = [(k, float(ts[k]), float(arr[k]), PKT, False) for k in range(6000)]
    jb = jb_mod.JitterBuffer(prefetch_ms=0, jitter_buffer_depth=400, playout_delay=30, adaptive_buffering=True)
    k, t, delay = 0, 0.0, {}
    while t < pk[-1][2]:
        while k < len(pk) and pk[k][2] <= t:
            jb.push(*pk[k])
            k += 1
        while jb.pop(t)[1] != jitter_py.WAIT:
            pass
        if jb.state == jitter_py.PLAYING:
            delay.setdefault(int(t // 20000), []).append(jb.playout_delay_ms)
        t += 20.0
    phase = {p: float(np.mean(v)) for p, v in delay.items()}
    # the floor (30) plus what the half-packet band lets the start's tick rounding keep; 4 x J in the burst
    assert phase[1] < 30.0 + 12 and phase[2] > 80.0 and phase[3] > 80.0
    assert phase[5] < 30.0 + 12 and phase[5] < phase[3] - 40                  # and back to the floor
    assert jb.target_delay_ms == 30.0 and jb.counters()["underflow_events"] >= 3


def test_adaptive_delay_follows_measured_jitter_within_its_bounds(jb_mod):
    delays = {}
    for mean_jitter in (2.0, 15.0, 60.0):
        jb = jb_mod.JitterBuffer(prefetch_ms=0, playout_delay=30, jitter_buffer_depth=150, adaptive_buffering=True)
        pk = jittery(1500, seed=3, mean_jitter=mean_jitter, spikes=0.0)
        drive(jb, pk, pk[-1][1] + 20)
        target = jb.target_delay_ms
        assert 30.0 <= target <= 150.0
        assert target == min(max(4.0 * jb.jitter_ms, 30.0), 150.0)
        delays[mean_jitter] = target
    assert delays[2.0] == 30.0 and delays[60.0] == 150.0
    assert 30.0 < delays[15.0] < 150.0


def test_adaptive_offset_converges_to_target_and_lowers_late_loss(jb_mod):
    pk = jittery(3000, seed=11, mean_jitter=20.0, spikes=0.0)
    adaptive = jb_mod.JitterBuffer(prefetch_ms=0, playout_delay=0, jitter_buffer_depth=400, adaptive_buffering=True)
    drive(adaptive, pk, pk[-1][1] + 20)
    assert abs(adaptive.playout_delay_ms - adaptive.target_delay_ms) <= 10.0 + 20.0   # band + one tick
    low = fixed(jb_mod, jitter_buffer_depth=10)
    drive(low, pk, pk[-1][1] + 20)
    assert adaptive.counters()["dropped_late"] < low.counters()["dropped_late"] / 5


def test_depth_change_at_runtime_moves_the_playout_point_without_skipping(jb_mod):
    jb = fixed(jb_mod, jitter_buffer_depth=40)
    pk = steady(120, transit=10)
    out: dict[float, list] = {}
    offsets = {}
    for t in np.arange(0.0, 2450.0, 20.0):
        for p in pk:
            if t - 20.0 < p[2] <= t:
                jb.push(*p)
        if t == 200.0:
            jb.configure(jitter_buffer_depth=100)
        if t == 1000.0:
            jb.configure(jitter_buffer_depth=40)
        while (item := jb.pop(t))[1] != jitter_py.WAIT:
            out.setdefault(t, []).append(item)
        offsets[t] = jb.playout_offset_ms
    played = [i for t in sorted(out) for i in out[t] if i[1] == jitter_py.PLAYED]
    assert [i[0] for i in played] == list(range(120))                  # nothing skipped, nothing lost
    assert offsets[180.0] == 60.0 and offsets[980.0] == 120.0 and offsets[2440.0] == 60.0
    # +60 ms applies at the next packet boundary: ticks 200, 220, 240 are silent, packet 7 plays at 260
    assert [t for t in (200.0, 220.0, 240.0, 260.0) if t in out] == [260.0]
    assert out[260.0][0][0] == 7 and out[980.0][0][2] == 110.0
    # -60 ms moves a quarter packet per packet: some ticks carry two packets, none is silent
    assert any(len(out[t]) == 2 for t in out if t > 1000.0)
    assert all(t in out for t in np.arange(260.0, 2380.0 - 40 * 20, 20.0))
    assert jb.counters()["lost"] == 0 and jb.counters()["underflow_count"] == 0


def test_bad_configuration_is_refused_and_changes_nothing(jb_mod):
    jb = fixed(jb_mod)
    before = jb.counters()
    with pytest.raises(ValueError):
        jb.configure(buffer_overflow_policy="drop_random")
    with pytest.raises(ValueError):
        jb.configure(min_buffer_size=900, max_buffer_size=100)
    with pytest.raises(ValueError):
        jb.configure(no_such_knob=1)
    with pytest.raises(ValueError):
        jb.push(1, 0.0, 0.0, 0)
    assert _same_dict(jb.counters(), before)


def test_from_knobs_uses_the_catalog_defaults(jb_mod):
    knobs = defaults()
    jb = jb_mod.JitterBuffer.from_knobs(knobs)
    assert jb.capacity_ms == knobs["buffer_size"]
    assert jb.target_delay_ms == knobs["playout_delay"]          # adaptive starts at its floor
    knobs.update(adaptive_buffering=False, jitter_buffer_depth=120, buffer_size=256)
    jb.apply_knobs(knobs)
    assert jb.target_delay_ms == 120 and jb.capacity_ms == 256


# ---- sequence numbers ----------------------------------------------------------------------------

def test_sixteen_bit_sequence_numbers_unwrap_across_65535(jb_mod):
    jb = fixed(jb_mod)
    pk = [((65530 + k) & 0xFFFF, 20.0 * k, 20.0 * k + 10, PKT, False) for k in range(12)]
    _, out = drive(jb, pk, 400)
    assert [o[1] for o in out if o[2] == jitter_py.PLAYED] == [65530 + k for k in range(12)]
    assert [o[1] & 0xFFFF for o in out if o[2] == jitter_py.PLAYED] == [p[0] for p in pk]


def test_large_jump_resyncs_only_when_the_new_stream_continues(jb_mod):
    jb = fixed(jb_mod)
    drive(jb, steady(5, transit=10), 100)
    assert jb.push(30000, 5000.0, 110.0, PKT) == jitter_py.RESYNC      # a stray packet: dropped
    assert jb.push(5, 100.0, 111.0, PKT) == jitter_py.ACCEPTED
    assert jb.push(40000, 0.0, 120.0, PKT) == jitter_py.RESYNC
    assert jb.push(40001, 20.0, 121.0, PKT) == jitter_py.ACCEPTED      # sender restarted
    c = jb.counters()
    assert c["resyncs"] == 1 and c["dropped_resync"] == 2 and jb.state == jitter_py.BUFFERING
    assert jb.packets == 1


# ---- statistics window -------------------------------------------------------------------------

def test_window_level_is_time_weighted_and_resettable(jb_mod):
    jb = fixed(jb_mod, jitter_buffer_depth=500)
    jb.reset_window(0.0)
    jb.push(0, 0.0, 10.0, PKT)
    w = jb.window(30.0)
    assert w["duration_ms"] == 30.0
    assert w["level_min_bytes"] == 0 and w["level_max_bytes"] == PKT
    assert w["level_avg_bytes"] == pytest.approx(PKT * 20 / 30)
    assert w["level_std_bytes"] == pytest.approx(math.sqrt(PKT * PKT * 2 / 3 - (PKT * 2 / 3) ** 2))
    assert w["level_max_percent"] == pytest.approx(100.0 * PKT / (512 * 16))
    assert w["fill_bytes"] == PKT and w["played"] == 0 and math.isnan(w["wait_avg_ms"])
    jb.reset_window(30.0)
    w = jb.window(50.0)
    assert w["level_min_bytes"] == w["level_max_bytes"] == w["level_avg_bytes"] == PKT and w["fill_bytes"] == 0
    assert jb.counters()["peak_bytes"] == PKT


# ---- Cython build against the Python twin ----------------------------------------------------------

def chaotic_stream(seed: int, n: int = 4000):
    """Jitter, bursts of loss, duplicates, reordering, corruption, a stall, and a sender restart."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        ts = 20.0 * k
        arr = ts + 20.0 + rng.exponential(15.0) + (200.0 if 1500 <= k < 1530 else 0.0)
        if rng.random() < 0.03:
            continue
        size = int(rng.choice([160, 320, 320, 640]))
        seq = (k + 64000) & 0xFFFF if k < 3000 else (k + 20000) & 0xFFFF    # wraps at k=1536, restarts at 3000
        out.append((seq, ts, float(arr), size, bool(rng.random() < 0.01)))
        if rng.random() < 0.02:
            out.append((seq, ts, float(arr + rng.uniform(0, 80)), size, False))
    return out


CONFIGS = [
    dict(),
    dict(adaptive_buffering=False, jitter_buffer_depth=60, prefetch_ms=40),
    dict(buffer_size=128, min_buffer_size=64, max_buffer_size=512, buffer_overflow_policy="grow", prefetch_ms=0),
    dict(buffer_size=80, min_buffer_size=16, max_buffer_size=80, buffer_overflow_policy="drop_newest"),
    dict(buffer_size=80, min_buffer_size=16, max_buffer_size=80, buffer_overflow_policy="drop_oldest",
         adaptive_buffering=False, jitter_buffer_depth=150),
]


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _same_dict(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)


@pytest.mark.parametrize("cfg", CONFIGS, ids=[f"cfg{i}" for i in range(len(CONFIGS))])
def test_cython_and_python_twins_agree_on_every_output_and_counter(cfg):
    c_mod = _load("c")
    bufs = [jitter_py.JitterBuffer(**cfg), c_mod.JitterBuffer(**cfg)]
    pk = sorted(chaotic_stream(5), key=lambda p: p[2])
    k, t = 0, 0.0
    while t < pk[-1][2] + 300:
        batch = []
        while k < len(pk) and pk[k][2] <= t:
            batch.append(pk[k])
            k += 1
        res = [[b.push(*p) for p in batch] for b in bufs]
        assert res[0] == res[1], t
        outs = [[], []]
        for i, b in enumerate(bufs):
            while (item := b.pop(t))[1] != jitter_py.WAIT:
                outs[i].append(item)
        assert outs[0] == outs[1], t
        if int(t) % 3000 == 0:
            assert _same_dict(bufs[0].counters(), bufs[1].counters()), t
            assert _same_dict(bufs[0].window(t), bufs[1].window(t)), t
            for b in bufs:
                b.reset_window(t)
        if int(t) == 40000:
            for b in bufs:
                b.configure(jitter_buffer_depth=300, playout_delay=10, adaptive_buffering=not b.counters()["state"])
        t += 20.0
    assert _same_dict(bufs[0].counters(), bufs[1].counters())
    assert bufs[0].counters()["played"] > 1000


def test_batch_calls_match_single_calls(jb_mod):
    pk = sorted(chaotic_stream(9, n=1500), key=lambda p: p[2])
    single, batch = jb_mod.JitterBuffer(), jb_mod.JitterBuffer()
    cols = [np.array(c) for c in zip(*pk)]
    k, t = 0, 0.0
    seq_o, st_o, wait_o = np.zeros(64, np.int64), np.zeros(64, np.int8), np.zeros(64, np.float64)
    while t < pk[-1][2] + 200:
        j = k
        while j < len(pk) and pk[j][2] <= t:
            j += 1
        expect = [single.push(*p) for p in pk[k:j]]
        got = batch.push_many(cols[0][k:j], cols[1][k:j], cols[2][k:j], cols[3][k:j], cols[4][k:j])
        assert list(got) == expect
        k = j
        items = []
        while (item := single.pop(t))[1] != jitter_py.WAIT:
            items.append(item)
        n = batch.pop_due(t, seq_o, st_o, wait_o)
        assert [(int(seq_o[i]), int(st_o[i]), float(wait_o[i])) for i in range(n)] == items
        t += 20.0
    assert _same_dict(single.counters(), batch.counters())


def _repair_feed(mod: ModuleType, repaired_as: bool | None, batch: bool = False):
    """A 40 ms-transit stream with every 10th packet lost and, unless `repaired_as` is None, brought back
    (arriving 30 ms before its slot, or 35 ms after its capture: a retransmission, and an implausibly
    early one that would pull the base transit down if it were observed). Returns the buffer and its
    (jitter, mean transit, base transit) after every tick."""
    jb = mod.JitterBuffer()  # catalog defaults: adaptive, playout_delay 50
    rng = np.random.default_rng(4)
    first = [(k, 20.0 * k, 20.0 * k + 40.0 + float(rng.exponential(3.0)), PKT) for k in range(1500) if k % 10 != 5]
    repairs = [(k, 20.0 * k, 20.0 * k + (35.0 if k % 20 == 5 else 60.0), PKT) for k in range(1500) if k % 10 == 5]
    events = sorted([p + (False,) for p in first] + ([p + (True,) for p in repairs] if repaired_as is not None else []),
                    key=lambda p: p[2])
    trace, k, t = [], 0, 0.0
    while t < 30_200.0:
        j = k
        while j < len(events) and events[j][2] <= t:
            j += 1
        now = events[k:j]
        if batch and now:
            cols = [np.array(c) for c in zip(*now)]
            jb.push_many(cols[0], cols[1], cols[2], cols[3], np.zeros(len(now), np.uint8),
                         cols[4] & bool(repaired_as))
        else:
            for s, ts, arr, size, is_repair in now:
                jb.push(s, ts, arr, size, False, repaired=bool(repaired_as) and is_repair)
        k = j
        while jb.pop(t)[1] != jitter_py.WAIT:
            pass
        trace.append((jb.jitter_ms, jb.mean_transit_ms, jb.base_transit_ms, jb.playout_offset_ms))
        t += 20.0
    return jb, trace


def test_repaired_packets_are_played_but_move_no_transit_or_jitter_estimate(jb_mod):
    without, t_without = _repair_feed(jb_mod, None)
    repaired, t_repaired = _repair_feed(jb_mod, True)
    as_fresh, t_fresh = _repair_feed(jb_mod, False)
    # Every estimate (and so the adaptive playout offset) is exactly what the first transmissions alone give.
    assert t_repaired == t_without
    assert repaired.counters()["played"] > without.counters()["played"] + 100  # the repairs did play
    assert repaired.counters()["lost"] < without.counters()["lost"] - 100
    assert repaired.counters()["dropped_late"] == 0
    # Fed as fresh arrivals the same packets inflate jitter and the offset and pull the base down.
    assert np.mean([x[0] for x in t_fresh[500:]]) > 1.5 * np.mean([x[0] for x in t_without[500:]])
    assert min(x[2] for x in t_fresh[500:]) < min(x[2] for x in t_without[500:]) - 5
    # push_many's `repaired` column does the same as single pushes.
    batch, t_batch = _repair_feed(jb_mod, True, batch=True)
    assert t_batch == t_repaired and _same_dict(batch.counters(), repaired.counters())


def test_repaired_pushes_agree_between_builds():
    (py, t_py), (c, t_c) = _repair_feed(jitter_py, True), _repair_feed(_load("c"), True)
    assert t_py == t_c and _same_dict(py.counters(), c.counters())


def test_constants_match_between_builds():
    c_mod = _load("c")
    for name in ("ACCEPTED", "LATE", "DUPLICATE", "CORRUPTED", "OVERFLOW", "RESYNC", "PLAYED", "LOST",
                 "UNDERFLOW", "WAIT", "BUFFERING", "PLAYING", "REBUFFERING", "KNOB_NAMES", "POLICIES"):
        assert getattr(c_mod, name) == getattr(jitter_py, name), name



def test_capacity_is_never_under_two_packets_so_a_tiny_buffer_still_plays(jb_mod):
    # 16 ms of capacity cannot hold one 20 ms packet: the buffer keeps room for two, as live and
    # replay must agree (a buffer that never starts would show no underflow while nothing is heard)
    jb = jb_mod.JitterBuffer(buffer_size=16, min_buffer_size=16, max_buffer_size=16, prefetch_ms=100,
                             jitter_buffer_depth=40, playout_delay=20)
    assert jb.capacity_ms == 40.0
    _, out = drive(jb, steady(50), 50 * 20 + 100)
    played = [item for item in out if item[2] == jitter_py.PLAYED]
    assert len(played) > 40 and jb.capacity_ms == 40.0
    jb = jb_mod.JitterBuffer(buffer_size=100, min_buffer_size=16, max_buffer_size=100, prefetch_ms=0,
                             jitter_buffer_depth=40, playout_delay=20, adaptive_buffering=False)
    drive(jb, [(k, 60.0 * k, 60.0 * k + 10, 3 * PKT, False) for k in range(5)], 400)   # 60 ms packets
    jb.configure(buffer_size=16, min_buffer_size=16, max_buffer_size=16)
    assert jb.capacity_ms == 120.0


def test_evicted_counts_packets_taken_out_unplayed(jb_mod):
    jb = small(jb_mod, "drop_oldest")
    for k in range(7):
        jb.push(k, 20.0 * k, 1.0 + k, PKT)
    assert jb.evicted == jb.counters()["dropped_evicted"] == 2

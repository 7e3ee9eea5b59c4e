"""One extension through the real jitter buffer, FEC, retransmission and DSP chain, measured: knobs act, metrics stay in bounds."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from agent.dsp import DspChain
from agent.measure import emodel
from agent.measure.host import HostMeter
from agent.measure.pesq_worker import wideband_pesq
from agent.measure.sample import PointMeter
from agent.pipeline import ExtensionPipeline
from agent.sim.conditions import SimConditions
from shared.knobs import defaults
from shared.metrics import METRICS, out_of_bounds

CLEAN_PATH = dict(drift="none", duplicate_rate=0.0, reorder_rate=0.0, corruption_rate=0.0)


def run(seconds: float, cond: dict[str, Any], knobs: dict[str, Any] | None = None, seed: int = 7,
        every: int = 8, host: HostMeter | None = None) -> tuple[ExtensionPipeline, list[dict[str, Any]]]:
    """Run a pipeline on the frame clock (no real time); a sample every `every` frames."""
    full = {**defaults(), **(knobs or {})}
    pipe = ExtensionPipeline("3333", SimConditions(**cond), seed, full, lambda: DspChain(seed=seed))
    meter = PointMeter(pipe, epoch=time.time())
    host = host or HostMeter()
    samples = []
    for k in range(1, int(seconds * 50) + 1):
        pipe.step(k * 20.0)
        if k % every == 0:
            samples.append(meter.sample(k * 20.0, host.read()))
    return pipe, samples


@pytest.fixture(scope="module")
def host() -> HostMeter:
    return HostMeter()


def test_every_sample_has_all_68_metrics_within_catalog_bounds(host):
    degraded = dict(loss_rate=0.08, burst_length=3.0, jitter_ms=40.0, delay_ms=60.0, reorder_rate=0.03,
                    duplicate_rate=0.01, corruption_rate=0.01, noise_dbfs=-35.0, echo_gain_db=-6.0,
                    drift="sine", drift_period_s=10.0, drift_delay_ms=40.0, drift_loss_rate=0.05)
    for cond, knobs in ((degraded, {}), ({}, {"limiter_enabled": False, "agc_target_level": 0, "agc_max_gain": 60}),
                        (degraded, {"packet_size": 80, "adaptive_buffering": False, "jitter_buffer_depth": 0,
                                    "prefetch_ms": 0, "playout_delay": 0, "fec_enabled": False})):
        _, samples = run(20, cond, knobs, host=host)
        assert len(samples) > 100
        for s in samples:
            assert len(s) == len(METRICS)
            assert out_of_bounds(s) == [], {k: s.get(k) for k in out_of_bounds(s)}


def test_fec_recovers_losses_at_an_overhead_cost(host):
    cond = dict(CLEAN_PATH, loss_rate=0.05, burst_length=1.0, delay_ms=20.0, jitter_ms=2.0)
    no_fec, s_off = run(40, cond, {"fec_enabled": False, "max_retransmits": 0}, host=host)
    fec, s_on = run(40, cond, {"fec_enabled": True, "fec_percentage": 25, "max_retransmits": 0}, host=host)
    assert no_fec.receiver.corrected == 0
    assert fec.receiver.corrected > 0.5 * s_on[-1]["packet.sent_count"] * 0.05  # most single losses come back
    assert s_on[-1]["packet.loss_rate"] < 0.5 * s_off[-1]["packet.loss_rate"]
    overhead = lambda ss: np.mean([s["packet.overhead_percent"] for s in ss[10:]])
    throughput = lambda ss: np.mean([s["packet.throughput_kbps"] for s in ss[10:]])
    assert overhead(s_on) > overhead(s_off) + 10
    assert throughput(s_on) > 1.15 * throughput(s_off)


def test_retransmission_recovers_losses_when_the_round_trip_allows(host):
    cond = dict(CLEAN_PATH, loss_rate=0.05, burst_length=1.0, delay_ms=15.0, jitter_ms=1.0)
    knobs = {"fec_enabled": False, "adaptive_buffering": False, "jitter_buffer_depth": 150}
    without, s0 = run(30, cond, {**knobs, "max_retransmits": 0}, host=host)
    with_rtx, s1 = run(30, cond, {**knobs, "max_retransmits": 3}, host=host)
    assert without.source.sender.retransmits_sent == 0 and with_rtx.source.sender.retransmits_sent > 0
    assert s1[-1]["packet.loss_rate"] < 0.5 * s0[-1]["packet.loss_rate"]
    assert with_rtx.receiver.concealed_slots < 0.5 * without.receiver.concealed_slots
    # A playout deadline shorter than the round trip makes retransmission useless: the receiver does not
    # ask for what could only arrive late (it would take the sender's pacing capacity for nothing).
    late, s2 = run(30, dict(cond, delay_ms=150.0), {**knobs, "jitter_buffer_depth": 20, "max_retransmits": 3}, host=host)
    assert late.receiver.retransmit_requests < 0.1 * with_rtx.receiver.retransmit_requests
    assert s2[-1]["buffer.dropped_frames"] < 0.1 * s0[-1]["packet.loss_count"]
    assert late.receiver.concealed_slots > 0.8 * without.receiver.concealed_slots


# Station-4's demo path (tpmon/demo_profiles.py): 8 % loss in bursts of 4 that FEC cannot repair alone.
BURSTY_PATH = dict(delay_ms=32.0, jitter_ms=5.0, loss_rate=0.08, burst_length=4.0, drift_loss_rate=0.03)


@pytest.mark.parametrize("seed", [7, 11])
def test_repairs_on_a_bursty_lossy_path_neither_ratchet_latency_nor_inflate_jitter(host, seed):
    """Default knobs (adaptive buffering, FEC 20 %, 3 retransmissions). Retransmitted and FEC-rebuilt
    packets must not feed the jitter estimates, and end_to_end must stay the sum of its parts."""
    pipe, samples = run(60, BURSTY_PATH, seed=seed, every=25, host=host)  # a sample every 0.5 s
    parts = lambda s: (s["latency.network"] + s["latency.buffer"] + s["latency.codec"]
                       + s["latency.processing"])
    gaps = [s["latency.end_to_end"] - parts(s) for s in samples]
    assert max(abs(g) for g in gaps) < 50, max(gaps, key=abs)
    e2e = [s["latency.end_to_end"] for s in samples]
    third = len(e2e) // 3
    assert np.mean(e2e[-third:]) < np.mean(e2e[:third]) + 30  # no upward ratchet
    assert max(e2e) < 600  # a long loss burst rebuffers for a while (transient, shrinks back)
    jitter = [s["latency.jitter"] for s in samples]
    assert max(jitter) < 3 * BURSTY_PATH["jitter_ms"] and np.mean(jitter) < 2 * BURSTY_PATH["jitter_ms"]
    assert pipe.receiver.jb.jitter_ms < 3 * BURSTY_PATH["jitter_ms"]
    assert pipe.receiver.corrected > 0  # repairs happened and were played


def test_packet_size_changes_packet_rate_and_header_overhead(host):
    results = {}
    for size in (160, 320, 960):
        pipe, samples = run(20, CLEAN_PATH | {"loss_rate": 0.0}, {"packet_size": size, "fec_enabled": False}, host=host)
        last = samples[-1]
        results[size] = (last["packet.sent_count"], np.mean([s["packet.overhead_percent"] for s in samples[10:]]),
                         last["latency.codec"])
    assert results[160][0] == pytest.approx(2 * results[320][0], rel=0.02)  # packets per second
    assert results[320][0] == pytest.approx(3 * results[960][0], rel=0.02)
    assert results[160][1] > results[320][1] > results[960][1]
    assert [results[s][2] for s in (160, 320, 960)] == [10.0, 20.0, 60.0]


def test_deeper_jitter_buffer_trades_latency_for_fewer_underflows(host):
    cond = dict(CLEAN_PATH, loss_rate=0.0, jitter_ms=8.0, delay_ms=40.0)
    fixed = {"adaptive_buffering": False, "prefetch_ms": 0, "playout_delay": 0}
    shallow, s_sh = run(40, cond, {**fixed, "jitter_buffer_depth": 10}, host=host)
    deep, s_dp = run(40, cond, {**fixed, "jitter_buffer_depth": 150}, host=host)
    assert s_sh[-1]["buffer.underflow_count"] > 0
    assert s_dp[-1]["buffer.underflow_count"] < s_sh[-1]["buffer.underflow_count"]
    assert deep.receiver.concealed_slots < shallow.receiver.concealed_slots
    assert s_dp[-1]["latency.avg_latency"] > s_sh[-1]["latency.avg_latency"] + 50
    assert s_dp[-1]["latency.buffer"] > s_sh[-1]["latency.buffer"] + 50


def test_mos_falls_when_loss_or_delay_rises(host):
    good = run(20, dict(CLEAN_PATH, loss_rate=0.0, delay_ms=20.0), host=host)[1][-1]["audioQuality.mos_score"]
    lossy = run(20, dict(CLEAN_PATH, loss_rate=0.1, burst_length=3.0, delay_ms=20.0),
                {"fec_enabled": False, "max_retransmits": 0}, host=host)[1][-1]["audioQuality.mos_score"]
    slow = run(20, dict(CLEAN_PATH, loss_rate=0.0, delay_ms=400.0), host=host)[1][-1]["audioQuality.mos_score"]
    assert good > 4.0 and lossy < good - 0.5 and slow < good - 0.3
    # The model itself: monotone in delay and loss, burstier loss worse at the same rate.
    assert emodel.mos(50, 0) > emodel.mos(200, 0) > emodel.mos(400, 0)
    assert emodel.mos(50, 1) > emodel.mos(50, 5) > emodel.mos(50, 10)
    assert emodel.mos(50, 5, burst_r=1.0) > emodel.mos(50, 5, burst_r=3.0)
    assert emodel.burst_ratio([True] * 90 + [False] * 10) > emodel.burst_ratio(([True] * 9 + [False]) * 10)


def test_pesq_drops_when_noise_is_added():
    scores = []
    for noise in (-70.0, -30.0):
        # Only the noise changes: the chain stages that act on noise (NR, AGC, AEC comfort noise) are off.
        pipe, _ = run(6, dict(CLEAN_PATH, loss_rate=0.0, noise_dbfs=noise),
                      {"nr_enabled": False, "agc_enabled": False, "aec_enabled": False})
        ref, out = pipe.pesq_audio()
        scores.append(wideband_pesq(ref, out))
    assert scores[0] is not None and scores[1] is not None
    assert scores[1] < scores[0] - 0.5


def test_packets_evicted_unplayed_count_as_loss_for_the_mos(host):
    # A buffer too small for the path's jitter evicts most packets (skip-ahead): no slot is
    # concealed and no underflow counted, but the listener misses the audio and the MOS says so.
    cond = dict(CLEAN_PATH, loss_rate=0.0, jitter_ms=15.0, delay_ms=70.0)
    roomy = run(15, cond, host=host)[1][-1]
    tiny = run(15, cond, {"buffer_size": 16, "min_buffer_size": 16, "max_buffer_size": 16}, host=host)[1][-1]
    assert tiny["buffer.overflow_count"] > 100 and tiny["buffer.underflow_count"] <= roomy["buffer.underflow_count"] + 2
    assert tiny["audioQuality.mos_score"] < roomy["audioQuality.mos_score"] - 1.0


def test_audio_metrics_follow_the_output(host):
    quiet = run(10, dict(CLEAN_PATH, loss_rate=0.0), {"agc_enabled": False}, host=host)[1]
    loud = run(10, dict(CLEAN_PATH, loss_rate=0.0), {"agc_target_level": -6, "agc_max_gain": 40}, host=host)[1]
    level = lambda ss: np.mean([s["audioQuality.level_rms"] for s in ss[20:] if s["audioQuality.voice_activity_ratio"] > 0.5])
    assert level(loud) > level(quiet) + 6
    noisy = run(10, dict(CLEAN_PATH, loss_rate=0.0, noise_dbfs=-30.0), {"nr_enabled": False, "agc_enabled": False},
                host=host)[1]
    snr = lambda ss: ss[-1]["audioQuality.snr"]
    assert snr(noisy) < snr(quiet) - 10
    assert noisy[-1]["audioQuality.noise_level"] > quiet[-1]["audioQuality.noise_level"] + 10
    assert noisy[-1]["audioQuality.sinad"] < quiet[-1]["audioQuality.sinad"]
    hushed = run(10, dict(CLEAN_PATH, loss_rate=0.0, noise_dbfs=-80.0), {"agc_enabled": False}, host=host)[1]
    silent = [s["audioQuality.silence_detected"] for s in hushed[10:]]
    assert any(silent) and not all(silent)  # pauses between phrases, speech within them


def test_noise_reduction_knobs_act_on_a_noisy_path(host):
    """On a noisy path (noise at -22 dBFS, speech near -26) the suppressor learns the noise although
    the stream opens with the jitter buffer's silence, and its strength knob orders the SNR."""
    cond = dict(CLEAN_PATH, loss_rate=0.0, noise_dbfs=-22.0)
    snr = {}
    for name, knobs in (("off", {"nr_enabled": False}), ("low", {"nr_level": "low"}),
                        ("very_high", {"nr_level": "very_high"}),
                        ("non_stationary", {"nr_type": "non_stationary", "nr_level": "very_high"})):
        samples = run(8, cond, {"agc_enabled": False, **knobs}, host=host)[1]
        snr[name] = float(np.mean([s["audioQuality.snr"] for s in samples[-20:]]))
    assert snr["low"] > snr["off"] + 10, snr
    assert snr["very_high"] > snr["low"] + 8, snr
    assert snr["non_stationary"] > snr["low"] + 8, snr


def test_simulator_cpu_is_counted_apart_and_is_part_of_the_step_cpu():
    pipe = ExtensionPipeline("3333", SimConditions(), 3, defaults(), lambda: DspChain(seed=3))
    started = time.thread_time()
    for k in range(1, 151):
        pipe.step(k * 20.0)
    spent = time.thread_time() - started
    assert 0.0 < pipe.sim_cpu_s < spent  # synthesis and sending happened, and the chain and receiver cost more than nothing


def _align_reference(delays: list[int], frames: int) -> list[np.ndarray]:
    """The plain formulation of the alignment: keep the newest `delay` indices, pad new ones with -1."""
    tail, out = np.full(0, -1, dtype=np.int64), []
    for k in range(frames):
        delay = delays[k]
        if len(tail) != delay:
            tail = np.concatenate([np.full(max(0, delay - len(tail)), -1, dtype=np.int64), tail])[-delay:] if delay else tail[:0]
        joined = np.concatenate([tail, np.arange(k * 320, (k + 1) * 320, dtype=np.int64)])
        tail = joined[len(joined) - delay:] if delay else joined[:0]
        out.append(joined[:320].copy())
    return out


class _DelayOnly:
    algorithmic_delay_ms = 0.0


def test_output_alignment_follows_the_chain_delay_through_knob_changes():
    """The chain's delay grows and shrinks with knob sets (lookaheads, compressor on/off), also past a frame."""
    pipe = ExtensionPipeline("3333", SimConditions(**CLEAN_PATH), 7, defaults(), lambda: DspChain(seed=7))
    pipe.chain = _DelayOnly()
    rng = np.random.default_rng(3)
    delays_ms = [0, 0, 15, 15, 20, 5, 5, 40, 40, 0, 25, 30, 30, 10] + [float(d) for d in rng.choice([0, 5, 15, 25, 45], 40)]
    delays = [int(round(d * 16)) for d in delays_ms]
    expected = _align_reference(delays, len(delays))
    for k, ms in enumerate(delays_ms):
        pipe.chain.algorithmic_delay_ms = ms
        got = pipe._align(np.arange(k * 320, (k + 1) * 320, dtype=np.int64))
        assert np.array_equal(got, expected[k]), f"frame {k}, delay {ms} ms"

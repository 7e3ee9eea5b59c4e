"""The agent's measurement against its catalog sentences: packet populations, null when undefined, voice activity in noise."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from agent.dsp import DspChain
from agent.measure.audio import AudioMeter
from agent.measure.host import HostMeter
from agent.measure.sample import PointMeter
from agent.pipeline import ExtensionPipeline
from agent.sim.capture import SimCapture
from agent.sim.conditions import SimConditions
from shared.knobs import defaults
from shared.metrics import METRICS, METRICS_BY_KEY, out_of_bounds

# Jittery, lossy (bursts), duplicate-heavy and reordering: the paths where populations and windows diverge.
ROUGH = dict(delay_ms=70.0, jitter_ms=60.0, loss_rate=0.08, burst_length=3.0, duplicate_rate=0.08,
             reorder_rate=0.05, corruption_rate=0.01, drift="sine", drift_period_s=10.0, drift_delay_ms=30.0)


def meter_run(seconds: float, cond: dict[str, Any], knobs: dict[str, Any] | None = None, seed: int = 7,
              host: HostMeter | None = None) -> tuple[ExtensionPipeline, PointMeter, list[dict[str, Any]]]:
    """A pipeline on the frame clock with 160 ms sample windows (8 frames)."""
    pipe = ExtensionPipeline("3333", SimConditions(**cond), seed, {**defaults(), **(knobs or {})},
                             lambda: DspChain(seed=seed))
    meter = PointMeter(pipe, epoch=time.time())
    host = host or HostMeter()
    samples = []
    for k in range(1, int(seconds * 50) + 1):
        pipe.step(k * 20.0)
        if k % 8 == 0:
            samples.append(meter.sample(k * 20.0, host.read()))
    return pipe, meter, samples


@pytest.fixture(scope="module")
def host() -> HostMeter:
    return HostMeter()


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("knobs", [{}, {"fec_enabled": True, "fec_percentage": 50, "max_retransmits": 3},
                                   {"packet_size": 160, "fec_enabled": False}])
def test_packet_sizes_and_rates_share_one_population(host, seed, knobs):
    _, _, samples = meter_run(15, ROUGH, knobs, seed=seed, host=host)
    windows_with_packets = 0
    for s in samples:
        assert out_of_bounds(s) == [], {k: s.get(k) for k in out_of_bounds(s)}
        throughput, goodput = s["packet.throughput_kbps"], s["packet.goodput_kbps"]
        assert goodput <= throughput + 1e-9
        if s["packet.avg_size"] is None:  # nothing arrived in this window: no size, no share
            assert throughput == 0 and s["packet.efficiency"] is None and s["packet.max_size"] is None
            continue
        windows_with_packets += 1
        assert s["packet.min_size"] <= s["packet.avg_size"] <= s["packet.max_size"]
        assert s["packet.efficiency"] == pytest.approx(goodput / throughput)
        assert s["packet.efficiency"] == pytest.approx(1 - s["packet.overhead_percent"] / 100)
    assert windows_with_packets > 0.8 * len(samples)


def test_parity_packets_are_inside_the_size_range(host):
    """FEC parity is larger than media (its FEC header); with FEC on, max_size is a parity packet, and no average exceeds it."""
    cond = dict(delay_ms=20.0, jitter_ms=2.0, loss_rate=0.0, duplicate_rate=0.0, reorder_rate=0.0,
                corruption_rate=0.0, drift="none")
    _, _, samples = meter_run(6, cond, {"fec_enabled": True, "fec_percentage": 50, "packet_size": 320}, host=host)
    for s in samples[5:]:
        assert s["packet.min_size"] == 320 + 40
        assert s["packet.max_size"] == 320 + 40 + 14
        assert 360 < s["packet.avg_size"] < 374


def test_a_window_without_packets_reports_null_not_zero(host):
    _, _, samples = meter_run(0.16, dict(delay_ms=250.0, jitter_ms=0.0, drift="none"), host=host)
    again = samples[0]  # 160 ms on a 250 ms path: nothing has arrived yet
    for key in ("packet.avg_size", "packet.max_size", "packet.min_size", "packet.overhead_percent", "packet.efficiency"):
        assert again[key] is None, key
    assert again["packet.throughput_kbps"] == 0.0 and again["packet.goodput_kbps"] == 0.0
    assert out_of_bounds(again) == []


def test_pesq_is_null_until_the_first_score(host):
    pipe, meter, samples = meter_run(2, {}, host=host)
    assert all(s["audioQuality.pesq_score"] is None for s in samples)
    meter.pesq = 3.7
    assert meter.sample(pipe.frames * 20.0, host.read())["audioQuality.pesq_score"] == 3.7


def test_nullable_metrics_accept_none_and_the_others_do_not():
    nullable = {m.key for m in METRICS if m.nullable}
    assert {"audioQuality.pesq_score", "performance.cache_hits", "packet.efficiency",
            "buffer.last_overflow_time"} <= nullable
    for m in METRICS:
        assert m.within_bounds(None) == (m.key in nullable), m.key
        assert m.to_json()["nullable"] == (m.key in nullable)
    assert not METRICS_BY_KEY["buffer.last_overflow_time"].within_bounds(True)


def test_cache_hit_ratio_is_cumulative_and_null_without_lookups(host):
    pipe, meter, samples = meter_run(1, {}, host=host)
    hits, misses = pipe.chain.cache_stats()
    assert misses > 0 and samples[-1]["performance.cache_hits"] == pytest.approx(hits / (hits + misses))
    base = dict(pipe.knobs)
    pipe.apply({**base, "eq_band_1_gain": 3})  # a new design: a miss
    pipe.apply(base)                            # back to the first design: a hit
    steady = []
    for _ in range(3):  # steady state: no knob change, no new lookups, the ratio stays
        for _ in range(8):
            pipe.step((pipe.frames + 1) * 20.0)
        steady.append(meter.sample(pipe.frames * 20.0, host.read())["performance.cache_hits"])
    h2, m2 = pipe.chain.cache_stats()
    assert h2 > hits and steady == [pytest.approx(h2 / (h2 + m2))] * 3 and steady[0] > 0
    pipe.chain.cache_stats = lambda: (0, 0)  # a chain that never looked a design up
    pipe.step((pipe.frames + 1) * 20.0)
    assert meter.sample(pipe.frames * 20.0, host.read())["performance.cache_hits"] is None


# -- voice activity in noise --------------------------------------------------------------------


def truth(clean_frames: np.ndarray) -> np.ndarray:
    """The source's own activity: a frame is speech when most of its clean samples belong to a segment (pauses are exact zeros)."""
    return (np.abs(clean_frames) > 1e-6).mean(axis=1) > 0.5


def source_windows(noise_dbfs: float, seed: int, windows: int) -> list[tuple[np.ndarray, np.ndarray]]:
    src = SimCapture(SimConditions(noise_dbfs=noise_dbfs, echo_gain_db=-120.0), seed)
    out = []
    for _ in range(windows):
        frames = [src.next_frame() for _ in range(8)]
        out.append((np.concatenate([f[0] for f in frames]), np.array([f[1] for f in frames])))
    return out


@pytest.mark.parametrize("seed", [3, 5])
@pytest.mark.parametrize("noise_dbfs", [-70.0, -50.0, -40.0, -32.0])  # speech at -26 dBFS: SNR 44, 24, 14, 6 dB
def test_voice_activity_follows_the_source_in_noise(noise_dbfs, seed):
    meter = AudioMeter()
    var, true_var, noise, snr, speech_power = [], [], [], [], []
    for capture, clean in source_windows(noise_dbfs, seed, 300):
        m = meter.measure(capture, clean.ravel())
        var.append(m["voice_activity_ratio"])
        active = truth(clean)
        true_var.append(active.mean())
        speech_power.extend(np.mean(clean[active] ** 2, axis=1))
        noise.append(m["noise_level"])
        snr.append(m["snr"])
    settled = slice(25, None)  # the noise tracker's first seconds
    assert abs(np.mean(var[settled]) - np.mean(true_var[settled])) < 0.08
    assert np.mean(np.abs(np.subtract(var, true_var))[settled]) < 0.12
    assert np.median(noise[settled]) == pytest.approx(noise_dbfs, abs=2.0)
    # Against the source's own speech frames: their clean power over the room noise's.
    true_snr = 10 * np.log10(np.mean(speech_power)) - noise_dbfs
    if true_snr < 40:  # above that the -120 dBFS-scale details of a near-silent room dominate
        assert np.median(snr[settled]) == pytest.approx(true_snr, abs=3.0)


@pytest.mark.parametrize("nr_enabled", [False, True], ids=["nr_off", "nr_on"])
def test_voice_activity_and_noise_level_after_the_chain_on_a_noisy_station(host, nr_enabled):
    """-32 dBFS room noise, -26 dBFS talker (AGC off: see agent/measure/vad.py on AGC pumping).

    NR off, the noise level reads the room's -32 dBFS; NR on (default `high`), it reads the
    suppressed output, far below, and the voice activity still follows the talker."""
    cond = dict(noise_dbfs=-32.0, echo_gain_db=-120.0, loss_rate=0.0, duplicate_rate=0.0, reorder_rate=0.0,
                corruption_rate=0.0, drift="none")
    pipe = ExtensionPipeline("3333", SimConditions(**cond), 7,
                             {**defaults(), "agc_enabled": False, "nr_enabled": nr_enabled}, lambda: DspChain(seed=7))
    meter = PointMeter(pipe, epoch=time.time())
    var, true_var, noise, level = [], [], [], []
    for k in range(1, 40 * 50 + 1):
        pipe.step(k * 20.0)
        if k % 8 == 0:
            ref = np.array(pipe._ref_frames)  # the aligned clean reference of this window's output frames
            s = meter.sample(k * 20.0, host.read())
            var.append(s["audioQuality.voice_activity_ratio"])
            true_var.append(truth(ref).mean())
            noise.append(s["audioQuality.noise_level"])
            level.append(s["audioQuality.level_rms"])
    settled = slice(25, None)
    assert abs(np.mean(var[settled]) - np.mean(true_var[settled])) < 0.08
    if nr_enabled:
        assert np.median(noise[settled]) < -32.0 - 18.0  # at least the `high` gain floor under the room
    else:
        assert np.median(noise[settled]) == pytest.approx(-32.0, abs=2.0)
    speechy = [n < lv - 3 for n, lv, v in zip(noise[settled], level[settled], var[settled]) if v > 0.5]
    assert np.mean(speechy) > 0.8  # while someone talks, the noise reads below the level


@pytest.mark.parametrize("f0, second, third", [(200.0, 0.1, 0.0), (130.0, 0.05, 0.02), (310.0, 0.0, 0.0)])
def test_thd_of_a_voiced_run_follows_its_harmonics(f0, second, third):
    """THD-R = sqrt(harmonic power / total power) of a periodic run: 0.0995 for a -20 dB second harmonic."""
    t = np.arange(320 * 8) / 16000
    x = 0.3 * (np.sin(2 * np.pi * f0 * t) + second * np.sin(4 * np.pi * f0 * t) + third * np.sin(6 * np.pi * f0 * t))
    meter = AudioMeter()
    meter._update_thd(x.reshape(-1, 320), np.ones(8, dtype=bool), np.zeros(8))
    expected = np.sqrt((second ** 2 + third ** 2) / (1 + second ** 2 + third ** 2))
    assert meter.thd == pytest.approx(expected, abs=0.003)


def test_burst_ratio_counts_transitions_between_played_and_concealed_slots():
    from collections import deque

    from agent.measure import emodel
    slots = deque(([True] * 8 + [False] * 2) * 50, maxlen=500)
    # 499 pairs: 400 start played (50 of them go to concealed), 99 start concealed (49 go back).
    assert emodel.burst_ratio(slots) == pytest.approx(1.0 / (50 / 400 + 49 / 99), rel=1e-12)
    assert emodel.burst_ratio([True, False] * 10) == pytest.approx(1.0 / (10 / 10 + 9 / 9))  # random-like: 0.5
    assert emodel.burst_ratio([True] * 30) == 1.0 and emodel.burst_ratio([]) == 1.0


def test_cpu_usage_resolves_a_few_milliseconds_per_window():
    """psutil's tick-based CPU times would read 0% or 20% here; the window needs better than 10 ms."""
    from agent.measure.host import HostMeter

    meter = HostMeter()
    errors = []
    for _ in range(8):
        meter.read()
        wall0, cpu0 = time.monotonic(), time.process_time()
        while time.process_time() - cpu0 < 0.004:
            pass
        time.sleep(0.03)
        expected = (time.process_time() - cpu0) / (time.monotonic() - wall0) * 100
        errors.append(abs(meter.read()["cpu_usage"] - expected))
    meter.close()
    assert sorted(errors)[len(errors) // 2] < 3.0, errors


@pytest.mark.parametrize("samples", [0, 1, 319])
def test_an_audio_window_shorter_than_a_frame_is_refused_by_name(samples):
    from agent.measure.audio import AudioMeter

    with pytest.raises(ValueError, match="at least one 320-sample frame"):
        AudioMeter().measure(np.zeros(samples), np.zeros(samples))


def test_sinad_falls_when_the_output_drops_out_while_the_talker_speaks():
    rng = np.random.default_rng(5)
    ref = rng.normal(0.0, 0.05, 320 * 8)
    meter = AudioMeter()
    for _ in range(20):   # a faithful copy at half gain with a little noise: about 26 dB
        steady = meter.measure(0.5 * ref + rng.normal(0.0, 0.00125, len(ref)), ref)["sinad"]
    assert 20.0 < steady < 32.0
    for _ in range(10):   # the output falls silent: the least-squares gain alone would read this as perfect
        dropped = meter.measure(np.zeros(len(ref)), ref)["sinad"]
    assert dropped < steady - 20.0
    for _ in range(60):   # the audio comes back: so does the figure (the error of the gap decays)
        back = meter.measure(0.5 * ref + rng.normal(0.0, 0.00125, len(ref)), ref)["sinad"]
    assert back > steady - 1.0

"""The agent's simulator: speech-like source, seeded network path, sender FEC and packetisation."""
from __future__ import annotations

import numpy as np
import pytest

from agent import codec
from agent.fec import xor_recover
from agent.sim.capture import SimCapture
from agent.sim.conditions import SimConditions
from agent.sim.network import SimNetwork
from agent.sim.pacer import MAX_QUEUE_MS
from agent.sim.packet import media_packet, parity_packet
from agent.sim.sender import Sender
from shared.config import ConfigError
from shared.knobs import defaults

QUIET = dict(drift="none", duplicate_rate=0.0, reorder_rate=0.0, corruption_rate=0.0, loss_rate=0.0)


def frames(seed: int, n: int = 500, **cond) -> tuple[np.ndarray, np.ndarray, np.ndarray, SimCapture]:
    src = SimCapture(SimConditions(**cond), seed)
    got = [src.next_frame() for _ in range(n)]
    return (*(np.concatenate([g[i] for g in got]) for i in range(3)), src)  # type: ignore[return-value]


def test_speech_is_not_a_sine_it_has_pauses_harmonics_and_varying_pitch():
    capture, clean, far, src = frames(3, 750)  # 15 s
    frame_rms = np.sqrt(np.mean(clean.reshape(-1, 320) ** 2, axis=1))
    paused = np.mean(frame_rms < 1e-4)
    assert 0.1 < paused < 0.6, "phrases separated by pauses"
    # Spectral flatness of voiced audio is far from a pure tone's (~0) and from white noise's (~1).
    spec = np.abs(np.fft.rfft(clean[:16000 * 5])) ** 2 + 1e-20
    flatness = np.exp(np.mean(np.log(spec))) / np.mean(spec)
    assert 1e-6 < flatness < 0.5
    # Energy spread over many bands (formants + fricatives), not one line.
    top = np.sort(spec)[::-1]
    assert top[:10].sum() / spec.sum() < 0.2
    f0 = np.array(src.near.voiced_f0)
    assert len(f0) > 20 and np.std(f0) / np.mean(f0) > 0.05, "pitch varies across syllables"
    # Unvoiced (high zero-crossing) and voiced (low) frames both occur.
    active = clean.reshape(-1, 320)[frame_rms > 1e-3]
    zcr = np.mean(np.diff(np.signbit(active), axis=1), axis=1)
    assert zcr.min() < 0.1 and zcr.max() > 0.3


def test_source_is_reproducible_by_seed_and_mixes_noise_and_echo():
    a, clean_a, far_a, _ = frames(11, 100)
    b, clean_b, far_b, _ = frames(11, 100)
    c, *_ = frames(12, 100)
    assert np.array_equal(a, b) and np.array_equal(far_a, far_b)
    assert not np.allclose(a, c)
    residual = a - clean_a
    assert 20 * np.log10(np.sqrt(np.mean(residual ** 2))) > -60  # noise (-60) plus echo leakage
    quiet, clean_q, _, _ = frames(11, 100, noise_dbfs=-120.0, echo_gain_db=-120.0)
    assert np.sqrt(np.mean((quiet - clean_q) ** 2)) < 1e-4
    # Echo: the capture minus the clean talker correlates with the far end delayed by echo_delay_ms.
    _, clean_e, far_e, _ = frames(11, 200, noise_dbfs=-120.0, echo_gain_db=-6.0, echo_delay_ms=40.0)
    echo_cap, *_ = frames(11, 200, noise_dbfs=-120.0, echo_gain_db=-6.0, echo_delay_ms=40.0)
    echo = echo_cap - clean_e
    xc = np.correlate(echo[:32000], far_e[:32000], "full")[31999:31999 + 2000]  # lags 0..2000 samples
    assert abs(int(np.argmax(xc)) - 640) < 40


def test_mulaw_round_trip_is_close_and_one_byte_per_sample():
    x = np.linspace(-0.9, 0.9, 1000)
    payload = codec.encode(x)
    assert len(payload) == 1000
    y = codec.decode(payload)
    assert 10 * np.log10(np.mean(x ** 2) / np.mean((x - y) ** 2)) > 30


def _run_network(n: int, seed: int = 5, **cond) -> tuple[SimNetwork, list[int], int]:
    net = SimNetwork(SimConditions(**{**QUIET, **cond}), np.random.default_rng(seed))
    payload = bytes(320)
    for i in range(n):
        net.send(media_packet(i, i * 320, payload, i * 20.0), i * 20.0, 20.0)
    arrived = [p.seq for p in net.deliver(float("inf"))]
    return net, arrived, n


def test_network_loss_and_burst_length_match_the_configuration():
    net, arrived, n = _run_network(100_000, loss_rate=0.05, burst_length=3.0)
    lost = np.ones(n, dtype=bool)
    lost[_unwrap(arrived)] = False
    assert abs(lost.mean() - 0.05) < 0.006
    edges = np.diff(np.concatenate([[0], lost.astype(int), [0]]))
    bursts = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    assert abs(bursts.mean() - 3.0) < 0.3


def _unwrap(seqs: list[int]) -> np.ndarray:
    out, base, last = [], 0, None
    for s in seqs:
        if last is not None and s < last - 30000:
            base += 65536
        out.append(base + s)
        last = s
    return np.array(out)


def test_network_duplicates_reordering_and_jitter_match_the_configuration():
    net, arrived, n = _run_network(50_000, duplicate_rate=0.02, reorder_rate=0.03, jitter_ms=5.0, delay_ms=30.0)
    assert abs((len(arrived) - n) / n - 0.02) < 0.004
    ext = _unwrap(arrived)
    below = np.sum(ext[1:] < np.maximum.accumulate(ext)[:-1])
    assert 0.015 < below / n < 0.06  # reordered packets (and some duplicates) arrive below the highest
    net2, _, _ = _run_network(2000, jitter_ms=5.0, delay_ms=30.0)
    assert net2.dropped == 0 and net2.reordered == 0


def test_same_seed_same_network_events():
    assert _run_network(5000, seed=9, loss_rate=0.1, reorder_rate=0.05)[1] == _run_network(5000, seed=9, loss_rate=0.1, reorder_rate=0.05)[1]
    assert _run_network(5000, seed=9, loss_rate=0.1)[1] != _run_network(5000, seed=10, loss_rate=0.1)[1]


def test_drift_moves_delay_and_loss_over_time():
    net = SimNetwork(SimConditions(drift="sine", drift_period_s=60, drift_delay_ms=50, drift_loss_rate=0.05,
                                   delay_ms=100, loss_rate=0.06), np.random.default_rng(1))
    peak, trough = net.state(15_000), net.state(45_000)
    assert peak.delay_ms == pytest.approx(150) and trough.delay_ms == pytest.approx(50)
    assert peak.loss_rate == pytest.approx(0.11) and trough.loss_rate == pytest.approx(0.01)
    walk = SimNetwork(SimConditions(drift="walk", drift_period_s=60, drift_delay_ms=50), np.random.default_rng(1))
    delays = [walk.state(t * 1000.0).delay_ms for t in range(600)]
    assert max(delays) - min(delays) > 20 and all(0 <= d <= 150 for d in delays)


def test_xor_parity_recovers_one_missing_member():
    members = [media_packet(i, i * 320, bytes(np.random.default_rng(i).integers(0, 256, 320, dtype=np.uint8)), 0.0)
               for i in range(5)]
    parity = parity_packet(0, members)
    assert xor_recover(parity.payload, [m.payload for m in members[:2] + members[3:]]) == members[2].payload


class _Recorder:
    """A network stand-in that records what the sender emits and when."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, object]] = []

    def send(self, pkt, t, interval) -> None:
        self.sent.append((t, pkt))


def _sender(**knobs) -> tuple[Sender, _Recorder]:
    rec = _Recorder()
    return Sender(rec, {**defaults(), **knobs}), rec  # type: ignore[arg-type]


def test_packet_size_sets_packet_rate_and_fec_percentage_sets_parity_share():
    for size, per_second in ((160, 100), (320, 50), (640, 25)):
        sender, rec = _sender(packet_size=size, fec_enabled=False)
        for k in range(50):
            sender.push(bytes(320), k * 320, (k + 1) * 20.0)
        assert sender.media_sent == per_second and sender.parity_sent == 0
    sender, rec = _sender(fec_enabled=True, fec_percentage=25, pacing_rate=4.0)
    for k in range(100):
        sender.push(bytes(320), k * 320, (k + 1) * 20.0)
    assert sender.media_sent == 100 and sender.parity_sent == 25


def test_pacing_spreads_bursts_beyond_burst_size():
    sender, rec = _sender(packet_size=80, burst_size=2, pacing_rate=1.0, fec_enabled=False)
    sender.push(bytes(320 * 5), 0, 100.0)  # 20 packets of 5 ms ready at once
    times = [t for t, _ in rec.sent]
    assert times[:2] == [100.0, 100.0]
    assert np.allclose(np.diff(times[2:]), 5.0)  # the rest at the media rate


def test_bad_sim_tables_are_refused_with_the_key_named():
    with pytest.raises(ConfigError, match="loss_rate"):
        SimConditions.from_table({"loss_rate": 1.5}, "sim.3333")
    with pytest.raises(ConfigError, match="unknown keys: lossrate"):
        SimConditions.from_table({"lossrate": 0.1}, "sim.3333")
    with pytest.raises(ConfigError, match="drift"):
        SimConditions.from_table({"drift": "wobble"}, "sim.3333")


def test_next_payload_is_the_capture_mu_law_encoded() -> None:
    cond = SimConditions()
    framed, encoded = SimCapture(cond, 3), SimCapture(cond, 3)
    for _ in range(120):  # across a rendering block boundary
        capture, clean, far = framed.next_frame()
        payload, clean2, far2 = encoded.next_payload()
        assert payload == codec.encode(capture)
        np.testing.assert_array_equal(clean, clean2)
        np.testing.assert_array_equal(far, far2)


def _paced(**knobs) -> tuple[Sender, _Recorder, list[float]]:
    """Ten seconds of 20 ms frames through a sender; the pacer's queue after every frame."""
    sender, rec = _sender(**knobs)
    queue = []
    for k in range(500):
        sender.push(bytes(320), k * 320, (k + 1) * 20.0)
        queue.append(sender.pacer.queue_ms((k + 1) * 20.0))
    return sender, rec, queue


def test_pacing_rate_multiplies_everything_sent_so_fec_does_not_queue():
    """50 % FEC is 1.5 packets per media packet: paced at 1.0 x that, with no burst allowance, nothing piles up."""
    sender, rec, queue = _paced(fec_enabled=True, fec_percentage=50, pacing_rate=1.0, burst_size=1)
    assert sender.parity_sent == 250 and sender.pacer_drops == 0 and len(rec.sent) == 750
    assert max(queue) <= 20.0  # at most one frame's packets waiting, and no growth
    times = [t for t, _ in rec.sent]
    assert np.all(np.diff(times) >= 20.0 / 1.5 - 1e-9)  # spaced at the outgoing rate, not the media rate


def test_pacer_queue_is_bounded_and_what_overflows_is_dropped_and_counted():
    sender, rec, queue = _paced(fec_enabled=True, fec_percentage=50, pacing_rate=0.5, burst_size=1)
    assert max(queue) <= MAX_QUEUE_MS and queue[-1] > 0.5 * MAX_QUEUE_MS
    assert sender.pacer_drops > 0
    assert len(rec.sent) + sender.pacer_drops == sender.media_sent + sender.parity_sent
    # Paced at half of what is offered: half of the 750 packets is dropped (less what the full queue holds).
    assert sender.pacer_drops == pytest.approx(750 / 2, rel=0.05)

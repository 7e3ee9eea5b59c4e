"""Every buffer and network knob the pipeline implements changes what the pipeline measures.

The DSP knobs have their own catalog-wide test (tests/test_dsp_chain.py); this one covers the
jitter buffer, the sender and the network path. Each knob is moved from its default on the
same seeded, stressed path; a knob whose move leaves every deterministic measurement
unchanged does nothing, and fails here.
"""
from __future__ import annotations

from typing import Any

import pytest

from agent.dsp import DspChain
from agent.measure.host import HostMeter
from agent.measure.sample import PointMeter
from agent.pipeline import ExtensionPipeline
from agent.sim.conditions import SimConditions
from shared.knobs import KNOBS, PIPELINE, defaults

# A path where every mechanism is exercised: jitter and stalls (buffering), bursty loss
# (FEC, retransmission), a bottleneck link with a short queue (pacing, burst size).
STRESSED = dict(delay_ms=40.0, jitter_ms=25.0, loss_rate=0.04, burst_length=2.0, reorder_rate=0.02,
                duplicate_rate=0.01, corruption_rate=0.0, bandwidth_kbps=190.0, queue_ms=60.0, drift="none",
                noise_dbfs=-60.0, echo_gain_db=-120.0)

# Measurements that depend only on the seeded audio and network, not on this host's speed
# (processing time, and so end-to-end latency, are measured with a real clock).
DETERMINISTIC = [
    "buffer.overflow_count", "buffer.underflow_count", "buffer.dropped_frames", "buffer.total_processed_bytes",
    "buffer.avg_level", "buffer.max_size", "latency.buffer", "latency.network", "latency.codec", "latency.jitter",
    "packet.loss_count", "packet.received_count", "packet.sent_count", "packet.corrected_count",
    "packet.duplicate_count", "packet.out_of_order_count", "packet.throughput_kbps", "packet.avg_size",
    "audioQuality.level_rms",
]

# knob -> (value to move it to, other knobs that put it in play, path changes that put it in play)
MOVES: dict[str, tuple[Any, dict[str, Any], dict[str, Any]]] = {
    "buffer_size": (40, {"min_buffer_size": 16, "adaptive_buffering": False}, {}),
    "prefetch_ms": (400, {}, {}),
    "jitter_buffer_depth": (40, {"adaptive_buffering": False}, {}),
    "playout_delay": (150, {}, {}),
    "adaptive_buffering": (False, {}, {}),
    "buffer_overflow_policy": ("drop_newest", {"buffer_size": 40, "min_buffer_size": 16,
                                               "adaptive_buffering": False}, {}),
    "max_buffer_size": (64, {"buffer_size": 32, "min_buffer_size": 16, "buffer_overflow_policy": "grow",
                             "adaptive_buffering": False}, {}),
    # The adaptive capacity floor is 1.25 x what the delay needs (~300 ms here): a larger minimum binds.
    "min_buffer_size": (450, {}, {}),
    "packet_size": (640, {}, {}),
    "fec_enabled": (False, {}, {}),
    "fec_percentage": (50, {}, {}),
    # The first request goes out when the gap is seen; the timeout bounds the repeats, which
    # matter when retransmissions are lost too.
    "retransmit_timeout": (10, {"jitter_buffer_depth": 400, "adaptive_buffering": False, "fec_enabled": False},
                           {"loss_rate": 0.25, "burst_length": 1.0}),
    "max_retransmits": (0, {}, {}),
    # Pacing acts once the token bucket is empty: with a bucket of one packet, every parity packet.
    "pacing_rate": (4.0, {"burst_size": 1}, {}),
    "burst_size": (1, {}, {}),
}

PIPELINE_NETWORK_KNOBS = sorted(k.name for k in KNOBS
                                if k.category in ("buffer", "network") and k.applied_by == PIPELINE)


def measure(knobs: dict[str, Any], path: dict[str, Any] | None = None, seconds: float = 12.0,
            seed: int = 11) -> list[tuple]:
    pipe = ExtensionPipeline("3333", SimConditions(**{**STRESSED, **(path or {})}), seed, {**defaults(), **knobs},
                             lambda: DspChain(seed=seed))
    meter = PointMeter(pipe, epoch=0.0)
    host = HostMeter()
    rows = []
    for k in range(1, int(seconds * 50) + 1):
        pipe.step(k * 20.0)
        if k % 8 == 0:
            sample = meter.sample(k * 20.0, host.read())
            rows.append(tuple(sample[key] for key in DETERMINISTIC))
    return rows


def test_every_pipeline_buffer_and_network_knob_has_a_move():
    assert sorted(MOVES) == PIPELINE_NETWORK_KNOBS


def test_the_measurements_compared_are_deterministic():
    assert measure({}, seconds=4) == measure({}, seconds=4)


@pytest.mark.parametrize("knob", PIPELINE_NETWORK_KNOBS)
def test_moving_the_knob_changes_what_is_measured(knob):
    value, context, path = MOVES[knob]
    assert context.get(knob, defaults()[knob]) != value
    before = measure(context, path)
    after = measure({**context, knob: value}, path)
    changed = [key for i, key in enumerate(DETERMINISTIC) if [r[i] for r in before] != [r[i] for r in after]]
    assert changed, f"{knob}={value!r} changed no measurement"

"""The simulated sender's pacer on a demo station: paced at a multiple of everything sent, bounded, and no knob setting outlives itself.

Before the pacer paced everything it sends, fec_percentage 50 (1.5 packets per media packet)
outran pacing_rate 1.25 x the media rate: the queue grew to a second within seconds and took
tens of seconds to drain after FEC went back to 20 %. Everything here runs on the frame clock
of a seeded pipeline: no wall-clock waits, the same packets on every run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from agent.dsp import DspChain
from agent.measure.host import HostMeter
from agent.measure.sample import PointMeter
from agent.pipeline import ExtensionPipeline
from agent.sim.conditions import SimConditions
from agent.sim.pacer import MAX_QUEUE_MS
from shared.knobs import defaults
from tpmon.demo_profiles import station_profile

STATION_1 = station_profile(1).conditions("3333")  # a healthy demo station: ~136 ms end to end


@dataclass
class Trace:
    """Per 0.5 s sample: seconds, end-to-end latency; per frame: the pacer's queue."""
    at_s: list[float] = field(default_factory=list)
    e2e_ms: list[float] = field(default_factory=list)
    queue_ms: list[float] = field(default_factory=list)
    loss_count: list[int] = field(default_factory=list)

    def e2e(self, start_s: float, end_s: float) -> np.ndarray:
        return np.array([e for t, e in zip(self.at_s, self.e2e_ms) if start_s < t <= end_s])


def run(phases: list[tuple[float, dict[str, Any]]], seed: int = 3) -> tuple[ExtensionPipeline, Trace]:
    """Each phase: (seconds, knob changes from the defaults applied at its start, as a station applies a set)."""
    pipe = ExtensionPipeline("3333", SimConditions(**STATION_1), seed, defaults(), lambda: DspChain(seed=seed))
    meter, host, trace, k = PointMeter(pipe, epoch=0.0), HostMeter(), Trace(), 0
    for seconds, changes in phases:
        pipe.apply({**defaults(), **changes})
        for _ in range(int(seconds * 50)):
            k += 1
            pipe.step(k * 20.0)
            trace.queue_ms.append(pipe.source.send_figures().pacer_queue_ms)
            if k % 25 == 0:
                sample = meter.sample(k * 20.0, host.read())
                trace.at_s.append(k / 50)
                trace.e2e_ms.append(sample["latency.end_to_end"])
                trace.loss_count.append(sample["packet.loss_count"])
    return pipe, trace


def test_fec_at_50_percent_is_paced_with_the_media_and_builds_no_queue():
    pipe, trace = run([(10, {}), (20, {"fec_percentage": 50}), (10, {})])
    baseline = trace.e2e(2, 10).mean()
    assert 100 < baseline < 180
    sent = pipe.source.send_figures()
    assert sent.pacer_drops == 0 and max(trace.queue_ms) <= MAX_QUEUE_MS
    assert sent.parity_sent > 0.2 * sent.media_sent + 0.25 * 20 * 50  # 50 % for 20 of the 40 s really went out
    assert trace.e2e(11, 30).max() < baseline + 15  # parity takes pacing capacity, not latency
    assert trace.e2e(33, 40).max() < baseline + 15


def test_an_overloaded_pacer_stays_bounded_drops_and_counts_and_recovers_in_seconds():
    """pacing_rate 0.5 under 50 % FEC asks for 1.5 packets per media packet at 0.75 of that rate."""
    pipe, trace = run([(10, {}), (20, {"fec_percentage": 50, "pacing_rate": 0.5}), (15, {})])
    baseline = trace.e2e(2, 10).mean()
    overload = trace.queue_ms[10 * 50:30 * 50]
    assert max(trace.queue_ms) <= MAX_QUEUE_MS  # never above the bound, whatever the knobs ask
    assert np.mean(overload[100:]) > 0.5 * MAX_QUEUE_MS  # and the queue did fill
    src = pipe.source
    sent = src.send_figures()
    assert sent.pacer_drops > 0
    # Every packet the sender produced either reached the path or is counted as a pacer drop.
    assert src.network.sent + sent.pacer_drops == sent.media_sent + sent.parity_sent + sent.retransmits_sent
    assert trace.loss_count[-1] > trace.loss_count[19]  # the receiver saw the drops as loss
    assert trace.e2e(12, 30).max() < baseline + MAX_QUEUE_MS + 50  # the wait is bounded too
    # Back to the defaults: within 3 s of simulated time the queue is empty and latency is back.
    back = 30 * 50
    assert max(trace.queue_ms[back + 3 * 50:]) < 20.0
    assert trace.e2e(33, 45).max() < baseline + 15
    assert trace.e2e(33, 45).mean() == pytest.approx(baseline, abs=5)

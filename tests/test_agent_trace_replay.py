"""What-if replay on the agent: the trace, replay fidelity against live, knob effects, send knobs, the worker."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from agent.measure.sample import PointMeter
from agent.pipeline import FRAME_MS, ExtensionPipeline
from agent.replay import ReplayJob, ReplayWorker, TracePacketSource, default_chain, replay_one
from agent.sim.conditions import SimConditions
from agent.trace import TraceSnapshot
from shared.knobs import defaults
from shared.metrics import METRICS

IDX = {m.key: i for i, m in enumerate(METRICS)}
HOST = {"cpu_usage": 5.0, "memory_usage": 10.0, "thread_count": 4, "handle_count": 10, "context_switches": 0,
        "page_faults": 0, "io_operations": 0, "gc_collections": 0, "gc_pause_ms": 0.0, "cache_hits": 0.5,
        "queue_depth": 0}
JITTERY = SimConditions(jitter_ms=60.0, reorder_rate=0.05, delay_ms=70.0)        # the demo's station 7
LOSSY = SimConditions(loss_rate=0.08, burst_length=4.0)                            # the demo's station 4
SEED = 11


def run_live(cond: SimConditions, seconds: float = 40.0, trace_s: float = 30.0) -> tuple[ExtensionPipeline, np.ndarray]:
    """A live pipeline with a trace; the windows of 1 s measured live over the traced span (after 3 s warm-up)."""
    pipe = ExtensionPipeline("3333", cond, SEED, defaults(), lambda: default_chain(SEED), trace_ms=trace_s * 1000)
    meter = PointMeter(pipe, 0.0)
    now, windows = 0.0, []
    start_measuring = (seconds - trace_s) * 1000 + 3000
    while now < seconds * 1000:
        now += FRAME_MS
        pipe.step(now)
        if round(now) % 1000 == 0:
            values = meter.values(meter.sample(now, HOST))
            if now > start_measuring:
                windows.append(values)
    return pipe, _matrix(windows)


def snapshot(pipe: ExtensionPipeline) -> TraceSnapshot:
    assert pipe.recording is not None
    return pipe.recording.snapshot(pipe.knobs, pipe.conditions(0.0), {"conditions": pipe.cond.to_json(), "seed": SEED})


def replayed(trace: TraceSnapshot, knobs: dict[str, Any]) -> tuple[np.ndarray, bool]:
    job = ReplayJob("t", "3333", trace, (knobs,), SEED, 0.0, HOST)
    result = replay_one(job, knobs, default_chain)
    return _matrix(result["windows"]), result["send_replayed"]


def _matrix(rows: list[list[Any]]) -> np.ndarray:
    return np.array([[np.nan if v is None else float(v) for v in row] for row in rows])


def rate(w: np.ndarray, key: str) -> float:
    return float(np.nanmean(np.diff(w[:, IDX[key]])))


def mean(w: np.ndarray, key: str) -> float:
    return float(np.nanmean(w[:, IDX[key]]))


@pytest.fixture(scope="module")
def jittery() -> tuple[ExtensionPipeline, np.ndarray]:
    return run_live(JITTERY)


def test_the_trace_is_bounded_and_replays_the_same_arrivals(jittery) -> None:
    pipe, _ = jittery
    trace = snapshot(pipe)
    assert trace.span_ms == pytest.approx(30_000, abs=40)
    assert all(trace.start_ms < a.arrival_ms <= trace.end_ms for a in trace.arrivals)
    assert trace.clean is not None and len(trace.clean) >= 30 * 16000
    source = TracePacketSource(trace)
    got = []
    t = trace.start_ms
    while t < trace.end_ms:
        t += FRAME_MS
        got += source.arrivals(t)
    assert got == list(trace.arrivals)


def test_replay_under_the_traced_knobs_reproduces_live(jittery) -> None:
    pipe, live = jittery
    replay, send_replayed = replayed(snapshot(pipe), pipe.knobs)
    assert send_replayed and len(replay) >= 25
    # Tolerances: the same packets through the same code; what differs is the replay's fresh start.
    assert mean(replay, "latency.end_to_end") == pytest.approx(mean(live, "latency.end_to_end"), rel=0.03)
    assert rate(replay, "buffer.underflow_count") == pytest.approx(rate(live, "buffer.underflow_count"), rel=0.1,
                                                                    abs=0.1)
    assert mean(replay, "audioQuality.mos_score") == pytest.approx(mean(live, "audioQuality.mos_score"), abs=0.15)
    assert rate(replay, "packet.loss_count") == pytest.approx(rate(live, "packet.loss_count"), abs=0.1)


def test_a_deeper_fixed_jitter_buffer_trades_latency_for_underflows(jittery) -> None:
    pipe, _ = jittery
    trace = snapshot(pipe)
    base, _ = replayed(trace, pipe.knobs)
    deeper, _ = replayed(trace, {**pipe.knobs, "playout_delay": 200, "jitter_buffer_depth": 400,
                                 "adaptive_buffering": False})
    assert rate(deeper, "buffer.underflow_count") < 0.5 * rate(base, "buffer.underflow_count")
    assert mean(deeper, "audioQuality.mos_score") > mean(base, "audioQuality.mos_score")


def test_send_knobs_are_resimulated_with_the_simulator() -> None:
    pipe, _ = run_live(LOSSY, seconds=30.0, trace_s=25.0)
    trace = snapshot(pipe)
    none, resim_none = replayed(trace, {**pipe.knobs, "fec_enabled": False})
    much, resim_much = replayed(trace, {**pipe.knobs, "fec_percentage": 100})
    assert resim_none and resim_much
    assert rate(much, "packet.loss_count") < rate(none, "packet.loss_count")
    assert rate(much, "packet.corrected_count") > rate(none, "packet.corrected_count")


def test_send_knobs_of_a_real_source_are_not_answered(jittery) -> None:
    pipe, _ = jittery
    real = snapshot(pipe)
    real = TraceSnapshot(real.arrivals, real.start_ms, real.end_ms, real.payload_format, real.capture_origin_ms,
                         real.knobs, real.conditions)   # no simulator: nothing to re-simulate
    _, send_replayed = replayed(real, {**pipe.knobs, "fec_percentage": 60})
    assert not send_replayed


@pytest.mark.slow
def test_the_worker_answers_refuses_when_busy_and_keeps_its_budget(jittery) -> None:
    pipe, _ = jittery
    trace = snapshot(pipe)
    worker = ReplayWorker(budget_s=60.0)
    try:
        job = ReplayJob("a", "3333", trace, (pipe.knobs, {**pipe.knobs, "playout_delay": 150}), SEED, 0.0, HOST)
        assert worker.submit(job)
        assert not worker.submit(job)                       # one at a time
        done = _wait(worker)
        assert done.ok and done.request_id == "a" and len(done.results) == 2 and done.cpu_s > 0
        assert all(len(r["windows"]) >= 20 for r in done.results)
        worker.budget_s = 0.05                              # far too little for a 30 s trace
        assert worker.submit(ReplayJob("b", "3333", trace, (pipe.knobs,), SEED, 0.0, HOST))
        late = _wait(worker)
        assert not late.ok and "budget exceeded" in late.error
    finally:
        worker.close()


def _wait(worker: ReplayWorker, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = worker.poll()
        if done is not None:
            return done
        time.sleep(0.02)
    raise AssertionError("the replay worker did not answer")

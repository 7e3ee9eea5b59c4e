"""What-if replay: the recorded trace of one extension through fresh pipelines, one per candidate knob set.

Each candidate gets a fresh Receiver, DSP chain and PointMeter (the same code as live), fed
by a `TracePacketSource` that delivers the traced arrivals at their recorded arrival times
and answers reference lookups from the trace; the frame clock is stepped 20 ms at a time as
fast as the CPU allows. The first `warmup_ms` (the jitter buffer fills, the AGC and echo
canceller settle) are measured but not returned; then a window of the 68 metrics every
`window_ms`, as a live SAMPLE would carry them.

Receive and DSP knobs are answered exactly by the trace. Send knobs change what would have
arrived: with the simulator, a candidate whose send knobs differ from the traced set is run
on a re-simulated far side instead (a fresh SimPacketSource with the point's conditions and
seed, starting at the trace's first frame: same talker and path model, the same drift phase;
its random draws follow the candidate's own packet sequence, so it is a statistically, not
sample-for-sample, paired run); from a real source they cannot be answered and the result
says `send_replayed: false`. Retransmission requests in a trace replay are not answered
anew: the traced retransmissions arrive when they arrived live.

`ReplayWorker` runs replays in a separate, lower-priority process with a time budget per
request, so the agent's 20 ms frame loop never waits for one.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from agent.pipeline import FRAME_MS, Chain, Pipeline
from agent.source import Arrival, SendFigures
from agent.trace import TraceSnapshot
from shared.knobs import KNOBS, Acts

log = logging.getLogger(__name__)
SEND_KNOBS: tuple[str, ...] = tuple(k.name for k in KNOBS if k.acts is Acts.SEND)
WARMUP_MS = 3000.0
WINDOW_MS = 1000.0


class TraceReferences:
    """Clean and far-end signals of the traced media (a ReferenceAudio); 0 outside the trace."""

    def __init__(self, start: int, clean: np.ndarray, far: np.ndarray) -> None:
        self.start, self._clean, self._far = start, clean.astype(np.float64), far.astype(np.float64)

    def clean(self, media: np.ndarray) -> np.ndarray:
        return self._lookup(self._clean, media)

    def far_end(self, media: np.ndarray) -> np.ndarray:
        return self._lookup(self._far, media)

    def _lookup(self, signal: np.ndarray, media: np.ndarray) -> np.ndarray:
        i = media - self.start
        valid = (i >= 0) & (i < len(signal)) & (media >= 0)
        return np.where(valid, signal[np.clip(i, 0, len(signal) - 1)], 0.0)


class TracePacketSource:
    """The traced arrivals as a PacketSource: each is delivered once the frame clock passes its arrival time."""

    def __init__(self, trace: TraceSnapshot) -> None:
        self.trace = trace
        self.payload_format = trace.payload_format
        self.capture_origin_ms = trace.capture_origin_ms
        self.references = (TraceReferences(trace.ref_start, trace.clean, trace.far)
                           if trace.clean is not None and trace.far is not None else None)
        self._next = 0

    def configure(self, knobs: Mapping[str, Any]) -> None:
        pass   # what arrived is fixed: send knobs cannot change it

    def arrivals(self, until_ms: float) -> list[Arrival]:
        out, arrivals, i = [], self.trace.arrivals, self._next
        while i < len(arrivals) and arrivals[i].arrival_ms <= until_ms:
            out.append(arrivals[i])
            i += 1
        self._next = i
        return out

    def request_retransmission(self, seq: int, now_ms: float) -> None:
        pass   # the traced retransmissions arrive as they did live

    def send_figures(self) -> SendFigures | None:
        return None

    def conditions(self, now_ms: float) -> dict[str, Any]:
        return dict(self.trace.conditions)


@dataclass(frozen=True)
class ReplayJob:
    request_id: str
    extension: str
    trace: TraceSnapshot
    candidates: tuple[dict[str, Any], ...]
    chain_seed: int
    epoch: float                       # wall time at frame-clock 0 (timestamps inside the metrics)
    host: dict[str, Any]               # the host figures of the last live sample (host metrics are not replayed)
    window_ms: float = WINDOW_MS
    warmup_ms: float = WARMUP_MS


def replay(job: ReplayJob, chain_factory: Callable[[int], Chain]) -> list[dict[str, Any]]:
    """Per candidate {"windows": [[68 values] ...], "send_replayed": bool}, in the candidates' order."""
    return [replay_one(job, knobs, chain_factory) for knobs in job.candidates]


def replay_one(job: ReplayJob, knobs: Mapping[str, Any], chain_factory: Callable[[int], Chain]) -> dict[str, Any]:
    from agent.measure.sample import PointMeter  # imports the Cython latency stats: only where replays run
    trace = job.trace
    resimulate = bool(trace.sim) and any(knobs[k] != trace.knobs[k] for k in SEND_KNOBS)
    source: Any = _resimulated(trace, knobs) if resimulate else TracePacketSource(trace)
    pipeline = Pipeline(job.extension, source, knobs, lambda: chain_factory(job.chain_seed))
    meter = PointMeter(pipeline, job.epoch)
    now = trace.start_ms
    meter.p.receiver.take_window(now)
    windows: list[list[Any]] = []
    next_window = trace.start_ms + job.warmup_ms
    warm = False
    while now + FRAME_MS <= trace.end_ms + 1e-6:
        now += FRAME_MS
        pipeline.step(now)
        if now + 1e-6 >= next_window:
            values = meter.values(meter.sample(now, job.host))
            if warm:
                windows.append(values)
            warm = True
            next_window += job.window_ms
    return {"windows": windows, "send_replayed": resimulate or not any(knobs[k] != trace.knobs[k] for k in SEND_KNOBS)}


def _resimulated(trace: TraceSnapshot, knobs: Mapping[str, Any]) -> Any:
    """A fresh simulated far side starting at the trace's first frame, under the candidate's send knobs."""
    from agent.sim.conditions import SimConditions
    from agent.sim.source import SimPacketSource
    source = SimPacketSource(SimConditions(**trace.sim["conditions"]), int(trace.sim["seed"]), knobs)
    source.capture_origin_ms = trace.start_ms    # media index 0 is captured at the trace's start
    source._captured_ms = trace.start_ms         # noqa: SLF001 - the simulator's frame clock, moved to the trace
    return source


def default_chain(seed: int) -> Chain:
    from agent.dsp import DspChain
    return DspChain(sample_rate=16000, frame_samples=320, seed=seed)


# --- the worker process ---------------------------------------------------------------------

def _serve(conn: Connection, nice: int) -> None:
    try:
        os.nice(nice)
    except OSError:
        pass
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        started = time.process_time()
        try:
            results = replay(job, default_chain)
            conn.send((job.request_id, True, results, None, time.process_time() - started))
        except Exception as exc:   # a bug in one replay answers that request, the worker lives on
            log.exception("replay %s failed", job.request_id)
            conn.send((job.request_id, False, [], f"replay failed: {exc.__class__.__name__}: {exc}",
                       time.process_time() - started))


def _send(conn: Connection, job: ReplayJob) -> None:
    try:
        conn.send(job)
    except (OSError, ValueError):   # the worker was stopped meanwhile: poll() reports it
        pass


@dataclass
class ReplayDone:
    request_id: str
    ok: bool
    results: list[dict[str, Any]]
    error: str | None
    cpu_s: float


class ReplayWorker:
    """One replay at a time in a spawned, niced process; a job over `budget_s` kills the process (restarted lazily)."""

    def __init__(self, budget_s: float, nice: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget_s, self.nice, self.clock = budget_s, nice, clock
        self._proc: Any = None
        self._conn: Connection | None = None
        self._job: tuple[str, float] | None = None     # request id, when it started
        self.done = self.failed = 0

    @property
    def busy(self) -> bool:
        return self._job is not None

    def submit(self, job: ReplayJob) -> bool:
        if self.busy:
            return False
        self._ensure()
        conn = self._conn
        assert conn is not None
        self._job = (job.request_id, self.clock())
        # A trace is megabytes: the pipe write runs on its own thread so the frame loop never waits for it.
        threading.Thread(target=_send, args=(conn, job), name="tpmon-replay-send", daemon=True).start()
        return True

    def _ensure(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        ctx = multiprocessing.get_context("spawn")   # the agent has threads and zmq sockets: never fork it
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self.nice), name="tpmon-replay", daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent

    def poll(self) -> ReplayDone | None:
        """The finished job's answer, a budget refusal, or None (nothing finished); never blocks."""
        if self._job is None or self._conn is None:
            return None
        request_id, started = self._job
        try:
            if self._conn.poll():
                rid, ok, results, error, cpu = self._conn.recv()
                self._job = None
                self.done += 1
                return ReplayDone(rid, ok, results, error, cpu)
        except (EOFError, OSError):
            self._job = None
            self._stop_process()
            self.failed += 1
            return ReplayDone(request_id, False, [], "the replay worker exited", 0.0)
        if self.clock() - started > self.budget_s:
            self._job = None
            self._stop_process()
            self.failed += 1
            return ReplayDone(request_id, False, [], f"budget exceeded: the replay took more than {self.budget_s:g} s",
                              0.0)
        return None

    def _stop_process(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(2)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        if self._conn is not None and self._proc is not None and self._proc.is_alive() and not self.busy:
            try:
                self._conn.send(None)
                self._proc.join(2)
            except (OSError, BrokenPipeError):
                pass
        self._stop_process()


def candidates_problems(candidates: Sequence[Any], base: Mapping[str, Any]) -> list[str]:
    """What is wrong with an EVALUATE's candidates (each must be a valid full knob set)."""
    from shared.knobs import validate
    problems = []
    for i, c in enumerate(candidates):
        clean, found = validate(c, base)
        if found:
            problems.append(f"candidate {i}: " + "; ".join(map(str, found[:3])))
        elif set(clean) != set(base):
            problems.append(f"candidate {i}: not a full knob set ({len(clean)} of {len(base)} knobs)")
    return problems

"""StationAgent: the frame loop of one station host (both extensions), its knobs, samples and controller link.

The loop runs on a 20 ms frame timer (monotonic clock). Per frame: knob sets received since
the last frame are applied to the whole pipeline at once (DSP chain, receiver, packet source),
persisted, handed to the external applier and acknowledged; then each extension steps one
frame. Every sample_interval_ms each extension is measured and a SAMPLE is sent; every
heartbeat_ms a HEARTBEAT (both on the first frame boundary once due, so they add no
wake-ups). In between it waits on the link socket, so KNOB_SETs are taken in as they
arrive; the link is read only when the poll says it has something. Nothing here blocks on the controller: see agent/link.py.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from agent.appliers import ExternalApplier
from agent.config import AgentConfig
from agent.knob_store import KnobStore
from agent.link import ControllerLink, client_keys
from agent.measure.host import HostMeter
from agent.measure.pesq_worker import PesqWorker, wideband_pesq
from agent.measure.sample import PointMeter
from agent.pipeline import FRAME_MS, Chain, ExtensionPipeline
from agent.replay import WINDOW_MS, ReplayJob, ReplayWorker, candidates_problems
from shared import protocol
from shared.knobs import KnobProblem, validate
from shared.metrics import METRICS
from shared.protocol import Message, MsgType
from shared.version import VERSION

log = logging.getLogger(__name__)
_MAX_LAG_FRAMES = 25  # more than half a second behind (suspended host): skip ahead instead of bursting


@dataclass
class PointState:
    extension: str
    pipeline: ExtensionPipeline
    meter: PointMeter
    version: int
    knobs: dict[str, Any]
    pending: tuple[int, dict[str, Any]] | None = None
    seq: int = 0
    values: list[Any] | None = None
    sampled_at: float | None = None
    next_pesq_ms: float = 0.0
    out_of_bounds: set[str] = field(default_factory=set)


class StationAgent:
    def __init__(self, cfg: AgentConfig, chain_factory: Callable[[int], Chain],
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 context: zmq.Context | None = None, link: ControllerLink | None = None) -> None:
        self.cfg = cfg
        self.clock, self.wall = clock, wall
        self.store = KnobStore(cfg.data_dir)
        self.applier = ExternalApplier(cfg.data_dir, cfg.station, cfg.external_command)
        self.host = HostMeter()
        self.pesq = PesqWorker()
        self.sim_ms = 0.0
        self.epoch = wall() - cfg.warmup_s  # wall time at frame-clock 0 (the warm-up ran ahead)
        self.points: dict[str, PointState] = {}
        for i, (ext, cond) in enumerate(cfg.sim.items()):
            version, knobs = self.store.load(ext)
            seed = cfg.seed * 7919 + i
            pipe = ExtensionPipeline(ext, cond, seed, knobs, lambda s=seed: chain_factory(s),
                                     trace_ms=cfg.replay_trace_s * 1000)
            self.points[ext] = PointState(ext, pipe, PointMeter(pipe, self.epoch), version, knobs)
            self.applier.apply(ext, version, knobs, wall())
            log.info("%s/%s starts on knob version %d", cfg.station, ext, version)
        self.link = link or ControllerLink(cfg.controller, cfg.station, context, curve=client_keys(cfg))
        self.replays = ReplayWorker(cfg.replay_budget_s)
        self._replaying: tuple[str, str, float] | None = None  # (request id, extension, trace s) in the worker
        self._host: dict[str, Any] = {}                       # the host figures of the last sample (replays reuse them)
        self.handlers: dict[MsgType, Callable[[Message], None]] = {
            MsgType.KNOB_SET: self.on_knob_set, MsgType.HEARTBEAT: lambda msg: None,
            MsgType.EVALUATE: self.on_evaluate}
        self.unexpected = 0
        self.frames = 0
        self._stop = threading.Event()

    # -- knobs ---------------------------------------------------------------------------

    def on_knob_set(self, msg: Message) -> None:
        """Validate now; a valid set waits for the next frame boundary, an invalid one is refused at once."""
        body = msg.body
        ext, version = body["extension"], body["version"]
        point = self.points.get(ext)
        problems: list[KnobProblem] = []
        if body["station"] != self.cfg.station:
            problems.append(KnobProblem("station", f"this agent serves {self.cfg.station}, not {body['station']}"))
        if point is None:
            problems.append(KnobProblem("extension", f"{ext!r} is not served here ({', '.join(self.points)})"))
        if not problems:
            base = point.pending[1] if point.pending else point.knobs
            clean, problems = validate(body["knobs"], base)
        if problems:
            log.warning("refused knob version %d for %s: %s", version, ext, "; ".join(map(str, problems)))
            self.link.send(protocol.ack(self.cfg.station, ext, version, False, [p.to_json() for p in problems]))
            return
        point.pending = (version, {**base, **clean})

    def apply_pending(self) -> None:
        """At a frame boundary: switch every stage together, persist, hand off external knobs, ACK."""
        for point in self.points.values():
            if point.pending is None:
                continue
            version, knobs = point.pending
            point.pending = None
            point.pipeline.apply(knobs)
            point.version, point.knobs = version, knobs
            now = self.wall()
            self.store.save(point.extension, version, knobs, now)
            self.applier.apply(point.extension, version, knobs, now)
            self.link.send(protocol.ack(self.cfg.station, point.extension, version, True, applied_at=now))
            log.info("applied knob version %d on %s", version, point.extension)

    # -- what-if replay --------------------------------------------------------------------

    def on_evaluate(self, msg: Message) -> None:
        """Snapshot the extension's trace and hand it to the replay worker, or refuse at once (busy, invalid)."""
        body = msg.body
        ext, request_id, candidates = body["extension"], body["request_id"], body["candidates"]
        point = self.points.get(ext)
        error = None
        if body["station"] != self.cfg.station or point is None:
            error = f"{body['station']}/{ext} is not served here"
        elif point.pipeline.recording is None:
            error = "replays are off on this agent (replay_trace_s = 0)"
        elif not 1 <= len(candidates) <= protocol.MAX_CANDIDATES:
            error = f"1 to {protocol.MAX_CANDIDATES} candidates per request, not {len(candidates)}"
        elif self.replays.busy:
            error = "busy: a replay is running"
        elif point.pipeline.recording.ready_ms < 10_000:
            error = f"the trace holds {point.pipeline.recording.ready_ms / 1000:.1f} s so far; at least 10 s are needed"
        else:
            problems = candidates_problems(candidates, point.knobs)
            if problems:
                error = "; ".join(problems[:5])
        if error is not None:
            self.link.send(protocol.evaluation(self.cfg.station, ext, request_id, False, error=error))
            return
        pipe = point.pipeline
        sim = {"conditions": pipe.cond.to_json(), "seed": pipe.seed}
        trace = pipe.recording.snapshot(point.knobs, pipe.conditions(self.sim_ms), sim)
        job = ReplayJob(request_id, ext, trace, tuple(dict(c) for c in candidates), pipe.seed, self.epoch, self._host)
        self.replays.submit(job)
        self._replaying = (request_id, ext, trace.span_ms / 1000)

    def poll_replay(self) -> None:
        """Send the finished replay's EVALUATION (called every frame; never waits)."""
        if self._replaying is None:
            return
        done = self.replays.poll()
        if done is None:
            return
        request_id, ext, trace_s = self._replaying
        self._replaying = None
        self.link.send(protocol.evaluation(
            self.cfg.station, ext, request_id, done.ok, done.results if done.ok else [], done.error,
            window_s=WINDOW_MS / 1000, trace_s=trace_s, cpu_s=round(done.cpu_s, 3),
            conditions=self.points[ext].pipeline.conditions(self.sim_ms)))
        log.info("replay %s of %s: %s", request_id, ext, "answered" if done.ok else done.error)

    # -- frames and samples --------------------------------------------------------------

    def frame(self) -> None:
        self.apply_pending()
        self.poll_replay()
        self.sim_ms += FRAME_MS
        for point in self.points.values():
            point.pipeline.step(self.sim_ms)
        self.frames += 1

    def warm_up(self) -> None:
        """Run warmup_s of simulated audio ahead of real time, then score PESQ once synchronously."""
        for _ in range(int(self.cfg.warmup_s * 1000 / FRAME_MS)):
            self.frame()
        for point in self.points.values():
            point.meter.sample(self.sim_ms, self.host.read())  # close the warm-up window
            audio = point.pipeline.pesq_audio()
            score = wideband_pesq(*audio) if audio is not None else None
            if score is not None:
                point.meter.pesq = score
            point.next_pesq_ms = self.sim_ms + self.cfg.pesq_interval_s * 1000

    def sample(self) -> None:
        host = self._host = self.host.read()
        for point in self.points.values():
            flat = point.meter.sample(self.sim_ms, host)
            values = point.meter.values(flat)  # rounded to each metric's resolution
            measured_at = self.wall()
            self._check_bounds(point, flat)
            point.values, point.sampled_at = values, measured_at
            point.seq += 1
            self.link.send(protocol.sample(self.cfg.station, point.extension, point.seq, measured_at, values,
                                           point.version, point.pipeline.conditions(self.sim_ms)))
            if self.sim_ms >= point.next_pesq_ms:
                self._schedule_pesq(point)

    def _schedule_pesq(self, point: PointState) -> None:
        audio = point.pipeline.pesq_audio()
        if audio is not None:
            meter = point.meter
            self.pesq.submit(audio[0], audio[1], lambda score: setattr(meter, "pesq", score))
        point.next_pesq_ms = self.sim_ms + self.cfg.pesq_interval_s * 1000

    def _check_bounds(self, point: PointState, flat: dict[str, Any]) -> None:
        # shared.metrics.out_of_bounds with the catalog keys built once (Metric.key formats a string per call).
        bad = {key for key, m in _BY_KEY if key not in flat or not m.within_bounds(flat[key])} - point.out_of_bounds
        if bad:  # a defect in a computation: say so once per metric, never clamp it away here
            log.error("%s: metrics outside the catalog's bounds: %s", point.extension,
                      {k: flat.get(k) for k in sorted(bad)})
            point.out_of_bounds |= bad

    def hello(self) -> Message:
        return protocol.hello(self.cfg.station, list(self.points), {e: p.version for e, p in self.points.items()},
                              agent_version=VERSION, pid=_pid(), started_at=self.epoch)

    # -- the loop --------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        self.warm_up()
        poller = zmq.Poller()
        poller.register(self.link.socket, zmq.POLLIN)
        poller.register(self.link.monitor, zmq.POLLIN)
        frame_s, sample_s, beat_s = FRAME_MS / 1000, self.cfg.sample_interval_ms / 1000, self.cfg.heartbeat_ms / 1000
        start = self.clock()
        next_frame, next_sample, next_beat = start + frame_s, start + sample_s, start
        readable = True  # drain the link once at the start
        while not self._stop.is_set():
            now = self.clock()
            if now - next_frame > _MAX_LAG_FRAMES * frame_s:
                log.warning("frame loop %.0f ms behind: skipping ahead", (now - next_frame) * 1000)
                next_frame = now
            framed = next_frame <= now
            while next_frame <= now:
                self.frame()
                next_frame += frame_s
            # Samples and heartbeats ride on the first frame boundary at or after they fall due: a
            # sample measures whole frames anyway, and their own wake-ups would cost as much as a frame's.
            if framed and now >= next_sample:
                self.sample()
                next_sample = max(next_sample + sample_s, now)
            if framed and now >= next_beat:
                self.link.send(protocol.heartbeat(self.wall()))
                next_beat = now + beat_s
            if readable or self.link.hello_due:
                self._handle_link()
            timeout = max(0.0, next_frame - self.clock())
            # One timer (the next frame) plus the link sockets; whole ms, since a 0 would spin until the deadline.
            readable = bool(poller.poll(math.ceil(timeout * 1000)))

    def _handle_link(self) -> None:
        for msg in self.link.receive():
            handler = self.handlers.get(msg.type)
            if handler is None:
                self.unexpected += 1
                log.warning("dropped an unexpected %s message from the controller", msg.type.name)
            else:
                handler(msg)
        if self.link.hello_due:
            self.link.send_hello(self.hello())

    def snapshot(self) -> dict[str, Any]:
        """What the exporter shows (read from its thread: every field is replaced, never mutated)."""
        return {"station": self.cfg.station, "connected": self.link.connected,
                "malformed": self.link.malformed, "dropped": self.link.dropped,
                "extensions": {e: {"values": p.values, "frames": p.pipeline.frames, "knob_version": p.version,
                                   "sampled_at": p.sampled_at, "sim_cpu_s": p.pipeline.sim_cpu_s,
                                   "send": p.pipeline.source.send_figures()}
                               for e, p in self.points.items()}}

    def close(self) -> None:
        self.replays.close()
        self.link.close()
        self.pesq.close()
        self.host.close()
        self.applier.reap()


# Catalog order, keys formatted once: (key, metric).
_BY_KEY: tuple[tuple[str, Any], ...] = tuple((m.key, m) for m in METRICS)


def _pid() -> int:
    import os
    return os.getpid()

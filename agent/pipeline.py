"""One extension end to end: sim source -> sender -> network -> receiver -> DSP chain, and its 20 ms step.

The pipeline owns the frame-clock state of one monitoring point: the seeded source and
network, the sender and receiver, the DSP chain built from the knobs, rings of the clean
and far-end signals indexed by media sample (so the chain gets the far-end reference of
exactly the media it processes and the measurement gets the clean reference of exactly the
media it hears), and the window accumulators that `measure.sample` turns into 68 values.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from agent.receiver import FRAME_SAMPLES, Receiver
from agent.sim.conditions import SimConditions
from agent.sim.network import SimNetwork
from agent.sim.sender import Sender
from agent.sim.source import SimSource
from ext.latency import LatencyStats
from shared.knobs import KNOBS

FRAME_MS = 20.0
_RING = 16000 * 10          # media samples of clean / far-end history (10 s)
_PESQ_SAMPLES = 16000 * 3   # audio kept for the next PESQ computation (3 s)
_MIN, _MAX = np.minimum.reduce, np.maximum.reduce  # ndarray.min/max without their Python-level wrappers
CONDITION_KNOBS: tuple[str, ...] = tuple(k.name for k in KNOBS if k.category in ("buffer", "network")) + (
    "agc_enabled", "aec_enabled", "nr_enabled", "compressor_enabled", "limiter_enabled", "eq_enabled")


class Chain(Protocol):
    """What the pipeline needs of agent.dsp.DspChain."""
    algorithmic_delay_ms: float

    def configure(self, knobs: Mapping[str, Any]) -> None: ...
    def process(self, frame: np.ndarray, far_end: np.ndarray | None = None) -> np.ndarray:
        """A fresh array of samples saturated to [-1, 1] (the output stage's DAC clip is the chain's)."""
        ...
    def cache_stats(self) -> tuple[int, int]: ...


@dataclass
class AudioWindow:
    """The output and aligned reference of one sample window, plus the DSP time spent on it."""
    out: np.ndarray
    ref: np.ndarray
    dsp_s: float
    step_s: float
    frames: int


class ExtensionPipeline:
    def __init__(self, extension: str, cond: SimConditions, seed: int, knobs: Mapping[str, Any],
                 chain_factory: Callable[[], Chain]) -> None:
        self.extension = extension
        self.cond = cond
        seeds = np.random.SeedSequence(seed).spawn(2)
        self.source = SimSource(cond, int(seeds[0].generate_state(1)[0]))
        self.network = SimNetwork(cond, np.random.default_rng(seeds[1]))
        self.knobs = dict(knobs)
        self.sender = Sender(self.network, knobs)
        self.receiver = Receiver(self.network, self.sender, knobs)
        self.chain = chain_factory()
        self.chain.configure(knobs)
        self.latency = LatencyStats(capacity=4096, window_ms=10_000.0)
        self._clean = np.zeros(_RING)
        self._far = np.zeros(_RING)
        self._captured = 0                       # media samples produced so far
        # Media indices of [chain lookahead | this frame]: the first FRAME_SAMPLES are what the output hears now.
        self._delay = 0
        self._joined = np.zeros(FRAME_SAMPLES, dtype=np.int64)
        self._pesq_out = np.zeros(_PESQ_SAMPLES)
        self._pesq_ref = np.zeros(_PESQ_SAMPLES)
        self._pesq_pos = 0
        self._out_frames: list[np.ndarray] = []
        self._ref_frames: list[np.ndarray] = []
        self._dsp_s = self._step_s = 0.0
        self.frames = 0
        # Thread CPU time of the built-in simulator's far side (speech and noise synthesis, mu-law
        # encoding, packetisation, FEC, pacing, the network's send-side draws): work a station fed by
        # real RTP would not do. The network's deliveries and NACK handling stay in the agent's share.
        self.sim_cpu_s = 0.0

    def apply(self, knobs: Mapping[str, Any]) -> None:
        """Switch every stage to a new full knob set; the caller calls it between two steps."""
        self.knobs = dict(knobs)
        self.sender.configure(knobs)
        self.receiver.configure(knobs)
        self.chain.configure(knobs)

    def step(self, now_ms: float) -> None:
        """One 20 ms frame at frame-clock time `now_ms` (the end of the frame just captured)."""
        started = time.perf_counter()
        sim_started = time.thread_time()
        payload, clean, far = self.source.next_payload()
        self.sender.push(payload, self._captured, now_ms)
        self.sim_cpu_s += time.thread_time() - sim_started
        pos = self._captured % _RING
        self._clean[pos:pos + FRAME_SAMPLES] = clean
        self._far[pos:pos + FRAME_SAMPLES] = far
        self._captured += FRAME_SAMPLES
        heard, media = self.receiver.tick(now_ms)
        far_end = self._lookup(self._far, media)
        dsp_start = time.perf_counter()
        out = self.chain.process(heard, far_end)  # saturated to [-1, 1] by the chain, like a DAC
        self._dsp_s += time.perf_counter() - dsp_start
        ref = self._lookup(self._clean, self._align(media))
        self._out_frames.append(out)
        self._ref_frames.append(ref)
        self._keep_for_pesq(out, ref)
        self.frames += 1
        self._step_s += time.perf_counter() - started

    def _lookup(self, ring: np.ndarray, media: np.ndarray) -> np.ndarray:
        """Ring samples at media indices; zero where the index is not (or no longer) held."""
        lo, hi = self._captured - _RING, self._captured
        if _MIN(media) >= max(lo, 0) and _MAX(media) < hi:  # the usual case: every index held
            return ring.take(media, mode="wrap")
        valid = (media >= 0) & (media < hi) & (media >= lo)
        return np.where(valid, ring.take(media, mode="wrap"), 0.0)

    def _align(self, media: np.ndarray) -> np.ndarray:
        """Media index of each output sample: the input's, delayed by the chain's algorithmic delay.

        The returned indices are only valid until the next call (a view of a reused buffer)."""
        delay = int(round(self.chain.algorithmic_delay_ms * 16))
        joined = self._joined
        if delay != self._delay:  # the delay changed with a knob set: pad (with "not held") or trim the history
            tail = joined[FRAME_SAMPLES:]  # the newest indices: what the old lookahead held
            pad = np.full(max(0, delay - len(tail)), -1, dtype=np.int64)
            kept = tail[max(0, len(tail) - delay):] if delay else tail[:0]
            joined = np.concatenate([pad, kept, np.zeros(FRAME_SAMPLES, np.int64)])
            self._joined, self._delay = joined, delay
        elif delay:  # last frame's newest `delay` indices move to the front
            joined[:delay] = joined[FRAME_SAMPLES:]
        joined[delay:] = media
        return joined[:FRAME_SAMPLES]

    def _keep_for_pesq(self, out: np.ndarray, ref: np.ndarray) -> None:
        p = self._pesq_pos % _PESQ_SAMPLES
        self._pesq_out[p:p + FRAME_SAMPLES] = out
        self._pesq_ref[p:p + FRAME_SAMPLES] = ref
        self._pesq_pos += FRAME_SAMPLES

    def pesq_audio(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The last 3 s of (clean reference, output), oldest first; None before 3 s were played."""
        if self._pesq_pos < _PESQ_SAMPLES:
            return None
        p = self._pesq_pos % _PESQ_SAMPLES
        return np.roll(self._pesq_ref, -p), np.roll(self._pesq_out, -p)

    def take_audio(self) -> AudioWindow:
        out = np.concatenate(self._out_frames) if self._out_frames else np.zeros(0)
        ref = np.concatenate(self._ref_frames) if self._ref_frames else np.zeros(0)
        window = AudioWindow(out, ref, self._dsp_s, self._step_s, len(self._out_frames))
        self._out_frames, self._ref_frames = [], []
        self._dsp_s = self._step_s = 0.0
        return window

    def conditions(self, now_ms: float) -> dict[str, Any]:
        """The simulated path in force now and the key applied knobs (the optimizer's inputs)."""
        st = self.network.state(now_ms)
        c = self.cond
        doc: dict[str, Any] = {
            "delay_ms": round(st.delay_ms, 3), "jitter_ms": round(st.jitter_ms, 3), "loss_rate": round(st.loss_rate, 5),
            "burst_length": c.burst_length, "duplicate_rate": c.duplicate_rate, "reorder_rate": c.reorder_rate,
            "corruption_rate": c.corruption_rate, "bandwidth_kbps": c.bandwidth_kbps, "noise_dbfs": c.noise_dbfs,
            "echo_gain_db": c.echo_gain_db, "echo_delay_ms": c.echo_delay_ms,
            "algorithmic_delay_ms": float(self.chain.algorithmic_delay_ms),
        }
        doc.update({name: self.knobs[name] for name in CONDITION_KNOBS})
        return doc

"""One extension end to end: PacketSource -> receiver -> DSP chain, and its 20 ms step.

The pipeline owns the frame-clock state of one monitoring point: its packet source (the
seeded simulator or any other PacketSource, agent/source.py), the receiver, the DSP chain
built from the knobs, and the window accumulators that `measure.sample` turns into 68
values. Where the source knows the reference signals, the chain gets the far-end reference of
exactly the media it processes and the measurement the clean reference of exactly the media
it hears.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from agent.receiver import FRAME_SAMPLES, Receiver
from agent.sim.conditions import SimConditions
from agent.sim.source import SimPacketSource
from agent.source import PacketSource
from agent.trace import RecordingSource
from shared.knobs import KNOBS

FRAME_MS = 20.0
_PESQ_SAMPLES = 16000 * 3   # audio kept for the next PESQ computation (3 s)
_SILENCE = np.zeros(FRAME_SAMPLES)  # the clean reference of a source that has none (never written to)
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


class Pipeline:
    def __init__(self, extension: str, source: PacketSource, knobs: Mapping[str, Any],
                 chain_factory: Callable[[], Chain], trace_ms: float = 0.0) -> None:
        self.extension = extension
        self.source = source
        self.knobs = dict(knobs)
        # With trace_ms, the receiver takes its packets through a recorder: the what-if replay's input.
        self.recording = RecordingSource(source, trace_ms) if trace_ms > 0 else None
        self.receiver = Receiver(self.recording or source, knobs)
        self.chain = chain_factory()
        self.chain.configure(knobs)
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

    def apply(self, knobs: Mapping[str, Any]) -> None:
        """Switch every stage to a new full knob set; the caller calls it between two steps."""
        self.knobs = dict(knobs)
        self.source.configure(knobs)
        self.receiver.configure(knobs)
        self.chain.configure(knobs)

    def step(self, now_ms: float) -> None:
        """One 20 ms frame at frame-clock time `now_ms` (the end of the frame just captured)."""
        started = time.perf_counter()
        heard, media = self.receiver.tick(now_ms)
        refs = self.source.references
        far_end = refs.far_end(media) if refs is not None else None
        dsp_start = time.perf_counter()
        out = self.chain.process(heard, far_end)  # saturated to [-1, 1] by the chain, like a DAC
        self._dsp_s += time.perf_counter() - dsp_start
        heard_at = self._align(media)  # every frame: the alignment keeps the chain's lookahead history
        ref = refs.clean(heard_at) if refs is not None else _SILENCE
        self._out_frames.append(out)
        self._ref_frames.append(ref)
        self._keep_for_pesq(out, ref)
        self.frames += 1
        self._step_s += time.perf_counter() - started

    @property
    def sim_cpu_s(self) -> float:
        """Thread CPU time the source spent producing packets (the simulator's far side; 0 for a received stream)."""
        figures = self.source.send_figures()
        return figures.far_side_cpu_s if figures is not None else 0.0

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
        """The last 3 s of (clean reference, output), oldest first; None before 3 s were played or without a reference."""
        if self._pesq_pos < _PESQ_SAMPLES or self.source.references is None:
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
        """The path in force now as the source knows it, the chain's delay and the key applied knobs (the optimizer's inputs)."""
        doc = self.source.conditions(now_ms)
        doc["algorithmic_delay_ms"] = float(self.chain.algorithmic_delay_ms)
        doc.update({name: self.knobs[name] for name in CONDITION_KNOBS})
        return doc


class ExtensionPipeline(Pipeline):
    """A Pipeline fed by the seeded simulator (source "sim"): what the station runs today, and what tests build."""
    source: SimPacketSource

    def __init__(self, extension: str, cond: SimConditions, seed: int, knobs: Mapping[str, Any],
                 chain_factory: Callable[[], Chain], trace_ms: float = 0.0) -> None:
        super().__init__(extension, SimPacketSource(cond, seed, knobs), knobs, chain_factory, trace_ms)
        self.cond = cond
        self.seed = seed

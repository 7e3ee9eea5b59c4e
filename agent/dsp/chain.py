"""DspChain: the agent's reference audio chain, built from the pipeline knobs of shared.knobs."""
from __future__ import annotations

import math
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np

import ext.dsp
from agent.dsp.aec import EchoCanceller
from agent.dsp.agc import AgcStage
from agent.dsp.design_cache import DesignCache
from agent.dsp.dynamics import CompressorStage, LimiterStage
from agent.dsp.equalizer import Equalizer
from agent.dsp.noise_reduction import NoiseReducer
from agent.dsp.reverb import Reverb
from agent.dsp.stage import FrameContext, Stage
from agent.dsp.voice import VoiceEnhancer
from shared.knobs import KNOBS_BY_NAME, defaults

# Processing order: echo first (it needs the raw microphone), limiter last (nothing after it may clip).
STAGE_TYPES: tuple[type[Stage], ...] = (
    EchoCanceller, NoiseReducer, AgcStage, Equalizer, VoiceEnhancer, CompressorStage, Reverb, LimiterStage,
)


class DspChain:
    """AEC -> noise reduction -> AGC group -> 10-band EQ -> voice enhancement -> compressor -> reverb -> limiter.

    `configure` takes knob values (a full validated set, or a partial one merged over the
    current set) and lets each stage rebuild only what its own knobs changed; the agent calls
    it between frames. `process` takes one frame of `frame_samples` float64 samples.
    `impl` picks the primitives (ext.dsp_py or ext._dsp); by default the selector's choice.
    """

    def __init__(self, sample_rate: int = 16000, frame_samples: int = 320, impl: ModuleType | None = None,
                 seed: int = 0) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples
        self.impl = impl or ext.dsp.MODULE
        self._cache = DesignCache(sample_rate)
        args = (sample_rate, frame_samples, self.impl, self._cache)
        self.stages: tuple[Stage, ...] = tuple(t(*args, seed=seed + i) for i, t in enumerate(STAGE_TYPES))
        self._knobs: dict[str, Any] = {}
        self.configure(defaults())

    @property
    def implementation(self) -> str:
        return "python" if self.impl.__name__ == "ext.dsp_py" else "cython"

    @property
    def knobs(self) -> dict[str, Any]:
        return dict(self._knobs)

    def configure(self, knobs: Mapping[str, Any]) -> None:
        unknown = sorted(name for name in knobs if name not in KNOBS_BY_NAME)
        if unknown:
            raise ValueError(f"unknown knobs: {', '.join(unknown)}")
        self._knobs.update(knobs)
        for stage in self.stages:
            stage.configure(self._knobs)
        # Whether a stage runs and what delay it adds follow from its knobs alone: settled here, not per frame.
        self._active = tuple(stage for stage in self.stages if stage.active)
        self._delay_ms = 1000.0 * sum(stage.delay_samples for stage in self._active) / self.sample_rate

    def process(self, frame: np.ndarray, far_end: np.ndarray | None = None) -> np.ndarray:
        x = np.array(frame, dtype=np.float64).reshape(-1)
        if len(x) != self.frame_samples:
            raise ValueError(f"expected a frame of {self.frame_samples} samples, got {len(x)}")
        ctx = FrameContext(far_end, 10.0 * math.log10(float(np.dot(x, x)) / len(x) + 1e-20))
        for stage in self._active:
            x = stage.process(x, ctx)
        # The contract is [-1, 1]; with the limiter on this never triggers, with it off it is the DAC's clip.
        np.maximum(x, -1.0, out=x)  # np.clip(x, -1, 1, out=x) as two ufunc calls: np.clip adds four Python-level wrappers
        return np.minimum(x, 1.0, out=x)

    @property
    def algorithmic_delay_ms(self) -> float:
        """Delay the active stages add (noise-reduction overlap, compressor and limiter lookahead)."""
        return self._delay_ms

    def cache_stats(self) -> tuple[int, int]:
        """(hits, misses) of the filter-design cache."""
        return self._cache.stats()

    def telemetry(self) -> dict[str, float]:
        """Gain reductions and detector states of the stages (for the agent's measurements)."""
        out: dict[str, float] = {}
        for stage in self.stages:
            out.update(stage.telemetry())
        return out

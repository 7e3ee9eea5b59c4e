"""The interface every DSP chain stage implements: configure from its own knobs, process a frame."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from agent.dsp.design_cache import DesignCache


@dataclass(frozen=True)
class FrameContext:
    """What every stage may know about the frame besides its own input."""
    far_end: np.ndarray | None  # the far-end (loudspeaker) reference, for the echo canceller
    input_db: float             # RMS level of the microphone frame before any processing


class Stage(ABC):
    """One block of the chain. It sees only the knobs it names and rebuilds only when they change."""

    KNOBS: tuple[str, ...] = ()

    def __init__(self, sample_rate: int, frame_samples: int, impl: ModuleType, cache: DesignCache,
                 seed: int = 0) -> None:
        self.sample_rate = sample_rate
        self.seed = seed  # stages that make noise (comfort noise) draw it from a generator seeded here
        self.frame_samples = frame_samples
        self.impl = impl  # ext.dsp_py or ext._dsp: the primitives this stage builds on
        self.cache = cache
        self._knobs: dict[str, Any] | None = None

    def configure(self, knobs: Mapping[str, Any]) -> bool:
        """Apply this stage's slice of `knobs`; returns whether anything changed."""
        mine = {name: knobs[name] for name in self.KNOBS}
        if mine == self._knobs:
            return False
        previous, self._knobs = self._knobs, mine
        self._apply(mine, previous or {})
        return True

    def changed(self, new: Mapping[str, Any], old: Mapping[str, Any], *names: str) -> bool:
        return any(new[n] != old.get(n) for n in names)

    @abstractmethod
    def _apply(self, knobs: Mapping[str, Any], previous: Mapping[str, Any]) -> None:
        """Build or update the stage's processors for `knobs` (previous is {} the first time)."""

    @property
    def active(self) -> bool:
        """Whether process() alters the signal at all (inactive stages are skipped). A function of the
        stage's knobs only: the chain reads it (and delay_samples) once per configure, not per frame."""
        return True

    @property
    def delay_samples(self) -> int:
        """Delay this stage adds to the signal path while active."""
        return 0

    @abstractmethod
    def process(self, x: np.ndarray, ctx: FrameContext) -> np.ndarray:
        """Process one frame (float64, frame_samples long)."""

    def telemetry(self) -> dict[str, float]:
        """Internal figures worth reporting (gain reduction, detector states)."""
        return {}

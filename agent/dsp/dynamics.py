"""Compressor and output limiter stages (the compression knobs)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.dsp.stage import FrameContext, Stage


class CompressorStage(Stage):
    """Soft-knee feed-forward compressor; its lookahead delays the path only while it is enabled."""

    KNOBS = ("compressor_enabled", "compressor_threshold", "compressor_ratio", "compressor_attack",
             "compressor_release", "compressor_knee", "compressor_makeup_gain", "compressor_lookahead")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._comp = self.impl.Compressor(self.sample_rate)
        self.enabled = False

    def _apply(self, k: Mapping[str, Any], previous: Mapping[str, Any]) -> None:
        self.enabled = bool(k["compressor_enabled"])
        self._comp.set_params(k["compressor_threshold"], k["compressor_ratio"], k["compressor_knee"],
                              k["compressor_attack"], k["compressor_release"], k["compressor_makeup_gain"],
                              k["compressor_lookahead"])

    @property
    def active(self) -> bool:
        return self.enabled

    @property
    def delay_samples(self) -> int:
        return self._comp.lookahead_samples

    def process(self, x: np.ndarray, ctx: FrameContext) -> np.ndarray:
        return self._comp.process(x)

    def telemetry(self) -> dict[str, float]:
        return {"compressor_reduction_db": self._comp.gain_reduction_db if self.enabled else 0.0}


class LimiterStage(Stage):
    """Brick-wall lookahead limiter, the chain's last stage: nothing leaves above limiter_threshold."""

    KNOBS = ("limiter_enabled", "limiter_threshold", "limiter_release", "limiter_lookahead")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limiter = self.impl.Limiter(self.sample_rate)
        self.enabled = True

    def _apply(self, k: Mapping[str, Any], previous: Mapping[str, Any]) -> None:
        self.enabled = bool(k["limiter_enabled"])
        self._limiter.set_params(k["limiter_threshold"], k["limiter_release"], k["limiter_lookahead"])

    @property
    def active(self) -> bool:
        return self.enabled

    @property
    def delay_samples(self) -> int:
        return self._limiter.lookahead_samples

    def process(self, x: np.ndarray, ctx: FrameContext) -> np.ndarray:
        return self._limiter.process(x)

    def telemetry(self) -> dict[str, float]:
        return {"limiter_reduction_db": self._limiter.gain_reduction_db if self.enabled else 0.0}

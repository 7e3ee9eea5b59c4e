"""AGC group: noise gate, gain control in the three agc_mode behaviours, and the saturation limiter."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.dsp.stage import FrameContext, Stage

SILENCE_DB = -60.0       # without the gate, the AGC freezes its gain on frames quieter than this
GATE_ATTACK_MS = 1.0
GATE_RELEASE_MS = 80.0
GATE_HOLD_MS = 50.0
GATE_FLOOR_DB = -80.0
AGC_LIMITER_RELEASE_MS = 20.0


class AgcStage(Stage):
    """The agc_* knobs.

    - agc_mode adaptive: the active-speech RMS level steered to agc_target_level within +-agc_max_gain.
    - adaptive_digital: the active-speech peak level steered to -agc_target_level_dbfs within
      +-agc_compression_gain.
    - fixed_digital: constant gain agc_compression_gain_db.
    In the adaptive modes the level is measured over agc_window, but the gain follows the
    talker's speech level (an average over about a second of speech-active windows, see
    ext.dsp AgcGain), not each window: a gain that chased 10 ms windows with a 5 ms attack
    would pump within syllables and lift noise in pauses. agc_attack/release/hold_time shape
    how the gain moves to a new speech level. The gate (agc_noise_gate_*) runs first and its
    threshold also bounds what counts as speech, so gated noise is never boosted. The limiter
    keeps agc_saturation_margin of headroom (in the digital modes at least agc_target_level_dbfs,
    their peak ceiling); no lookahead, so no added delay.
    """

    KNOBS = ("agc_enabled", "agc_target_level", "agc_max_gain", "agc_compression_gain", "agc_limiter_enabled",
             "agc_target_level_dbfs", "agc_compression_gain_db", "agc_mode", "agc_window", "agc_release_time",
             "agc_attack_time", "agc_hold_time", "agc_noise_gate_enabled", "agc_noise_gate_threshold",
             "agc_saturation_margin")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fs = self.sample_rate
        self._gate = self.impl.NoiseGate(fs, -50.0, GATE_ATTACK_MS, GATE_RELEASE_MS, GATE_HOLD_MS, 3.0, GATE_FLOOR_DB)
        self._agc = self.impl.AgcGain(fs)
        self._limiter = self.impl.Limiter(fs, -2.0, AGC_LIMITER_RELEASE_MS, 0.0)
        self._fixed_gain = 1.0

    def _apply(self, k: Mapping[str, Any], previous: Mapping[str, Any]) -> None:
        self.enabled = bool(k["agc_enabled"])
        self.gate_enabled = bool(k["agc_noise_gate_enabled"])
        self.limiter_enabled = bool(k["agc_limiter_enabled"])
        self.mode = k["agc_mode"]
        gate_db = float(k["agc_noise_gate_threshold"])
        self._gate.set_params(gate_db, GATE_ATTACK_MS, GATE_RELEASE_MS, GATE_HOLD_MS, 3.0, GATE_FLOOR_DB, 10.0)
        freeze = gate_db if self.gate_enabled else SILENCE_DB
        timing = (k["agc_attack_time"], k["agc_release_time"], k["agc_hold_time"], k["agc_window"])
        if self.mode == "adaptive":
            self._agc.set_params(k["agc_target_level"], k["agc_max_gain"], *timing, "rms", freeze)
            ceiling = -float(k["agc_saturation_margin"])
        else:
            self._agc.set_params(-float(k["agc_target_level_dbfs"]), k["agc_compression_gain"], *timing, "peak", freeze)
            ceiling = -max(float(k["agc_target_level_dbfs"]), float(k["agc_saturation_margin"]))
        self._fixed_gain = 10 ** (float(k["agc_compression_gain_db"]) / 20)
        self._limiter.set_params(ceiling, AGC_LIMITER_RELEASE_MS, 0.0)

    @property
    def active(self) -> bool:
        return self.enabled or self.gate_enabled

    def process(self, x: np.ndarray, ctx: FrameContext) -> np.ndarray:
        if self.gate_enabled:
            x = self._gate.process(x)
        if not self.enabled:
            return x
        if self.mode == "fixed_digital":
            x = x * self._fixed_gain
        else:
            x = self._agc.process(x)
        return self._limiter.process(x) if self.limiter_enabled else x

    def telemetry(self) -> dict[str, float]:
        gain = 20 * math.log10(self._fixed_gain) if self.mode == "fixed_digital" else self._agc.gain_db
        return {"agc_gain_db": gain if self.enabled else 0.0,
                "agc_gate_open": float(self._gate.is_open) if self.gate_enabled else 1.0,
                "agc_limiter_reduction_db": self._limiter.gain_reduction_db}


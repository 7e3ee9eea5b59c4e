"""The 10-band parametric equalizer (peaking biquads, Q 1.41) driven by eq_enabled and eq_band_N_freq/gain."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.dsp.stage import FrameContext, Stage
from shared.knobs import EQ_BAND_FREQS

BAND_Q = 1.41
BANDS = len(EQ_BAND_FREQS)


class Equalizer(Stage):
    """Ten peaking sections in one BiquadChain; a changed band swaps only its own coefficients.

    Centre frequencies above 0.45 x sample rate act at that limit (design_biquad clamps them),
    as the catalog says; at 16 kHz the 12, 14 and 16 kHz bands therefore all act at 7.2 kHz.
    """

    KNOBS = ("eq_enabled",) + tuple(f"eq_band_{n}_{p}" for n in range(1, BANDS + 1) for p in ("freq", "gain"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._chain = self.impl.BiquadChain([(1.0, 0.0, 0.0, 0.0, 0.0)] * BANDS)
        self._flat = True
        self.enabled = False

    def _apply(self, k: Mapping[str, Any], previous: Mapping[str, Any]) -> None:
        was_active = self.active
        for n in range(1, BANDS + 1):
            names = (f"eq_band_{n}_freq", f"eq_band_{n}_gain")
            if self.changed(k, previous, *names):
                self._chain.set_section(n - 1, self.cache.biquad("peaking", k[names[0]], BAND_Q, k[names[1]]))
        self.enabled = bool(k["eq_enabled"])
        self._flat = all(k[f"eq_band_{n}_gain"] == 0 for n in range(1, BANDS + 1))
        if self.active and not was_active:
            self._chain.reset()  # stale state from the last time it ran would click

    @property
    def active(self) -> bool:
        return self.enabled and not self._flat

    def process(self, x: np.ndarray, ctx: FrameContext) -> np.ndarray:
        return self._chain.process(x)

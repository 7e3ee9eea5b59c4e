"""Mono room reverb (Schroeder/Freeverb style) for the spatial knobs; bypassed while reverb_amount is 0."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.dsp.stage import FrameContext, Stage

ROOM_SCALE = {"small": 0.6, "medium": 1.0, "large": 1.6, "hall": 2.4}
COMB_MS = (25.3, 26.9, 28.9, 30.7)          # Freeverb's first four combs, in ms
ALLPASS_MS = (5.0, 1.7)
EARLY_MS = (4.3, 7.9, 12.1, 17.3, 23.9, 31.1)  # early-reflection taps (scaled by the room)
EARLY_GAINS = np.array((0.72, 0.58, 0.47, 0.36, 0.27, 0.19))
LATE_INPUT_GAIN = 0.2                        # keeps four summed combs near unity


class Reverb(Stage):
    """Pre-delay -> early-reflection taps + (4 damped feedback combs -> 2 all-passes -> band-limit).

    reverb_amount is the wet level added to the dry path (the dry path is not delayed).
    """

    KNOBS = ("reverb_amount", "room_size", "pre_delay", "damping", "early_reflections", "late_reflections",
             "diffusion", "high_frequency_damping", "low_frequency_damping")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hist = np.zeros(0)
        self._combs: list[Any] = []
        self._allpasses: list[Any] = []
        self._tail = self.impl.BiquadChain([(1.0, 0.0, 0.0, 0.0, 0.0)] * 2)
        self.amount = 0.0

    def _ms(self, ms: float) -> int:
        return max(1, int(round(ms * self.sample_rate / 1000)))

    def _apply(self, k: Mapping[str, Any], previous: Mapping[str, Any]) -> None:
        was_active = self.active
        self.amount = float(k["reverb_amount"]) / 100.0
        scale = ROOM_SCALE[k["room_size"]]
        if self.changed(k, previous, "room_size"):
            self._combs = [self.impl.FeedbackComb(self._ms(ms * scale)) for ms in COMB_MS]
            self._allpasses = [self.impl.Allpass(self._ms(ms)) for ms in ALLPASS_MS]
        late = float(k["late_reflections"]) / 100.0
        for comb in self._combs:
            comb.set_params(0.5 + 0.45 * late, 0.6 * float(k["damping"]) / 100.0)
        for ap in self._allpasses:
            ap.set_params(0.75 * float(k["diffusion"]) / 100.0)
        self._late_level = late
        self._early_level = float(k["early_reflections"]) / 100.0
        self._pre = int(round(float(k["pre_delay"]) * self.sample_rate / 1000))
        self._taps = np.array([self._pre + self._ms(ms * scale) for ms in EARLY_MS])
        need = int(self._taps.max())
        self._hist = np.concatenate((np.zeros(max(0, need - len(self._hist))), self._hist))[-need:]
        self._tail.set_section(0, self.cache.biquad("lowpass", k["high_frequency_damping"]))
        self._tail.set_section(1, self.cache.biquad("highpass", k["low_frequency_damping"]))
        if self.active and not was_active:
            self._hist[:] = 0.0
            self._tail.reset()

    @property
    def active(self) -> bool:
        return self.amount > 0

    def process(self, x: np.ndarray, ctx: FrameContext) -> np.ndarray:
        n, h = len(x), len(self._hist)
        buf = np.concatenate((self._hist, x))
        self._hist = buf[n:]
        early = np.zeros(n)
        for gain, tap in zip(EARLY_GAINS, self._taps):
            early += gain * buf[h - tap:h - tap + n]
        feed = buf[h - self._pre:h - self._pre + n] * LATE_INPUT_GAIN
        late = self._combs[0].process(feed)
        for comb in self._combs[1:]:
            late += comb.process(feed)
        for ap in self._allpasses:
            late = ap.process(late)
        late = self._tail.process(late)
        return x + self.amount * (self._early_level * early + self._late_level * late)

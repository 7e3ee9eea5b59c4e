"""Voice enhancement: static shelves and peaking filters plus frame-rate dynamic de-esser, harshness and breath control."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from agent.dsp.stage import FrameContext, Stage

# knob -> (filter kind, frequency Hz, Q, knob value -> gain dB); the catalog's descriptions.
STATIC: dict[str, tuple[str, float, float, Callable[[float], float]]] = {
    "voice_boost": ("peaking", 1000.0, 0.7, lambda v: v),
    "clarity_enhancement": ("peaking", 2500.0, 1.0, lambda v: 9.0 * v / 100.0),
    "brilliance": ("highshelf", 6000.0, 0.7071, lambda v: v),
    "warmth": ("lowshelf", 250.0, 0.7071, lambda v: v),
    "presence": ("peaking", 4000.0, 1.0, lambda v: v),
    "bass_boost": ("lowshelf", 100.0, 0.7071, lambda v: v),
    "treble_boost": ("highshelf", 4000.0, 0.7071, lambda v: v),
    "mid_scoop": ("peaking", 700.0, 1.0, lambda v: -v),
    "sibilance_control": ("highshelf", 7000.0, 0.7071, lambda v: -9.0 * v / 100.0),
}
# Dynamic cuts: knob -> (filter kind, frequency, Q, largest cut dB at 100%).
DYNAMIC: dict[str, tuple[str, float, float, float]] = {
    "de_esser_strength": ("highshelf", 5000.0, 0.7071, 12.0),
    "harshness_reduction": ("peaking", 3500.0, 1.4, 9.0),
    "breathiness_reduction": ("highshelf", 4000.0, 0.7071, 12.0),
}
CUT_STEP_DB = 0.25        # dynamic gains are quantised so the design cache serves repeats
CUT_ATTACK = 0.6          # per-frame smoothing of a deepening cut ...
CUT_RELEASE = 0.25        # ... and of a recovering one
SPEECH_PEAK_DECAY_DB = 0.05  # per frame: the reference level breath is judged against


class VoiceEnhancer(Stage):
    """Static tone shaping in one BiquadChain, then three signal-dependent cuts in another.

    The detectors read one windowed FFT of the frame: sibilance is the 5-8 kHz share of the
    energy, harshness the 2.5-4.5 kHz share, breath a frame dominated by 4-8 kHz energy that is
    more than 20 dB under the recent speech peak.
    """

    KNOBS = tuple(STATIC) + tuple(DYNAMIC)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        n = self.frame_samples
        identity = (1.0, 0.0, 0.0, 0.0, 0.0)
        self._static = self.impl.BiquadChain([identity] * len(STATIC))
        self._dynamic = self.impl.BiquadChain([identity] * len(DYNAMIC))
        self._window = np.hanning(n)
        freqs = np.fft.rfftfreq(n, 1.0 / self.sample_rate)
        self._sib = (freqs >= 5000) & (freqs <= 8000)
        self._harsh = (freqs >= 2500) & (freqs <= 4500)
        self._high = freqs >= 4000
        self._cut = dict.fromkeys(DYNAMIC, 0.0)
        self._strength = dict.fromkeys(DYNAMIC, 0.0)
        self._speech_peak_db = -120.0
        self._static_on = self._dynamic_on = False

    def _apply(self, k: Mapping[str, Any], previous: Mapping[str, Any]) -> None:
        for i, (name, (kind, freq, q, gain)) in enumerate(STATIC.items()):
            if self.changed(k, previous, name):
                self._static.set_section(i, self.cache.biquad(kind, freq, q, gain(float(k[name]))))
        static_on = any(k[name] != 0 for name in STATIC)
        if static_on and not self._static_on:
            self._static.reset()
        self._static_on = static_on
        self._strength = {name: float(k[name]) / 100.0 for name in DYNAMIC}
        dynamic_on = any(self._strength.values())
        if dynamic_on and not self._dynamic_on:
            self._dynamic.reset()
            self._cut = dict.fromkeys(DYNAMIC, 0.0)
        self._dynamic_on = dynamic_on

    @property
    def active(self) -> bool:
        return self._static_on or self._dynamic_on

    def process(self, x: np.ndarray, ctx: FrameContext) -> np.ndarray:
        if self._static_on:
            x = self._static.process(x)
        if self._dynamic_on:
            self._update_cuts(x, ctx.input_db)
            x = self._dynamic.process(x)
        return x

    def _update_cuts(self, x: np.ndarray, level_db: float) -> None:
        """New cut depths from this frame's spectrum; breath is judged on the microphone level,
        since the AGC before this stage has already lifted quiet frames towards its target."""
        spec = np.fft.rfft(x * self._window)
        power = spec.real ** 2 + spec.imag ** 2
        total = float(np.sum(power[1:])) + 1e-20
        self._speech_peak_db = max(level_db, self._speech_peak_db - SPEECH_PEAK_DECAY_DB)
        sib_db = 10 * math.log10(float(np.sum(power[self._sib])) / total + 1e-20)
        harsh_db = 10 * math.log10(float(np.sum(power[self._harsh])) / total + 1e-20)
        high_share = float(np.sum(power[self._high])) / total
        amount = {
            # sibilance: 0 when 5-8 kHz holds a quarter of the energy, full when it holds it all
            "de_esser_strength": _ramp(sib_db, -6.0, 0.0),
            # harshness: 2.5-4.5 kHz share from -8 dB (a sixth) to -2 dB
            "harshness_reduction": _ramp(harsh_db, -8.0, -2.0),
            # breath: high-band dominated and well under the speech level, but not digital silence
            "breathiness_reduction": float(high_share > 0.5 and -90.0 < level_db < self._speech_peak_db - 20.0),
        }
        for i, (name, (kind, freq, q, max_cut)) in enumerate(DYNAMIC.items()):
            target = self._strength[name] * max_cut * amount[name]
            cur = self._cut[name]
            cur += (target - cur) * (CUT_ATTACK if target > cur else CUT_RELEASE)
            self._cut[name] = cur
            quantised = round(cur / CUT_STEP_DB) * CUT_STEP_DB
            self._dynamic.set_section(i, self.cache.biquad(kind, freq, q, -quantised))

    def telemetry(self) -> dict[str, float]:
        return {f"{name}_cut_db": cut for name, cut in self._cut.items()}


def _ramp(value: float, lo: float, hi: float) -> float:
    return min(max((value - lo) / (hi - lo), 0.0), 1.0)

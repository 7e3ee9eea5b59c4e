"""Noise reduction: STFT spectral subtraction / Wiener gain on bands, noise tracking, VAD, transients, comfort noise."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.dsp import fft
from agent.dsp.stage import FrameContext, Stage

LEVEL_DB = {"low": 6.0, "moderate": 12.0, "high": 18.0, "very_high": 24.0}
WINDOW = 320          # 20 ms analysis window
HOP = 160             # 10 ms hop, 50% overlap: sqrt-Hann analysis x synthesis sums to one
NFFT = 512            # zero-padded: 257 bins, enough for the 256-band setting


class NoiseReducer(Stage):
    """Frame-based noise suppressor with 10 ms algorithmic delay (WINDOW - HOP).

    The STFT (sqrt-Hann, 50% overlap, both hops of a frame in one FFT call each way) lives here;
    the per-band recursion (noise tracking, VAD, Wiener / subtraction gain, click detection) is
    ext.dsp SpectralGain, the Cython primitive with its Python twin.
    """

    KNOBS = ("nr_enabled", "nr_level", "nr_type", "nr_stationary_level", "nr_transient_suppression",
             "nr_voice_activity_detection", "nr_frequency_bands", "nr_spectral_subtraction", "nr_wiener_filter",
             "nr_comfort_noise_level")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rng = np.random.default_rng(self.seed)
        self._window = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW))  # periodic sqrt-Hann
        self._win_power = float(np.sum(self._window ** 2))  # |X_k|^2 of unit-variance white noise
        self._hops_per_frame = self.frame_samples // HOP
        # Per-frame work buffers (windowed frames in, spectra, synthesis frames out).
        self._frames = np.zeros((self._hops_per_frame, WINDOW))
        self._specs = np.zeros((self._hops_per_frame, NFFT // 2 + 1), dtype=complex)
        self._synth = np.zeros((self._hops_per_frame, NFFT))
        self._totals = np.zeros(self._hops_per_frame)
        self._bands = 0
        self._reset_stream()

    def _reset_stream(self) -> None:
        """Fresh state (on enabling): the noise estimate re-trains on the first 100 ms."""
        self._history = np.zeros(WINDOW - HOP + self.frame_samples)  # the input the frame's windows span
        self._tail = np.zeros(WINDOW - HOP)                          # overlap-add carried to the next frame
        self._core = self.impl.SpectralGain(len(self._starts)) if self._bands else None

    def _apply(self, knobs: Mapping[str, Any], previous: Mapping[str, Any]) -> None:
        if knobs["nr_enabled"] and not previous.get("nr_enabled", False):
            self._reset_stream()
        self.enabled = bool(knobs["nr_enabled"])
        self.floor = 10 ** (-LEVEL_DB[knobs["nr_level"]] / 20)
        self.stationary = knobs["nr_type"] == "stationary"
        self.extra_floor_db = float(knobs["nr_stationary_level"])
        self.transient = bool(knobs["nr_transient_suppression"])
        self.vad = bool(knobs["nr_voice_activity_detection"])
        self.oversub = float(knobs["nr_spectral_subtraction"])
        self.wiener = bool(knobs["nr_wiener_filter"])
        # Comfort noise power in |X_k|^2 units; it is shaped like the tracked noise and capped by it.
        self.cn_power = 10 ** (knobs["nr_comfort_noise_level"] / 10) * self._win_power
        if knobs["nr_frequency_bands"] != self._bands:
            self._set_bands(int(knobs["nr_frequency_bands"]))
        self._core.set_params(self.stationary, self.floor, self.extra_floor_db, self.vad, self.oversub, self.wiener,
                              self.transient)

    def _set_bands(self, bands: int) -> None:
        """Linear band edges over the bins; per-band state restarts (the noise estimate re-learns)."""
        nbins = NFFT // 2 + 1
        starts = np.unique(np.round(np.linspace(0, nbins, min(bands, nbins) + 1)).astype(int))[:-1]
        self._starts = starts.astype(np.int64)
        self._counts = np.diff(np.append(starts, nbins)).astype(float)
        self._bin_band = np.repeat(np.arange(len(starts), dtype=np.int64), np.diff(np.append(starts, nbins)))
        self._gains = np.zeros((self._hops_per_frame, len(starts)))
        self._band_pow = np.zeros((self._hops_per_frame, len(starts)))
        self._bands = bands
        self._core = self.impl.SpectralGain(len(starts))

    @property
    def active(self) -> bool:
        return self.enabled

    @property
    def delay_samples(self) -> int:
        return WINDOW - HOP

    def process(self, x: np.ndarray, ctx: FrameContext) -> np.ndarray:
        """Both 10 ms hops of the frame with one forward and one inverse FFT call; the per-band
        gain recursion (noise tracking, decision-directed SNR) still runs hop by hop."""
        k, core, keep = self.impl, self._core, WINDOW - HOP
        history, gains = self._history, self._gains
        k.stft_frames(history, x, self._window, HOP, self._frames)
        specs = fft.rfft(self._frames, NFFT, self._specs)
        k.band_powers(specs, self._starts, self._counts, self._band_pow, self._totals)
        for h in range(self._hops_per_frame):  # the hop's newest samples, unwindowed, for the click detector
            gains[h] = core.process(self._band_pow[h], self._totals[h], history[h * HOP + keep:h * HOP + WINDOW])
        # Comfort noise shaped like the tracked background: see ext.dsp band_gains_apply.
        draw = self._rng.standard_normal((2,) + specs.shape) if self.cn_power > 0 else None
        k.band_gains_apply(specs, gains, self._bin_band, self._core.noise, self.cn_power, draw)
        out = np.empty_like(x)
        k.overlap_add(fft.irfft(specs, NFFT, self._synth), self._window, self._tail, out)
        return out

    def telemetry(self) -> dict[str, float]:
        return {"nr_speech": float(self._core.speech), "nr_transients": float(self._core.transients)}
